"""Exact-match scorer for the embedded synthetic task (``dmax_core.data.synthetic``).

Why a separate, strict scorer: the synthetic answers always end in ``#### <integer>``, so exact match on
that integer is unambiguous and cheap, and it cannot reward an incoherent chain that happens to contain
the right number somewhere. It only tolerates what decoding can leave behind: extra spaces and stray
special tokens such as ``<|role_end|>`` or ``<|mask|>``.

This is NOT GSM8K's scorer. GSM8K's heuristic matcher (spec §5.3: several gold/pred candidates,
normalisation to fractions, "unstable" filters) is a different scorer to be added later; do not loosen
this one towards it. Must stay pure: no tokenizer, model or file access.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from dmax_core.data.synthetic import Problem

__all__ = ["extract_final_answer", "is_correct"]

# Special-token leftovers: <|...|> tokens and the <role>/</role> markers (and <unk>).
_SPECIAL = re.compile(r"<\|[^|<>]*\|>|</?role>|<unk>")
_AFTER_MARKER = re.compile(r"^\s*([-+]?\d+)")


def extract_final_answer(text: str) -> str | None:
    """The integer right after the LAST ``####`` (canonical form: no sign for >= 0, no leading zeros).

    ``None`` when there is no ``####`` or the last one is not followed by an integer (only whitespace and
    special-token leftovers may sit in between). An earlier ``####`` is never used as a fallback: the
    model's final word is what counts.
    """
    cleaned = _SPECIAL.sub(" ", text)
    idx = cleaned.rfind("####")
    if idx < 0:
        return None
    m = _AFTER_MARKER.match(cleaned[idx + 4 :])
    if m is None:
        return None
    return str(int(m.group(1)))


def is_correct(generated_text: str, problem: Problem) -> bool:
    """Exact integer match of :func:`extract_final_answer` with ``problem.final_answer``."""
    pred = extract_final_answer(generated_text)
    if pred is None:
        return False
    try:
        gold = int(problem.final_answer.strip())
    except ValueError:
        raise ValueError(f"problem.final_answer is not an integer: {problem.final_answer!r}") from None
    return int(pred) == gold
