"""GSM8K's two rules: DMax's lenient candidate match (val_gsm8k.py) and our strict final-number rule.

Both read numbers with regexes only; the strict rule's one symbolic step (math-verify's numeric equality)
goes through `verify`, under its time limit. The rules themselves: the package docstring.
"""

from __future__ import annotations

import re
from decimal import Decimal, InvalidOperation
from fractions import Fraction

from dmax_core.tasks.answers.candidates import dedupe
from dmax_core.tasks.answers.latex import all_boxed
from dmax_core.tasks.answers.timeout import Deadline
from dmax_core.tasks.answers.verify import GUARD_S, mv_equal

__all__ = ["gsm8k_dmax_compatible", "gsm8k_gold", "gsm8k_strict", "gsm8k_strict_answer"]


def gsm8k_gold(answer_field: str) -> str:
    """The gold number of a GSM8K ``answer`` field: what follows the last ``####``, commas removed.

    ``"...\\n#### 1,234"`` -> ``"1234"``. `ValueError` (quoting the field's end) if there is no ``####`` or
    what follows is not a number: the dataset always has one, so this means the wrong field or dataset.
    """
    if "####" not in answer_field:
        raise ValueError(f"GSM8K answer field has no '#### <number>' final line: ...{answer_field[-120:]!r}")
    gold = answer_field.rsplit("####", 1)[1].strip().replace(",", "")
    if not re.fullmatch(r"-?\d+(?:\.\d+)?", gold):
        raise ValueError(f"GSM8K answer field does not end with '#### <number>': ...{answer_field[-120:]!r}")
    return gold


# --------------------------------------------------------------- GSM8K, DMax-compatible (val_gsm8k.py)
_DMAX_GSM_NUMBER = re.compile(r"-?\d[\d,]*(?:\.\d+)?(?:/\d+)?")
_DMAX_GSM_SPANS = (
    re.compile(r"(?is)####\s*([^\n]+)"),
    re.compile(r"(?is)<answer>\s*(.*?)\s*</answer>"),
    re.compile(r"(?is)Final Answer\s*[:：]\s*(.*?)(?=\n\s*\n|$)"),
    re.compile(r"(?is)The final answer is\s*(.*?)(?:\.?\s*I hope it is correct\.?|$)"),
    re.compile(r"(?im)^\s*Answer\s*[:：]\s*(.+?)\s*$"),
)
_DMAX_BAD_SNIPPET = re.compile(
    r"\bwrong\b|\bincorrect\b|\bfalse\b|\btypo\b|\bglitch\b|\bstuck\b|\bloop(?:ing)?\b|\bmalfunction\b"
    r"|\bgive up\b|\bsystem error\b|\bnot right\b|\bconfusing\b",
    re.IGNORECASE,
)
_DMAX_TRIGGERS = ("wait", "wrong", "incorrect", "false", "glitch", "stuck", "loop", "malfunction", "system error",
                  "give up")  # fmt: skip
_DMAX_GIVE_UP = ("i give up", "system error", "malfunction", "i'm stuck", "glitch")


def _dmax_strip_number_wrappers(text: str) -> str:
    """val_gsm8k.py ``strip_wrappers``: markdown, box commands, ``}``, ``$``, math delimiters, commas."""
    out = text.strip().replace("**", "").replace("__", "").strip("`")
    for token in ("\\boxed{", "\\fbox{", "}", "$", "\\$", "\\(", "\\)", "\\[", "\\]", ","):
        out = out.replace(token, "")
    return out.strip()


def _dmax_canonical_number(candidate: str) -> str | None:
    """val_gsm8k.py ``canonicalize_numeric``: ``"18.00"`` -> ``"18"``, ``"6/4"`` -> ``"3/2"``, else None."""
    cleaned = _dmax_strip_number_wrappers(candidate).rstrip(".。!！?？,，;；:：").replace("%", "").strip()
    if not cleaned:
        return None
    if re.fullmatch(r"-?\d+/\d+", cleaned):
        numerator, denominator = cleaned.split("/", 1)
        if denominator == "0":
            return None
        value = Fraction(int(numerator), int(denominator))
    else:
        try:
            value = Fraction(Decimal(cleaned))
        except (InvalidOperation, ValueError):
            return None
    return str(value.numerator) if value.denominator == 1 else f"{value.numerator}/{value.denominator}"


def _dmax_last_number(text: str) -> str | None:
    numbers = _DMAX_GSM_NUMBER.findall(_dmax_strip_number_wrappers(text))
    return numbers[-1] if numbers else None


