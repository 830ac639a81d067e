"""Does fine-tuning on the trajectories cost one-token accuracy, and is it overfitting?

(docs/results-running-total.md §4.2)

    python benchmarks/finetune_drift.py check RUN_DIR [key=value ...]
        One-token-per-forward (threshold 1.0) accuracy of RUN_DIR/base, and of RUN_DIR/dmax and RUN_DIR/control
        where they exist, on the first 100 distillation prompts (in-sample for the fine-tuned models) and on the
        first 100 test problems.
    python benchmarks/finetune_drift.py reference-trajectories SRC_RUN_DIR DST_RUN_DIR
        Diagnosis only, a deviation from DMax: copy SRC's base and trajectories to DST with every answer
        replaced by its reference chain (fresh digest), so `dmax train --preset tiny run_dir=DST ...`
        fine-tunes on ground truth instead of the base's own answers.

The overrides must be the preset and task overrides the run was made with (e.g. `--preset running_total
task.min_steps=5 task.max_steps=6`; the default preset is `tiny`), so the test split, the scorer and the
generation length match. Prints one line per measurement and a final JSON line.
"""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import pyarrow.parquet as pq

from dmax_core.bundle import load_bundle
from dmax_core.config import load_config, pop_preset_flag
from dmax_core.decoding import build_policy
from dmax_core.evaluation.records import Cell
from dmax_core.evaluation.runner import decode_problems
from dmax_core.files import atomic_directory, atomic_write_json, sha256_file
from dmax_core.stages.common import task_of
from dmax_core.tasks import Problem
from dmax_core.trajectories import TRAJECTORY_FILE

TRAJECTORIES = f"trajectories/{TRAJECTORY_FILE}"


def _require(*paths: Path) -> None:
    """A missing run input is a one-line error, not a pyarrow/safetensors traceback."""
    missing = [str(p) for p in paths if not p.exists()]
    if missing:
        raise SystemExit(f"missing: {', '.join(missing)} (run `dmax pretrain/distill/train` for that run_dir first)")


def check(run_dir: Path, overrides: list[str]) -> None:
    _require(run_dir / TRAJECTORIES, run_dir / "base")
    models = [name for name in ("base", "dmax", "control") if (run_dir / name).is_dir()]
    preset, overrides = pop_preset_flag(overrides)
    cfg = load_config(preset, overrides)
    table = pq.read_table(run_dir / TRAJECTORIES).slice(0, 100).to_pylist()
    # final_answer is read only by the running-total scorer (the integer after ####).
    in_sample = [Problem(r["question"], r["reference_answer"], r["reference_answer"].split()[-1], cfg.task.name)
                 for r in table]
    task = task_of(cfg)
    splits = {"in_sample": in_sample, "test": task.splits()["test"][:100]}
    results: dict[str, float] = {}
    for name in models:
        model, tokenizer = load_bundle(run_dir / name)
        for split, problems in splits.items():
            run = decode_problems(model, tokenizer, task, problems, build_policy("threshold", 1.0),
                                  gen_length=cfg.evaluate.gen_length, block_length=cfg.block_length,
                                  batch_size=cfg.evaluate.batch_size)
            results[f"{name}/{split}"] = Cell.from_samples(name, "threshold", 1.0, split, run.samples).accuracy
            print(f"{name} one-token accuracy on {split}: {results[f'{name}/{split}']:.3f}", flush=True)
    print(json.dumps({"run_dir": str(run_dir), "overrides": overrides, "accuracy": results}))


def reference_trajectories(src: Path, dst: Path) -> None:
    """Build DST in a staging directory, so a failure leaves no half-written run behind."""
    if dst.exists():
        raise SystemExit(f"{dst} exists; choose a new run directory")
    _require(src / TRAJECTORIES, src / "trajectories" / "manifest.json", src / "base")
    table = pq.read_table(src / TRAJECTORIES)
    table = table.set_column(table.column_names.index("answer"), "answer", table.column("reference_answer"))
    manifest = json.loads((src / "trajectories" / "manifest.json").read_text())
    manifest["note"] = "answers replaced by the reference chains (diagnosis, not DMax)"
    with atomic_directory(dst) as staging:
        (staging / "trajectories").mkdir()
        shutil.copytree(src / "base", staging / "base")
        pq.write_table(table, staging / TRAJECTORIES)
        manifest["digest"] = sha256_file(staging / TRAJECTORIES)
        atomic_write_json(staging / "trajectories" / "manifest.json", manifest)
    print(f"wrote {dst}: {table.num_rows} reference trajectories")


def main() -> None:
    if len(sys.argv) >= 3 and sys.argv[1] == "check":
        check(Path(sys.argv[2]), sys.argv[3:])
    elif len(sys.argv) == 4 and sys.argv[1] == "reference-trajectories":
        reference_trajectories(Path(sys.argv[2]), Path(sys.argv[3]))
    else:
        raise SystemExit(__doc__)


if __name__ == "__main__":
    main()
