"""Every GPU path of dmax in one command: correctness against fp32 / loop references, batch invariance,
decode speed against the bandwidth bound, and FSDP2 OPUT training, as one table and one JSON line.

    make gpu-check                                             # = PYTHONPATH=. python benchmarks/gpu_check.py
    PYTHONPATH=. python benchmarks/gpu_check.py --device cpu --scale tiny --no-compile   # the CPU path (tests)

On the lent GPU machine (bare Python 3.12 with torch, triton, transformers, safetensors, tokenizers, pyarrow,
pyyaml, tqdm): carry nothing. The working tree travels with every call, dmax is not installed there, and
this script imports only torch, triton, safetensors, tokenizers/transformers and dmax's model, decoding,
kernel, objective and `training.sharding` modules (no pydantic, MLflow, Prefect or accelerate:
tests/test_gpu_check.py runs it with those made unimportable). One device call:

    command: PYTHONPATH=. python3 benchmarks/gpu_check.py --json-out $OUT/gpu_check.json 2>&1 | tee $OUT/gpu_check.txt
    timeout_s: 560   (then give the machine back; if a section failed, fix it and rerun it alone with --only)

Expected runtime on one H200: under 8 minutes, an estimate until a lent machine has run it (model builds
~20 s, two torch.compile passes of ~1-2 min each, decoding ~2 min, training ~1 min). `--budget-s` (450)
skips the sections not yet started once it is spent, so the JSON line still comes back inside the call.

Sections, in order; each runs in its own try block, so one that fails records its error and the rest run:
- env: torch / CUDA / Triton versions, device, memory, whether torch has the grouped GEMM.
- moe: a random model of LLaDA2.0-mini's real shape (`--check-layers`: all 20 where fp32 + bf16 copies fit,
  i.e. >= 120 GiB; else 8), logits of bf16 grouped-GEMM MoE and of the fp32 grouped path against the fp32
  per-expert loop. PASS: fp32 grouped within 1e-4 relative error of the loop, and bf16 grouped no further
  from the fp32 loop than 2x the bf16 loop is (bf16 rounding sets the scale, not a tuned number).
- spd_kernel: the fused Triton SPD step against its PyTorch reference on [batch x 32, vocab] bf16 logits.
  PASS: identical tokens, confidences to 1e-6 / 1e-5, soft embeddings to one bf16 step (tests/test_kernels).
- compiled: the compiled block step (`generate_batch(compiled=True)`) against eager on the same model.
  PASS: the first forward's confidences differ from eager bf16 by at most 2x what eager bf16 differs from
  eager fp32 (compilation adds no more error than bf16 itself); whole-decode token agreement is reported.
- batch_invariance: the share of `--batch` rows (varied prompt lengths, SPD) whose tokens at batch 64 equal
  their batch-1 decode, in bf16. Measured, not asserted: cuBLAS may pick other kernels at other shapes.
- decode: forwards/s, tokens/s and MBU at batch 1 and `--batch` (block 32, SPD), eager and compiled, with
  the bandwidth bound, on the full 20-layer shape in bf16 (`benchmarks/decode_speed.py`'s `run` and
  `with_mbu`). Compiled decoding runs one row at a time (its fixed-shape cache), so batch 64 is eager only.
- train / train_offload: OPUT steps (on-policy rollout + CE, dmax_core.objectives) on random rows, FSDP2
  `fully_shard` at world size 1, bf16 compute with fp32 master weights, activation checkpointing, AdamW:
  steps/s, peak memory and loss finiteness, beside `benchmarks/train_memory.py`'s prediction for the same
  layers, sequence length and offload. `train` uses as many real-shape layers as the prediction fits in
  80 % of the GPU; `train_offload` (CPU offload of params, grads and AdamW state) two layers.

Random weights: EOS is set to the MASK id so every decode runs its full length, and TPF says nothing about
a trained model. Exit status 1 when a section FAILs or errors. Run it alone on the machine.
"""

from __future__ import annotations