def _dmax_answer_spans(text: str) -> list[str]:
    """All explicit answer spans, pattern by pattern (not by position), as val_gsm8k.py lists them."""
    return [match.strip() for pattern in _DMAX_GSM_SPANS for match in pattern.findall(text) if match.strip()]


def _dmax_snippet_unstable(text: str) -> bool:
    lower = text.lower()
    if not lower.strip():
        return False
    if _DMAX_BAD_SNIPPET.search(lower) or lower.count("wait") >= 2:
        return True
    return lower.count("?") >= 2 and any(word in lower for word in (" no", "wrong", "incorrect"))


def _dmax_response_unstable(text: str) -> bool:
    lower = text.lower()
    if not lower.strip():
        return False
    if any(token in lower for token in _DMAX_GIVE_UP):
        return True
    wrong = lower.count("wrong") + lower.count("incorrect") + lower.count("false")
    if lower.count("wait") >= 3 and wrong >= 1:
        return True
    return sum(lower.count(token) for token in _DMAX_TRIGGERS) >= 8


def _dmax_clean_marker_near_end(text: str) -> bool:
    tail = text.strip()[-250:]
    if not tail or _dmax_snippet_unstable(tail):
        return False
    return bool(_dmax_answer_spans(tail) or all_boxed(tail))


def _dmax_gsm8k_candidates(text: str) -> list[str]:
    """val_gsm8k.py ``extract_llm_final_answer_candidates``: canonical numbers, most trusted first."""
    raw = text.strip()
    if not raw or (_dmax_response_unstable(raw) and not _dmax_clean_marker_near_end(raw)):
        return []
    snippets = list(reversed(_dmax_answer_spans(raw)[-3:]))
    boxed = all_boxed(raw)
    if boxed:
        snippets.append(boxed[-1])
    lines = [line.strip() for line in raw.splitlines() if line.strip()]
    snippets.extend(reversed(lines[-5:]))
    snippets.append("\n".join(lines[-8:]))
    numbers = [_dmax_last_number(s) for s in snippets if not _dmax_snippet_unstable(s)]
    return dedupe(_dmax_canonical_number(n) or "" for n in numbers if n)


def _dmax_gsm8k_gold_candidates(gold: str) -> list[str]:
    """val_gsm8k.py ``extract_ground_truth_answer_candidates``, on a number or a whole ``answer`` field."""
    spans = _dmax_answer_spans(gold)
    numbers = [_dmax_last_number(spans[-1]) if spans else None, _dmax_last_number(gold)]
    return dedupe(_dmax_canonical_number(n) or "" for n in numbers if n)


def gsm8k_dmax_compatible(text: str, gold: str) -> bool:
    """Correct iff a gold candidate equals one of the first two prediction candidates (``compare_candidates``)."""
    top_two = _dmax_gsm8k_candidates(text)[:2]
    return any(g in top_two for g in _dmax_gsm8k_gold_candidates(gold))


# ----------------------------------------------------------------------------------------- GSM8K, strict
_GSM_MARKER = re.compile(r"answer is|####|\\boxed|\\fbox", re.IGNORECASE)
# A "-" right after a digit, letter or closing bracket is subtraction, not a sign.
_STRICT_NUMBER = re.compile(r"(?:(?<![\w)\]}])-)?\$?\d(?:[\d,]*\d)?(?:\.\d+)?(?:/\d+(?![\d.]))?")


def gsm8k_strict_answer(text: str) -> str | None:
    """The last number after the last answer marker (or in the whole text if none), ``$``/commas dropped."""
    markers = list(_GSM_MARKER.finditer(text))
    tail = text[markers[-1].end() :] if markers else text
    numbers = _STRICT_NUMBER.findall(tail)
    return numbers[-1].replace("$", "").replace(",", "") if numbers else None


def _exact_rational(text: str) -> Fraction | None:
    """``"18.00"`` -> 18, ``"6/4"`` -> 3/2, exactly (no float); None if not a plain number."""
    try:
        return Fraction(text.replace(",", "").strip())
    except (ValueError, ZeroDivisionError):
        return None


def gsm8k_strict(extracted: str | None, gold: str) -> bool:
    """Exactly equal as rationals, else numerically equal according to math-verify (all in one `GUARD_S`)."""
    if extracted is None:
        return False
    if "####" in gold:
        gold = gsm8k_gold(gold)
    pred_value, gold_value = _exact_rational(extracted), _exact_rational(gold)
    if pred_value is not None and pred_value == gold_value:
        return True
    gold_clean = gold.replace(",", "").strip()
    return mv_equal(f"${gold_clean}$", f"${extracted}$", Deadline(GUARD_S))

