"""Training objectives, one registered class per file (`sft`: plain block-diffusion SFT, `oput`: OPUT, spec §2;
`mmd`: DMax-MMD post-training from the OPUT checkpoint).

Every module here is imported, so each `Objective` subclass registers itself by name in `OBJECTIVES`;
adding an objective is one new file with one class (`base.Objective` says what it must provide). The
config validates `train.objective.name` and every knob against this registry.

The shared loss pieces (`forward_noisy_half`, `on_policy_rollout`, `training_loss`) live in
`dmax_core.objectives.losses` and are re-exported here for the callers that import them from this name.
"""

from collections.abc import Mapping
from typing import Any

from dmax_core.objectives.base import OBJECTIVES, Objective, ObjectiveBatch, ObjectiveOutput
from dmax_core.objectives.losses import forward_noisy_half, on_policy_rollout, training_loss
from dmax_core.registry import import_submodules

import_submodules(__name__, __path__)


def build_objective(name: str, knobs: Mapping[str, Any] | None = None) -> Objective:
    """The registered objective `name` with its knobs (`ValueError` names an unknown name or a bad knob)."""
    return OBJECTIVES.build(name, dict(knobs or {}))


def checkpoint_names() -> dict[str, str]:
    """Objective name -> the model name (and run directory) its `train` run writes."""
    return {name: OBJECTIVES.get(name).checkpoint for name in OBJECTIVES.names()}


def starting_models() -> dict[str, str]:
    """Objective name -> the model its `train` run starts from (`base`, or another objective's checkpoint)."""
    return {name: OBJECTIVES.get(name).starts_from for name in OBJECTIVES.names()}


__all__ = [
    "OBJECTIVES",
    "Objective",
    "ObjectiveBatch",
    "ObjectiveOutput",
    "build_objective",
    "checkpoint_names",
    "forward_noisy_half",
    "on_policy_rollout",
    "starting_models",
    "training_loss",
]
