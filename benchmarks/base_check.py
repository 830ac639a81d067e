"""Is a base model good enough for the DMax comparison? Pretrain (or reuse) a tiny base, then measure it.

    python benchmarks/base_check.py NAME [--preset P] [key=value ...]
    python benchmarks/base_check.py s3 --preset running_total task.max_steps=3 pretrain.max_seq_len=64 \
        train.max_seq_len=64 pretrain.steps=1600

Runs `stages.pretrain` with the preset (default `tiny`) plus overrides into runs/exp-NAME (resuming or
reusing a finished run is the trainer's job), then decodes the first 100 held-out test problems with
base + threshold at every threshold of the preset's sweep and base + SPD {0.9, 0.5, 0.0}. Prints one
line per cell and a final JSON line (nanochat style) so scripts can read the figures. Setting: batch 1,
fp32, this machine's CPU threads.
"""

from __future__ import annotations

import json
import sys
import time

from dmax_core import stages
from dmax_core.config import load_config, pop_preset_flag
from dmax_core.evaluation.runner import build_policy, cell_metrics, decode_problems
from dmax_core.io import load_bundle

SPD_THRESHOLDS = (0.9, 0.5, 0.0)


def main() -> None:
    if len(sys.argv) < 2:
        raise SystemExit(__doc__)
    name, *args = sys.argv[1:]
    preset, overrides = pop_preset_flag(args)
    cfg = load_config(preset, [f"run_dir=runs/exp-{name}", *overrides])
    cells = [("threshold", t) for t in cfg.evaluate.thresholds] + [("spd", t) for t in SPD_THRESHOLDS]
    started = time.perf_counter()
    if not (cfg.run_dir / "base" / "model.safetensors").is_file():
        stages.pretrain(cfg)
    pretrain_seconds = time.perf_counter() - started
    model, tokenizer = load_bundle(cfg.run_dir / "base")
    problems = stages.task_splits(cfg)["test"][:100]
    results = {"name": name, "preset": preset, "overrides": overrides, "pretrain_seconds": pretrain_seconds,
               "cells": []}
    for decoder, threshold in cells:
        samples = decode_problems(model, tokenizer, problems, build_policy(decoder, threshold),
                                  gen_length=cfg.evaluate.gen_length, block_length=cfg.block_length)
        m = cell_metrics(samples)
        results["cells"].append({"decoder": decoder, "threshold": threshold, **m})
        print(f"{name} base+{decoder}@{threshold:g}: accuracy {m['accuracy']:.3f}, TPF {m['tpf_mean']:.2f}, "
              f"NFE {m['nfe_mean']:.1f} (n={m['n']})", flush=True)
    print(json.dumps(results))


if __name__ == "__main__":
    main()
