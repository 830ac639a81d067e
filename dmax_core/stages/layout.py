"""Where every stage input and output lives under `run_dir`: the only place these paths are spelled.

The stage table declares what each stage reads and writes by these names, DVC's `dvc.yaml` is derived
from them, and the stage functions resolve them with `RunLayout`, so the three can never disagree.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from dmax_core.config import DmaxConfig, model_names
from dmax_core.objectives import checkpoint_names, starting_models

# Names relative to run_dir (directories, or files inside them).
BASE = "base"
TRAJECTORIES = "trajectories"
TRAJECTORY_SHARDS = "trajectory-shards"
DMAX = "dmax"
CONTROL = "control"
EVAL = "eval"
EVAL_CELLS = "eval-cells"  # finished cells of an evaluation in progress (stages/eval_cache.py), not a DVC out
METRICS_FILE, SAMPLES_FILE, TRACES_FILE = "metrics.json", "samples.jsonl", "traces.json"
METRICS = f"{EVAL}/{METRICS_FILE}"
SAMPLES = f"{EVAL}/{SAMPLES_FILE}"
TRACES = f"{EVAL}/{TRACES_FILE}"
REPORT = "report"
REPORT_MARKDOWN = f"{REPORT}/report.md"
TRADEOFF_PLOT = f"{REPORT}/tradeoff.png"
TRADEOFF_DATA = f"{REPORT}/tradeoff.json"
TASK_PLOTS = f"{REPORT}/tasks"  # tradeoff-<task>.png of every evaluated task (TRADEOFF_PLOT: the primary's)
CHECKPOINTS = "checkpoints"

# The checkpoint directory of each model name the config accepts (`config.model_names`): `base/`, and for
# every registered training objective the directory named after the checkpoint it writes (`dmax/`, ...).
MODEL_DIRS = {name: name for name in model_names()}
assert MODEL_DIRS[BASE] == BASE and MODEL_DIRS[DMAX] == DMAX and MODEL_DIRS[CONTROL] == CONTROL
# The registry family (training objective) of each model `train` writes.
TRAINED_MODELS = checkpoint_names()
# The model each objective's `train` run starts from: `base`, or the checkpoint another objective writes
# (`mmd` post-trains `dmax`). Each must be a model this layout knows.
STARTING_MODELS = starting_models()
assert set(STARTING_MODELS.values()) <= set(MODEL_DIRS), STARTING_MODELS


@dataclass(frozen=True)
class RunLayout:
    """Resolves the names above for one config. `base` is `model.base_path` when the config sets one
    (a downloaded LLaDA2.0-mini is read in place, never copied into the run)."""

    run_dir: Path
    base_path: Path | None = None

    @classmethod
    def of(cls, cfg: DmaxConfig) -> RunLayout:
        return cls(Path(cfg.run_dir), Path(cfg.model.base_path) if cfg.model.base_path else None)

    def path(self, name: str) -> Path:
        if name == BASE and self.base_path is not None:
            return self.base_path
        return self.run_dir / name

    def model(self, name: str, overrides: Mapping[str, Path] | None = None) -> Path:
        """The checkpoint directory of `base`, `dmax` or `control` (`overrides`: `evaluate.checkpoints`)."""
        if overrides and name in overrides:
            return Path(overrides[name])
        return self.path(MODEL_DIRS[name])

    @staticmethod
    def trained_model(objective: str) -> str:
        """The model `train` writes: OPUT -> `dmax`, the plain-SFT control -> `control` (never over dmax)."""
        return TRAINED_MODELS[objective]

    @staticmethod
    def starting_model(objective: str) -> str:
        """The model `train` starts from: `base` for OPUT and the control, `dmax` for MMD post-training."""
        return STARTING_MODELS[objective]

    @staticmethod
    def family(model: str) -> str | None:
        """The registry family of a model name (None for `base`, which no stage trains here)."""
        return next((family for family, name in TRAINED_MODELS.items() if name == model), None)

    def trajectory_shard(self, shard: int, shards: int) -> Path:
        """One shard of a sharded distillation (`distill.shards`), before the merge into `trajectories/`."""
        return self.run_dir / TRAJECTORY_SHARDS / f"shard-{shard:03d}-of-{shards:03d}"

    def checkpoints(self, key: str) -> Path:
        """Resumable training checkpoints of one training run (`pretrain`, `train-oput`, ...)."""
        return self.run_dir / CHECKPOINTS / key
