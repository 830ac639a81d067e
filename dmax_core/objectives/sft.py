"""Plain block-diffusion SFT (spec §1.3): the masked objective of the base model and of the control run."""

from __future__ import annotations

from typing import ClassVar

from torch import nn

from dmax_core.objectives.base import Objective, ObjectiveBatch, ObjectiveOutput
from dmax_core.objectives.losses import training_loss


class SFT(Objective):
    """Mean over sequences of the token-mean cross-entropy on the noisy half, inputs as the trainer masked them.

    Pretraining uses it from random weights; `train` uses it on the duplicated trajectories as the
    self-distillation-only control (the same data and steps as OPUT, no rollout), written to `control/`."""

    name: ClassVar[str] = "sft"
    checkpoint: ClassVar[str] = "control"
    from_scratch: ClassVar[bool] = True
    description: ClassVar[str] = ("Plain block-diffusion fine-tuning controls of the `{preset}` preset "
                                  "(dmax train train.objective=sft).")

    def loss_terms(self, model: nn.Module, batch: ObjectiveBatch) -> ObjectiveOutput:
        return ObjectiveOutput({"ce": training_loss(model, batch.noisy, batch.clean, batch.labels, batch.layout)})
