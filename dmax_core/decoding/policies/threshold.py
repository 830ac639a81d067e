"""Threshold decoding, the baseline (spec §3.1): commit every confident mask, never revise."""

from __future__ import annotations

from typing import ClassVar

import torch
from torch import Tensor

from dmax_core.decoding.policy import BlockPolicy, PolicyStep, TokenEmbedder
from dmax_core.kernels.spd_step import greedy_tokens
from dmax_core.registry import check_probability

# §3.1 step 3: the fallback threshold sits 1e-5 below the best candidate so near-ties commit together.
FALLBACK_MARGIN = 1e-5


class ThresholdPolicy(BlockPolicy):
    """The dInfer threshold decoder (§3.1 steps 2-4): commit confident masks, never revise.

    Per forward: candidates are the positions still holding MASK; the effective threshold is
    min(threshold, best candidate p - 1e-5), so every candidate with p >= threshold commits and, if
    none does, the single most confident one (plus near-ties) commits. Committed tokens are final.
    The block is done when it has no MASK left. Next forwards are fed ids.

    NFE note (§7.8): the official loop runs forwards in bursts of up to 4 and counts no-op forwards
    after a block completes; this policy reports the strict count (the block ends at its last commit).
    """

    name: ClassVar[str] = "threshold"

    def __init__(self, threshold: float) -> None:
        self.threshold = check_probability("threshold", threshold)
        self._block_ids: Tensor | None = None
        self._mask_token_id = -1

    def forward_limit(self, block_length: int) -> int:
        """Every forward commits at least one mask (the fallback), so a block takes at most B forwards."""
        return block_length

    def begin_block(self, block_ids: Tensor, active: Tensor, embedder: TokenEmbedder) -> None:
        self._check_block(block_ids, active, embedder.mask_token_id)
        self._mask_token_id = embedder.mask_token_id
        self._block_ids = block_ids.clone()

    def step(self, logits: Tensor) -> PolicyStep:
        if self._block_ids is None:
            raise RuntimeError("ThresholdPolicy.step called outside a block; call begin_block first")
        old = self._block_ids
        tokens, confidence = greedy_tokens(logits, self._mask_token_id)
        candidates = old == self._mask_token_id
        best = confidence.masked_fill(~candidates, -1.0).max()
        effective = torch.clamp(best - FALLBACK_MARGIN, max=self.threshold)  # min(tau, best - 1e-5)
        commit = candidates & (confidence >= effective)
        new = torch.where(commit, tokens, old)
        done = not bool((new == self._mask_token_id).any())
        self._block_ids = None if done else new
        return PolicyStep(
            block_ids=new,
            changed=commit,  # a MASK always becomes a real token (MASK is excluded from the argmax)
            confidence=confidence,
            done=done,
            stop_reason="all_decoded" if done else None,
            next_inputs_embeds=None,
        )