import argparse
import copy
import gc
import json
import math
import os
import socket
import statistics
import sys
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


def _cpu_requested(argv: list[str]) -> bool:
    """Whether the command line asks for `--device cpu` (read before torch and triton are imported)."""
    for i, arg in enumerate(argv):
        if arg == "--device" and i + 1 < len(argv):
            return argv[i + 1].startswith("cpu")
        if arg.startswith("--device="):
            return arg.split("=", 1)[1].startswith("cpu")
    return False


# Triton runs on CPU tensors only in its interpreter, which must be on before triton is first imported.
if _cpu_requested(sys.argv[1:]):
    os.environ.setdefault("TRITON_INTERPRET", "1")
sys.path.insert(0, str(Path(__file__).resolve().parent))  # the sibling benchmarks, reused below

import torch  # noqa: E402
import torch.distributed as dist  # noqa: E402
from decode_speed import BLOCK, prompts_for, random_model, run, tiny_scale_config, with_mbu  # noqa: E402
from train_memory import GIB, fsdp_plan, memory_per_gpu  # noqa: E402

from dmax_core.decoding import build_policy, generate_batch  # noqa: E402
from dmax_core.diffusion import (  # noqa: E402
    IGNORE_INDEX,
    add_noise,
    block_causal_mask,
    labelled_block_span,
    training_layout,
)
from dmax_core.env import device_name, package_version  # noqa: E402
from dmax_core.files import atomic_write_text  # noqa: E402
from dmax_core.kernels import spd_step as spd_kernel  # noqa: E402
from dmax_core.models import LLaDA2MoeConfig, LLaDA2MoeForDiffusionLM  # noqa: E402
from dmax_core.models.moe import _has_grouped_mm  # noqa: E402
from dmax_core.objectives import ObjectiveBatch, build_objective  # noqa: E402
from dmax_core.training.sharding import shard_model  # noqa: E402

PASS, FAIL, ERROR, SKIP, MEASURED = "PASS", "FAIL", "ERROR", "SKIP", "measured"


@dataclass
class Check:
    """What the sections share: the arguments, the models built once, and the results so far."""

    args: argparse.Namespace
    device: str
    dtype: torch.dtype
    started: float = field(default_factory=time.perf_counter)
    models: dict[str, LLaDA2MoeForDiffusionLM] = field(default_factory=dict)
    results: dict[str, dict[str, Any]] = field(default_factory=dict)

    @property
    def cuda(self) -> bool:
        return self.device.startswith("cuda")

    def sync(self) -> None:
        if self.cuda:
            torch.cuda.synchronize()

    def elapsed(self) -> float:
        return time.perf_counter() - self.started


# ------------------------------------------------------------------------------------------ shapes
def shape_config(args: argparse.Namespace, layers: int | None = None) -> LLaDA2MoeConfig:
    """LLaDA2.0-mini's real shape (or the tiny CPU shape), with `layers` decoder layers if given."""
    config = LLaDA2MoeConfig.llada2_mini() if args.scale == "mini" else tiny_scale_config()
    if layers is not None:
        config.num_hidden_layers = layers
    return config


def full_layers(args: argparse.Namespace) -> int:
    return shape_config(args).num_hidden_layers


def gpu_memory_gib(check: Check) -> float | None:
    return torch.cuda.get_device_properties(0).total_memory / GIB if check.cuda else None


def check_layers(check: Check) -> int:
    """Layers of the correctness model: all of them where an fp32 and a bf16 copy fit (>= 120 GiB)."""
    if check.args.check_layers:
        return check.args.check_layers
    memory = gpu_memory_gib(check)
    return full_layers(check.args) if memory is None or memory >= 120 else 8


def release(check: Check, *names: str) -> None:
    """Drop models no later section needs, and give their memory back to the device."""
    for name in names:
        check.models.pop(name, None)
    if not check.models:
        torch._dynamo.reset()  # compiled graphs hold on to the weights they were traced with
    gc.collect()
    if check.cuda:
        torch.cuda.empty_cache()


