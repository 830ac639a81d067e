"""Expected GPU memory per process for OPUT training of a real-size model under FSDP, from a dry run.

    python benchmarks/train_memory.py                                   # LLaDA2.0-mini, 1 / 2 / 8 GPUs
    python benchmarks/train_memory.py --config DIR/config.json --seq 2048 --gpus 1 2 4 8

Dry run: the model is built on the meta device (no memory, no weights) from the real config.json
(`tests/assets/llada2-mini/config.json` by default) and sharded with FSDP2 `fully_shard`, one unit per
decoder layer plus the root, exactly as a training launch would wrap it (here over a one-process gloo
group: the wrap plan does not depend on the world size, the shard sizes are 1/N of each unit). From the
real parameter counts it prints, per GPU count N:

  params     fp32 master weights, sharded: 4 P / N
  grads      fp32 gradients, sharded: 4 P / N
  adam       AdamW first and second moments, fp32, sharded: 8 P / N
  gathered   bf16 full weights of the two largest units alive at once (the one computing and the one
             prefetched): 2 x 2 U, U = the largest unit's parameter count
  acts       activations at micro-batch 1 with activation checkpointing: the OPUT layout holds 2 S positions
             ([noisy; clean], spec §1.2), each layer boundary keeps a bf16 hidden state (2 S x H x 2 bytes x L),
             one layer is recomputed at a time (about 34 x 2 S x H bytes, the Korthikanti et al. estimate for
             a transformer layer with fused attention), plus fp32 logits and their gradient on the S noisy
             positions (2 x S x V x 4 bytes)

Estimates, not measurements: allocator fragmentation, communication buffers and the CUDA context (about
1-2 GB) come on top; MoE routing buffers are small at micro-batch 1. `--offload` moves params, grads and
AdamW state to the CPU (FSDP CPU offload). Last stdout line: one JSON document.
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

import torch
import torch.distributed as dist
from torch.distributed.device_mesh import init_device_mesh
from torch.distributed.fsdp import fully_shard

from dmax_core.models import LLaDA2MoeConfig, LLaDA2MoeForDiffusionLM

DEFAULT_CONFIG = Path(__file__).resolve().parent.parent / "tests" / "assets" / "llada2-mini" / "config.json"
GIB = 1024**3


def fsdp_plan(config: LLaDA2MoeConfig) -> dict[str, int]:
    """Shard a meta-device model by decoder layer; return its parameter counts (total, largest unit)."""
    os.environ.setdefault("MASTER_ADDR", "127.0.0.1")
    os.environ.setdefault("MASTER_PORT", "29563")
    dist.init_process_group("gloo", rank=0, world_size=1)
    try:
        with torch.device("meta"):
            model = LLaDA2MoeForDiffusionLM(config)
        mesh = init_device_mesh("cpu", (1,))
        layers = list(model.model.layers)
        for layer in layers:
            fully_shard(layer, mesh=mesh)
        fully_shard(model, mesh=mesh)
        per_layer = [sum(p.numel() for p in layer.parameters()) for layer in layers]
        total = sum(p.numel() for p in model.parameters())
        assert all(type(p).__name__ == "DTensor" for p in model.parameters()), "a parameter was left unsharded"
    finally:
        dist.destroy_process_group()
    root = total - sum(per_layer)  # embeddings, final norm, lm_head: the root unit
    return {"total": total, "units": len(layers) + 1, "largest_unit": max([*per_layer, root]), "root": root,
            "largest_layer": max(per_layer)}


def memory_per_gpu(plan: dict[str, int], config: LLaDA2MoeConfig, gpus: int, seq: int,
                   offload: bool) -> dict[str, float]:
    total, unit = plan["total"], plan["largest_unit"]
    h, layers, vocab = config.hidden_size, config.num_hidden_layers, config.vocab_size
    positions = 2 * seq
    out = {
        "params": 0.0 if offload else 4 * total / gpus,
        "grads": 0.0 if offload else 4 * total / gpus,
        "adam": 0.0 if offload else 8 * total / gpus,
        "gathered": 2 * 2 * unit,
        "acts": positions * h * 2 * layers + 34 * positions * h + 2 * seq * vocab * 4,
    }
    out["total"] = sum(out.values())
    return {k: v / GIB for k, v in out.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", type=Path, default=DEFAULT_CONFIG)
    parser.add_argument("--seq", type=int, default=2048, help="max_seq_len of the training rows (dFactory: 2048)")
    parser.add_argument("--gpus", type=int, nargs="+", default=[1, 2, 8])
    parser.add_argument("--offload", action="store_true", help="FSDP CPU offload of params, grads, optimizer")
    args = parser.parse_args()
    config = LLaDA2MoeConfig.from_json_file(args.config)
    plan = fsdp_plan(config)
    print(f"{args.config}: {plan['total'] / 1e9:.2f} B parameters in {plan['units']} FSDP units "
          f"(largest: {plan['largest_unit'] / 1e9:.2f} B; largest decoder layer {plan['largest_layer'] / 1e9:.3f} B)")
    print(f"OPUT, micro-batch 1, max_seq_len {args.seq}, bf16 compute, fp32 master + AdamW, activation "
          f"checkpointing{', CPU offload' if args.offload else ''}; GiB per GPU:")
    header = ("GPUs", "params", "grads", "adam", "gathered", "acts", "total")
    print("| " + " | ".join(header) + " |\n|" + "---|" * len(header))
    rows = {}
    for gpus in args.gpus:
        rows[gpus] = memory_per_gpu(plan, config, gpus, args.seq, args.offload)
        print(f"| {gpus} | " + " | ".join(f"{rows[gpus][k]:.1f}" for k in header[1:]) + " |")
    print(json.dumps({"config": str(args.config), "plan": plan, "seq": args.seq, "offload": args.offload,
                      "gib_per_gpu": rows}))


if __name__ == "__main__":
    main()
