"""The two training objectives on the block-diffusion layout: plain masked SFT and OPUT (spec §1.3, §2.2).

Both build x = [noisy; clean] with the three-rule mask and score same-position labels on the noisy
half. OPUT additionally replaces, for on-policy rows, every MASK in the noisy half by the model's own
argmax from one no-grad forward (all at once, no threshold, no sampling: spec §7.1-7.2).
"""

from __future__ import annotations

import torch
from torch import nn

from dmax_core.diffusion import per_sequence_token_mean_ce


def forward_noisy_half(
    model: nn.Module, noisy: torch.Tensor, clean: torch.Tensor, position_ids: torch.Tensor, mask: torch.Tensor
) -> torch.Tensor:
    """Logits of the noisy half of [noisy; clean] (the clean half is teacher-forced context only)."""
    seq_len = noisy.shape[1]
    logits = model(input_ids=torch.cat([noisy, clean], dim=1), position_ids=position_ids, attention_mask=mask)
    return logits[:, :seq_len]


@torch.no_grad()
def on_policy_rollout(
    model: nn.Module,
    noisy: torch.Tensor,
    clean: torch.Tensor,
    flags: torch.Tensor,
    mask_id: int,
    position_ids: torch.Tensor,
    mask: torch.Tensor,
) -> torch.Tensor:
    """Return `noisy` with every MASK of flagged rows replaced by the current model's argmax (spec §2.2.3).

    Prompt positions are never MASK, so they are untouched; unflagged rows are returned as they are
    (the official code runs and discards their rollout; skipping it is equivalent). The argmax is
    taken over the full vocabulary, MASK included, as the official code does (spec B.3).
    """
    if not bool(flags.any()):
        return noisy
    was_training = model.training
    model.eval()
    try:
        rows = flags.nonzero().squeeze(1)
        predictions = forward_noisy_half(model, noisy[rows], clean[rows], position_ids, mask).argmax(dim=-1)
    finally:
        model.train(was_training)
    updated = noisy.clone()
    sub = updated[rows]
    updated[rows] = torch.where(sub == mask_id, predictions, sub)
    return updated


def training_loss(
    model: nn.Module,
    noisy: torch.Tensor,
    clean: torch.Tensor,
    labels: torch.Tensor,
    position_ids: torch.Tensor,
    mask: torch.Tensor,
) -> torch.Tensor:
    """Mean over sequences of each sequence's token-mean CE on the noisy half (spec §1.3)."""
    return per_sequence_token_mean_ce(forward_noisy_half(model, noisy, clean, position_ids, mask), labels)
