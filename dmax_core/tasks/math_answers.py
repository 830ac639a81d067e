"""Answer extraction and scoring for GSM8K and MATH-500: a DMax-compatible lenient score and a strict one.

Why two scores. The DMax paper's accuracies come from two post-processing scripts of the official repository
(czg1225/DMax, commit 82bc29ec; its README says ``python val_gsm8k.py`` / ``python val_math.py``
"postprocess and calculate accuracy"): ``dInfer/evaluations/val_gsm8k.py`` and
``dInfer/evaluations/val_math.py``. They are deliberately lenient -- several candidate answers are pulled out
of the generation and any one may match -- so a chain of thought that states the right number and then
wanders off still counts. To compare with the paper we reproduce that rule (`MathScore.dmax_compatible`);
to measure what a user of the model would get we also report a strict score (`MathScore.strict`).

DMax-compatible rules (re-implemented, not copied; the regexes and word lists are the same facts):

* GSM8K (``val_gsm8k.py``: ``extract_llm_final_answer_candidates``, ``compare_candidates``). Candidates, in
  order: the last number of each of the last three explicit answer spans (``####``, ``<answer>``,
  ``Final Answer:``, ``The final answer is``, a line starting ``Answer:``), newest first; the last number
  of the last ``\\boxed``/``\\fbox``; the last number of each of the last five non-empty lines, newest
  first; the last number of the last eight lines. Snippets that look "unstable" (words such as *wrong*,
  *stuck*, two *wait*) are skipped, and a whole response that looks unstable with no clean answer marker
  in its last 250 characters has no candidates. Numbers are canonicalised (commas, ``$``, ``%`` and
  wrappers dropped; ``18.00`` -> ``18``; ``6/4`` -> ``3/2``). Correct iff the gold number equals one of
  the *first two* candidates. "The answer is 42" is not an answer span there; it counts through the
  line candidates.
* MATH-500 (``val_math.py``: ``extract_llm_final_answer_candidates``, ``compare_candidates``). Up to ten
  prediction candidates: the last answer-pattern match and the last boxed content (each only when fewer
  than 20 letters/digits follow it), the last LaTeX math block of the last 800 characters, the last three
  lines (and the right-hand side of their last ``=``), and the whole response if it has at most 200
  characters. Gold candidates come from the dataset's ``answer`` field the same way. A pair matches by
  (1) normalised exact match (`normalize_math_answer`), then (2) sympy (``simplify(a - b) == 0``), then
  (3) math-verify on three variants of each side (raw, cleaned, cleaned in ``$...$``).

(The lm-eval YAMLs under ``dInfer/evaluations/tasks/`` -- ``gsm8k/gsm8k-llada-mini.yaml``,
``math/minerva_math500.yaml`` -> ``minerva_math_algebra.yaml`` + ``math/utils.py`` -- drive generation, with
the prompts ``"Question: {q}\nLet's think step by step\nAnswer:"`` and ``"{problem}\nLet's think step by
step, and put your final answer within \\boxed{}."``; the README then computes accuracy with the two
scripts above, so the harness's own ``exact_match`` / ``math_verify`` metrics are not reproduced here.)

Strict rules (ours; "final answer only"):

* GSM8K strict: find the last occurrence of ``answer is`` / ``####`` / ``\\boxed`` / ``\\fbox`` (case-
  insensitive). The strict answer is the last number in the text after it -- or, with no marker at all,
  the last number of the whole text. A marker with no number after it gives no answer. Numbers may carry
  a leading ``-`` (not one that follows a digit, as in ``10-5``), ``$`` and thousands commas, which are
  dropped, and may be a simple fraction ``a/b``. Correct iff it equals the gold number exactly as a rational
  number (so ``18.00`` == ``18``, ``6/4`` == ``1.5``), or else math-verify finds them numerically equal
  (its default 6-decimal rounding). Trailing numbers after the answer make it wrong: that is
  the point of strict.
* MATH strict: the content of the last ``\\boxed{}``/``\\fbox{}`` (balanced braces) and nothing else; no
  box -> wrong. Correct iff it equals the gold verbatim (ignoring whitespace) or math-verify's
  ``verify(parse(gold), parse(pred))`` holds with both sides parsed as ``$\\boxed{...}$``.

Where we deviate from DMax, and why:

* Time limits. DMax wraps each example in a SIGALRM limit (5 s GSM8K, 8 s MATH) and scores a timeout as
  wrong. We keep an 8 s cooperative budget per MATH example (`DMAX_MATH_BUDGET_S`; over budget -> wrong)
  and put a `GUARD_S` signal guard around every single sympy/math-verify call instead (math-verify's own
  ``signal.alarm`` timeouts are switched off because they would reset ours; ours uses ``setitimer`` with a
  repeating interval and a ``BaseException``, so math-verify's ``except Exception`` cannot swallow it).
  Signals only work on the main thread: elsewhere the calls run unguarded (only the pre-screen below and
  the budget protect them).
* Pathological inputs. A signal cannot interrupt a C-level big-integer power (``sympify("10**10**10")``
  hangs for minutes and DMax's per-example alarm does not stop it), so candidates with an exponent tower,
  an exponent of five or more digits, a factorial of a 5+ digit number, or over 2000 characters are never
  handed to sympy or math-verify (`_is_pathological`); they can still match as strings.
* ``sympify`` evaluates Python; DMax feeds it model text. We only sympify text made of digits, letters,
  spaces and ``+-*/^().,`` with no ``__`` and no attribute access (``.name``).
* The sympy step is DMax's: sympy's LaTeX parser for LaTeX-looking text, else ``sympify``. That parser
  needs ``antlr4-python3-runtime`` 4.11 (DMax's lm-eval math extra pins it; this project's environment has
  4.9.3, so here it fails and, exactly as in DMax then, only plain-ASCII candidates reach sympy; math-verify
  covers the rest).
* An exception anywhere scores ``False`` (DMax: ``example_error`` -> wrong), and the gold is passed as a
  string (GSM8K: a number, or a whole ``answer`` field; MATH-500: the ``answer`` field), not a row.

Everything here is a pure function of its arguments (parse results are memoised); sympy and math-verify are
imported inside the functions that need them, so importing this module is cheap. It defines no `Task`.
"""

