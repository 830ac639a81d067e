"""Synthetic "running total" word problems: the CPU-scale stand-in for GSM8K.

Why this task: at tiny scale (see ``shared/docs/tiny-scale-findings.md``) a model can actually learn it, and
its answers contain surface ambiguity (the operands of ``+`` come in random order), so decoding many tokens
of one block in parallel can produce incoherent mixtures -- exactly the failure DMax (OPUT + SPD) targets.

A problem starts with a value and applies ``n_steps`` operations, each to the previous result::

    question: Mia has 8 books . Mia eats 6 books . Mia finds 2 books . Mia finds 1 books . How many now ?
    answer:   8 - 6 = 2 . 2 + 2 = 4 . 1 + 4 = 5 . #### 5

Every value (start, operand, intermediate and final result) is a single digit 0..9 and every token is
separated by single spaces, so a word-level tokenizer round-trips the text exactly.

Scoring is exact match on the integer after the last ``####``: the answers always end in
``#### <integer>``, so this is unambiguous and cheap, and it cannot reward an incoherent chain that happens
to contain the right number somewhere. It only tolerates what decoding can leave behind: extra spaces and
stray special tokens such as ``<|role_end|>`` or ``<|mask|>``. This is not GSM8K's lenient scorer (spec
§5.3); do not loosen it towards that one.

This module must stay pure and deterministic: no global random state (every draw comes from a
``random.Random(seed)`` owned by the call), no tokenizer or model imports, no network or file access.
"""

from __future__ import annotations

import random
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from dmax_core.tasks.base import GeneratedTask, Problem, strip_special_tokens
from dmax_core.tasks.splits import draw_disjoint_splits

__all__ = [
    "DEFAULT_ADD_VERBS",
    "DEFAULT_NAMES",
    "DEFAULT_OBJECTS",
    "DEFAULT_SUB_VERBS",
    "RunningTotal",
    "count_questions",
    "extract_final_answer",
    "generate_problems",
    "make_splits",
    "vocabulary",
]

# Running totals and operands stay inside 0..MAX_VALUE so every number is one token (the findings file
# showed two-digit arithmetic is not learnable at this scale).
MAX_VALUE = 9

DEFAULT_NAMES: tuple[str, ...] = ("Mia", "Tom", "Ana", "Leo", "Sam", "Zoe", "Ben", "Eva")
DEFAULT_OBJECTS: tuple[str, ...] = (
    "books", "apples", "coins", "cards", "pens", "shells", "stamps", "marbles",
)
DEFAULT_ADD_VERBS: tuple[str, ...] = ("finds", "gets", "buys", "wins")
DEFAULT_SUB_VERBS: tuple[str, ...] = ("eats", "loses", "sells", "drops")

# Fixed words of the question/answer frame (everything the generator emits that is not a knob).
_FRAME_WORDS: tuple[str, ...] = ("has", ".", "How", "many", "now", "?", "+", "-", "=", "####")
_DIGITS: tuple[str, ...] = tuple(str(v) for v in range(MAX_VALUE + 1))


@dataclass(frozen=True)
class _Difficulty:
    min_steps: int
    max_steps: int
    names: tuple[str, ...]
    objects: tuple[str, ...]
    add_verbs: tuple[str, ...]
    sub_verbs: tuple[str, ...]


def _difficulty(
    min_steps: int = 3,
    max_steps: int = 4,
    names: Sequence[str] = DEFAULT_NAMES,
    objects: Sequence[str] = DEFAULT_OBJECTS,
    add_verbs: Sequence[str] = DEFAULT_ADD_VERBS,
    sub_verbs: Sequence[str] = DEFAULT_SUB_VERBS,
) -> _Difficulty:
    """Validate the difficulty knobs once, so every public function accepts and rejects the same ones.

    Unknown keyword arguments raise ``TypeError`` (Python does that for us), bad values ``ValueError``.
    """
    if isinstance(min_steps, bool) or not isinstance(min_steps, int) or min_steps < 1:
        raise ValueError(f"min_steps must be an int >= 1, got {min_steps!r}")
    if isinstance(max_steps, bool) or not isinstance(max_steps, int) or max_steps < min_steps:
        raise ValueError(f"max_steps must be an int >= min_steps ({min_steps}), got {max_steps!r}")
    lists = {"names": names, "objects": objects, "add_verbs": add_verbs, "sub_verbs": sub_verbs}
    reserved = set(_FRAME_WORDS) | set(_DIGITS)
    checked: dict[str, tuple[str, ...]] = {}
    for key, words in lists.items():
        if isinstance(words, str):
            raise ValueError(f"{key} must be a sequence of words, not a single string {words!r}")
        words = tuple(words)
        if not words:
            raise ValueError(f"{key} must not be empty")
        if len(set(words)) != len(words):
            raise ValueError(f"{key} contains duplicates: {words!r}")
        for w in words:
            # One whitespace-free token each, so the word-level tokenizer round-trips and the question
            # stays parseable (a name equal to "has" or a digit would make the story ambiguous).
            if not isinstance(w, str) or not w or w.split() != [w]:
                raise ValueError(f"{key} entries must be single non-empty words without spaces, got {w!r}")
            if w in reserved or w.lstrip("-").isdigit():
                raise ValueError(f"{key} entry {w!r} collides with a frame word or a number")
        checked[key] = words
    verbs = set(checked["add_verbs"]) & set(checked["sub_verbs"])
    if verbs:
        raise ValueError(f"add_verbs and sub_verbs overlap: {sorted(verbs)}")
    return _Difficulty(min_steps, max_steps, **checked)


