"""Is a base model good enough for the DMax comparison? Pretrain (or reuse) a tiny base, then measure it.

    python benchmarks/base_check.py NAME [--preset P] [key=value ...]
    python benchmarks/base_check.py s3 --preset running_total task.max_steps=3 pretrain.max_seq_len=64 \
        train.max_seq_len=64 pretrain.steps=1600

Runs the `pretrain` stage with the preset (default `tiny`) plus overrides into runs/exp-NAME (resuming or
reusing a finished run is the trainer's job), then decodes the first 100 held-out test problems with
base + threshold at every threshold of the preset's sweep and base + SPD {0.9, 0.5, 0.0}. Prints one
line per cell and a final JSON line (nanochat style) so scripts can read the figures. Setting: batch 1,
fp32, this machine's CPU threads.
"""

from __future__ import annotations

import json
import sys
import time

from dmax_core.bundle import load_bundle
from dmax_core.config import load_config, pop_preset_flag
from dmax_core.decoding import build_policy
from dmax_core.evaluation.records import Cell
from dmax_core.evaluation.runner import decode_problems
from dmax_core.stages.common import task_of
from dmax_core.stages.layout import RunLayout
from dmax_core.stages.runner import run_stage

SPD_THRESHOLDS = (0.9, 0.5, 0.0)


def main() -> None:
    if len(sys.argv) < 2:
        raise SystemExit(__doc__)
    name, *args = sys.argv[1:]
    preset, overrides = pop_preset_flag(args)
    cfg = load_config(preset, [f"run_dir=runs/exp-{name}", *overrides])
    cells = [("threshold", t) for t in cfg.evaluate.thresholds] + [("spd", t) for t in SPD_THRESHOLDS]
    started = time.perf_counter()
    base = RunLayout.of(cfg).model("base")
    if not (base / "model.safetensors").is_file():  # a finished base is reused; the trainer resumes a partial one
        run_stage("pretrain", cfg)
    pretrain_seconds = time.perf_counter() - started
    model, tokenizer = load_bundle(base)
    task = task_of(cfg)
    problems = task.splits()["test"][:100]
    results = {"name": name, "preset": preset, "overrides": overrides, "pretrain_seconds": pretrain_seconds,
               "cells": []}
    for decoder, threshold in cells:
        policy = build_policy(decoder, threshold, cfg.decoding.knobs(decoder))
        run = decode_problems(model, tokenizer, task, problems, policy, gen_length=cfg.evaluate.gen_length,
                              block_length=cfg.block_length, batch_size=cfg.evaluate.batch_size)
        cell = Cell.from_samples("base", decoder, threshold, "test", run.samples, batch_size=run.batch_size,
                                 throughput=run.throughput)
        results["cells"].append(cell.to_json())
        print(f"{name} {cell.label}: accuracy {cell.accuracy:.3f}, TPF {cell.tpf:.2f}, NFE {cell.nfe:.1f} "
              f"(n={cell.n})", flush=True)
    print(json.dumps(results))


if __name__ == "__main__":
    main()