from __future__ import annotations

import functools
import re
import signal
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from fractions import Fraction
from typing import Any, TypeVar

__all__ = [
    "DMAX_MATH_BUDGET_S",
    "GUARD_S",
    "MathScore",
    "gsm8k_gold",
    "last_boxed",
    "normalize_math_answer",
    "score_gsm8k",
    "score_math",
]

# Per-example budget of the lenient MATH score: DMax's val_math.py --per-example-timeout default.
DMAX_MATH_BUDGET_S = 8.0
# Limit of one sympy / math-verify call (math-verify's own default is 5 s; MATH answers need far less).
GUARD_S = 2.0

T = TypeVar("T")


@dataclass(frozen=True)
class MathScore:
    """One scored generation: both rules and the strict final answer (for the report)."""

    dmax_compatible: bool  # the DMax repository's lenient rule (see the module docstring)
    strict: bool  # the final answer only, math-verify equivalence
    extracted: str | None  # the strict final answer as extracted, None if none


# ------------------------------------------------------------------------------------------ time guards
class _GuardTimeout(BaseException):
    """Raised by the guard's alarm. A BaseException so library code's ``except Exception`` lets it through."""


class _TimeLimit:
    """Raise `_GuardTimeout` in the caller after `seconds` once armed (main thread only; elsewhere a no-op).

    The timer repeats every 50 ms until disarmed, in case some library swallows the first raise. A timer
    already running (an outer guard, pytest-timeout) caps the delay and is re-armed on disarm with its
    remaining time -- also when it fired while this one was being armed -- so guards nest.
    """

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self.enabled = threading.current_thread() is threading.main_thread() and hasattr(signal, "setitimer")
        self.phase = "idle"  # idle -> arming -> armed -> done
        self.outer_fired = False

    def _on_alarm(self, signum: int, frame: object) -> None:
        if self.phase == "armed":
            raise _GuardTimeout
        if self.phase == "arming":  # the outer timer, before ours replaced it
            self.outer_fired = True

    def arm(self) -> None:
        if not self.enabled:
            return
        self.started = time.monotonic()
        outer_delay = signal.getitimer(signal.ITIMER_REAL)[0]
        delay = min(self.seconds, outer_delay) if outer_delay > 0 else self.seconds
        self.phase = "arming"
        self.previous_handler = signal.signal(signal.SIGALRM, self._on_alarm)
        self.previous_timer = signal.setitimer(signal.ITIMER_REAL, delay, 0.05)
        self.phase = "armed"

    def disarm(self) -> None:
        """Cancel our timer and give the outer one back; safe against our own alarm firing meanwhile."""
        if not self.enabled or self.phase == "idle":
            return
        while True:
            try:
                self.phase = "done"  # from here on the handler ignores our alarm
                break
            except _GuardTimeout:
                continue
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, self.previous_handler)
        delay, interval = self.previous_timer
        if delay > 0 or self.outer_fired:
            remaining = delay - (time.monotonic() - self.started) if delay > 0 else 0.0
            signal.setitimer(signal.ITIMER_REAL, max(remaining, 1e-3), interval)


