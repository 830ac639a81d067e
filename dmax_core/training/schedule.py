"""Learning-rate schedule: linear warmup from 0, then cosine decay to `min_lr` (VeOmni, spec §2.3).

A pure function of the step, so resuming needs no scheduler state.
"""

from __future__ import annotations

import math


def learning_rate_at(step: int, total_steps: int, lr: float, min_lr: float, warmup_ratio: float) -> float:
    """LR for optimiser step `step` (0-based) out of `total_steps`."""
    warmup = int(warmup_ratio * total_steps)
    if warmup > 0 and step < warmup:
        return lr * (step + 1) / warmup
    decay_steps = max(1, total_steps - warmup)
    progress = min(1.0, (step - warmup) / decay_steps)
    return min_lr + 0.5 * (lr - min_lr) * (1.0 + math.cos(math.pi * progress))
