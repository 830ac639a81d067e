"""Token editing (LLaDA2.1's mask-to-token plus token-to-token decoding): commit confident masks, and
replace an already committed token when the model now prefers another one with high confidence.

The rule is the one of diffusers' `BlockRefinementScheduler` (0.42.1, mask mode, greedy; `step` and
`check_block_should_continue`), which diffusers adopted from LLaDA2.1's `generate`:
  * per forward, with x0 = argmax and p its probability at every position of the block:
    - masks: every mask with p > threshold commits; if none does, the most confident mask commits
      (`minimal_topk` = 1, the scheduler's top-1 fallback: exactly one token, ties broken by `torch.topk`);
    - edits: every committed, non-prompt position whose x0 differs from its token and whose p >
      `editing_threshold` takes x0 (in the same forward as the mask commits);
  * the block is not done when its last mask commits: the next forward checks the whole block again
    (a "post" forward), and the block ends after the first post forward that edits nothing, or after
    `max_post_steps` + 1 post forwards.
`tests/test_policies.py` holds this class token for token to diffusers' `LLaDA2Pipeline` in editing mode
on the trained asset.

Deviations: MASK is excluded from the argmax, as in every dmax policy (`dmax_core.decoding.policy`); the
scheduler lets the argmax be MASK, which would re-mask a committed token whose edit "wins". And the frame
keeps decoding the block after an EOS commits (spec §3.1), where the pipeline freezes a row whose first EOS
has no mask before it; the tokens up to that EOS are the same.
"""

from __future__ import annotations

from typing import ClassVar

import torch
from torch import Tensor

from dmax_core.decoding.policy import BlockPolicy, PolicyStep, TokenEmbedder
from dmax_core.kernels.spd_step import greedy_tokens
from dmax_core.registry import check_int, check_probability


class EditingPolicy(BlockPolicy):
    """Mask commits at `threshold` plus edits of committed tokens at `editing_threshold` (module docstring).

    `threshold` is the swept knob, as for threshold decoding (1 = one mask per forward). Next forwards are
    fed ids."""

    name: ClassVar[str] = "editing"

    def __init__(self, threshold: float, editing_threshold: float = 0.5, max_post_steps: int = 16) -> None:
        self.threshold = check_probability("threshold", threshold)
        self.editing_threshold = check_probability("editing_threshold", editing_threshold)
        self.max_post_steps = check_int("max_post_steps", max_post_steps, 0)
        self._ids: Tensor | None = None
        self._active = torch.zeros(0, dtype=torch.bool)
        self._mask_token_id = -1
        self._post_steps = 0

    def forward_limit(self, block_length: int) -> int:
        """One mask at least per forward while masks remain, then at most `max_post_steps` + 1 post forwards."""
        return block_length + self.max_post_steps + 1

    def begin_block(self, block_ids: Tensor, active: Tensor, embedder: TokenEmbedder) -> None:
        self._check_block(block_ids, active, embedder.mask_token_id)
        self._mask_token_id = embedder.mask_token_id
        self._ids, self._active, self._post_steps = block_ids.clone(), active.clone(), 0

    def step(self, logits: Tensor) -> PolicyStep:
        if self._ids is None:
            raise RuntimeError("EditingPolicy.step called outside a block; call begin_block first")
        old = self._ids
        tokens, confidence = greedy_tokens(logits, self._mask_token_id)
        masked = old == self._mask_token_id
        masks_remaining = bool(masked.any())
        if not masks_remaining:
            self._post_steps += 1
        commit = masked & (confidence > self.threshold)
        if masks_remaining and not bool(commit.any()):
            best = torch.topk(confidence.masked_fill(~masked, -torch.inf), k=1).indices
            commit = torch.zeros_like(masked)
            commit[best] = True
        edit = self._active & ~masked & (tokens != old) & (confidence > self.editing_threshold)
        changed = commit | edit
        new = torch.where(changed, tokens, old)
        # `check_block_should_continue`: a forward that started with masks always continues (the last mask's
        # commit is checked by one more forward); a post forward continues only while it edits, up to the cap.
        done = not masks_remaining and (not bool(edit.any()) or self._post_steps > self.max_post_steps)
        reason = None
        if done:
            reason = "no_edit" if not bool(edit.any()) else "max_post_steps"
        self._ids = None if done else new
        return PolicyStep(block_ids=new, changed=changed, confidence=confidence, done=done, stop_reason=reason,
                          next_inputs_embeds=None)