def relative_error(value: torch.Tensor, reference: torch.Tensor) -> float:
    reference = reference.float()
    return float((value.float() - reference).norm() / reference.norm().clamp_min(1e-30))


def median_seconds(check: Check, fn: Callable[[], Any], repeats: int = 3) -> float:
    """Median wall time of `fn` after one untimed call (kernels, allocator, autotuning)."""
    fn()
    times = []
    for _ in range(repeats):
        check.sync()
        started = time.perf_counter()
        fn()
        check.sync()
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def correctness_models(check: Check) -> tuple[LLaDA2MoeForDiffusionLM, LLaDA2MoeForDiffusionLM]:
    """(fp32 reference, bf16 copy with experts packed) of the real shape, built once."""
    if "fp32" not in check.models:
        config = shape_config(check.args, check_layers(check))
        reference = random_model(config, torch.float32, check.device)
        low = random_model(copy.deepcopy(config), check.dtype, check.device)
        low.load_state_dict(reference.state_dict())  # the same weights, rounded (no second fp32 copy)
        low.pack_experts()
        check.models["fp32"], check.models["low"] = reference, low
    return check.models["fp32"], check.models["low"]


def decode_model(check: Check) -> LLaDA2MoeForDiffusionLM:
    """The full-depth bf16 model for decoding speed (the correctness copy when it already has every layer)."""
    if "decode" not in check.models:
        low = check.models.get("low")
        if low is not None and low.config.num_hidden_layers == full_layers(check.args):
            check.models["decode"] = low
        else:
            release(check, "fp32", "low")
            model = random_model(shape_config(check.args), check.dtype, check.device)
            model.pack_experts()
            check.models["decode"] = model
    return check.models["decode"]


