"""Exact-match scorers for the embedded synthetic tasks (``dmax_core.data``); `is_correct` picks by task.

Running total (``dmax_core.data.synthetic``):

Why a separate, strict scorer: the synthetic answers always end in ``#### <integer>``, so exact match on
that integer is unambiguous and cheap, and it cannot reward an incoherent chain that happens to contain
the right number somewhere. It only tolerates what decoding can leave behind: extra spaces and stray
special tokens such as ``<|role_end|>`` or ``<|mask|>``.

This is NOT GSM8K's scorer. GSM8K's heuristic matcher (spec §5.3: several gold/pred candidates,
normalisation to fractions, "unstable" filters) is a different scorer to be added later; do not loosen
this one towards it.

Ledger (``dmax_core.data.ledger``): the whole solution is checked, because the task's answers are
multi-modal (optional words, ``+`` operands in either order) and an incoherent mixture of two
phrasings is exactly the failure parallel decoding produces. Correct = one statement
``[so|then] <name> [now] has <x> <op> <y> = <result> .`` per person of the question, each person exactly once
(any order), with that person's operation, operands (either order for ``+``, ``start - amount`` for
``-``) and result, and nothing else.

Must stay pure: no tokenizer, model or file access.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from dmax_core.data.synthetic import Problem

__all__ = ["extract_final_answer", "is_correct", "ledger_is_correct", "running_total_is_correct"]

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
    """Score one generation with the rules of ``problem.task``."""
    try:
        scorer = _SCORERS[problem.task]
    except KeyError:
        raise ValueError(f"no scorer for task {problem.task!r}; known: {', '.join(_SCORERS)}") from None
    return scorer(generated_text, problem)


def running_total_is_correct(generated_text: str, problem: Problem) -> bool:
    """Exact integer match of :func:`extract_final_answer` with ``problem.final_answer``."""
    pred = extract_final_answer(generated_text)
    if pred is None:
        return False
    try:
        gold = int(problem.final_answer.strip())
    except ValueError:
        raise ValueError(f"problem.final_answer is not an integer: {problem.final_answer!r}") from None
    return int(pred) == gold


def ledger_is_correct(generated_text: str, problem: Problem) -> bool:
    """The generation is a complete, coherent ledger solution (module docstring)."""
    from dmax_core.data.ledger import CONNECTIVES, parse_question

    people = {t.name: t for t in parse_question(problem.question)}
    words = _SPECIAL.sub(" ", generated_text).split()
    if not words or words[-1] != ".":
        return False
    statements = " ".join(words[:-1]).split(" . ")
    if len(statements) != len(people):
        return False
    seen: set[str] = set()
    for statement in statements:
        parts = statement.split(" ")
        if len(parts) > 7 and parts[0] in CONNECTIVES and parts[0]:  # any phrasing the task allows
            parts = parts[1:]
        if len(parts) == 8 and parts[1] == "now":
            parts = parts[:1] + parts[2:]
        if len(parts) != 7:
            return False
        name, has, x, op, y, equals, result = parts
        t = people.get(name)
        if t is None or name in seen or (has, equals) != ("has", "=") or op != t.op:
            return False
        seen.add(name)
        if not (x.isdigit() and y.isdigit() and result.isdigit()) or int(result) != t.result:
            return False
        allowed = {(t.start, t.amount), (t.amount, t.start)} if t.op == "+" else {(t.start, t.amount)}
        if (int(x), int(y)) not in allowed:
            return False
    return True


_SCORERS = {"running_total": running_total_is_correct, "ledger": ledger_is_correct}
