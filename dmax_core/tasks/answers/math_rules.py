"""MATH-500's two rules: DMax's lenient candidate match (val_math.py) and our strict last-box rule.

Candidates are pulled out of the text here; their symbolic comparison (sympy, math-verify) goes through
`verify`, under its time limits. The rules themselves: the package docstring.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

from dmax_core.tasks.answers.candidates import dedupe
from dmax_core.tasks.answers.latex import all_boxed, last_boxed_with_end
from dmax_core.tasks.answers.math_normalize import cleanup, normalize_math_answer, strip_markdown
from dmax_core.tasks.answers.timeout import Deadline
from dmax_core.tasks.answers.verify import GUARD_S, mv_equal, mv_parses, mv_verifies, sympy_equal, sympy_text

__all__ = ["DMAX_MATH_BUDGET_S", "math_dmax_compatible", "math_strict"]

# Per-example budget of the lenient MATH score: DMax's val_math.py --per-example-timeout default.
DMAX_MATH_BUDGET_S = 8.0

_MATH_PATTERNS = (
    re.compile(r"(?is)<answer>\s*(.*?)\s*</answer>"),
    re.compile(r"(?is)Final Answer\s*[:：]\s*(.*?)(?=\n\s*\n|$)"),
    re.compile(r"(?is)The final answer is\s*(.*?)(?:\.?\s*I hope it is correct\.?|$)"),
    re.compile(r"(?im)^\s*Answer\s*[:：]\s*(.+?)\s*$"),
    re.compile(r"(?im)^\s*####\s*(.+?)\s*$"),
)
_LATEX_BLOCKS = (
    re.compile(r"(?s)\$\$(.*?)\$\$"),
    re.compile(r"(?s)\\\[(.*?)\\\]"),
    re.compile(r"(?s)\\\((.*?)\\\)"),
    re.compile(r"(?s)(?<!\$)\$(?!\$)(.+?)(?<!\$)\$(?!\$)"),
)
_NOT_ANSWERS = {"answer", "final answer"}


# -------------------------------------------------------------------------- MATH candidates (val_math.py)
def _pattern_matches(text: str) -> list[str]:
    return [match.strip() for pattern in _MATH_PATTERNS for match in pattern.findall(text) if match.strip()]


def _with_first_lines(matches: Iterable[str]) -> list[str]:
    """Each match, followed by its first line when that differs."""
    out: list[str] = []
    for match in matches:
        out.append(match)
        first_line = match.splitlines()[0].strip()
        if first_line and first_line != match:
            out.append(first_line)
    return out


def _latex_blocks(text: str) -> list[str]:
    """The last six math blocks, listed pattern by pattern (``$$``, ``\\[``, ``\\(``, ``$``) as DMax does."""
    blocks = [match.strip() for pattern in _LATEX_BLOCKS for match in pattern.findall(text) if match.strip()]
    return blocks[-6:]


def _with_rhs(line: str) -> list[str]:
    """A line and, if it has ``=``, the part after the last one."""
    rhs = line.split("=")[-1].strip() if "=" in line else ""
    return [line, rhs] if rhs else [line]


def _line_candidates(text: str) -> list[str]:
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    out: list[str] = []
    for line in lines[-8:]:
        stripped = strip_markdown(line).lstrip("-*")
        if stripped:
            out.extend(_with_rhs(stripped))
    return out[-8:]


def _finish(candidates: Iterable[str]) -> list[str]:
    """Cleaned, without empty or placeholder candidates, deduplicated."""
    return dedupe(c for c in map(cleanup, candidates) if c.lower() not in _NOT_ANSWERS)


def _substantial_suffix(text: str, start: int) -> bool:
    """At least 20 letters/digits/backslashes after `start`: the marked answer was not the end."""
    suffix = re.sub(r"[\s`*_>#\-\.,;:!?\)\]\}]+", "", text[start:].strip())
    return len(re.findall(r"[A-Za-z0-9\u4e00-\u9fff\\]", suffix)) >= 20


def _last_pattern_answer_near_end(text: str) -> str | None:
    best: tuple[int, str] | None = None
    for pattern in _MATH_PATTERNS:
        for match in pattern.finditer(text):
            candidate = match.group(1).strip()
            if candidate and (best is None or match.end() > best[0]):
                best = (match.end(), candidate)
    if best is None or _substantial_suffix(text, best[0]):
        return None
    return cleanup(best[1])


def _math_prediction_candidates(text: str) -> list[str]:
    """val_math.py ``extract_llm_final_answer_candidates`` (+ ``evaluate_example``'s fallback): at most ten."""
    raw = text.strip()
    if not raw:
        return []
    candidates = [_last_pattern_answer_near_end(text) or ""]
    boxed, end = last_boxed_with_end(text)
    if boxed and end is not None and not _substantial_suffix(text, end + 1):
        candidates.append(boxed)
    tail = raw[-800:]
    candidates.extend(_latex_blocks(tail)[-1:])
    for line in reversed([line.strip() for line in tail.splitlines() if line.strip()][-3:]):
        stripped = strip_markdown(line).lstrip("-*").strip()
        if stripped:
            candidates.extend(_with_rhs(stripped))
    if len(raw) <= 200:
        candidates.append(raw)
    return _finish(candidates)[:10] or dedupe([cleanup(raw)])


def _math_gold_candidates(answer: str) -> list[str]:
    """val_math.py ``extract_ground_truth_answer_candidates`` on the dataset's ``answer`` field."""
    raw = answer.strip()
    if not raw:
        return []
    marked = all_boxed(raw)[-1:] + _with_first_lines(reversed(_pattern_matches(raw)[-3:]))
    candidates = [cleanup(raw), *_finish(marked)]
    if len(raw) <= 200:
        everywhere = list(reversed(all_boxed(raw)[-6:]))
        everywhere += _with_first_lines(reversed(_pattern_matches(raw)[-6:]))
        everywhere += list(reversed(_latex_blocks(raw)))
        everywhere += list(reversed(_line_candidates(raw)))
        everywhere.append(raw)
        candidates += _finish(everywhere)[:20]
    return dedupe(candidates)



# ---------------------------------------------------------------------- MATH comparisons (val_math.py)
def _mv_variants(text: str) -> list[str]:
    cleaned = cleanup(text)
    return dedupe([text, cleaned, f"${cleaned}$"])


def _math_verify_equal(gold: str, pred: str, budget: Deadline, cutoff: Deadline) -> bool:
    """val_math.py ``try_math_verify`` in snippet mode: every variant pair of gold and prediction."""
    for gold_variant in _mv_variants(gold):
        gold_parses = mv_parses(gold_variant, cutoff)
        for pred_variant in _mv_variants(pred):
            if budget.passed():
                return False
            if gold_parses and mv_parses(pred_variant, cutoff) and mv_verifies(gold_variant, pred_variant, cutoff):
                return True
    return False


def math_dmax_compatible(text: str, gold: str) -> bool:
    """val_math.py ``compare_candidates``: all pairs by normalised exact match, then sympy, then math-verify.

    Over `DMAX_MATH_BUDGET_S` (checked between comparisons) the answer is wrong, and no symbolic call runs
    past that budget plus one `GUARD_S`."""
    budget = Deadline(DMAX_MATH_BUDGET_S)
    cutoff = Deadline(DMAX_MATH_BUDGET_S + GUARD_S)
    golds, preds = _math_gold_candidates(gold), _math_prediction_candidates(text)
    pred_norms = {normalize_math_answer(p) for p in preds}
    if any(g_norm and g_norm in pred_norms for g_norm in map(normalize_math_answer, golds)):
        return True
    gold_sympy = [sympy_text(cleanup(g)) for g in golds]
    pred_sympy = [sympy_text(cleanup(p)) for p in preds]
    for g in gold_sympy:
        for p in pred_sympy:
            if budget.passed():
                return False
            if sympy_equal(g, p, cutoff):
                return True
    return any(_math_verify_equal(g, p, budget, cutoff) for g in golds for p in preds)


def _boxed_for_parse(answer: str) -> str:
    """``$\\boxed{answer}$`` unless the answer already carries a box, so math-verify reads exactly this answer."""
    return answer if "\\boxed" in answer or "\\fbox" in answer else f"$\\boxed{{{answer}}}$"


def math_strict(extracted: str | None, gold: str) -> bool:
    """Verbatim equal ignoring whitespace, else equal for math-verify with both sides boxed (in one `GUARD_S`)."""
    if extracted is None:
        return False
    if re.sub(r"\s+", "", extracted) == re.sub(r"\s+", "", gold):
        return True
    return mv_equal(_boxed_for_parse(gold), _boxed_for_parse(extracted), Deadline(GUARD_S))
