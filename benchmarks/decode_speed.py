"""Decoding speed where users run it: forwards/s, tokens/s, TPF and memory-bandwidth utilisation (MBU),
with every figure's setting, and the ratios that say what each part of the frame buys.

    python benchmarks/decode_speed.py cpu            # the trained tiny asset and a mid-size random model
    python benchmarks/decode_speed.py gpu            # a random LLaDA2.0-mini-shaped model in bf16 (~32 GB)
    python benchmarks/decode_speed.py gpu --scale tiny --device cpu   # the GPU path, small, on a CPU (tests)

Figures per setting (device, dtype, batch, block, prompt length, generation length, policy):
- forwards/s (model forwards, batched ones counted once), tokens/s per sample (mean of tokens / latency)
  and aggregate (all tokens / wall time), TPF (mean of tokens / NFE);
- MBU = weight bytes actually read per forward (dense weights, the embedding rows looked up, and in each
  MoE layer the union of experts the routing chose, counted by hooks in a separate pass) x forwards/s /
  the device's peak bandwidth (`dmax_core.evaluation.speed`); none on CPUs.
Ratios, each measured in one run: batched vs batch-1 aggregate throughput; SPD vs threshold seconds per
forward; compiled vs eager forwards/s (batch 1; compile time excluded); prefix cache vs none at 256 and
1024 generated tokens (threshold 0: one forward per block plus its commit, so both do the same forwards).

Random-weight models decode with EOS set to the MASK id, which no policy ever emits, so every decode runs
its full length; their TPF says nothing about a trained model (the tiny asset's does). Imports only torch
and dmax's model, decoding and speed modules (no pydantic, MLflow or Prefect), for bare GPU machines.
The last stdout line is one JSON document. Run it alone on the machine.
"""

from __future__ import annotations

import argparse
import copy
import json
import sys
import time
from pathlib import Path
from typing import Any

import torch

from dmax_core.decoding import build_policy, generate_batch
from dmax_core.env import device_name
from dmax_core.evaluation.speed import RoutingMonitor, bytes_per_forward, mbu, peak_bandwidth
from dmax_core.models import LLaDA2MoeConfig, LLaDA2MoeForDiffusionLM

ASSET = Path(__file__).resolve().parents[1] / "models" / "ledger-base"
BLOCK = 32


def random_model(config: LLaDA2MoeConfig, dtype: torch.dtype, device: str, seed: int = 0) -> LLaDA2MoeForDiffusionLM:
    """A randomly initialised model built directly on `device` in `dtype` (no weights needed)."""
    config.eos_token_id = config.mask_token_id  # never emitted: every decode runs its full length
    torch.manual_seed(seed)
    previous = torch.get_default_dtype()
    torch.set_default_dtype(dtype)  # parameters are created in `dtype` (16B params: 32 GB, not 64)
    try:
        with torch.device(device):
            model = LLaDA2MoeForDiffusionLM(config)
    finally:
        torch.set_default_dtype(previous)
    return model.eval()


def mid_size_config() -> LLaDA2MoeConfig:
    """A CPU-sized LLaDA2 shape (~35 M parameters, 16 experts) between the tiny model and LLaDA2.0-mini."""
    return LLaDA2MoeConfig(vocab_size=4096, hidden_size=384, intermediate_size=1024, moe_intermediate_size=192,
                           num_hidden_layers=6, num_attention_heads=6, num_key_value_heads=2, head_dim=64,
                           first_k_dense_replace=1, num_experts=16, num_experts_per_tok=4, n_group=4, topk_group=2,
                           num_shared_experts=1, max_position_embeddings=2048, pad_token_id=4094,
                           eos_token_id=4094, mask_token_id=4095)


def tiny_scale_config() -> LLaDA2MoeConfig:
    return LLaDA2MoeConfig(vocab_size=512, hidden_size=64, intermediate_size=128, moe_intermediate_size=32,
                           num_hidden_layers=2, num_attention_heads=2, num_key_value_heads=1, head_dim=32,
                           first_k_dense_replace=1, num_experts=8, num_experts_per_tok=2, n_group=2, topk_group=1,
                           num_shared_experts=1, max_position_embeddings=4096, pad_token_id=510,
                           eos_token_id=510, mask_token_id=511)


def prompts_for(model: LLaDA2MoeForDiffusionLM, count: int, length: int, seed: int = 1) -> list[torch.Tensor]:
    """Random prompts of one length (ids below the special ones)."""
    top = min(model.config.mask_token_id, model.config.eos_token_id, model.config.pad_token_id)
    gen = torch.Generator().manual_seed(seed)
    return [torch.randint(0, top, (length,), generator=gen) for _ in range(count)]


