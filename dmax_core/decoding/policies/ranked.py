"""The shared body of policies that commit a ranked prefix of the block's masks per forward and never revise
(`factor`, `eb`): each says only how many of its masks, in which order, commit (`choose`)."""

from __future__ import annotations

from abc import abstractmethod

import torch
from torch import Tensor

from dmax_core.decoding.policy import BlockPolicy, PolicyStep, TokenEmbedder
from dmax_core.kernels.spd_step import greedy_tokens


class RankedCommitPolicy(BlockPolicy):
    """Per forward: x0 = argmax (MASK excluded) at every position; the masks `choose` picks take x0; committed
    tokens are final; the block is done when no mask is left; next forwards are fed ids. Not registered (it has
    no `name`): a subclass that sets one is."""

    def __init__(self) -> None:
        self._ids: Tensor | None = None
        self._mask_token_id = -1

    @abstractmethod
    def choose(self, logits: Tensor, confidence: Tensor) -> Tensor:
        """Indices (into the masks, in block order) of the masks that commit, at least one.

        logits: [m, V] of the m masks still in the block; confidence: fp32[m], their x0's probability."""

    def forward_limit(self, block_length: int) -> int:
        return block_length  # at least one mask commits at every forward

    def begin_block(self, block_ids: Tensor, active: Tensor, embedder: TokenEmbedder) -> None:
        self._check_block(block_ids, active, embedder.mask_token_id)
        self._mask_token_id = embedder.mask_token_id
        self._ids = block_ids.clone()

    def step(self, logits: Tensor) -> PolicyStep:
        if self._ids is None:
            raise RuntimeError(f"{type(self).__name__}.step called outside a block; call begin_block first")
        old = self._ids
        tokens, confidence = greedy_tokens(logits, self._mask_token_id)
        masked = (old == self._mask_token_id).nonzero().flatten()
        commit = torch.zeros_like(old, dtype=torch.bool)
        commit[masked[self.choose(logits[masked], confidence[masked])]] = True
        new = torch.where(commit, tokens, old)
        done = not bool((new == self._mask_token_id).any())
        self._ids = None if done else new
        return PolicyStep(block_ids=new, changed=commit, confidence=confidence, done=done,
                          stop_reason="all_decoded" if done else None, next_inputs_embeds=None)