def _guarded(default: T, fn: Callable[..., T], *args: Any, seconds: float = GUARD_S) -> T:
    """`fn(*args)` under a time limit; `default` on timeout or on any exception.

    Arm, call and disarm all sit inside the ``try`` that catches the timeout, so an alarm landing at any
    point before the disarm is complete still ends here, never in the caller.
    """
    limit = _TimeLimit(seconds)
    try:
        try:
            limit.arm()
            return fn(*args)
        finally:
            limit.disarm()
    except (Exception, _GuardTimeout):
        return default


class _Budget:
    """A cooperative wall-clock budget, checked between comparisons."""

    def __init__(self, seconds: float) -> None:
        self.deadline = time.monotonic() + seconds

    def spent(self) -> bool:
        return time.monotonic() > self.deadline


# ------------------------------------------------------------------------------------- shared helpers
def _dedupe(items: Iterable[str]) -> list[str]:
    """Non-empty items, first occurrence kept, order kept."""
    return list(dict.fromkeys(item for item in items if item))


def _braced(text: str, open_index: int) -> tuple[str | None, int | None]:
    """The content of the balanced ``{...}`` opening at `open_index` and its closing index, else (None, None)."""
    if open_index < 0 or open_index >= len(text) or text[open_index] != "{":
        return None, None
    depth = 0
    for index in range(open_index, len(text)):
        if text[index] == "{":
            depth += 1
        elif text[index] == "}":
            depth -= 1
            if depth == 0:
                return text[open_index + 1 : index], index
    return None, None


def _brace_pairs(text: str) -> dict[int, int]:
    """Index of every ``{`` that gets closed -> index of its ``}``, in one pass.

    The same pairs as scanning forward from each ``{`` (what DMax does), without that scan's quadratic cost on
    degenerate output such as ``\\boxed{`` repeated a thousand times.
    """
    pairs: dict[int, int] = {}
    stack: list[int] = []
    for index, char in enumerate(text):
        if char == "{":
            stack.append(index)
        elif char == "}" and stack:
            pairs[stack.pop()] = index
    return pairs


def _boxed_spans(text: str, command: str) -> list[tuple[str, int]]:
    """(stripped content, closing index) of every ``<command>{...}`` in `text`, left to right, not nested."""
    spans: list[tuple[str, int]] = []
    pairs = _brace_pairs(text) if command in text else {}
    start = 0
    while (index := text.find(command, start)) != -1:
        cursor = index + len(command)
        while cursor < len(text) and text[cursor].isspace():
            cursor += 1
        end = pairs.get(cursor) if cursor < len(text) and text[cursor] == "{" else None
        if end is None:
            start = cursor + 1
            continue
        spans.append((text[cursor + 1 : end].strip(), end))
        start = end + 1
    return spans


def _all_boxed(text: str) -> list[str]:
    """Every boxed content, all ``\\boxed`` ones then all ``\\fbox`` ones (val_math.py's order)."""
    return [content for command in ("\\boxed", "\\fbox") for content, _ in _boxed_spans(text, command)]