def run(model: LLaDA2MoeForDiffusionLM, prompts: list[torch.Tensor], policy_name: str, threshold: float, *,
        gen_length: int, batch: int, use_cache: bool = True, compiled: bool = False) -> dict[str, Any]:
    """One timed decode of all `prompts`; the figures and the setting that produced them."""
    policy = build_policy(policy_name, threshold)
    forwards = 0

    def count(_info: Any) -> None:
        nonlocal forwards
        forwards += 1

    device = str(next(model.parameters()).device)
    # Untimed warm-up with the same settings (allocator, kernels, one-time Python costs).
    generate_batch(model, prompts[:batch], [copy.deepcopy(policy) for _ in prompts[:batch]],
                   gen_length=2 * BLOCK, block_length=BLOCK, max_batch=batch, use_cache=use_cache, compiled=compiled)
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    started = time.perf_counter()
    results = generate_batch(model, prompts, [copy.deepcopy(policy) for _ in prompts], gen_length=gen_length,
                             block_length=BLOCK, max_batch=batch, use_cache=use_cache, compiled=compiled,
                             on_forward=count)
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    wall = time.perf_counter() - started
    tokens = sum(r.tokens for r in results)
    return {
        "setting": {"device": device_name(), "dtype": str(model.dtype).removeprefix("torch."), "batch": batch,
                    "block": BLOCK, "prompt_length": int(prompts[0].numel()), "gen_length": gen_length,
                    "policy": f"{policy_name}@{threshold:g}", "prompts": len(prompts), "use_cache": use_cache,
                    "compiled": compiled, "threads": torch.get_num_threads()},
        "wall_seconds": wall, "forwards": forwards, "nfe": sum(r.nfe for r in results), "tokens": tokens,
        "forwards_per_second": forwards / wall,
        "tokens_per_second_mean": sum(r.tokens / r.seconds for r in results) / len(results),
        "tokens_per_second_aggregate": tokens / wall,
        "tpf": sum(r.tokens / r.nfe for r in results) / len(results),
        "seconds_per_forward": wall / forwards,
    }


def with_mbu(model: LLaDA2MoeForDiffusionLM, figures: dict[str, Any], prompts: list[torch.Tensor],
             policy_name: str, threshold: float, gen_length: int, batch: int) -> dict[str, Any]:
    """Add bytes read per forward (routing counted in a separate, untimed pass) and MBU."""
    monitor = RoutingMonitor()
    with monitor.attach(model):
        generate_batch(model, prompts[: max(1, batch)], [build_policy(policy_name, threshold)
                                                          for _ in prompts[: max(1, batch)]],
                       gen_length=min(gen_length, 4 * BLOCK), block_length=BLOCK, max_batch=batch)
    tokens_per_forward_input = BLOCK * max(1, batch)
    read = bytes_per_forward(model, monitor.mean_experts(), tokens=tokens_per_forward_input)
    return {**figures, "bytes_per_forward": read, "experts_per_moe_layer": monitor.mean_experts(),
            "mbu": mbu(read, figures["forwards_per_second"], figures["setting"]["device"]),
            "peak_bandwidth": peak_bandwidth(figures["setting"]["device"])}


def ratios_for(model: LLaDA2MoeForDiffusionLM, *, prompt_length: int, gen_length: int, batch: int,
               compile_too: bool, label: str, prompts: list[torch.Tensor] | None = None) -> dict[str, Any]:
    """Batch-1 and batched figures for both policies, and the batched, SPD and compiled ratios."""
    prompts = prompts or prompts_for(model, batch, prompt_length)
    out: dict[str, Any] = {"model": label, "runs": []}
    for name, threshold in (("threshold", 0.9), ("spd", 0.5)):
        single = with_mbu(model, run(model, prompts[:2], name, threshold, gen_length=gen_length, batch=1),
                          prompts, name, threshold, gen_length, 1)
        batched = with_mbu(model, run(model, prompts, name, threshold, gen_length=gen_length, batch=batch),
                           prompts, name, threshold, gen_length, batch)
        out["runs"] += [single, batched]
        out[f"batched_vs_batch1_throughput_{name}"] = (
            batched["tokens_per_second_aggregate"] / single["tokens_per_second_aggregate"])
        print(f"{label} {name}: batch 1 {single['forwards_per_second']:.1f} forwards/s, "
              f"{single['tokens_per_second_aggregate']:.1f} tok/s; batch {batch} "
              f"{batched['tokens_per_second_aggregate']:.1f} tok/s aggregate (x"
              f"{out[f'batched_vs_batch1_throughput_{name}']:.2f}); MBU {single['mbu']}", flush=True)
    singles = {r["setting"]["policy"].split("@")[0]: r for r in out["runs"] if r["setting"]["batch"] == 1}
    out["spd_vs_threshold_seconds_per_forward"] = (
        singles["spd"]["seconds_per_forward"] / singles["threshold"]["seconds_per_forward"])
    print(f"{label}: SPD / threshold seconds per forward x{out['spd_vs_threshold_seconds_per_forward']:.3f}",
          flush=True)
    if compile_too:
        eager = run(model, prompts[:2], "spd", 0.5, gen_length=gen_length, batch=1)
        compiled = run(model, prompts[:2], "spd", 0.5, gen_length=gen_length, batch=1, compiled=True)
        out["runs"] += [eager, compiled]
        out["compiled_vs_eager_forwards_per_second"] = (
            compiled["forwards_per_second"] / eager["forwards_per_second"])
        print(f"{label}: compiled / eager forwards per second x{out['compiled_vs_eager_forwards_per_second']:.2f}",
              flush=True)
    return out


