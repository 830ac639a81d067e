"""Accuracy and speed figures of an evaluation run (spec §5.4).

Per sample: tokens (generated non-EOS ids), NFE (model forwards, prefill counted as 1), wall-clock
seconds of the `generate` call, and whether the answer was correct. `aggregate` turns a list of
them into the reported numbers. As in the paper, reported TPF and TPS are means of per-sample
ratios; the pooled ratios (total tokens / total NFE or seconds) are given beside them because they
answer a different question ("throughput of the whole run") and must not be confused with them.

This module only does arithmetic on counts it is given. It must not decode, time or score
anything itself, and it must not re-count tokens (the frame's `DecodeResult` is the one count).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class SampleMetrics:
    """Counts of one decoded sample (§5.4)."""

    tokens: int
    nfe: int
    seconds: float
    correct: bool

    def __post_init__(self) -> None:
        if self.tokens < 0:
            raise ValueError(f"tokens must be >= 0, got {self.tokens}")
        if self.nfe < 1:
            raise ValueError(f"nfe must be >= 1 (every decode runs at least one forward), got {self.nfe}")
        if not self.seconds > 0:
            raise ValueError(f"seconds must be > 0, got {self.seconds}")

    @classmethod
    def from_result(cls, result: Any, correct: bool) -> SampleMetrics:
        """From a `DecodeResult` (uses its `tokens`, `nfe`, `seconds`)."""
        return cls(
            tokens=int(result.tokens), nfe=int(result.nfe), seconds=float(result.seconds), correct=correct
        )

    @property
    def tokens_per_forward(self) -> float:
        return self.tokens / self.nfe

    @property
    def tokens_per_second(self) -> float:
        return self.tokens / self.seconds


def aggregate(samples: Sequence[SampleMetrics]) -> dict[str, float | int]:
    """The reported figures of a run.

    Returns a dict with:
        n: number of samples;
        accuracy: fraction correct;
        tpf_mean: mean of per-sample tokens / NFE (the paper's TPF, §5.4);
        tps_mean: mean of per-sample tokens / seconds (the paper's TPS, §5.4);
        tps_total: total tokens / total seconds (pooled throughput);
        tokens_per_forward_total: total tokens / total NFE (pooled);
        nfe_mean, tokens_mean: plain means.

    Raises:
        ValueError: on an empty list (a mean over nothing is not a number to report).
    """
    if len(samples) == 0:
        raise ValueError("aggregate needs at least one sample")
    n = len(samples)
    total_tokens = sum(s.tokens for s in samples)
    total_nfe = sum(s.nfe for s in samples)
    total_seconds = sum(s.seconds for s in samples)
    return {
        "n": n,
        "accuracy": sum(1 for s in samples if s.correct) / n,
        "tpf_mean": sum(s.tokens_per_forward for s in samples) / n,
        "tps_mean": sum(s.tokens_per_second for s in samples) / n,
        "tps_total": total_tokens / total_seconds,
        "tokens_per_forward_total": total_tokens / total_nfe,
        "nfe_mean": total_nfe / n,
        "tokens_mean": total_tokens / n,
    }