def varied_prompts(model: LLaDA2MoeForDiffusionLM, count: int, length: int) -> list[torch.Tensor]:
    """`count` random prompts of four lengths around `length` (batched rows of unequal length)."""
    per_length = math.ceil(count / 4)
    groups = [prompts_for(model, per_length, max(8, length - 7 * offset), seed=1 + offset) for offset in range(4)]
    return [groups[i % 4][i // 4] for i in range(count)]


def spd_decode(model: LLaDA2MoeForDiffusionLM, prompts: list[torch.Tensor], *, gen_length: int, max_batch: int,
               compiled: bool = False, record_trace: bool = False) -> list[Any]:
    policy = build_policy("spd", 0.5)
    return generate_batch(model, prompts, [copy.deepcopy(policy) for _ in prompts], gen_length=gen_length,
                          block_length=BLOCK, max_batch=max_batch, compiled=compiled, record_trace=record_trace)


def first_confidences(result: Any) -> torch.Tensor:
    """The confidences after the first block forward of a traced decode (the same input for every variant)."""
    return next(step.confidence for step in result.trace if step.confidence is not None).float()


# ------------------------------------------------------------------------------------------ sections
def section_env(check: Check) -> dict[str, Any]:
    out: dict[str, Any] = {
        "verdict": MEASURED, "python": sys.version.split()[0], "torch": torch.__version__,
        "cuda": torch.version.cuda, "triton": package_version("triton"), "device": device_name(),
        "dtype": str(check.dtype).removeprefix("torch."), "grouped_mm_in_torch": hasattr(torch, "_grouped_mm"),
        "scale": check.args.scale,
    }
    if check.cuda:
        out["gpu_memory_gib"] = round(gpu_memory_gib(check) or 0.0, 1)
        out["bf16_supported"] = torch.cuda.is_bf16_supported()
    out["summary"] = f"torch {out['torch']}, CUDA {out['cuda']}, triton {out['triton']}; {out['device']}"
    return out


def section_moe(check: Check) -> dict[str, Any]:
    reference, low = correctness_models(check)
    config = reference.config
    length = 8 * BLOCK
    ids = torch.randint(0, config.pad_token_id, (4, length), generator=torch.Generator().manual_seed(2))
    positions = torch.arange(length, device=check.device)
    inputs = {"input_ids": ids.to(check.device), "position_ids": positions,
              "attention_mask": block_causal_mask(positions, BLOCK)}
    logits: dict[str, torch.Tensor] = {}
    with torch.inference_mode():
        for name, model, dispatch in (("fp32_loop", reference, "loop"), ("fp32_grouped", reference, "grouped"),
                                      ("low_loop", low, "loop"), ("low_grouped", low, "grouped")):
            model.set_moe_dispatch(dispatch)
            logits[name] = model(**inputs).float()
        seconds = {}
        for dispatch in ("loop", "grouped"):
            low.set_moe_dispatch(dispatch)
            seconds[dispatch] = median_seconds(check, lambda: low(**inputs))
    reference.set_moe_dispatch("auto")
    low.set_moe_dispatch("auto")
    truth = logits["fp32_loop"]
    errors = {name: relative_error(value, truth) for name, value in logits.items() if name != "fp32_loop"}
    top1 = {name: float((value.argmax(-1) == truth.argmax(-1)).float().mean())
            for name, value in logits.items() if name != "fp32_loop"}
    probe = torch.zeros(1, dtype=check.dtype, device=check.device)
    kernel = "torch._grouped_mm" if _has_grouped_mm(probe) else "batched matmul (no grouped GEMM here)"
    passed = errors["fp32_grouped"] <= 1e-4 and errors["low_grouped"] <= 2 * errors["low_loop"] + 1e-3
    return {
        "verdict": PASS if passed else FAIL, "layers": config.num_hidden_layers, "tokens": int(ids.numel()),
        "grouped_kernel": kernel, "relative_error_vs_fp32_loop": errors, "top1_agreement_vs_fp32_loop": top1,
        "forward_seconds": seconds, "grouped_vs_loop_speedup": seconds["loop"] / seconds["grouped"],
        "summary": (f"{config.num_hidden_layers} layers, {kernel}: rel err bf16 grouped "
                    f"{errors['low_grouped']:.2e} vs bf16 loop {errors['low_loop']:.2e}, fp32 grouped "
                    f"{errors['fp32_grouped']:.1e}; grouped x{seconds['loop'] / seconds['grouped']:.2f} "
                    f"faster than loop"),
    }


def section_spd_kernel(check: Check) -> dict[str, Any]:
    if not spd_kernel.HAVE_TRITON:
        raise RuntimeError("triton is not installed")
    config = shape_config(check.args)
    rows, vocab, dim, mask_id = check.args.batch * BLOCK, config.vocab_size, config.hidden_size, config.mask_token_id
    gen = torch.Generator().manual_seed(3)
    logits = (torch.randn(rows, vocab, generator=gen) * 4).to(check.dtype).to(check.device)
    table = (torch.randn(vocab, dim, generator=gen) * 0.02).to(check.dtype).to(check.device)
    mask_embedding = table[mask_id]

    def embed(ids: torch.Tensor) -> torch.Tensor:
        return table[ids]

    with torch.inference_mode():
        tokens, confidence, soft = spd_kernel.spd_step_triton(logits, mask_id, table, mask_embedding)
        ref_tokens, ref_confidence, ref_soft = spd_kernel.spd_step_reference(logits, mask_id, embed, mask_embedding)
        seconds = {"triton": median_seconds(check, lambda: spd_kernel.spd_step_triton(
                       logits, mask_id, table, mask_embedding)),
                   "reference": median_seconds(check, lambda: spd_kernel.spd_step_reference(
                       logits, mask_id, embed, mask_embedding))}
    same_tokens = float((tokens == ref_tokens).float().mean())
    confidence_ok = torch.allclose(confidence.float(), ref_confidence.float(), atol=1e-6, rtol=1e-5)
    soft_ok = torch.allclose(soft.float(), ref_soft.float(), atol=2e-2, rtol=1e-2)
    passed = same_tokens == 1.0 and confidence_ok and soft_ok and soft.dtype == table.dtype
    return {
        "verdict": PASS if passed else FAIL, "rows": rows, "vocab": vocab, "dim": dim,
        "token_agreement": same_tokens,
        "confidence_max_abs_diff": float((confidence.float() - ref_confidence.float()).abs().max()),
        "soft_embedding_max_abs_diff": float((soft.float() - ref_soft.float()).abs().max()),
        "seconds": seconds, "triton_vs_reference_speedup": seconds["reference"] / seconds["triton"],
        "interpreted": os.environ.get("TRITON_INTERPRET") == "1",
        "summary": (f"[{rows} x {vocab}] tokens {same_tokens:.2%} equal, confidences "
                    f"{'within' if confidence_ok else 'OUTSIDE'} 1e-6, soft embeddings "
                    f"{'within' if soft_ok else 'OUTSIDE'} one bf16 step; Triton "
                    f"x{seconds['reference'] / seconds['triton']:.2f} vs reference"),
    }


def section_compiled(check: Check) -> dict[str, Any]:
    if check.args.no_compile:
        return {"verdict": SKIP, "summary": "--no-compile"}
    reference, low = correctness_models(check)
    prompts = prompts_for(low, 2, check.args.prompt)
    gen = check.args.gen  # the decode section's length: its compiled runs reuse these graphs (same cache shape)
    truth = spd_decode(reference, prompts[:1], gen_length=BLOCK, max_batch=1, record_trace=True)[0]
    eager = spd_decode(low, prompts, gen_length=gen, max_batch=1, record_trace=True)
    check.sync()
    started = time.perf_counter()
    compiled = spd_decode(low, prompts, gen_length=gen, max_batch=1, compiled=True, record_trace=True)
    check.sync()
    first_call = time.perf_counter() - started
    fp32_conf, eager_conf, compiled_conf = (first_confidences(r) for r in (truth, eager[0], compiled[0]))
    bf16_error = relative_error(eager_conf, fp32_conf)
    compile_error = relative_error(compiled_conf, eager_conf)
    rows_equal = sum(torch.equal(a.raw_ids, b.raw_ids) for a, b in zip(eager, compiled, strict=True))
    tokens_equal = sum(int((a.raw_ids == b.raw_ids).sum()) for a, b in zip(eager, compiled, strict=True))
    tokens_total = sum(a.raw_ids.numel() for a in eager)
    passed = compile_error <= 2 * bf16_error + 1e-6
    return {
        "verdict": PASS if passed else FAIL, "layers": low.config.num_hidden_layers,
        "first_forward_rel_error": {"compiled_vs_eager": compile_error, "eager_bf16_vs_fp32": bf16_error},
        "rows_identical": f"{rows_equal}/{len(eager)}", "token_agreement": tokens_equal / tokens_total,
        "first_compiled_call_seconds": first_call,
        "summary": (f"first forward: compiled vs eager rel err {compile_error:.2e} (bf16 vs fp32 "
                    f"{bf16_error:.2e}); decodes: {rows_equal}/{len(eager)} rows identical, "
                    f"{tokens_equal / tokens_total:.1%} tokens; first call {first_call:.0f} s incl. compile"),
    }


def section_batch_invariance(check: Check) -> dict[str, Any]:
    _, low = correctness_models(check)
    release(check, "fp32")  # the fp32 copy's work is done
    batch = check.args.batch
    prompts = varied_prompts(low, batch, check.args.prompt)
    together = spd_decode(low, prompts, gen_length=BLOCK, max_batch=batch)
    alone = spd_decode(low, prompts, gen_length=BLOCK, max_batch=1)
    same_rows = sum(torch.equal(a.raw_ids, b.raw_ids) for a, b in zip(together, alone, strict=True))
    same_tokens = sum(int((a.raw_ids == b.raw_ids).sum()) for a, b in zip(together, alone, strict=True))
    total = sum(a.raw_ids.numel() for a in alone)
    return {
        "verdict": MEASURED, "layers": low.config.num_hidden_layers, "rows": batch, "gen_length": BLOCK,
        "prompt_lengths": sorted({int(p.numel()) for p in prompts}), "policy": "spd@0.5",
        "rows_identical_share": same_rows / batch, "token_agreement": same_tokens / total,
        "summary": (f"{same_rows}/{batch} rows at batch {batch} identical to batch 1 "
                    f"({same_tokens / total:.1%} of tokens), {str(check.dtype).removeprefix('torch.')}"),
    }


def section_decode(check: Check) -> dict[str, Any]:
    model = decode_model(check)
    args = check.args
    prompts = prompts_for(model, args.batch, args.prompt)
    runs: dict[str, dict[str, Any]] = {}
    settings = [("eager_batch1", prompts[:2], 1, False), (f"eager_batch{args.batch}", prompts, args.batch, False)]
    if not args.no_compile:
        settings.append(("compiled_batch1", prompts[:2], 1, True))
    for label, rows, batch, compiled in settings:
        figures = run(model, rows, "spd", 0.5, gen_length=args.gen, batch=batch, compiled=compiled)
        figures = with_mbu(model, figures, prompts, "spd", 0.5, args.gen, batch)
        bound = (figures["peak_bandwidth"] / figures["bytes_per_forward"]) if figures["peak_bandwidth"] else None
        runs[label] = {key: figures[key] for key in ("forwards_per_second", "tokens_per_second_mean",
                                                     "tokens_per_second_aggregate", "tpf", "mbu",
                                                     "bytes_per_forward", "experts_per_moe_layer")}
        runs[label]["bound_forwards_per_second"] = bound
        runs[label]["setting"] = figures["setting"]
    if not args.no_compile:
        runs[f"compiled_batch{args.batch}"] = {"skipped": "compiled decoding runs one row at a time (max_batch=1)"}

    def describe(label: str) -> str:
        r = runs[label]
        mbu = f", MBU {r['mbu']:.1%}" if r.get("mbu") is not None else ""
        return f"{label} {r['forwards_per_second']:.1f} fwd/s {r['tokens_per_second_aggregate']:.0f} tok/s{mbu}"

    return {"verdict": MEASURED, "layers": model.config.num_hidden_layers, "gen_length": args.gen,
            "prompt_length": args.prompt, "block": BLOCK, "policy": "spd@0.5", "runs": runs,
            "summary": "; ".join(describe(label) for label in runs if "skipped" not in runs[label])}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def oput_batch(config: LLaDA2MoeConfig, seq: int, step: int, device: str) -> ObjectiveBatch:
    """One conversation twice (spec §2.2: the 50/50 mix), the second row on-policy, noised at t = 0.75."""
    gen = torch.Generator().manual_seed(100 + step)
    prompt_length = seq // 4
    clean = torch.randint(0, config.pad_token_id, (1, seq), generator=gen).repeat(2, 1)
    labels = clean.clone()
    labels[:, :prompt_length] = IGNORE_INDEX
    prompts = torch.full((2,), prompt_length)
    noisy = add_noise(clean, prompts, torch.full((2,), 0.75), config.mask_token_id, gen)
    layout = training_layout(seq, BLOCK, labelled_block_span(labels, BLOCK), device=torch.device(device))
    return ObjectiveBatch(noisy=noisy.to(device), clean=clean.to(device), labels=labels.to(device),
                          flags=torch.tensor([False, True], device=device), layout=layout,
                          mask_id=config.mask_token_id, step=step, seed=0, always_forward=True, block_length=BLOCK)


def train_layers(check: Check, seq: int) -> int:
    """The most real-shape layers whose predicted memory fits 80 % of the GPU (the argument if given)."""
    if check.args.train_layers:
        return check.args.train_layers
    memory = gpu_memory_gib(check)
    if memory is None:
        return full_layers(check.args)
    config = shape_config(check.args, 1)
    per_layer = shape_config(check.args, 2).num_parameters() - config.num_parameters()
    layers = max(1, min(full_layers(check.args), int((0.8 * memory * GIB / 16 - config.num_parameters())
                                                     // per_layer) + 1))
    while layers > 1:
        predicted = memory_per_gpu(fsdp_plan(shape_config(check.args, layers)), shape_config(check.args, layers),
                                   1, seq, False)["total"]
        if predicted <= 0.8 * memory:
            break
        layers -= 1
    return layers


def train_steps(check: Check, layers: int, offload: bool, steps: int, warmup: int) -> dict[str, Any]:
    """OPUT steps under FSDP2 at world size 1 (module docstring), with the predicted memory beside them."""
    args = check.args
    seq = args.train_seq
    config = shape_config(args, layers)
    predicted = memory_per_gpu(fsdp_plan(config), config, 1, seq, offload)
    dist.init_process_group("nccl" if check.cuda else "gloo", init_method=f"tcp://127.0.0.1:{free_port()}",
                            rank=0, world_size=1)
    try:
        torch.manual_seed(0)
        with torch.device(check.device):
            model = LLaDA2MoeForDiffusionLM(config)  # fp32 master weights
        model.train()
        model.set_moe_dispatch(args.train_moe)
        shard_model(model, torch.device(check.device), "bf16" if check.dtype == torch.bfloat16 else "no",
                    offload, activation_checkpointing=True)
        optimizer = torch.optim.AdamW(model.parameters(), lr=1e-5)
        objective = build_objective("oput")
        if check.cuda:
            torch.cuda.reset_peak_memory_stats()
        losses, times = [], []
        for step in range(warmup + steps):
            batch = oput_batch(config, seq, step, check.device)
            check.sync()
            started = time.perf_counter()
            loss = sum(objective.loss_terms(model, batch).terms.values())
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            losses.append(float(loss.detach()))
            if step >= warmup:
                times.append(time.perf_counter() - started)
        peak = torch.cuda.max_memory_allocated() / GIB if check.cuda else None
    finally:
        dist.destroy_process_group()
    finite = all(math.isfinite(value) for value in losses)
    seconds = statistics.median(times)
    return {
        "verdict": PASS if finite else FAIL, "layers": layers, "parameters": config.num_parameters(),
        "seq": seq, "rows_per_step": 2, "offload": offload, "steps_per_second": 1 / seconds,
        "losses": losses, "loss_finite": finite, "peak_memory_gib": peak,
        "predicted_gib": {k: float(f"{v:.4g}") for k, v in predicted.items()},
        "summary": (f"{layers} layers ({config.num_parameters() / 1e9:.2f} B), seq {seq}: {1 / seconds:.2f} "
                    f"steps/s, peak {'n/a' if peak is None else f'{peak:.3g} GiB'} vs predicted "
                    f"{predicted['total']:.3g} GiB, losses {'finite' if finite else 'NOT FINITE'}"),
    }


def section_train(check: Check) -> dict[str, Any]:
    release(check, "fp32", "low", "decode")
    args = check.args
    return train_steps(check, train_layers(check, args.train_seq), offload=False, steps=args.train_steps,
                       warmup=args.train_warmup)


def section_train_offload(check: Check) -> dict[str, Any]:
    if not check.cuda:
        return {"verdict": SKIP, "summary": "CPU offload keeps a GPU run's shards on the CPU; no GPU here"}
    release(check, "fp32", "low", "decode")
    # Two layers and two timed steps: AdamW then runs on the CPU, seconds per step at this size.
    return train_steps(check, min(2, full_layers(check.args)), offload=True, steps=min(2, check.args.train_steps),
                       warmup=1)


SECTIONS: dict[str, Callable[[Check], dict[str, Any]]] = {
    "env": section_env, "moe": section_moe, "spd_kernel": section_spd_kernel, "compiled": section_compiled,
    "batch_invariance": section_batch_invariance, "decode": section_decode, "train": section_train,
    "train_offload": section_train_offload,
}


# ------------------------------------------------------------------------------------------ driver
def run_sections(check: Check, names: list[str]) -> None:
    for name in names:
        if check.elapsed() > check.args.budget_s:
            check.results[name] = {"verdict": SKIP, "seconds": 0.0,
                                   "summary": f"time budget of {check.args.budget_s:.0f} s spent"}
        else:
            started = time.perf_counter()
            try:
                result = SECTIONS[name](check)
            except Exception as err:  # one broken path must not hide the others
                last = traceback.extract_tb(err.__traceback__)[-1]
                result = {"verdict": ERROR, "error": f"{type(err).__name__}: {err}",
                          "where": f"{Path(last.filename).name}:{last.lineno}",
                          "summary": f"{type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''}"[:160]}
                if check.cuda:
                    torch.cuda.empty_cache()
            result["seconds"] = round(time.perf_counter() - started, 2)
            check.results[name] = result
        row = check.results[name]
        if check.args.json_out:
            write_json(check, check.args.json_out)
        print(f"[{check.elapsed():6.1f} s] {name}: {row['verdict']} - {row['summary']}", flush=True)


def report(check: Check) -> dict[str, Any]:
    return {"command": " ".join(["python benchmarks/gpu_check.py", *check.args.argv]),
            "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "device": device_name(),
            "total_seconds": round(check.elapsed(), 1), "sections": check.results}


def write_json(check: Check, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(path, json.dumps(report(check), indent=1, default=str) + "\n")


def table(check: Check) -> str:
    lines = ["| check | verdict | seconds | result |", "|---|---|---|---|"]
    for name, row in check.results.items():
        lines.append(f"| {name} | {row['verdict']} | {row['seconds']:.1f} | {row['summary']} |")
    return "\n".join(lines)


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--scale", choices=["mini", "tiny"], default="mini", help="model shape")
    parser.add_argument("--only", nargs="+", choices=list(SECTIONS), help="run these sections (default: all)")
    parser.add_argument("--check-layers", type=int, default=0,
                        help="layers of the correctness model (default: 20 with >= 120 GiB, else 8)")
    parser.add_argument("--batch", type=int, default=64, help="batched decoding rows")
    parser.add_argument("--prompt", type=int, default=128, help="prompt length")
    parser.add_argument("--gen", type=int, default=128, help="generated tokens in the speed runs")
    parser.add_argument("--no-compile", action="store_true", help="skip the torch.compile paths")
    parser.add_argument("--train-layers", type=int, default=0, help="default: as many as fit 80 %% of the GPU")
    parser.add_argument("--train-seq", type=int, default=1024, help="max_seq_len of the training rows")
    parser.add_argument("--train-steps", type=int, default=5, help="timed training steps")
    parser.add_argument("--train-warmup", type=int, default=2, help="untimed training steps before them")
    parser.add_argument("--train-moe", choices=["auto", "loop", "grouped"], default="auto",
                        help="MoE dispatch while training (auto: grouped on CUDA)")
    parser.add_argument("--json-out", type=Path, default=None,
                        help="also write the JSON document here, rewritten after every section (a call cut "
                             "off by its time limit still leaves the sections it finished)")
    parser.add_argument("--budget-s", type=float, default=450.0,
                        help="start no section after this many seconds (the rest are reported as skipped)")
    parser.add_argument("--threads", type=int, default=0, help="CPU threads (default: torch's)")
    args = parser.parse_args(argv)
    args.argv = list(argv)
    if not args.device.startswith("cuda") and args.scale == "mini":
        parser.error("the LLaDA2.0-mini shape needs about 100 GB in fp32 + bf16: use --scale tiny off a GPU")
    for name in ("batch", "prompt", "gen", "train_seq", "train_steps"):
        if getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')} must be at least 1")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        print(f"gpu_check: --device {args.device} but torch sees no CUDA device (use --device cpu --scale tiny "
              "for the CPU path)", file=sys.stderr)
        return 2
    check = Check(args=args, device=args.device, dtype=torch.bfloat16)
    run_sections(check, args.only or list(SECTIONS))
    print(table(check))
    verdicts = {row["verdict"] for row in check.results.values()}
    print(json.dumps(report(check), default=str))
    return 1 if verdicts & {FAIL, ERROR} else 0


if __name__ == "__main__":
    sys.exit(main())