def cache_ratios(model: LLaDA2MoeForDiffusionLM, prompt_length: int, label: str) -> dict[str, Any]:
    """Prefix cache against recomputing the prefix, at 256 and 1024 generated tokens (threshold 0)."""
    prompts = prompts_for(model, 1, prompt_length)
    out: dict[str, Any] = {"model": label, "runs": []}
    for gen_length in (256, 1024):
        cached = run(model, prompts, "threshold", 0.0, gen_length=gen_length, batch=1)
        uncached = run(model, prompts, "threshold", 0.0, gen_length=gen_length, batch=1, use_cache=False)
        assert cached["nfe"] == uncached["nfe"]
        out["runs"] += [cached, uncached]
        out[f"cache_vs_none_speedup_gen{gen_length}"] = uncached["wall_seconds"] / cached["wall_seconds"]
        speedup = out[f"cache_vs_none_speedup_gen{gen_length}"]
        print(f"{label}: prefix cache vs none at {gen_length} tokens x{speedup:.2f}", flush=True)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("mode", choices=["cpu", "gpu"])
    parser.add_argument("--device", default=None, help="default: cuda for gpu mode, cpu for cpu mode")
    parser.add_argument("--scale", choices=["mini", "tiny"], default="mini", help="gpu mode: model shape")
    parser.add_argument("--batch", type=int, default=None, help="batched runs (cpu: 16, gpu: 64)")
    parser.add_argument("--gen", type=int, default=None, help="generated tokens (cpu: 64, gpu: 256)")
    parser.add_argument("--prompt", type=int, default=128, help="prompt length")
    parser.add_argument("--no-compile", action="store_true", help="skip the compiled-vs-eager ratio")
    parser.add_argument("--threads", type=int, default=None, help="CPU threads (default: torch's)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    report: dict[str, Any] = {"command": " ".join(["python benchmarks/decode_speed.py", *sys.argv[1:]]),
                              "device": device_name(), "models": []}
    if args.mode == "cpu":
        # The trained asset decodes real prompts of its task (needs the tokenizer and config libraries).
        from dmax_core.bundle import load_bundle
        from dmax_core.config import load_config
        from dmax_core.stages.common import task_of
        from dmax_core.tokenizer import encode, render_prompt

        batch, gen = args.batch or 16, args.gen or 64
        tiny, tokenizer = load_bundle(ASSET)
        tiny = tiny.float()
        questions = [p.question for p in task_of(load_config("tiny")).splits()["test"][:batch]]
        prompts = [torch.tensor(encode(tokenizer, render_prompt(tokenizer, q))) for q in questions]
        report["models"].append(ratios_for(tiny, prompt_length=int(prompts[0].numel()), gen_length=gen,
                                           batch=batch, compile_too=not args.no_compile,
                                           label="tiny (trained asset, ledger prompts, fp32)", prompts=prompts))
        mid = random_model(mid_size_config(), torch.float32, "cpu")
        report["models"].append(ratios_for(mid, prompt_length=args.prompt, gen_length=gen, batch=batch,
                                           compile_too=False, label="mid-size (random, fp32)"))
        report["models"].append(cache_ratios(mid, args.prompt, "mid-size (random, fp32)"))
    else:
        device = args.device or "cuda"
        config = LLaDA2MoeConfig.llada2_mini() if args.scale == "mini" else tiny_scale_config()
        model = random_model(config, torch.bfloat16 if device.startswith("cuda") else torch.float32, device)
        if device.startswith("cuda"):
            model.pack_experts()
        batch, gen = args.batch or 64, args.gen or 256
        label = f"{'LLaDA2.0-mini' if args.scale == 'mini' else 'tiny'} shape (random, {model.dtype})"
        report["models"].append(ratios_for(model, prompt_length=args.prompt, gen_length=gen, batch=batch,
                                           compile_too=not args.no_compile, label=label))
        report["models"].append(cache_ratios(model, args.prompt, label))
    print(json.dumps(report))


if __name__ == "__main__":
    main()
