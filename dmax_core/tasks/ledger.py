"""The "ledger" task: several people, one transaction each, and answers phrased in several ways.

Why this task exists (docs/results.md §6 and docs/results-running-total.md §3 tell the measured story):
on the running-total task every answer step needs the previous step's result, so no decoder can finish
more than about one step per forward, and its answers are nearly deterministic, so the threshold
baseline is already fast. GSM8K is different on both counts: a solution has about one dependency per
20-30-token sentence, and the same solution can be written in many ways, so a model trained on human
text spreads its probability over phrasings. That spread is what makes the threshold baseline slow (a
token waits until it is confident) and parallel decoding incoherent (neighbouring positions pick
different phrasings). This task keeps both properties at CPU scale:

    question: Mia has 3 and finds 4 . Tom has 8 and loses 2 . Ana has 5 and wins 1 . How many now ?
    answer:   Mia has 3 + 4 = 7 . so Tom now has 8 - 2 = 6 . Ana has 1 + 5 = 6 .

* statement j answers sentence j and depends only on the question (no chain), so a model can compute the
  whole answer in one forward once it knows *how* the answer is written;
* the reference answers are multi-modal, as natural phrasing is, in two ways:
  - every statement after the first opens with "so", "then" or nothing, uniformly. This is a real tie,
    and it shifts every later position, so decoding positions independently mixes phrasings (a name
    where the previous statement still needs its ``=``). It is what makes parallel decoding of the base
    incoherent and forces threshold decoding to resolve one statement at a time;
  - a statement says "now has" with probability 0.3 (else "has"), and ``+`` puts the starting value
    first with probability 0.7. These are skewed, like real phrasing preferences: the base is unsure
    (p < 0.9, so the threshold decoder waits for them) but its greedy choice is the frequent one, so its
    own trajectories are consistent and a self-distilled model can become confident about them.

Why these choices (docs/results.md §6): a first version listed the people in a random order; the
1.25 M-parameter model did not learn to look a person's numbers up by name within 4000 steps (5 %
one-token accuracy). A second one used uniform ties everywhere (also for the first statement and the
operand order); its OPUT model could not learn the base's arbitrary tie-breaks, stayed unsure, and SPD
failed on exactly those positions.

Scoring (:func:`is_correct`) checks the whole solution, because the answers are multi-modal and an
incoherent mixture of two phrasings is exactly the failure parallel decoding produces. Correct = one
statement ``[so|then] <name> [now] has <x> <op> <y> = <result> .`` per person of the question, each person
exactly once (any order), with that person's operation, operands (either order for ``+``,
``start - amount`` for ``-``) and result, and nothing else. So an incoherent mixture is wrong, as an
incoherent GSM8K chain of thought would be.

Same rules as ``running_total``: pure and deterministic (every draw from the caller's ``random.Random``), one
token per word, single spaces.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from math import perm

from dmax_core.tasks.base import GeneratedTask, Problem, strip_special_tokens
from dmax_core.tasks.running_total import DEFAULT_ADD_VERBS, DEFAULT_NAMES, DEFAULT_SUB_VERBS, MAX_VALUE
from dmax_core.tasks.splits import draw_disjoint_splits

__all__ = [
    "CONNECTIVES",
    "P_NOW",
    "P_START_FIRST",
    "Ledger",
    "Transaction",
    "count_questions",
    "generate_problems",
    "is_correct",
    "make_splits",
    "parse_question",
    "vocabulary",
]

_FRAME_WORDS: tuple[str, ...] = ("has", "and", ".", "How", "many", "now", "?", "+", "-", "=")
# Opening word of every answer statement after the first ("" = none), drawn uniformly: a real tie.
CONNECTIVES: tuple[str, ...] = ("", "so", "then")
# Skewed phrasing preferences (module docstring): P("now has" over "has"), P(start first in "+").
P_NOW = 0.3
P_START_FIRST = 0.7
_DIGITS: tuple[str, ...] = tuple(str(v) for v in range(MAX_VALUE + 1))
_ADD, _SUB = set(DEFAULT_ADD_VERBS), set(DEFAULT_SUB_VERBS)


@dataclass(frozen=True)
class Transaction:
    """One person's line of the question: ``name has start and <verb> amount .``"""

    name: str
    start: int
    op: str  # "+" or "-"
    amount: int

    @property
    def result(self) -> int:
        return self.start + self.amount if self.op == "+" else self.start - self.amount


