"""Datasets for dmax: the embedded synthetic tasks and their jsonl helpers.

Two tasks (``TASKS``): ``running_total`` (a chain of single-digit steps, the GSM8K stand-in of the first
sessions) and ``ledger`` (independent transactions written in any order; see ``dmax_core.data.ledger``
for why). Only data generation and storage live here; tokenization is in ``dmax_core.tokenizer`` and
scoring in ``dmax_core.evaluation.scoring``.
"""

from collections.abc import Callable
from dataclasses import dataclass

from dmax_core.data import ledger, synthetic
from dmax_core.data.synthetic import (
    DEFAULT_ADD_VERBS,
    DEFAULT_NAMES,
    DEFAULT_OBJECTS,
    DEFAULT_SUB_VERBS,
    Problem,
    count_questions,
    generate_problems,
    load_problems,
    make_splits,
    save_problems,
    vocabulary,
)


@dataclass(frozen=True)
class TaskGenerator:
    """What the stages need from a task: disjoint splits and the word list of its tokenizer.

    Both take the same knobs ``min_steps`` / ``max_steps`` (answer statements per problem: operations of
    the running total, people of the ledger).
    """

    make_splits: Callable[..., dict[str, list[Problem]]]
    vocabulary: Callable[..., list[str]]


TASKS: dict[str, TaskGenerator] = {
    "running_total": TaskGenerator(synthetic.make_splits, synthetic.vocabulary),
    "ledger": TaskGenerator(ledger.make_splits, ledger.vocabulary),
}

__all__ = [
    "DEFAULT_ADD_VERBS",
    "DEFAULT_NAMES",
    "DEFAULT_OBJECTS",
    "DEFAULT_SUB_VERBS",
    "TASKS",
    "Problem",
    "TaskGenerator",
    "count_questions",
    "generate_problems",
    "ledger",
    "load_problems",
    "make_splits",
    "save_problems",
    "vocabulary",
]