def _last_boxed_with_end(text: str) -> tuple[str | None, int | None]:
    spans = _boxed_spans(text, "\\boxed") + _boxed_spans(text, "\\fbox")
    if not spans:
        return None, None
    content, end = max(spans, key=lambda span: span[1])
    return content, end


def last_boxed(text: str) -> str | None:
    """The content of the last ``\\boxed{...}`` or ``\\fbox{...}`` (balanced braces, stripped), else None.

    "Last" is by closing brace, as in val_math.py's ``extract_last_boxed_with_position``; a box with no
    closing brace is ignored, a box inside a box is part of the outer one's content.
    """
    return _last_boxed_with_end(text)[0]


# Exponent operators (LaTeX ``^`` and Python ``**``), and a factorial of a 5+ digit number.
_EXPONENT = re.compile(r"\^|\*\*")
_BIG_FACTORIAL = re.compile(r"\d{5,}\s*!")
_CLOSERS = {"{": "}", "(": ")"}
_TOKEN = re.compile(r"-?[\w.]*")
# An answer, even a long tuple or interval, is far shorter; longer candidates are lines of prose.
_MAX_SYMBOLIC_CHARS = 2000
_MAX_OPERAND = 200


def _operand(text: str, start: int) -> tuple[str, int] | None:
    """The exponent operand starting at `start` (a braced/parenthesised group or a token) and its end; None
    if a group is not closed within `_MAX_OPERAND` characters."""
    while start < len(text) and text[start].isspace():
        start += 1
    if start < len(text) and text[start] in _CLOSERS:
        opener, closer, depth = text[start], _CLOSERS[text[start]], 0
        for index in range(start, min(len(text), start + _MAX_OPERAND)):
            depth += {opener: 1, closer: -1}.get(text[index], 0)
            if depth == 0:
                return text[start + 1 : index], index + 1
        return None
    match = _TOKEN.match(text, start)
    end = match.end() if match else start
    return text[start:end], end


def _is_pathological(text: str) -> bool:
    """True for inputs whose evaluation can run for minutes inside C (no signal can stop it): an exponent
    whose operand holds another exponent or is followed by one (a tower), an integer exponent of five or
    more digits, a factorial of a five-digit number, an exponent group not closed within `_MAX_OPERAND`
    characters, or more than `_MAX_SYMBOLIC_CHARS` characters in all. Such candidates are only compared as
    strings."""
    if len(text) > _MAX_SYMBOLIC_CHARS or _BIG_FACTORIAL.search(text):
        return True
    for match in _EXPONENT.finditer(text):
        found = _operand(text, match.end())
        if found is None:
            return True
        operand, end = found
        if _EXPONENT.search(operand) or _EXPONENT.match(text[end:].lstrip()):
            return True
        if len(re.sub(r"\D", "", operand.split(".")[0])) >= 5:
            return True
    return False


# ------------------------------------------------------------------------------------------ math-verify
def _silence_math_verify_timeout_warning() -> None:
    """math-verify logs "Timeout is disabled ... provide the logic yourself" once per process when its own
    timeouts are off; we do provide it (`_TimeLimit`), so mark that warning as already shown."""
    import math_verify.grader
    import math_verify.parser

    for module in (math_verify.parser, math_verify.grader):
        if hasattr(module, "TIMEOUT_WARNING_SHOWN"):
            module.TIMEOUT_WARNING_SHOWN = True


@functools.lru_cache(maxsize=16384)
def _mv_parse_unguarded(text: str) -> tuple[Any, ...]:
    from math_verify import parse  # lazy: importing this module must stay cheap

    _silence_math_verify_timeout_warning()
    return tuple(parse(text, parsing_timeout=None))  # type: ignore[arg-type]


def _mv_parse(text: str) -> tuple[Any, ...]:
    """math-verify's parse (default extraction: LaTeX then plain expressions), guarded; () if it fails."""
    if not text or _is_pathological(text):
        return ()
    return _guarded((), _mv_parse_unguarded, text)


def _mv_verify(gold: tuple[Any, ...], pred: tuple[Any, ...]) -> bool:
    """math-verify's ``verify(gold, pred)`` (asymmetric: gold first), guarded; False on any failure."""
    if not gold or not pred:
        return False

    def run() -> bool:
        from math_verify import verify

        _silence_math_verify_timeout_warning()
        return bool(verify(list(gold), list(pred), timeout_seconds=None))

    return _guarded(False, run)


