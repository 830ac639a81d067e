"""Entropy-bounded unmasking (the EB-sampler: Ben-Hamu, Gat, Severo, Nolte, Karrer 2025, "Accelerated Sampling
from Masked Diffusion Models via Entropy Bounded Unmasking", arXiv 2505.24857, §3, Eq. for the set U).

Per forward, every mask's predictive distribution has an entropy H (nats, over the vocabulary without MASK,
renormalised); the masks are ordered by increasing entropy (the paper's default error proxy) and the largest
prefix U with

    sum_{l in U} H_l  -  max_{l in U} H_l  <=  gamma

commits (so at least one does: a single mask satisfies it for any gamma >= 0). The committed token is the
argmax. The block is done when no mask is left; committed tokens are final; next forwards are fed ids.

The swept knob. dmax's evaluation sweeps one knob on [0, 1] for every decoder, 1 the most conservative
(`dmax_core.decoding.policy`): here threshold = exp(-gamma), so gamma = -ln(threshold) nats: threshold 1 is
gamma = 0 (one token per forward, plus masks of zero entropy), 0 is gamma = infinity (the whole block at
once), and every gamma is reachable.

Deviations: greedy argmax instead of a sample from the distribution (every dmax evaluation decodes greedily);
MASK is excluded from the argmax and from the entropy, as the paper's samplers exclude it. Ties in entropy are
broken by position (stable sort).
"""

from __future__ import annotations

import math
from typing import ClassVar

import torch
from torch import Tensor

from dmax_core.decoding.policies.ranked import RankedCommitPolicy
from dmax_core.registry import check_probability


def entropy_without_mask(logits: Tensor, mask_token_id: int) -> Tensor:
    """Entropy (nats, fp32) of each row's softmax over the vocabulary with the MASK column removed."""
    logits = logits.float().clone()
    logits[:, mask_token_id] = -torch.inf
    log_probs = torch.log_softmax(logits, dim=-1)
    return -(log_probs.exp() * log_probs.nan_to_num(neginf=0.0)).sum(dim=-1)


def entropy_bound_count(sorted_entropy: Tensor, gamma: float) -> int:
    """|U| for entropies in increasing order: the largest prefix with sum(H) - max(H) <= gamma (at least 1)."""
    spent = torch.cumsum(sorted_entropy.double(), dim=0) - torch.cummax(sorted_entropy.double(), dim=0).values
    return max(1, int((spent <= gamma).sum()))


class EntropyBoundPolicy(RankedCommitPolicy):
    """The EB-sampler's entropy budget per forward (module docstring)."""

    name: ClassVar[str] = "eb"

    def __init__(self, threshold: float) -> None:
        self.threshold = check_probability("threshold", threshold)
        super().__init__()

    @property
    def gamma(self) -> float:
        """The entropy budget in nats, from the swept threshold: gamma = -ln(threshold)."""
        return math.inf if self.threshold == 0.0 else -math.log(self.threshold)

    def choose(self, logits: Tensor, confidence: Tensor) -> Tensor:
        order = torch.sort(entropy_without_mask(logits, self._mask_token_id), stable=True)
        return order.indices[: entropy_bound_count(order.values, self.gamma)]
