"""MATH answers reduced to a canonical string: val_math.py's ``cleanup_candidate`` and Minerva's
``normalize_final_answer``, the exact-match step of the lenient MATH rule (`normalize_math_answer`).

Kept apart from the candidate rules because `cleanup` is also what every candidate goes through before
sympy or math-verify sees it.
"""

from __future__ import annotations

import re

from dmax_core.tasks.answers.latex import braced

__all__ = ["EDGE_PUNCTUATION", "cleanup", "normalize_math_answer", "strip_markdown"]

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
# Stripped from both ends of a candidate: spaces and ASCII / CJK sentence punctuation.
EDGE_PUNCTUATION = " \n\t\r,.;:!。；，"


def strip_markdown(text: str) -> str:
    """Without surrounding whitespace, ``**`` / ``__`` emphasis and edge backticks: models format answers so."""
    return text.strip().replace("**", "").replace("__", "").strip("`")


def _strip_answer_prefix(text: str) -> str:
    """Drop ``####``, ``<answer>`` tags, ``(Final) Answer:``, ``The final answer is``, ``I hope it is correct``."""
    out = strip_markdown(text)
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
        content, end = braced(text, text.find("{"))
        if content is not None and end == len(text) - 1:
            return content.strip()
    return text


def _unwrap_known_wrappers(text: str) -> str:
    current = text.strip()
    while True:
        unwrapped = _unwrap_once(current.strip()).strip(EDGE_PUNCTUATION)
        if unwrapped == current:
            return current
        current = unwrapped


def cleanup(text: str) -> str:
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
    out = _normalize_final_answer(cleanup(answer)).replace("\\{", "{").replace("\\}", "}")
    return out.replace(" ", "").strip(EDGE_PUNCTUATION)