# ================================================================================================ GSM8K
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
    return bool(_dmax_answer_spans(tail) or _all_boxed(tail))


def _dmax_gsm8k_candidates(text: str) -> list[str]:
    """val_gsm8k.py ``extract_llm_final_answer_candidates``: canonical numbers, most trusted first."""
    raw = text.strip()
    if not raw or (_dmax_response_unstable(raw) and not _dmax_clean_marker_near_end(raw)):
        return []
    snippets = list(reversed(_dmax_answer_spans(raw)[-3:]))
    boxed = _all_boxed(raw)
    if boxed:
        snippets.append(boxed[-1])
    lines = [line.strip() for line in raw.splitlines() if line.strip()]
    snippets.extend(reversed(lines[-5:]))
    snippets.append("\n".join(lines[-8:]))
    numbers = [_dmax_last_number(s) for s in snippets if not _dmax_snippet_unstable(s)]
    return _dedupe(_dmax_canonical_number(n) or "" for n in numbers if n)


def _dmax_gsm8k_gold_candidates(gold: str) -> list[str]:
    """val_gsm8k.py ``extract_ground_truth_answer_candidates``, on a number or a whole ``answer`` field."""
    spans = _dmax_answer_spans(gold)
    numbers = [_dmax_last_number(spans[-1]) if spans else None, _dmax_last_number(gold)]
    return _dedupe(_dmax_canonical_number(n) or "" for n in numbers if n)


def _gsm8k_dmax_compatible(text: str, gold: str) -> bool:
    """Correct iff a gold candidate equals one of the first two prediction candidates (``compare_candidates``)."""
    top_two = _dmax_gsm8k_candidates(text)[:2]
    return any(g in top_two for g in _dmax_gsm8k_gold_candidates(gold))


# ----------------------------------------------------------------------------------------- GSM8K, strict
_GSM_MARKER = re.compile(r"answer is|####|\\boxed|\\fbox", re.IGNORECASE)
# A "-" right after a digit, letter or closing bracket is subtraction, not a sign.
_STRICT_NUMBER = re.compile(r"(?:(?<![\w)\]}])-)?\$?\d(?:[\d,]*\d)?(?:\.\d+)?(?:/\d+(?![\d.]))?")


def _gsm8k_strict_answer(text: str) -> str | None:
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


def _gsm8k_strict(extracted: str | None, gold: str) -> bool:
    """Exactly equal as rationals, else numerically equal according to math-verify."""
    if extracted is None:
        return False
    if "####" in gold:
        gold = gsm8k_gold(gold)
    pred_value, gold_value = _exact_rational(extracted), _exact_rational(gold)
    if pred_value is not None and pred_value == gold_value:
        return True
    gold_clean = gold.replace(",", "").strip()
    return _mv_verify(_mv_parse(f"${gold_clean}$"), _mv_parse(f"${extracted}$"))


def score_gsm8k(text: str, gold: str) -> MathScore:
    """Score a GSM8K generation against `gold` (the number from `gsm8k_gold`; a whole ``answer`` field also
    works for the lenient rule). Never raises: a failure scores False. Rules: the module docstring."""
    extracted = _guarded(None, _gsm8k_strict_answer, text)
    return MathScore(
        dmax_compatible=_guarded(False, _gsm8k_dmax_compatible, text, gold, seconds=DMAX_MATH_BUDGET_S),
        strict=_guarded(False, _gsm8k_strict, extracted, gold),
        extracted=extracted,
    )