def vocabulary(**difficulty: Any) -> list[str]:
    """Every word the generator can emit with these knobs (sorted), for building a tokenizer without
    scanning a corpus."""
    d = _difficulty(**difficulty)
    words = set(_FRAME_WORDS) | set(_DIGITS) | set(d.names) | set(d.objects) | set(d.add_verbs)
    words |= set(d.sub_verbs)
    return sorted(words)


def _generate_one(rng: random.Random, d: _Difficulty) -> Problem:
    name = rng.choice(d.names)
    obj = rng.choice(d.objects)
    total = rng.randint(1, MAX_VALUE)
    n_steps = rng.randint(d.min_steps, d.max_steps)
    story = [f"{name} has {total} {obj} ."]
    chain: list[str] = []
    for _ in range(n_steps):
        # Pick among the operations that keep the total inside 0..MAX_VALUE with an operand >= 1.
        ops = [op for op, ok in (("+", total < MAX_VALUE), ("-", total > 0)) if ok]
        op = rng.choice(ops)
        if op == "+":
            k = rng.randint(1, MAX_VALUE - total)
            new = total + k
            a, b = (total, k) if rng.random() < 0.5 else (k, total)
            story.append(f"{name} {rng.choice(d.add_verbs)} {k} {obj} .")
            chain.append(f"{a} + {b} = {new} .")
        else:
            k = rng.randint(1, total)
            new = total - k
            story.append(f"{name} {rng.choice(d.sub_verbs)} {k} {obj} .")
            chain.append(f"{total} - {k} = {new} .")
        total = new
    story.append("How many now ?")
    chain.append(f"#### {total}")
    return Problem(question=" ".join(story), answer=" ".join(chain), final_answer=str(total))


def generate_problems(n: int, seed: int, **difficulty: Any) -> list[Problem]:
    """``n`` problems drawn from ``random.Random(seed)``; same arguments -> same list. May repeat questions
    (use :func:`make_splits` for deduplicated, disjoint splits)."""
    if n < 0:
        raise ValueError(f"n must be >= 0, got {n}")
    d = _difficulty(**difficulty)
    rng = random.Random(seed)
    return [_generate_one(rng, d) for _ in range(n)]


def count_questions(**difficulty: Any) -> int:
    """Exact number of distinct question texts the knobs allow (used to refuse impossible split requests).

    A question is fixed by name, object, start value and, per step, the verb and operand; the operand
    order of ``+`` only changes the answer text, not the question.
    """
    d = _difficulty(**difficulty)
    n_add, n_sub = len(d.add_verbs), len(d.sub_verbs)
    # paths[v] = number of distinct step sequences of the current length that end at value v.
    paths = [1 if v >= 1 else 0 for v in range(MAX_VALUE + 1)]
    total = 0
    for step in range(1, d.max_steps + 1):
        nxt = [0] * (MAX_VALUE + 1)
        for v, count in enumerate(paths):
            if not count:
                continue
            for k in range(1, MAX_VALUE - v + 1):
                nxt[v + k] += count * n_add
            for k in range(1, v + 1):
                nxt[v - k] += count * n_sub
        paths = nxt
        if step >= d.min_steps:
            total += sum(paths)
    return total * len(d.names) * len(d.objects)


def make_splits(
    n_train: int, n_val: int, n_test: int, seed: int, **difficulty: Any
) -> dict[str, list[Problem]]:
    """Train/validation/test splits whose question texts never overlap (and never repeat inside a split).

    One ``random.Random(seed)`` stream is consumed in the order test, validation, train, skipping any
    question already taken. So the test set depends only on ``(n_test, seed, difficulty)``: growing the
    training set never changes what is held out.

    Raises ``ValueError`` when the knobs allow fewer distinct questions than requested, or when rejection
    sampling stalls because the request nearly exhausts the question space.
    """
    d = _difficulty(**difficulty)
    return draw_disjoint_splits(
        lambda rng: _generate_one(rng, d), lambda p: p.question, n_train, n_val, n_test, seed,
        count_questions(**difficulty),
    )


_AFTER_MARKER = re.compile(r"^\s*([-+]?\d+)")


def extract_final_answer(text: str) -> str | None:
    """The integer right after the LAST ``####`` (canonical form: no sign for >= 0, no leading zeros).

    ``None`` when there is no ``####`` or the last one is not followed by an integer (only whitespace and
    special-token leftovers may sit in between). An earlier ``####`` is never used as a fallback: the
    model's final word is what counts.
    """
    cleaned = strip_special_tokens(text)
    idx = cleaned.rfind("####")
    if idx < 0:
        return None
    m = _AFTER_MARKER.match(cleaned[idx + 4 :])
    if m is None:
        return None
    return str(int(m.group(1)))


class RunningTotal(GeneratedTask):
    """Running-total word problems (module docstring), scored on the final integer."""

    name = "running_total"

    def vocabulary(self) -> list[str]:
        return vocabulary(min_steps=self.min_steps, max_steps=self.max_steps)

    def make_splits(self) -> dict[str, list[Problem]]:
        return make_splits(self.n_train, self.n_validation, self.n_test, self.seed, min_steps=self.min_steps,
                           max_steps=self.max_steps)

    def is_correct(self, text: str, problem: Problem) -> bool:
        """Exact integer match of :func:`extract_final_answer` with ``problem.final_answer``."""
        pred = extract_final_answer(text)
        if pred is None:
            return False
        try:
            gold = int(problem.final_answer.strip())
        except ValueError:
            raise ValueError(f"problem.final_answer is not an integer: {problem.final_answer!r}") from None
        return int(pred) == gold
