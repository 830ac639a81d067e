"""Block decoding: one frame (`frame.generate`) and per-block policies registered by name.

    policy = build_policy("spd", threshold=0.5)            # knobs validated by the policy itself
    result = generate(model, prompt_ids, policy, gen_length=256, block_length=32)
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from dmax_core.decoding import policies as _policies  # noqa: F401  (registers every policy)
from dmax_core.decoding.frame import DecodeResult, ForwardInfo, StepRecord, generate, generate_batch
from dmax_core.decoding.policies.spd import SPDPolicy
from dmax_core.decoding.policies.threshold import ThresholdPolicy
from dmax_core.decoding.policy import POLICIES, SWEPT_KNOB, BlockPolicy, PolicyStep, TokenEmbedder


def build_policy(name: str, threshold: float, knobs: Mapping[str, Any] | None = None) -> BlockPolicy:
    """The registered policy `name` at `threshold` with its other knobs (`ValueError` names a bad one)."""
    return POLICIES.build(name, {SWEPT_KNOB: threshold, **(knobs or {})})


__all__ = [
    "POLICIES",
    "SWEPT_KNOB",
    "BlockPolicy",
    "DecodeResult",
    "ForwardInfo",
    "PolicyStep",
    "SPDPolicy",
    "StepRecord",
    "ThresholdPolicy",
    "TokenEmbedder",
    "build_policy",
    "generate",
    "generate_batch",
]