# ======================================================================================= MATH-500
# normalize_final_answer's tables (val_math.py, from Lewkowycz et al. 2022, appendix D).
_SUBSTITUTIONS = (
    ("an ", ""), ("a ", ""), (".$", "$"), ("\\$", ""), (r"\ ", ""), (" ", ""), ("mbox", "text"),
    (",\\text{and}", ","), ("\\text{and}", ","), ("\\text{m}", "\\text{}"),
)  # fmt: skip
_REMOVED_EXPRESSIONS = (
    "square", "ways", "integers", "dollars", "mph", "inches", "ft", "hours", "km", "units", "\\ldots", "points",
    "feet", "minutes", "digits", "cents", "degrees", "cm", "gm", "pounds", "meters", "meals", "edges", "students",
    "multiples", "\\text{s}", "\\text{.}", "\\text{\ns}", "\\text{}^2", "\\text{}^3", "\\text{\n}", "\\text{}",
    r"\mathrm{th}", r"^\circ", r"^{\circ}", r"\;", r",\!", "{,}", '"', "\\dots",
)  # fmt: skip
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
_EDGE_PUNCTUATION = " \n\t\r,.;:!。；，"
_NOT_ANSWERS = {"answer", "final answer"}


def _strip_markdown(text: str) -> str:
    return text.strip().replace("**", "").replace("__", "").strip("`")


def _strip_answer_prefix(text: str) -> str:
    """Drop ``####``, ``<answer>`` tags, ``(Final) Answer:``, ``The final answer is``, ``I hope it is correct``."""
    out = _strip_markdown(text)
    for pattern in (r"^\s*####\s*", r"(?is)^\s*<answer>\s*", r"(?is)\s*</answer>\s*$",
                    r"(?is)^\s*(?:final answer|answer)\s*[:：]\s*", r"(?is)^\s*the final answer is\s*",
                    r"(?is)\s*I hope it is correct\.?\s*$"):  # fmt: skip
        out = re.sub(pattern, "", out)
    return out.strip()


def _unwrap_once(text: str) -> str:
    """Remove one outer ``$$ $$``, ``\\[ \\]``, ``\\( \\)``, ``$ $``, ``\\boxed{}``, ``\\fbox{}``, ``\\text{}``..."""
    if text.startswith("$$") and text.endswith("$$") and len(text) >= 4:
        return text[2:-2].strip()
    if (text.startswith("\\[") and text.endswith("\\]")) or (text.startswith("\\(") and text.endswith("\\)")):
        return text[2:-2].strip()
    if text.startswith("$") and text.endswith("$") and len(text) >= 2:
        return text[1:-1].strip()
    if text.startswith(("\\boxed", "\\fbox", "\\text{", "\\mathrm{", "\\textbf{")):
        content, end = _braced(text, text.find("{"))
        if content is not None and end == len(text) - 1:
            return content.strip()
    return text


def _unwrap_known_wrappers(text: str) -> str:
    current = text.strip()
    while True:
        unwrapped = _unwrap_once(current.strip()).strip(_EDGE_PUNCTUATION)
        if unwrapped == current:
            return current
        current = unwrapped


def _cleanup(text: str) -> str:
    """val_math.py ``cleanup_candidate``: prefixes, unicode operators, ``\\dfrac``, ``\\left``, spacing, wrappers."""
    out = _strip_answer_prefix(text).replace("\u2212", "-").replace("\u00d7", "*").replace("\u00f7", "/")
    for before, after in (("\\dfrac", "\\frac"), ("\\tfrac", "\\frac"), ("\\left", ""), ("\\right", ""),
                          ("\\!", ""), ("\\,", ""), ("\\;", ""), ("\\%", "%")):  # fmt: skip
        out = out.replace(before, after)
    return re.sub(r"\s+", " ", _unwrap_known_wrappers(out)).strip()


def _normalize_final_answer(text: str) -> str:
    """Minerva's ``normalize_final_answer`` as val_math.py has it."""
    answer = text.split("=")[-1]
    for before, after in _SUBSTITUTIONS:
        answer = answer.replace(before, after)
    for expression in _REMOVED_EXPRESSIONS:
        answer = answer.replace(expression, "")
    answer = re.sub(r"(.*?)(\$)(.*?)(\$)(.*)", "$\\3$", answer)
    answer = re.sub(r"(\\text\{)(.*?)(\})", "\\2", answer)
    answer = re.sub(r"(\\textbf\{)(.*?)(\})", "\\2", answer)
    answer = re.sub(r"(\\overline\{)(.*?)(\})", "\\2", answer)
    answer = re.sub(r"(\\boxed\{)(.*)(\})", "\\2", answer)
    answer = re.sub(r"(frac)([^{])(.)", "frac{\\2}{\\3}", answer)
    answer = re.sub(r"(sqrt)([^{])", "sqrt{\\2}", answer)
    answer = answer.replace("$", "")
    if answer.replace(",", "").isdigit():
        answer = answer.replace(",", "")
    return answer


