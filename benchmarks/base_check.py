"""Is a base model good enough for the DMax comparison? Pretrain (or reuse) a tiny base, then measure it.

    python benchmarks/base_check.py NAME [key=value ...]
    python benchmarks/base_check.py s3 task.max_steps=3 pretrain.max_seq_len=64 train.max_seq_len=64 pretrain.steps=1600

Runs `stages.pretrain` with the tiny preset plus overrides into runs/exp-NAME (resuming or reusing a
finished run is the trainer's job), then decodes the first 100 held-out test problems with base +
threshold {1.0, 0.9, 0.7, 0.5} and base + SPD {0.9, 0.5, 0.0}. Prints one line per cell and a final JSON line
(nanochat style) so scripts can read the figures. Setting: batch 1, fp32, this machine's CPU threads.
"""

from __future__ import annotations

import json
import sys
import time

from dmax_core import stages
from dmax_core.config import load_config
from dmax_core.evaluation.runner import build_policy, cell_metrics, decode_problems
from dmax_core.io import load_bundle

CELLS = [
    ("threshold", 1.0), ("threshold", 0.9), ("threshold", 0.7), ("threshold", 0.5),
    ("spd", 0.9), ("spd", 0.5), ("spd", 0.0),
]


def main() -> None:
    if len(sys.argv) < 2:
        raise SystemExit(__doc__)
    name, *overrides = sys.argv[1:]
    cfg = load_config("tiny", [f"run_dir=runs/exp-{name}", *overrides])
    started = time.perf_counter()
    if not (cfg.run_dir / "base" / "model.safetensors").is_file():
        stages.pretrain(cfg)
    pretrain_seconds = time.perf_counter() - started
    model, tokenizer = load_bundle(cfg.run_dir / "base")
    problems = stages.task_splits(cfg)["test"][:100]
    results = {"name": name, "overrides": overrides, "pretrain_seconds": pretrain_seconds, "cells": []}
    for decoder, threshold in CELLS:
        samples = decode_problems(model, tokenizer, problems, build_policy(decoder, threshold),
                                  gen_length=cfg.evaluate.gen_length, block_length=cfg.block_length)
        m = cell_metrics(samples)
        results["cells"].append({"decoder": decoder, "threshold": threshold, **m})
        print(f"{name} base+{decoder}@{threshold:g}: accuracy {m['accuracy']:.3f}, TPF {m['tpf_mean']:.2f}, "
              f"NFE {m['nfe_mean']:.1f} (n={m['n']})", flush=True)
    print(json.dumps(results))


if __name__ == "__main__":
    main()
