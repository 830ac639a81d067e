"""dmax's decoders against diffusers' `LLaDA2Pipeline` on the same model and prompts.

    python benchmarks/hf_pipeline_speed.py [--checkpoint DIR] [--random-init] [--problems 10]
                                           [--gen-lengths 64 256] [--threshold 0.9] [--spd 0.5] [--rounds 2]
                                           [--threads 1]

The trained asset (models/ledger-base, the default) ends its ledger answers after ~35 tokens, so
both generation lengths decode the same blocks; `--random-init` re-draws its weights (seed 0) so that no
EOS comes early and every prompt decodes all `G` positions, which shows how the pipeline's cost grows
with the window it recomputes. On random weights the two threshold decoders also part in tokens: with every
confidence near 1/vocab, no position passes the threshold and near-ties are common, and there dmax commits
the best position and every one within 1e-5 of it (§3.1), the pipeline exactly one. The script reports the
share of equal prompts either way.

Each prompt (ledger test problems, through the checkpoint's chat template) is decoded alone (batch 1) by
  * dmax threshold: `ThresholdPolicy(--threshold)` in dmax's frame (KV cache, prefill);
  * dmax SPD: `SPDPolicy(--spd)` in the same frame (the DMax decoder);
  * diffusers threshold: `LLaDA2Pipeline` over `LLaDA2PipelineModel` in its threshold mode (greedy,
    `minimal_topk=1`, no editing, `num_inference_steps` = block length), which commits what dmax's
    threshold decoder commits without a KV cache (each forward recomputes the window).
The script checks that the two threshold decoders give the same tokens, and prints per setting the
forwards (NFE) per prompt, tokens per forward and tokens per second (tokens: generated ids that are not
EOS, up to the end of the block holding the first EOS, the §5.4 count), and the pipeline's time relative
to dmax's threshold decoder. Rounds alternate the order of the three; medians over rounds. Run it alone:
another CPU-heavy job distorts every timing.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import torch

from dmax_core.bundle import load_bundle
from dmax_core.config import load_config
from dmax_core.decoding import SPDPolicy, ThresholdPolicy, generate
from dmax_core.env import environment_info, package_version
from dmax_core.integrations.diffusers import pipeline_for
from dmax_core.stages.common import task_of
from dmax_core.tokenizer import encode, render_prompt

ASSET = Path(__file__).resolve().parents[1] / "models" / "ledger-base"


def block_tokens(ids: list[int], eos: int, mask: int, block: int, prompt_length: int) -> int:
    """Non-EOS ids of the generated blocks up to the block holding the first EOS (§5.4)."""
    for i, token in enumerate(ids):
        if token == eos:
            end = ((prompt_length + i) // block + 1) * block - prompt_length
            return sum(t not in (eos, mask) for t in ids[:end])
    return sum(t not in (eos, mask) for t in ids)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", type=Path, default=ASSET)
    parser.add_argument("--random-init", action="store_true", help="fresh random weights (seed 0): no early EOS")
    parser.add_argument("--problems", type=int, default=10)
    parser.add_argument("--gen-lengths", type=int, nargs="+", default=[64, 256])
    parser.add_argument("--threshold", type=float, default=0.9)
    parser.add_argument("--spd", type=float, default=0.5)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    model, tokenizer = load_bundle(args.checkpoint, dtype=torch.float32)
    block = model.config.block_length
    if block is None:
        raise SystemExit(f"{args.checkpoint} does not record its block length (config.json block_length)")
    if args.random_init:
        model.init_weights(seed=0)
    pipe = pipeline_for(model, tokenizer)  # the same weights in both decoders
    forwards = [0]
    pipe.model.register_forward_hook(lambda *_: forwards.__setitem__(0, forwards[0] + 1))
    eos, mask = model.eos_token_id, model.mask_token_id
    problems = task_of(load_config("tiny")).splits()["test"][: args.problems]
    prompts = [torch.tensor(encode(tokenizer, render_prompt(tokenizer, p.question))) for p in problems]

    def dmax(policy_of):
        def run(prompt: torch.Tensor, gen_length: int) -> tuple[list[int], int]:
            out = generate(model, prompt, policy_of(), gen_length=gen_length, block_length=block, record_trace=False)
            return out.raw_ids[len(prompt) : len(prompt) + gen_length].tolist(), out.nfe
        return run

    def diffusers(prompt: torch.Tensor, gen_length: int) -> tuple[list[int], int]:
        forwards[0] = 0
        out = pipe(input_ids=prompt[None], gen_length=gen_length, threshold=args.threshold, editing_threshold=None,
                   sampling_method="greedy", minimal_topk=1, num_inference_steps=block, output_type="seq")
        return out.sequences[0].tolist(), forwards[0]

    decoders = {"dmax threshold": dmax(lambda: ThresholdPolicy(args.threshold)),
                "dmax spd": dmax(lambda: SPDPolicy(args.spd)), "diffusers threshold": diffusers}
    rows, summary = [], {}
    with torch.inference_mode():
        for gen_length in args.gen_lengths:
            seconds: dict[str, list[float]] = {name: [] for name in decoders}
            results: dict[str, list[tuple[list[int], int]]] = {}
            names = list(decoders)
            for round_index in range(args.rounds):
                for name in names if round_index % 2 == 0 else names[::-1]:
                    started = time.perf_counter()
                    results[name] = [decoders[name](p, gen_length) for p in prompts]
                    seconds[name].append(time.perf_counter() - started)
            def first_eos(ids: list[int]) -> list[int]:
                return ids[: ids.index(eos) + 1] if eos in ids else ids
            same = sum(first_eos(a) == first_eos(b) for (a, _), (b, _) in
                       zip(results["dmax threshold"], results["diffusers threshold"], strict=True))
            base = statistics.median(seconds["dmax threshold"])
            for name in decoders:
                nfe = sum(f for _, f in results[name])
                tokens = sum(block_tokens(ids, eos, mask, block, len(p)) for (ids, _), p in
                             zip(results[name], prompts, strict=True))
                median = statistics.median(seconds[name])
                row = {"gen_length": gen_length, "decoder": name, "nfe_per_prompt": round(nfe / len(prompts), 2),
                       "tpf": round(tokens / nfe, 2), "tps": round(tokens / median, 1),
                       "seconds": round(median, 3), "time_vs_dmax_threshold": round(median / base, 2)}
                rows.append(row)
                print(f"G={gen_length:4d} {name:>20}: NFE/prompt {row['nfe_per_prompt']:6.2f}  TPF {row['tpf']:5.2f}  "
                      f"TPS {row['tps']:8.1f}  {median:7.3f} s  x{row['time_vs_dmax_threshold']:.2f}", flush=True)
            summary[str(gen_length)] = {"threshold_tokens_equal": f"{same}/{len(prompts)}"}
            print(f"G={gen_length:4d} dmax threshold and diffusers threshold tokens equal on {same}/{len(prompts)} "
                  "prompts", flush=True)
    env = environment_info()
    print(json.dumps({
        "setting": {"checkpoint": str(args.checkpoint), "random_init": args.random_init,
                    "problems": args.problems, "batch_size": 1,
                    "block_length": block, "threshold": args.threshold, "spd_threshold": args.spd, "dtype": "float32",
                    "torch_threads": args.threads, "rounds": args.rounds, "device": env.get("device"),
                    "torch": env.get("torch"), "diffusers": package_version("diffusers")},
        "rows": rows, "equality": summary,
    }))


if __name__ == "__main__":
    main()
