"""Which model of which run a checkpoint is, and what that run measured: the records an export's model card
and `generation_config.json` are written from.

A run directory keeps its measurements in `eval/metrics.json` (stage `evaluate`, `evaluation.records`): the
grid cells, each task's headline (which cell the experiment chose for each arm) and the setting (block and
generation length, the decoding knobs, batch size, dtype, device). A checkpoint is one model of that grid,
by name (`base`, `dmax`, `control`: the checkpoint directories of `stages.layout`). Nothing here measures,
rounds or guesses: a checkpoint whose run has no records has none.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from dmax_core.evaluation.records import Cell, Evaluation
from dmax_core.stages.layout import BASE, METRICS, MODEL_DIRS, RunLayout

# Checkpoint directory name -> the model name its cells carry (the inverse of the layout's MODEL_DIRS).
MODEL_OF_DIRECTORY = {directory: name for name, directory in MODEL_DIRS.items()}


@dataclass(frozen=True)
class ChosenCell:
    """The cell an experiment's arm settled on for this model: its decoder and threshold are the ones the
    run used it with (`why`: the headline's own account of the choice)."""

    task: str | None
    cell: Cell
    why: str


@dataclass(frozen=True)
class RunRecords:
    """A run's evaluation (None: no records found), where it was read, and the checkpoint's model name."""

    evaluation: Evaluation | None = None
    location: str | None = None
    model: str | None = None

    @property
    def settings(self) -> Mapping[str, Any]:
        return {} if self.evaluation is None else self.evaluation.settings

    def cells(self) -> list[Cell]:
        """Every measured cell of this checkpoint's model, in the order the run measured them."""
        if self.evaluation is None or self.model is None:
            return []
        return [cell for cell in self.evaluation.cells if cell.model == self.model]

    def chosen(self) -> ChosenCell | None:
        """The first headline arm (the primary task's headline first; method, then baseline) whose cell is
        this model's; None when no headline names one (an invalid headline names no cell)."""
        if self.evaluation is None or self.model is None:
            return None
        primary = self.settings.get("primary_task")
        headlines = sorted(self.evaluation.headlines.items(), key=lambda item: item[0] != primary) or [
            (self.evaluation.headline.task, self.evaluation.headline)]
        for task, headline in headlines:
            for cell in (headline.method, headline.baseline):
                if cell is not None and cell.model == self.model:
                    return ChosenCell(task, cell, headline.reason)
        return None


def model_name_of(checkpoint: Path, provenance: Mapping[str, Any]) -> str | None:
    """The model a checkpoint is in its run's grid: its directory's name when that is a checkpoint directory
    of the layout (`runs/<run>/dmax` is `dmax`; a registered version downloads under its output name), else
    what its provenance says wrote it (`pretrain` writes `base`, `train` the objective's model)."""
    if checkpoint.name in MODEL_OF_DIRECTORY:
        return MODEL_OF_DIRECTORY[checkpoint.name]
    stage = provenance.get("stage")
    if stage == "pretrain":
        return BASE
    if stage == "train":
        try:
            return RunLayout.trained_model(str(provenance.get("objective")))
        except KeyError:
            return None
    return None


def local_records(checkpoint: Path, run_dir: Path | None, model: str | None) -> RunRecords:
    """The records of a checkpoint on disk. `run_dir` given: its `eval/metrics.json` must exist (a missing
    one is a `DataError`). Not given: the run a checkpoint directory of the layout lies in (its parent), if
    that run was evaluated; any other directory belongs to no run we could know of."""
    if run_dir is None:
        if checkpoint.resolve().name not in MODEL_OF_DIRECTORY:
            return RunRecords(model=model)
        metrics = checkpoint.resolve().parent / METRICS
        if not metrics.is_file():
            return RunRecords(model=model)
    else:
        metrics = Path(run_dir) / METRICS
    return RunRecords(Evaluation.load(metrics), str(metrics), model)
