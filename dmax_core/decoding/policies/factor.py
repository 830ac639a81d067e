"""Factor-based parallel decoding (Fast-dLLM, Wu et al. 2025, arXiv 2505.22618, §3.3; the reference code is
`get_transfer_index_dynamic` in NVlabs/Fast-dLLM's `llada/generate.py`).

Per forward, sort the masks of the block by confidence, c_(1) >= c_(2) >= ... >= c_(m), and commit the
n most confident, n the length of the leading run with

    c_(i) >= 1 - f / (i + 1)        for i = 1..n        (i = 1 always commits)

i.e. (i + 1)(1 - c_(i)) <= f: the more tokens go together, the more confident each must be. The block is
done when no mask is left; committed tokens are final; next forwards are fed ids.

The swept knob. dmax's evaluation sweeps one knob on [0, 1] for every decoder, 1 being the most
conservative (`dmax_core.decoding.policy`); here it is the confidence the *second* token needs,
threshold = 1 - f / 2, so f = 2 (1 - threshold): threshold 1 commits one token per forward (f = 0), 0.5 is
the reference's default f = 1, 0 is f = 2. (Factors above 2 are not reachable; at f = 2 the second
token already commits at any confidence above 1/3.)

Deviations: MASK is excluded from the argmax (as in every dmax policy). And the reference commits every mask
when only the last one fails its bound (its `top_i == len(threshs) - 1` branch); this class commits the
leading run the rule defines. Ties in confidence are broken by position (stable sort), where the reference
uses `torch.topk`'s order.
"""

from __future__ import annotations

from typing import ClassVar

import torch
from torch import Tensor

from dmax_core.decoding.policies.ranked import RankedCommitPolicy
from dmax_core.registry import check_probability


def factor_commit_count(sorted_confidence: Tensor, factor: float) -> int:
    """n for confidences sorted in decreasing order: the leading run with c_(i) >= 1 - factor / (i + 1)."""
    ranks = torch.arange(1, sorted_confidence.numel() + 1, dtype=torch.float64, device=sorted_confidence.device)
    bounds = 1.0 - factor / (ranks + 1.0)
    bounds[0] = -1.0  # the most confident mask always commits
    fails = (sorted_confidence.double() < bounds).nonzero()
    return int(fails[0]) if len(fails) else int(sorted_confidence.numel())


class FactorPolicy(RankedCommitPolicy):
    """Fast-dLLM's factor rule (module docstring): commit the n most confident masks, (i+1)(1-c_(i)) <= f."""

    name: ClassVar[str] = "factor"

    def __init__(self, threshold: float) -> None:
        self.threshold = check_probability("threshold", threshold)
        super().__init__()

    @property
    def factor(self) -> float:
        """Fast-dLLM's f, from the swept threshold: f = 2 (1 - threshold)."""
        return 2.0 * (1.0 - self.threshold)

    def choose(self, logits: Tensor, confidence: Tensor) -> Tensor:
        order = torch.sort(confidence, descending=True, stable=True)
        return order.indices[: factor_commit_count(order.values, self.factor)]
