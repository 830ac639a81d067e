"""What a stage returns: the paths it wrote, its end-of-stage figures and facts, and what to register.

Tracking logs exactly this (it never rebuilds a path or reads a stage's files back), and the CLI and
Prefect print it; so `dmax train train.objective=sft --track` registers the `control/` checkpoint the
stage actually wrote.
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
class StageResult:
    """The typed result of one stage run.

    outputs: name -> path the stage wrote (logged as artifacts under that name);
    metrics: end-of-stage figures (per-step curves are logged while the stage runs);
    tags: facts worth keeping with the run and its pipeline (e.g. `dmax.dataset_digest`);
    candidate: a checkpoint to register (train);
    evaluation: the typed grid and headline (evaluate);
    evaluated: registry family -> weights digest of each trained checkpoint the evaluation measured;
    champion_family: the family the champion rule judges (the primary task's method model);
    skipped: why the stage had nothing to do (e.g. pretrain when `model.base_path` is set)."""

    stage: str
    outputs: Mapping[str, Path] = field(default_factory=dict)
    metrics: Mapping[str, float] = field(default_factory=dict)
    tags: Mapping[str, str] = field(default_factory=dict)
    candidate: ModelCandidate | None = None
    evaluation: Evaluation | None = None
    evaluated: Mapping[str, str] = field(default_factory=dict)
    # The registry family whose version the primary headline's method cell measured (the champion rule's
    # candidate; None when the method model is not one a stage trains, e.g. `base`).
    champion_family: str | None = None
    skipped: str | None = None

    def describe(self) -> str:
        """One line per output for the terminal (`stage: name -> path`)."""
        if self.skipped:
            return f"{self.stage}: skipped ({self.skipped})"
        return "\n".join(f"{self.stage}: {name} -> {path}" for name, path in self.outputs.items())
