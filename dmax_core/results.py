"""What a stage returns: the paths it wrote, its end-of-stage figures and facts, and what to register.

Tracking logs exactly this (it never rebuilds a path or reads a stage's files back), and the CLI and
Prefect print it; so `dmax train train.objective=sft --track` registers the `control/` checkpoint the
stage actually wrote, and the dataset a run lists in MLflow is the one the stage read or wrote.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from dmax_core.evaluation.records import Evaluation


@dataclass(frozen=True)
class ModelCandidate:
    """A checkpoint a stage wrote that belongs in the model registry.

    `output` names it in `StageResult.outputs`; `family` is the registered-model family it joins (the
    training objective: `oput` for DMax checkpoints, `sft` for the plain fine-tuning control); `digest`
    identifies its weights (`files.checksums_digest`), so an evaluation can find its version later."""

    output: str
    family: str
    digest: str


@dataclass(frozen=True)
class DatasetUse:
    """A dataset a stage read or wrote, as MLflow lists it beside the run (a dataset input).

    `digest` is dmax's own fingerprint of the data (the trajectory parquet's SHA-256), so two runs list
    the same dataset exactly when they saw the same bytes; `path` is where it lies (the DVC output);
    `context` says how the stage used it (`training` when read to train on, `output` when written)."""

    name: str
    digest: str
    path: Path
    context: str


@dataclass(frozen=True)
class StageResult:
    """The typed result of one stage run.

    outputs: name -> path the stage wrote (logged as artifacts under that name);
    metrics: end-of-stage figures (per-step curves are logged while the stage runs);
    tags: facts worth keeping with the run and its pipeline (e.g. `dmax.dataset_digest`);
    datasets: the datasets it read or wrote (the trajectories: distill writes them, train reads them);
    checkpoints: output name -> weights digest of each model checkpoint it wrote (pretrain: `base`), each
      an MLflow logged model of the run; the candidate is always one (`model_checkpoints`);
    candidate: a checkpoint to register (train);
    evaluation: the typed grid and headline (evaluate);
    evaluated: registry family -> weights digest of each trained checkpoint the evaluation measured;
    champion_family: the family the champion rule judges (the primary task's method model);
    skipped: why the stage had nothing to do (e.g. pretrain when `model.base_path` is set)."""

    stage: str
    outputs: Mapping[str, Path] = field(default_factory=dict)
    metrics: Mapping[str, float] = field(default_factory=dict)
    tags: Mapping[str, str] = field(default_factory=dict)
    datasets: tuple[DatasetUse, ...] = ()
    checkpoints: Mapping[str, str] = field(default_factory=dict)
    candidate: ModelCandidate | None = None
    evaluation: Evaluation | None = None
    evaluated: Mapping[str, str] = field(default_factory=dict)
    # The registry family whose version the primary headline's method cell measured (the champion rule's
    # candidate; None when the method model is not one a stage trains, e.g. `base`).
    champion_family: str | None = None
    skipped: str | None = None

    def __post_init__(self) -> None:
        for name in self.model_checkpoints():
            if name not in self.outputs:
                raise ValueError(f"stage {self.stage} names checkpoint {name!r}, which is not one of its outputs "
                                 f"({', '.join(self.outputs) or 'none'})")

    def model_checkpoints(self) -> dict[str, str]:
        """Output name -> weights digest of every checkpoint the stage wrote, its registry candidate included
        (a candidate is a checkpoint by definition, so no stage has to name it twice)."""
        out = dict(self.checkpoints)
        if self.candidate is not None:
            out[self.candidate.output] = self.candidate.digest
        return out

    def describe(self) -> str:
        """One line per output for the terminal (`stage: name -> path`)."""
        if self.skipped:
            return f"{self.stage}: skipped ({self.skipped})"
        return "\n".join(f"{self.stage}: {name} -> {path}" for name, path in self.outputs.items())