def normalize_math_answer(answer: str) -> str:
    """The string both sides are reduced to for the exact-match step (val_math.py ``canonicalize_for_compare``).

    In order: (1) ``cleanup_candidate``: strip markdown and answer prefixes (``Final Answer:``, ``####``,
    ``<answer>``...), map unicode minus/times/divide, ``\\dfrac``/``\\tfrac`` -> ``\\frac``, drop
    ``\\left``/``\\right`` and ``\\! \\, \\;``, ``\\%`` -> ``%``, peel outer ``$``, ``\\[ \\]``, ``\\( \\)``,
    ``\\boxed{}``, ``\\fbox{}``, ``\\text{}``, ``\\mathrm{}``, ``\\textbf{}`` and edge punctuation, collapse
    spaces; (2) Minerva's ``normalize_final_answer``: keep what follows the last ``=``, drop units and words
    (``degrees``, ``cm``, ``^\\circ``, ``\\text{}``...), unwrap ``\\text{}``/``\\textbf{}``/``\\overline{}``,
    ``\\fracab`` -> ``\\frac{a}{b}``, ``\\sqrt2`` -> ``\\sqrt{2}``, ``1,000`` -> ``1000``; (3) ``\\{``/``\\}``
    -> ``{``/``}``, remove all spaces, strip edge punctuation. Its quirks are kept on purpose (``"a "`` and
    ``"ft"`` are deleted anywhere, so ``\\infty`` becomes ``\\iny``): both sides get the same treatment.
    """
    out = _normalize_final_answer(_cleanup(answer)).replace("\\{", "{").replace("\\}", "}")
    return out.replace(" ", "").strip(_EDGE_PUNCTUATION)


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
        stripped = _strip_markdown(line).lstrip("-*")
        if stripped:
            out.extend(_with_rhs(stripped))
    return out[-8:]


def _finish(candidates: Iterable[str]) -> list[str]:
    """Cleaned, without empty or placeholder candidates, deduplicated."""
    return _dedupe(c for c in map(_cleanup, candidates) if c.lower() not in _NOT_ANSWERS)


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
    return _cleanup(best[1])


def _math_prediction_candidates(text: str) -> list[str]:
    """val_math.py ``extract_llm_final_answer_candidates`` (+ ``evaluate_example``'s fallback): at most ten."""
    raw = text.strip()
    if not raw:
        return []
    candidates = [_last_pattern_answer_near_end(text) or ""]
    boxed, end = _last_boxed_with_end(text)
    if boxed and end is not None and not _substantial_suffix(text, end + 1):
        candidates.append(boxed)
    tail = raw[-800:]
    candidates.extend(_latex_blocks(tail)[-1:])
    for line in reversed([line.strip() for line in tail.splitlines() if line.strip()][-3:]):
        stripped = _strip_markdown(line).lstrip("-*").strip()
        if stripped:
            candidates.extend(_with_rhs(stripped))
    if len(raw) <= 200:
        candidates.append(raw)
    return _finish(candidates)[:10] or _dedupe([_cleanup(raw)])


def _math_gold_candidates(answer: str) -> list[str]:
    """val_math.py ``extract_ground_truth_answer_candidates`` on the dataset's ``answer`` field."""
    raw = answer.strip()
    if not raw:
        return []
    marked = _all_boxed(raw)[-1:] + _with_first_lines(reversed(_pattern_matches(raw)[-3:]))
    candidates = [_cleanup(raw), *_finish(marked)]
    if len(raw) <= 200:
        everywhere = list(reversed(_all_boxed(raw)[-6:]))
        everywhere += _with_first_lines(reversed(_pattern_matches(raw)[-6:]))
        everywhere += list(reversed(_latex_blocks(raw)))
        everywhere += list(reversed(_line_candidates(raw)))
        everywhere.append(raw)
        candidates += _finish(everywhere)[:20]
    return _dedupe(candidates)


