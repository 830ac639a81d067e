"""Soft Parallel Decoding (spec §4): decode confident runs in parallel, revise, feed soft embeddings."""

from __future__ import annotations

from typing import ClassVar

import torch
from torch import Tensor

from dmax_core.decoding.policy import BlockPolicy, PolicyStep, TokenEmbedder
from dmax_core.kernels.spd_step import spd_step
from dmax_core.registry import check_optional_int, check_probability


class SPDPolicy(BlockPolicy):
    """Soft Parallel Decoding inside one block (§4.1-4.3), greedy, with self-revision.

    State: the active set A (fixed at block start), the block ids x_b and the embedding buffer H.
    Per forward t:
      * S = the left-to-right run of masks with p >= threshold, up to the first mask below it
        (decoded positions neither stop nor count); if empty, the leftmost mask (fallback).
      * U = S plus every previously decoded active position; x_b[U] <- argmax (revision).
      * Stop if (a) every active p >= confidence_stop (0.9, independent of threshold, still-masked
        positions included) or (b) no id changed, or t reaches max_steps (default B, the hard cap).
      * Otherwise H: decoded active positions get `soft_embedding` of (argmax, p) of this forward,
        masks stay E[MASK], the inactive prompt tail stays hard; H is the next forward's input.

    Documented deviations: MASK is excluded from the argmax (module docstring). And if rule (a)
    holds while masks are left (possible only when threshold > confidence_stop, §7.10), the block
    keeps going instead of stopping, so no MASK is ever committed by rule (a). With the default
    max_steps = B the cap can never leave masks behind either, since every forward decodes at least
    one; a smaller max_steps commits the block as it stands (§7.10, masks included).
    """

    name: ClassVar[str] = "spd"

    def __init__(self, threshold: float, confidence_stop: float = 0.9, max_steps: int | None = None) -> None:
        self.threshold = check_probability("threshold", threshold)
        self.confidence_stop = check_probability("confidence_stop", confidence_stop)
        self.max_steps = check_optional_int("max_steps", max_steps, 1)
        self._ids: Tensor | None = None
        self._active: Tensor | None = None
        self._embedder: TokenEmbedder | None = None
        self._buffer: Tensor | None = None
        self._step_index = 0
        self._cap = 0

    def forward_limit(self, block_length: int) -> int:
        """`max_steps` (default B): rule 7 of §4.2 stops the block there whatever the tokens do."""
        return self.max_steps if self.max_steps is not None else block_length

    def begin_block(self, block_ids: Tensor, active: Tensor, embedder: TokenEmbedder) -> None:
        self._check_block(block_ids, active, embedder.mask_token_id)
        self._ids = block_ids.clone()
        self._active = active.clone()
        self._embedder = embedder
        self._buffer = None  # §4.1: H does not exist at the start of the block
        self._step_index = 0
        self._cap = self.max_steps if self.max_steps is not None else block_ids.numel()

    def step(self, logits: Tensor) -> PolicyStep:
        if self._ids is None or self._active is None or self._embedder is None:
            raise RuntimeError("SPDPolicy.step called outside a block; call begin_block first")
        embedder, active, old = self._embedder, self._active, self._ids
        mask_id = embedder.mask_token_id
        self._step_index += 1
        # §4.2 steps 2 and 6 in one go: argmax, confidence, and the soft embedding of every argmax (the
        # fused Triton kernel on CUDA, the PyTorch reference elsewhere; kernels/spd_step.py).
        tokens, confidence, soft = spd_step(logits, mask_id, embedder, embedder.mask_embedding, embedder.table)
        block_length = old.numel()
        index = torch.arange(block_length, device=old.device)

        # §4.2 step 3: S = masks left of the first mask with p < tau; fallback = the leftmost mask.
        masked = (old == mask_id) & active
        first_unsure = torch.where(masked & (confidence < self.threshold), index, block_length).min()
        selected = masked & (index < first_unsure)
        leftmost = torch.where(masked, index, block_length).min()
        selected = selected | (masked & (index == leftmost) & ~selected.any())  # no host sync

        # §4.2 step 4: U = S plus every previously decoded active position (revision).
        update = selected | (active & ~masked)
        new = torch.where(update, tokens, old)
        changed = update & (new != old)
        self._ids = new

        # §4.2 step 5 (after the update) and step 7.
        flags = torch.stack(
            [
                ((confidence >= self.confidence_stop) | ~active).all(),  # rule (a)
                ((new == mask_id) & active).any(),
                changed.any(),
            ]
        ).tolist()  # one host sync per step for the three tests
        high_confidence, masks_left, any_changed = flags
        stop_reason: str | None = None
        if high_confidence and not masks_left:  # deviation: rule (a) never commits masks (§7.10)
            stop_reason = "high_confidence"
        elif not any_changed:  # rule (b)
            stop_reason = "stable_tokens"
        elif self._step_index >= self._cap:
            stop_reason = "max_steps"
        if stop_reason is not None:
            self._ids = self._active = self._embedder = self._buffer = None  # §4.3: H is discarded
            return PolicyStep(new, changed, confidence, True, stop_reason, None)

        # §4.2 step 6: the embedding buffer H for the next forward.
        hard = embedder(new)  # E[x_b]: prompt tail -> its token, masks -> E[MASK]
        mask_embedding = embedder.mask_embedding.to(hard.dtype)
        decoded = active & (new != mask_id)
        if self._buffer is None:
            buffer = hard
        else:
            # A position that left D by changing id is hard-refreshed to E[MASK] (re-masking). With
            # MASK excluded from the argmax this cannot happen; kept so the rule reads as in §4.2.
            buffer = torch.where((changed & ~decoded)[:, None], mask_embedding, self._buffer)
        # For j in D, x_b[j] is this forward's argmax v, so its entry is the soft embedding of (v, p) above.
        buffer = torch.where(decoded[:, None], soft.to(buffer.dtype), buffer)
        self._buffer = buffer
        return PolicyStep(new, changed, confidence, False, None, buffer)
