"""GSM8K / MATH-500 answer scoring: hand-made edge cases, each expectation worked out by hand from the rules
in `dmax_core.tasks.answers` (DMax's val_gsm8k.py / val_math.py for `dmax_compatible`, ours for `strict`).
"""

from __future__ import annotations

import importlib
import inspect
import pkgutil
import subprocess
import sys
import threading
import time

import pytest

from dmax_core.tasks import Task, answers
from dmax_core.tasks.answers import (
    MathScore,
    gsm8k_gold,
    last_boxed,
    normalize_math_answer,
    score_gsm8k,
    score_math,
)

# ---------------------------------------------------------------------------------------------- GSM8K


def test_gsm8k_gold_drops_commas_and_names_a_missing_marker():
    assert gsm8k_gold("She sells 1,000 + 234 = <<1000+234=1234>>1,234 cups.\n#### 1,234") == "1234"
    assert gsm8k_gold("Loss is 5.\n#### -5") == "-5"
    with pytest.raises(ValueError, match="####"):
        gsm8k_gold("She sells 1,234 cups.")
    with pytest.raises(ValueError, match="####"):
        gsm8k_gold("#### twelve")


@pytest.mark.parametrize(
    ("text", "gold", "lenient", "strict", "extracted"),
    [
        # "$" and a thousands comma: both rules drop them.
        ("She pays $1,234 in total.", "1234", True, True, "1234"),
        # Gold given with commas (a whole answer field) is read the same way.
        ("She pays 1234 dollars.", "Step one.\n#### 1,234", True, True, "1234"),
        # A negative answer keeps its sign.
        ("The temperature drops to -5 degrees.", "-5", True, True, "-5"),
        # "18.00" is the number 18 (DMax canonicalises, strict compares exactly as a rational).
        ("Each ticket costs $18.00.", "18", True, True, "18.00"),
        # The answer is the second-to-last number, on the line before: DMax's top two candidates are the
        # last numbers of the last two lines (5, then 18), so lenient; the strict answer is the last one, 5.
        ("So the total is 18.\nShe has 5 left over.", "18", True, False, "5"),
        # "The answer is" is no DMax answer span, but the line's last number is its first candidate.
        ("The answer is 42.", "42", True, True, "42"),
        # Boxed: DMax's boxed candidate is 42; strict reads after "\boxed".
        ("So the total is \\boxed{42} apples.", "42", True, True, "42"),
        # No number at all.
        ("I do not know.", "3", False, False, None),
        # A fraction equal to the gold: DMax canonicalises 6/4 -> 3/2 and gold 1.5 -> 3/2; strict compares
        # rationals.
        ("#### 6/4", "1.5", True, True, "6/4"),
        # Numbers after the marked answer make strict wrong; DMax's candidates are only the last line's
        # last number (7) and the 8-line tail's (7 again): lenient wrong too.
        ("The answer is 18, since 3 + 4 = 7", "18", False, False, "7"),
        # DMax's "Final Answer:" span runs to the end of the text (last number 7); its line candidates are
        # 7 (last line) then 18: the top two hold 18, so lenient; strict reads 7.
        ("Final Answer: 18\nCheck: 3 + 4 = 7", "18", True, False, "7"),
        # "10-5": DMax's number regex reads "-5" (lenient wrong); strict takes a "-" after a digit for
        # subtraction and reads 5.
        ("The difference is 10-5", "5", False, True, "5"),
        # DMax drops responses that look unstable (3+ "wait" and a "wrong") unless a clean marker ends them.
        ("Wait, 5. Wait, that is wrong. Wait, 7.\n18", "18", False, True, "18"),
    ],
)
def test_score_gsm8k(text, gold, lenient, strict, extracted):
    assert score_gsm8k(text, gold) == MathScore(dmax_compatible=lenient, strict=strict, extracted=extracted)


def test_gsm8k_bad_gold_scores_false_instead_of_raising():
    assert score_gsm8k("The answer is 4.", "four") == MathScore(False, False, "4")