# ---------------------------------------------------------------------- MATH comparisons (val_math.py)
_LATEX_TOKENS = ("\\frac", "\\sqrt", "\\pi", "\\cdot", "\\pm", "{", "}")
_SAFE_SYMPIFY = re.compile(r"[0-9A-Za-z+\-*/^().,\s]*")


def _sympy_value(text: str) -> Any:
    """val_math.py ``maybe_parse_numeric``: sympy's LaTeX parser for LaTeX-looking text (it needs antlr4 4.11;
    without it, as in DMax, the attempt fails and we fall through), else ``sympify`` of an ASCII rewrite."""
    candidate = _cleanup(text)
    if not candidate or _is_pathological(candidate):
        return None
    if candidate.endswith("%"):
        candidate = f"({candidate[:-1]})/100"
    if any(token in candidate for token in _LATEX_TOKENS):
        try:
            from sympy.parsing.latex import parse_latex

            return parse_latex(candidate)
        except Exception:
            pass
    ascii_text = candidate.replace("^", "**").replace("\\pi", "pi").replace("\\cdot", "*")
    ascii_text = ascii_text.replace("{", "(").replace("}", ")")
    if not _SAFE_SYMPIFY.fullmatch(ascii_text) or "__" in ascii_text or re.search(r"\.[A-Za-z_]", ascii_text):
        return None  # deviation: sympify runs eval(); only arithmetic-looking text goes in
    import sympy

    return sympy.sympify(ascii_text)


def _sympy_equal(gold: str, pred: str) -> bool:
    def run() -> bool:
        import sympy

        left, right = _sympy_value(gold), _sympy_value(pred)
        if left is None or right is None:
            return False
        return bool(sympy.simplify(left - right) == 0)

    return _guarded(False, run)


def _mv_variants(text: str) -> list[str]:
    cleaned = _cleanup(text)
    return _dedupe([text, cleaned, f"${cleaned}$"])


def _math_verify_equal(gold: str, pred: str, budget: _Budget) -> bool:
    """val_math.py ``try_math_verify`` in snippet mode: every variant pair of gold and prediction."""
    for gold_variant in _mv_variants(gold):
        gold_parsed = _mv_parse(gold_variant)
        for pred_variant in _mv_variants(pred):
            if budget.spent():
                return False
            if _mv_verify(gold_parsed, _mv_parse(pred_variant)):
                return True
    return False


def _math_dmax_compatible(text: str, gold: str) -> bool:
    """val_math.py ``compare_candidates``: all pairs by normalised exact match, then sympy, then math-verify."""
    budget = _Budget(DMAX_MATH_BUDGET_S)
    golds, preds = _math_gold_candidates(gold), _math_prediction_candidates(text)
    pred_norms = {normalize_math_answer(p) for p in preds}
    if any(g_norm and g_norm in pred_norms for g_norm in map(normalize_math_answer, golds)):
        return True
    for g in golds:
        for p in preds:
            if budget.spent():
                return False
            if _sympy_equal(g, p):
                return True
    return any(_math_verify_equal(g, p, budget) for g in golds for p in preds)


def _boxed_for_parse(answer: str) -> str:
    """``$\\boxed{answer}$`` unless the answer already carries a box, so math-verify reads exactly this answer."""
    return answer if "\\boxed" in answer or "\\fbox" in answer else f"$\\boxed{{{answer}}}$"


def _math_strict(extracted: str | None, gold: str) -> bool:
    if extracted is None:
        return False
    if re.sub(r"\s+", "", extracted) == re.sub(r"\s+", "", gold):
        return True
    return _mv_verify(_mv_parse(_boxed_for_parse(gold)), _mv_parse(_boxed_for_parse(extracted)))


def score_math(text: str, gold: str) -> MathScore:
    """Score a MATH-500 generation against `gold` (the dataset's ``answer`` LaTeX string). Never raises: a
    failure or an exhausted budget scores False. Rules: the module docstring."""
    extracted = _guarded(None, last_boxed, text)
    return MathScore(
        dmax_compatible=_guarded(False, _math_dmax_compatible, text, gold, seconds=DMAX_MATH_BUDGET_S + GUARD_S),
        strict=_guarded(False, _math_strict, extracted, gold),
        extracted=extracted,
    )
