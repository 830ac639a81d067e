"""The two public scorers: each generation scored by both rules at once, never raising on odd text."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

from dmax_core.tasks.answers.gsm8k_rules import gsm8k_dmax_compatible, gsm8k_strict, gsm8k_strict_answer
from dmax_core.tasks.answers.latex import last_boxed
from dmax_core.tasks.answers.math_rules import math_dmax_compatible, math_strict
from dmax_core.tasks.answers.timeout import WorkerStartError

__all__ = ["MathScore", "score_gsm8k", "score_math"]

T = TypeVar("T")


@dataclass(frozen=True)
class MathScore:
    """One scored generation: both rules and the strict final answer (for the report)."""

    dmax_compatible: bool  # the DMax repository's lenient rule (see the package docstring)
    strict: bool  # the final answer only, math-verify equivalence
    extracted: str | None  # the strict final answer as extracted, None if none


def _safe(default: T, rule: Callable[..., T], *args: Any) -> T:
    """`rule(*args)`, or `default` if it raises: model text is arbitrary and one odd answer must not stop an
    evaluation (DMax too scores an error as wrong). A worker that cannot start is a broken environment,
    not an odd answer, so that error goes through."""
    try:
        return rule(*args)
    except WorkerStartError:
        raise
    except Exception:
        return default


def score_gsm8k(text: str, gold: str) -> MathScore:
    """Score a GSM8K generation against `gold` (the number from `gsm8k_gold`; a whole ``answer`` field also
    works for the lenient rule). A failure scores False. Rules: the package docstring."""
    extracted = _safe(None, gsm8k_strict_answer, text)
    return MathScore(
        dmax_compatible=_safe(False, gsm8k_dmax_compatible, text, gold),
        strict=_safe(False, gsm8k_strict, extracted, gold),
        extracted=extracted,
    )


def score_math(text: str, gold: str) -> MathScore:
    """Score a MATH-500 generation against `gold` (the dataset's ``answer`` LaTeX string). A failure or an
    exhausted budget scores False. Rules: the package docstring."""
    extracted = _safe(None, last_boxed, text)
    return MathScore(
        dmax_compatible=_safe(False, math_dmax_compatible, text, gold),
        strict=_safe(False, math_strict, extracted, gold),
        extracted=extracted,
    )
