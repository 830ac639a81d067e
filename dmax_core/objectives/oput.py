"""On-Policy Uniform Training (spec §2.2): the masks of on-policy rows are filled by the model's own argmax."""

from __future__ import annotations

from typing import ClassVar

from torch import nn

from dmax_core.objectives.base import Objective, ObjectiveBatch, ObjectiveOutput
from dmax_core.objectives.losses import on_policy_rollout, training_loss


class OPUT(Objective):
    """For flagged rows, every MASK of the noisy half is replaced by the current model's argmax from one
    no-grad forward (spec §2.2.3); then the same cross-entropy as SFT on every row. The 50/50 mix comes from
    the duplicated data (`training.duplicate_for_oput`). Writes the DMax checkpoint, `dmax/`."""

    name: ClassVar[str] = "oput"
    checkpoint: ClassVar[str] = "dmax"
    description: ClassVar[str] = "OPUT-trained DMax checkpoints of the `{preset}` preset (dmax train)."

    def loss_terms(self, model: nn.Module, batch: ObjectiveBatch) -> ObjectiveOutput:
        noisy = on_policy_rollout(model, batch.noisy, batch.clean, batch.flags, batch.mask_id, batch.layout,
                                  always_forward=batch.always_forward)
        return ObjectiveOutput({"ce": training_loss(model, noisy, batch.clean, batch.labels, batch.layout)})