# ------------------------------------------------------------------------------------------- MATH-500


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("So $x = \\boxed{5}$.", "5"),
        ("\\boxed{\\frac{\\sqrt{3}}{2}}", "\\frac{\\sqrt{3}}{2}"),  # nested braces
        ("first \\boxed{1} then \\fbox{2} and \\boxed{ 3 }", "3"),  # the last one, stripped
        ("\\boxed{4} and an unclosed \\boxed{5", "4"),
        ("no box here", None),
    ],
)
def test_last_boxed(text, expected):
    assert last_boxed(text) == expected


@pytest.mark.parametrize(
    ("answer", "normalised"),
    [
        ("\\dfrac{14}{3}", "\\frac{14}{3}"),
        ("$\\boxed{\\frac{14}{3}}$.", "\\frac{14}{3}"),
        ("\\text{(C)}", "(C)"),
        ("90^\\circ", "90"),
        ("\\left( 3, \\frac{\\pi}{2} \\right)", "(3,\\frac{\\pi}{2})"),
        ("x = 1,000", "1000"),
        ("\\frac12", "\\frac{1}{2}"),
        ("10\\sqrt2", "10\\sqrt{2}"),
    ],
)
def test_normalize_math_answer(answer, normalised):
    assert normalize_math_answer(answer) == normalised


@pytest.mark.parametrize(
    ("text", "gold", "lenient", "strict", "extracted"),
    [
        # \dfrac vs \frac: the same after normalisation, and for math-verify.
        ("So $x = \\boxed{\\dfrac{14}{3}}$.", "\\frac{14}{3}", True, True, "\\dfrac{14}{3}"),
        # A decimal equal to the fraction: math-verify (and sympy) see 1/2 both ways.
        ("Hence $\\boxed{0.5}$.", "\\frac{1}{2}", True, True, "0.5"),
        # Tuples: \left/\right and spaces do not matter.
        (
            "The point is $\\boxed{\\left(3, \\frac{\\pi}{2}\\right)}$.",
            "(3, \\frac{\\pi}{2})",
            True,
            True,
            "\\left(3, \\frac{\\pi}{2}\\right)",
        ),
        # Intervals: the same interval written with other spacing, and an open one that is not it.
        ("The domain is $\\boxed{[2, 5)}$.", "[2,5)", True, True, "[2, 5)"),
        ("The domain is $\\boxed{(2, 5)}$.", "[2,5)", False, False, "(2, 5)"),
        # \text{} wrappers of a multiple-choice answer.
        ("The answer is $\\boxed{\\text{(C)}}$.", "\\text{(C)}", True, True, "\\text{(C)}"),
        ("The answer is $\\boxed{(C)}$.", "\\text{(C)}", True, True, "(C)"),
        ("The answer is $\\boxed{(D)}$.", "\\text{(C)}", False, False, "(D)"),
        # Degrees: Minerva's normalisation removes ^\circ; math-verify drops the unit.
        ("The angle is $\\boxed{90}$.", "90^\\circ", True, True, "90"),
        ("The angle is $\\boxed{90^\\circ}$.", "90", True, True, "90^\\circ"),
        # Nested braces inside the box; and 10\sqrt2 written as \sqrt{200} (equal by value).
        ("So $\\boxed{\\frac{\\sqrt{3}}{2}}$.", "\\frac{\\sqrt{3}}{2}", True, True, "\\frac{\\sqrt{3}}{2}"),
        ("So $\\boxed{\\sqrt{200}}$.", "10\\sqrt{2}", True, True, "\\sqrt{200}"),
        # A wrong answer.
        ("Therefore $\\boxed{5}$.", "7", False, False, "5"),
    ],
)
def test_score_math(text, gold, lenient, strict, extracted):
    assert score_math(text, gold) == MathScore(dmax_compatible=lenient, strict=strict, extracted=extracted)


@pytest.fixture
def warm_workers() -> None:
    """A started worker, so the time bounds below measure scoring, not starting Python and importing sympy."""
    assert score_math("$\\boxed{0.5}$", "\\frac{1}{2}").strict


