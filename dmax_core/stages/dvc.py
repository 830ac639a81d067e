"""`dvc.yaml` derived from the stage table: `python -m dmax_core.stages.dvc > dvc.yaml` (`make platform-files`).

Every stage calls the `dmax` CLI on `params.yaml` (the resolved `tiny` preset, DVC's default variables
file, so `${run_dir}` resolves); its deps are what it reads plus the code it runs (its module's import
closure, `code_deps`), its params the config groups it depends on, its outs what it writes. A test
compares the committed file with `dvc_pipeline()`.
"""

from __future__ import annotations

import sys
from typing import Any

import yaml

from dmax_core.stages.table import STAGES

HEADER = """\
# The dmax stages as a DVC pipeline, generated from the stage table (dmax_core/stages/table.py) by
# `make platform-files`; do not edit by hand (a test compares this file with the table).
#   dvc repro                               # the tiny pipeline from params.yaml; a second repro is a no-op
#   dvc exp run -S train.lr=1e-4            # one experiment; `dvc exp show` to compare
#   dvc exp run --queue -S 'train.lr=1e-4,3e-4' && dvc queue start   # a sweep
#   dvc metrics show / dvc params diff / dvc plots show
# `python` must be the project's interpreter: activate .venv (or run through `make dvc-repro`).
# Intermediate training checkpoints (run_dir/checkpoints/) are not DVC outputs: the trainer resumes
# from them only when they belong to the same settings, data and start weights (run fingerprint).
"""


def _run_path(name: str) -> str:
    return "${run_dir}/" + name


def dvc_pipeline() -> dict[str, Any]:
    """The `stages:` mapping of dvc.yaml, one entry per row of the stage table."""
    stages: dict[str, Any] = {}
    for stage in STAGES:
        entry: dict[str, Any] = {
            "cmd": f"python -m dmax_core.cli {stage.name} --preset params.yaml",
            "deps": [*map(_run_path, stage.reads), *stage.code],
            "params": list(stage.param_groups),
            "outs": [_run_path(name) for name in stage.writes],
        }
        if stage.metrics:
            entry["metrics"] = [_run_path(name) for name in stage.metrics]
        if stage.plots:
            entry["plots"] = [{_run_path(name): dict(spec)} for name, spec in stage.plots.items()]
        stages[stage.name] = entry
    return {"stages": stages}


def render() -> str:
    return HEADER + yaml.safe_dump(dvc_pipeline(), sort_keys=False, width=120)


if __name__ == "__main__":
    sys.stdout.write(render())
