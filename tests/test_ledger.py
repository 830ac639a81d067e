"""The ledger task: generator, splits, tokenizer round trip and the strict whole-solution scorer.

The checks re-derive every answer from the question words with plain Python (an independent reading of
the task's rules), instead of comparing the generator with itself.
"""

from __future__ import annotations

import itertools
from collections import Counter

import pytest

from dmax_core.tasks import Problem, build_task, ledger
from dmax_core.tasks.running_total import DEFAULT_ADD_VERBS, DEFAULT_NAMES, DEFAULT_SUB_VERBS
from dmax_core.tokenizer import build_tokenizer, encode, render_conversation


def _facts(question: str) -> dict[str, tuple[int, str, int]]:
    """name -> (start, op, amount), read from the question text by hand-written rules."""
    sentences = question.removesuffix(" How many now ?").split(" . ")
    sentences[-1] = sentences[-1].removesuffix(" .")
    out = {}
    for s in sentences:
        name, has, start, conj, verb, amount = s.split(" ")
        assert (has, conj) == ("has", "and")
        op = "+" if verb in DEFAULT_ADD_VERBS else "-"
        assert verb in DEFAULT_ADD_VERBS + DEFAULT_SUB_VERBS
        out[name] = (int(start), op, int(amount))
    return out


def _parse_statement(s: str) -> tuple[str, str, bool, int, str, int, int]:
    """(connective, name, says_now, x, op, y, result) of one answer statement, by hand."""
    words = s.split(" ")
    connective = words.pop(0) if words[0] in ("so", "then") else ""
    now = words[1] == "now"
    if now:
        del words[1]
    name, has, x, op, y, eq, result = words
    assert (has, eq) == ("has", "=")
    return connective, name, now, int(x), op, int(y), int(result)


def test_problems_follow_the_rules():
    problems = ledger.generate_problems(400, seed=3, min_steps=2, max_steps=6)
    sizes = Counter()
    for p in problems:
        facts = _facts(p.question)
        assert p.task == "ledger" and len(facts) == p.question.split().count("has") and 2 <= len(facts) <= 6
        sizes[len(facts)] += 1
        statements = p.answer.removesuffix(" .").split(" . ")
        parsed = [_parse_statement(s) for s in statements]
        assert [x[1] for x in parsed] == list(facts)  # statement j answers sentence j
        assert parsed[0][0] == ""  # the first statement has no connective
        for _, name, _, x, op, y, result in parsed:
            start, fact_op, amount = facts[name]
            total = start + amount if fact_op == "+" else start - amount
            assert (op, result) == (fact_op, total)
            assert 0 <= total <= 9 and 1 <= start <= 9 and amount >= 1
            if op == "-":
                assert (x, y) == (start, amount)
            else:
                assert {x, y} == {start, amount}
        assert ledger.parse_question(p.question) == [ledger.Transaction(n, *facts[n]) for n in facts]
    assert set(sizes) == {2, 3, 4, 5, 6}


def test_reference_answers_are_multimodal():
    """The point of the task: the same question admits several written solutions, with the documented
    frequencies (a uniform tie for the connective, skewed preferences for "now" and the operand order)."""
    problems = ledger.generate_problems(3000, seed=5, min_steps=4, max_steps=4)
    connectives, now, start_first, plus = Counter(), 0, 0, 0
    for p in problems:
        facts = _facts(p.question)
        for j, s in enumerate(p.answer.removesuffix(" .").split(" . ")):
            connective, name, says_now, x, op, _, _ = _parse_statement(s)
            if j:
                connectives[connective] += 1
            now += says_now
            start, _, amount = facts[name]
            if op == "+" and start != amount:
                plus += 1
                start_first += x == start
    share = {c: n / sum(connectives.values()) for c, n in connectives.items()}
    assert set(share) == {"", "so", "then"} and all(abs(v - 1 / 3) < 0.03 for v in share.values())
    assert abs(now / (4 * len(problems)) - ledger.P_NOW) < 0.02
    assert abs(start_first / plus - ledger.P_START_FIRST) < 0.03


def test_splits_are_disjoint_deterministic_and_keep_test_fixed():
    a = ledger.make_splits(500, 40, 50, seed=9)
    assert {k: len(v) for k, v in a.items()} == {"train": 500, "validation": 40, "test": 50}
    questions = [{p.question for p in a[k]} for k in ("train", "validation", "test")]
    assert sum(map(len, questions)) == 590
    assert not any(x & y for x, y in itertools.combinations(questions, 2))
    assert ledger.make_splits(500, 40, 50, seed=9) == a
    assert ledger.make_splits(20, 40, 50, seed=9)["test"] == a["test"]
    task = build_task("ledger", n_train=5, n_validation=1, n_test=1, seed=0)
    assert task.splits()["test"][0].task == "ledger"