FILLER = "\n".join(f"Line {i} of working, nothing to see." for i in range(5))


def test_math_multiple_boxes_last_counts_for_strict():
    # Right box first, wrong box last; the right one is 6 lines from the end, so DMax sees neither it
    # (only the last box and the last three lines are candidates) nor the whole text (over 200 characters).
    text = f"We get $\\boxed{{\\frac{{1}}{{2}}}}$.\n{FILLER}\nSo the answer is $\\boxed{{3}}$."
    assert score_math(text, "\\frac{1}{2}") == MathScore(False, False, "3")
    # Wrong box first, right box last: strict reads the last one.
    text = f"We get $\\boxed{{3}}$.\n{FILLER}\nSo the answer is $\\boxed{{\\frac{{1}}{{2}}}}$."
    assert score_math(text, "\\frac{1}{2}") == MathScore(True, True, "\\frac{1}{2}")


def test_math_earlier_box_on_a_recent_line_is_lenient_only():
    # The right box sits on the second-to-last line, after "=": DMax takes that line's right-hand side.
    text = f"{FILLER}\nThus $x = \\boxed{{\\frac{{1}}{{2}}}}$\nand double-checking, $\\boxed{{3}}$."
    assert score_math(text, "\\frac{1}{2}") == MathScore(True, False, "3")


def test_math_unboxed_answer_is_lenient_only():
    # "The final answer is" is a DMax answer pattern at the very end; strict needs a box.
    text = "Adding up, the final answer is $\\frac{14}{3}$."
    assert score_math(text, "\\frac{14}{3}") == MathScore(True, False, None)
    # A plain last line: DMax's line candidate 14/3 is not the normalised string \frac{14}{3}, but
    # math-verify reads both as 14/3; strict has no box.
    assert score_math(f"{FILLER}\n14/3", "\\frac{14}{3}") == MathScore(True, False, None)


@pytest.mark.parametrize(
    "text",
    [
        "So $\\boxed{10^{10^{10^{10}}}}$.",
        "Since 10**10**10 is big, the answer is 10**10**10",
        "We get $\\boxed{2^{123456}}$ and $\\boxed{123456!}$",
        "$\\boxed{__import__('os').getcwd()}$",
        "\\boxed{" * 2000,
    ],
)
def test_pathological_inputs_return_quickly_and_never_raise(text, warm_workers):
    started = time.monotonic()
    assert score_math(text, "5") == score_math(text, "5")
    assert not score_math(text, "5").dmax_compatible
    assert not score_gsm8k(text, "5").dmax_compatible
    assert time.monotonic() - started < 6.0


def test_identical_pathological_answers_still_match_as_strings(warm_workers):
    started = time.monotonic()
    assert score_math("$\\boxed{10^{10^{10^{10}}}}$", "10^{10^{10^{10}}}") == MathScore(True, True, "10^{10^{10^{10}}}")
    assert time.monotonic() - started < 3.0


# ----------------------------------------------------------------------------------------- plumbing


def test_scoring_works_off_the_main_thread():
    results: list[MathScore] = []
    worker = threading.Thread(target=lambda: results.append(score_math("$\\boxed{0.5}$", "\\frac{1}{2}")))
    worker.start()
    worker.join(timeout=60)
    assert results == [MathScore(True, True, "0.5")]


def test_package_is_cheap_to_import_and_defines_no_task():
    code = (
        "import sys, dmax_core.tasks.answers; "
        "print(sorted(m for m in ('sympy', 'math_verify') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=120)
    assert out.stdout.strip() == "[]"
    modules = [importlib.import_module(f"{answers.__name__}.{m.name}") for m in pkgutil.iter_modules(answers.__path__)]
    assert len(modules) >= 8
    classes = [obj for module in modules for _, obj in inspect.getmembers(module, inspect.isclass)]
    assert not [cls for cls in classes if issubclass(cls, Task)]
