"""Symbolic equality of two answer strings: math-verify's parse / verify and sympy's ``simplify(a - b) == 0``.

These are the only steps of the scorers that can hang on model text (sympy's parsers and simplifier,
math-verify's LaTeX grammar), so they -- and nothing else -- run in `timeout.WorkerPool` worker processes:
each call is limited to `GUARD_S` and to the caller's `Deadline`, and a call that runs over, or raises,
counts as "not equal". Strings go into a worker and booleans come back: math-verify's parse results stay
in the worker (memoised by text), so `mv_verifies` names its two sides by the texts `mv_parses` read.
sympy and math-verify are imported only in the workers, never in the scoring process.

math-verify's own timeouts are switched off: they use ``signal.alarm``, which only works on a main thread,
and the worker's limit replaces them.
"""

from __future__ import annotations

import functools
import re
from typing import Any, NamedTuple

from dmax_core.tasks.answers.pathological import is_pathological
from dmax_core.tasks.answers.timeout import Deadline, WorkerPool

__all__ = ["GUARD_S", "SympyText", "mv_equal", "mv_parses", "mv_verifies", "sympy_equal", "sympy_text"]

# Limit of one sympy / math-verify call (math-verify's own default is 5 s; MATH answers need far less).
GUARD_S = 2.0

_LATEX_TOKENS = ("\\frac", "\\sqrt", "\\pi", "\\cdot", "\\pm", "{", "}")
_SAFE_SYMPIFY = re.compile(r"[0-9A-Za-z+\-*/^().,\s]*")


class SympyText(NamedTuple):
    """How sympy may read one candidate: LaTeX for its LaTeX parser (None if it does not look like LaTeX),
    then the ASCII rewrite for ``sympify`` (None if that rewrite is not safe to evaluate)."""

    latex: str | None
    plain: str | None


def sympy_text(candidate: str) -> SympyText | None:
    """val_math.py ``maybe_parse_numeric``'s choice of input for a cleaned candidate; None if sympy gets none.

    ``sympify`` runs ``eval``, so only text made of digits, letters, spaces and ``+-*/^().,``, with no ``__``
    and no attribute access, is handed to it (DMax feeds it anything); pathological text goes nowhere.
    """
    if not candidate or is_pathological(candidate):
        return None
    if candidate.endswith("%"):
        candidate = f"({candidate[:-1]})/100"
    latex = candidate if any(token in candidate for token in _LATEX_TOKENS) else None
    plain = candidate.replace("^", "**").replace("\\pi", "pi").replace("\\cdot", "*")
    plain = plain.replace("{", "(").replace("}", ")")
    if not _SAFE_SYMPIFY.fullmatch(plain) or "__" in plain or re.search(r"\.[A-Za-z_]", plain):
        if latex is None:
            return None
        return SympyText(latex, None)
    return SympyText(latex, plain)


def _limit(deadline: Deadline) -> float:
    return min(GUARD_S, deadline.remaining())


def sympy_equal(gold: SympyText | None, pred: SympyText | None, deadline: Deadline) -> bool:
    """``simplify(gold - pred) == 0``, in a worker under the time limit; False if either side has no input."""
    if gold is None or pred is None:
        return False
    return _WORKERS.call(False, _limit(deadline), _sympy_difference_is_zero, gold, pred)


def mv_parses(text: str, deadline: Deadline) -> bool:
    """Whether math-verify's parse (default extraction: LaTeX, then plain expressions) finds anything in
    `text`, within the time limit; never for empty or pathological text."""
    if not text or is_pathological(text):
        return False
    return _WORKERS.call(False, _limit(deadline), _parses, text)


def mv_verifies(gold: str, pred: str, deadline: Deadline) -> bool:
    """math-verify's ``verify(parse(gold), parse(pred))`` (asymmetric: gold first), within the time limit.

    Call it only for texts `mv_parses` accepted: it re-parses them in the worker when that worker has not
    parsed them yet, within this call's limit, and does not screen them again."""
    return _WORKERS.call(False, _limit(deadline), _verifies, gold, pred)


def mv_equal(gold: str, pred: str, deadline: Deadline) -> bool:
    """Both sides parse and math-verify finds them equal, all before `deadline` (each call also `GUARD_S`)."""
    return mv_parses(gold, deadline) and mv_parses(pred, deadline) and mv_verifies(gold, pred, deadline)


# ----------------------------------------------------------------------- run in the worker processes
def _warm_up() -> None:
    """Import sympy and math-verify and run each step once, so no call's limit pays for start-up."""
    import math_verify.grader
    import math_verify.parser
    import sympy

    for module in (math_verify.parser, math_verify.grader):
        # math-verify logs "Timeout is disabled ... provide the logic yourself" once per process when its
        # own timeouts are off; the worker's limit is that logic, so mark the warning as already shown.
        if hasattr(module, "TIMEOUT_WARNING_SHOWN"):
            module.TIMEOUT_WARNING_SHOWN = True
    if not _verifies("$\\frac{1}{2}$", "0.5"):
        raise RuntimeError("math-verify does not find 1/2 equal to 0.5")
    sympy.simplify(sympy.sympify("1/2") - sympy.Rational(1, 2))


@functools.lru_cache(maxsize=16384)
def _parsed(text: str) -> tuple[Any, ...]:
    from math_verify import parse

    return tuple(parse(text, parsing_timeout=None))  # type: ignore[arg-type]


def _parses(text: str) -> bool:
    return bool(_parsed(text))


def _verifies(gold: str, pred: str) -> bool:
    from math_verify import verify

    gold_parsed, pred_parsed = _parsed(gold), _parsed(pred)
    if not gold_parsed or not pred_parsed:
        return False
    return bool(verify(list(gold_parsed), list(pred_parsed), timeout_seconds=None))


def _sympy_value(text: SympyText) -> Any:
    """sympy's LaTeX parser for LaTeX-looking text (it needs antlr4 4.11; without it, as in DMax, the attempt
    fails and the ASCII rewrite is tried), else ``sympify`` of the rewrite; None if neither applies."""
    if text.latex is not None:
        try:
            from sympy.parsing.latex import parse_latex

            return parse_latex(text.latex)
        except Exception:
            pass
    if text.plain is None:
        return None
    import sympy

    return sympy.sympify(text.plain)


def _sympy_difference_is_zero(gold: SympyText, pred: SympyText) -> bool:
    import sympy

    left, right = _sympy_value(gold), _sympy_value(pred)
    if left is None or right is None:
        return False
    return bool(sympy.simplify(left - right) == 0)


_WORKERS = WorkerPool(_warm_up)