def test_count_and_bad_knobs():
    # One person: 9 starts; each start has 9 amounts (1..9-s to add, 1..s to take), 4 verbs each.
    assert ledger.count_questions(1, 1) == len(DEFAULT_NAMES) * 9 * 9 * 4
    with pytest.raises(ValueError, match="max_steps"):
        ledger.make_splits(1, 1, 1, seed=0, min_steps=3, max_steps=2)
    with pytest.raises(ValueError, match="distinct names"):
        ledger.generate_problems(1, seed=0, min_steps=1, max_steps=len(DEFAULT_NAMES) + 1)
    with pytest.raises(ValueError, match="allow only"):
        ledger.make_splits(5000, 0, 0, seed=0, min_steps=1, max_steps=1)
    with pytest.raises(ValueError, match="not a ledger"):
        ledger.parse_question("Mia has 8 books . Mia eats 6 books . How many now ?")


def test_tokenizer_round_trip_and_lengths():
    tok = build_tokenizer(ledger.vocabulary(3, 4))
    for p in ledger.generate_problems(300, seed=1, min_steps=3, max_steps=4):
        text = render_conversation(tok, p.question, p.answer)
        ids = encode(tok, text)
        assert tok.unk_token_id not in ids
        assert len(ids) <= 96  # the ledger preset's n: 4 people fit with their answer and <|role_end|>


QUESTION = "Mia has 3 and finds 4 . Tom has 8 and loses 2 . How many now ?"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("Tom has 8 - 2 = 6 . Mia has 4 + 3 = 7 .", True),
        ("Mia now has 3 + 4 = 7 . so Tom has 8 - 2 = 6 .", True),
        ("then Mia has 3 + 4 = 7 . Tom now has 8 - 2 = 6 .", True),  # any phrasing the task allows
        ("so so Mia has 3 + 4 = 7 . Tom has 8 - 2 = 6 .", False),
        ("Mia has now 3 + 4 = 7 . Tom has 8 - 2 = 6 .", False),
        ("Mia now now has 3 + 4 = 7 . Tom has 8 - 2 = 6 .", False),
        ("Mia has 3 + 4 = 7 . Tom has 8 - 2 = 6 . <|role_end|>", True),  # special tokens are ignored
        ("Mia has 3 + 4 = 7 . Mia has 8 - 2 = 6 .", False),  # one person twice
        ("Mia has 3 + 4 = 7 .", False),  # somebody missing
        ("Mia has 4 + 4 = 7 . Tom has 8 - 2 = 6 .", False),  # incoherent operands (two orders mixed)
        ("Mia has 3 + 4 = 8 . Tom has 8 - 2 = 6 .", False),  # wrong result
        ("Mia has 3 + 4 = 7 . Tom has 2 - 8 = 6 .", False),  # subtraction is not commutative
        ("Mia has 3 - 4 = 7 . Tom has 8 - 2 = 6 .", False),  # wrong operation
        ("Mia has 3 + 4 = 7 . Tom has 8 - 2 = 6 . Tom", False),  # trailing junk
        ("Mia has 3 + 4 = 7 Tom has 8 - 2 = 6 . .", False),
        ("Ana has 3 + 4 = 7 . Tom has 8 - 2 = 6 .", False),  # a stranger
    ],
)
def test_scorer_hand_cases(text, expected):
    assert ledger.is_correct(text, Problem(QUESTION, "", "", task="ledger")) is expected
    assert build_task("ledger").is_correct(text, Problem(QUESTION, "", "", task="ledger")) is expected


def test_the_task_registry_refuses_unknown_tasks_and_knobs():
    with pytest.raises(ValueError, match="unknown task 'squad'; known: gsm8k, humaneval, running_total, ledger"):
        build_task("squad")
    with pytest.raises(ValueError, match="task 'gsm8k' needs path"):
        build_task("gsm8k")
    with pytest.raises(ValueError, match="has no knob"):
        build_task("ledger", people=3)


def test_impossible_task_knobs_are_config_errors():
    from dmax_core.config import load_config
    from dmax_core.errors import ConfigError
    from dmax_core.stages.common import task_splits

    with pytest.raises(ConfigError, match="only 8 distinct names"):  # refused when the config is read
        load_config("smoke", ["task.name=ledger", "task.max_steps=9"])
    cfg = load_config("smoke", ["task.name=ledger", "task.min_steps=1", "task.max_steps=1", "task.n_train=5000"])
    with pytest.raises(ConfigError, match="task 'ledger': requested 5010 distinct questions"):  # too few exist
        task_splits(cfg)