def _check_people(min_steps: int, max_steps: int) -> None:
    for key, value in (("min_steps", min_steps), ("max_steps", max_steps)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{key} (people per problem) must be an int >= 1, got {value!r}")
    if max_steps < min_steps:
        raise ValueError(f"max_steps ({max_steps}) < min_steps ({min_steps})")
    if max_steps > len(DEFAULT_NAMES):
        raise ValueError(f"max_steps={max_steps} people, but only {len(DEFAULT_NAMES)} distinct names exist")


def vocabulary(min_steps: int = 4, max_steps: int = 5) -> list[str]:
    """Every word the generator can emit (sorted), for building the word-level tokenizer."""
    _check_people(min_steps, max_steps)
    words = set(_FRAME_WORDS) | set(_DIGITS) | set(DEFAULT_NAMES) | {c for c in CONNECTIVES if c}
    return sorted(words | _ADD | _SUB)


def _draw_transaction(rng: random.Random, name: str) -> tuple[Transaction, str]:
    start = rng.randint(1, MAX_VALUE)
    ops = ["-"] if start == MAX_VALUE else ["+", "-"]
    op = rng.choice(ops)
    if op == "+":
        amount, verb = rng.randint(1, MAX_VALUE - start), rng.choice(DEFAULT_ADD_VERBS)
    else:
        amount, verb = rng.randint(1, start), rng.choice(DEFAULT_SUB_VERBS)
    sentence = f"{name} has {start} and {verb} {amount} ."
    return Transaction(name, start, op, amount), sentence


def _statement(rng: random.Random, t: Transaction, first: bool) -> str:
    connective = "" if first else rng.choice(CONNECTIVES)
    has = "now has" if rng.random() < P_NOW else "has"
    swap = t.op == "+" and rng.random() >= P_START_FIRST
    a, b = (t.amount, t.start) if swap else (t.start, t.amount)
    opening = f"{connective} " if connective else ""
    return f"{opening}{t.name} {has} {a} {t.op} {b} = {t.result} ."


def _generate_one(rng: random.Random, min_steps: int, max_steps: int) -> Problem:
    people = rng.sample(DEFAULT_NAMES, rng.randint(min_steps, max_steps))
    drawn = [_draw_transaction(rng, name) for name in people]
    question = " ".join(sentence for _, sentence in drawn) + " How many now ?"
    answer = " ".join(_statement(rng, t, j == 0) for j, (t, _) in enumerate(drawn))
    final = " ".join(f"{t.name} {t.result}" for t, _ in drawn)  # question order, for display only
    return Problem(question=question, answer=answer, final_answer=final, task="ledger")


def generate_problems(n: int, seed: int, min_steps: int = 4, max_steps: int = 5) -> list[Problem]:
    """``n`` problems from ``random.Random(seed)`` (may repeat; use :func:`make_splits` for splits)."""
    if n < 0:
        raise ValueError(f"n must be >= 0, got {n}")
    _check_people(min_steps, max_steps)
    rng = random.Random(seed)
    return [_generate_one(rng, min_steps, max_steps) for _ in range(n)]


def count_questions(min_steps: int = 4, max_steps: int = 5) -> int:
    """Exact number of distinct question texts (ordered people, and per person start, verb, amount)."""
    _check_people(min_steps, max_steps)
    # Per start value s: amounts 1..9-s with an add verb, 1..s with a sub verb -> 9 amounts x 4 verbs
    # for s < 9, and 9 x 4 for s = 9 (subtraction only): 9 starts x 9 x 4 in all.
    per_person = MAX_VALUE * MAX_VALUE * len(DEFAULT_ADD_VERBS)
    assert len(DEFAULT_ADD_VERBS) == len(DEFAULT_SUB_VERBS)
    return sum(perm(len(DEFAULT_NAMES), k) * per_person**k for k in range(min_steps, max_steps + 1))


def make_splits(
    n_train: int, n_val: int, n_test: int, seed: int, min_steps: int = 4, max_steps: int = 5
) -> dict[str, list[Problem]]:
    """Disjoint train/validation/test splits (``dmax_core.data.splits`` holds the guarantees)."""
    _check_people(min_steps, max_steps)
    return draw_disjoint_splits(
        lambda rng: _generate_one(rng, min_steps, max_steps), lambda p: p.question, n_train, n_val, n_test,
        seed, count_questions(min_steps, max_steps),
    )


def parse_question(question: str) -> list[Transaction]:
    """The transactions of a ledger question, in question order; ``ValueError`` if it is not one."""
    words = question.split()
    if words[-4:] != ["How", "many", "now", "?"]:
        raise ValueError(f"not a ledger question (no closing 'How many now ?'): {question!r}")
    body, out = words[:-4], []
    if len(body) % 7:
        raise ValueError(f"not a ledger question (sentences are 7 words): {question!r}")
    for i in range(0, len(body), 7):
        name, has, start, conj, verb, amount, stop = body[i : i + 7]
        if has != "has" or conj != "and" or stop != "." or not start.isdigit() or not amount.isdigit():
            raise ValueError(f"not a ledger sentence: {' '.join(body[i:i + 7])!r}")
        if verb not in _ADD | _SUB:
            raise ValueError(f"unknown verb {verb!r} in {question!r}")
        out.append(Transaction(name, int(start), "+" if verb in _ADD else "-", int(amount)))
    return out


def is_correct(generated_text: str, problem: Problem) -> bool:
    """The generation is a complete, coherent ledger solution (module docstring)."""
    people = {t.name: t for t in parse_question(problem.question)}
    words = strip_special_tokens(generated_text).split()
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


class Ledger(GeneratedTask):
    """The ledger task (module docstring): `min_steps`-`max_steps` people per problem."""

    name = "ledger"

    def vocabulary(self) -> list[str]:
        return vocabulary(self.min_steps, self.max_steps)

    def make_splits(self) -> dict[str, list[Problem]]:
        return make_splits(self.n_train, self.n_validation, self.n_test, self.seed, self.min_steps, self.max_steps)

    def is_correct(self, text: str, problem: Problem) -> bool:
        return is_correct(text, problem)
