"""The loss pieces both objectives are built from on the block-diffusion layout (spec §1.3, §2.2).

Both build x = [noisy; clean] with the three-rule mask and score same-position labels on the noisy
half. OPUT additionally replaces, for on-policy rows, every MASK in the noisy half by the model's own
argmax from one no-grad forward (all at once, no threshold, no sampling: spec §7.1-7.2).
"""

from __future__ import annotations

import torch
from torch import nn

from dmax_core.diffusion import TrainingLayout, per_sequence_token_mean_ce


def forward_noisy_half(model: nn.Module, noisy: torch.Tensor, clean: torch.Tensor, layout: TrainingLayout
                       ) -> torch.Tensor:
    """Logits [b, layout.noisy_length, V] of the kept noisy positions (the clean half is context only)."""
    logits = model(input_ids=layout.input_ids(noisy, clean), position_ids=layout.position_ids,
                   attention_mask=layout.attention_mask)
    return logits[:, : layout.noisy_length]


@torch.no_grad()
def on_policy_rollout(
    model: nn.Module,
    noisy: torch.Tensor,
    clean: torch.Tensor,
    flags: torch.Tensor,
    mask_id: int,
    layout: TrainingLayout,
    always_forward: bool = False,
) -> torch.Tensor:
    """Return `noisy` with every MASK of flagged rows replaced by the current model's argmax (spec §2.2.3).

    `always_forward`: run a (discarded) forward even without flagged rows. A sharded (FSDP) model gathers
    its weights in every forward, collectively, so every process must run the same number of forwards.

    Only the positions `layout` keeps are rolled out; with a trimmed layout the others carry no label
    and are read by no kept query, so leaving them masked changes nothing.

    Prompt positions are never MASK, so they are untouched; unflagged rows are returned as they are
    (the official code runs and discards their rollout; skipping it is equivalent). The argmax is
    taken over the full vocabulary, MASK included, as the official code does (spec B.3).
    """
    if not bool(flags.any()):
        if always_forward:
            was_training = model.training
            model.eval()
            try:
                forward_noisy_half(model, noisy[:1], clean[:1], layout)
            finally:
                model.train(was_training)
        return noisy
    was_training = model.training
    model.eval()
    try:
        rows = flags.nonzero().squeeze(1)
        predictions = forward_noisy_half(model, noisy[rows], clean[rows], layout).argmax(dim=-1)
    finally:
        model.train(was_training)
    updated = noisy.clone()
    flagged = updated[rows]  # a copy (advanced indexing): edit it, then write it back
    window = flagged[:, layout.noisy]
    flagged[:, layout.noisy] = torch.where(window == mask_id, predictions, window)
    updated[rows] = flagged
    return updated


def training_loss(
    model: nn.Module,
    noisy: torch.Tensor,
    clean: torch.Tensor,
    labels: torch.Tensor,
    layout: TrainingLayout,
) -> torch.Tensor:
    """Mean over sequences of each sequence's token-mean CE on the noisy half (spec §1.3).

    Every label must lie inside `layout.noisy` (the trainer trims to the labelled block span)."""
    return per_sequence_token_mean_ce(forward_noisy_half(model, noisy, clean, layout), labels[:, layout.noisy])
