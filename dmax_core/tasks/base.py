"""What a task is: problems in splits, the user turn of each, and a scorer; plus the task registry.

A task class registers itself by its `name` when its module is imported (nanochat's `tasks/` shape:
one small file per task). Its knobs are its `__init__` keyword arguments, so the config validates
`task.name` and every `task.<knob>` against this registry (`dmax_core.registry`).

The embedded tasks generate their problems (`GeneratedTask`: disjoint train/validation/test splits drawn
from a seed, and the word list of their word-level tokenizer). Tasks that read benchmark files plug in
the same way. Tasks must not import the model, the tokenizer or the decoders: they are data and rules.
"""

from __future__ import annotations

import json
import os
import re
from abc import ABC, abstractmethod
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any, ClassVar

from dmax_core.files import atomic_write_text
from dmax_core.registry import Registry, check_int

TASKS: Registry[Task] = Registry("task")

# Special-token leftovers a decode can leave in text: <|...|> tokens, the <role>/</role> markers, <unk>.
_SPECIAL = re.compile(r"<\|[^|<>]*\|>|</?role>|<unk>")


def strip_special_tokens(text: str) -> str:
    """`text` with special-token leftovers replaced by spaces (scorers must not reward or punish them)."""
    return _SPECIAL.sub(" ", text)


@dataclass(frozen=True)
class Problem:
    """One problem of a task: the question, one reference solution and the final answer.

    `task` names the task that made it, so the right scorer can be found for a stored problem. `data`
    holds what a benchmark's scorer needs beyond the answer (HumanEval's tests and entry point, its
    task_id); embedded tasks leave it empty."""

    question: str
    answer: str
    final_answer: str
    task: str = "running_total"
    data: Mapping[str, Any] = field(default_factory=dict, compare=False)


class Task(ABC):
    """A registered task. Subclasses set `name` and implement `splits` and `is_correct`.

    `score_names` name the scores `score` returns; the first is *the* score (a sample's `correct`, a
    cell's `accuracy`), the others are reported beside it (`accuracy_<name>`). Benchmarks report the DMax
    repository's lenient score first, so their accuracy is comparable with the paper, and a strict one."""

    name: ClassVar[str]
    score_names: ClassVar[tuple[str, ...]] = ("correct",)
    # False for prompt sets without answers: nothing can be scored, so no accuracy is reported.
    has_reference: ClassVar[bool] = True
    # Answers scored at once, off the decode loop (`evaluation.runner`): one thread for scorers that only
    # compute (a second would contend with the decode loop for the interpreter); the code benchmarks,
    # whose score waits on sandboxed programs, run several (their `workers` knob).
    score_workers: int = 1

    def __init_subclass__(cls, **kwargs: object) -> None:
        super().__init_subclass__(**kwargs)
        if "name" in cls.__dict__:  # concrete tasks name themselves; intermediate bases do not
            TASKS.register(cls)

    @abstractmethod
    def splits(self) -> dict[str, list[Problem]]:
        """`train`, `validation` and `test` problems; no question appears in two splits."""

    @abstractmethod
    def is_correct(self, text: str, problem: Problem) -> bool:
        """Score one generated answer against `problem` (pure: no model, no files)."""

    def score(self, text: str, problem: Problem) -> dict[str, bool]:
        """Every score of one answer, by `score_names` (one score, `is_correct`, unless a task has more)."""
        return {self.score_names[0]: self.is_correct(text, problem)}

    def prompt(self, problem: Problem) -> str:
        """The user turn the model is asked (the chat template is the tokenizer's job)."""
        return problem.question


class GeneratedTask(Task):
    """An embedded task whose problems are generated from a seed, at a difficulty of `min_steps`-`max_steps`
    answer statements (operations of a running total, people of a ledger).

    Knobs: split sizes, the seed of the split draw and the difficulty. The splits are drawn once per
    instance, test first, so the test split depends only on its own size, the seed and the difficulty."""

    def __init__(self, n_train: int = 20000, n_validation: int = 100, n_test: int = 200, min_steps: int = 3,
                 max_steps: int = 4, seed: int = 1234) -> None:
        self.n_train = check_int("n_train", n_train, 1)
        self.n_validation = check_int("n_validation", n_validation, 1)
        self.n_test = check_int("n_test", n_test, 1)
        self.seed = check_int("seed", seed, 0)
        self.min_steps, self.max_steps = min_steps, max_steps
        self.vocabulary()  # the generator checks the difficulty knobs (its one copy of those checks)

    @abstractmethod
    def vocabulary(self) -> list[str]:
        """Every word the generator can emit at this difficulty (the word-level tokenizer's words)."""

    @abstractmethod
    def make_splits(self) -> dict[str, list[Problem]]:
        """Draw the splits (called once; `splits` caches the result)."""

    @cached_property
    def _splits(self) -> dict[str, list[Problem]]:
        return self.make_splits()

    def splits(self) -> dict[str, list[Problem]]:
        return self._splits


# ----------------------------------------------------------------------------------- problem files
def save_problems(problems: Iterable[Problem], path: str | os.PathLike[str]) -> Path:
    """Write one JSON object per line, atomically."""
    rows = ({"question": p.question, "answer": p.answer, "final_answer": p.final_answer, "task": p.task}
            for p in problems)
    return atomic_write_text(path, "".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows))


def load_problems(path: str | os.PathLike[str]) -> list[Problem]:
    """Read a file written by `save_problems`. Blank lines are skipped; any other malformed line
    raises `ValueError` naming the file and the 1-based line number."""
    path = Path(path)
    fields = ("question", "answer", "final_answer")
    problems: list[Problem] = []
    with path.open(encoding="utf-8") as f:
        for lineno, line in enumerate(f, start=1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as e:
                raise ValueError(f"{path}:{lineno}: not valid JSON ({e.msg})") from e
            if not isinstance(row, dict):
                raise ValueError(f"{path}:{lineno}: expected a JSON object, got {type(row).__name__}")
            missing = [k for k in fields if k not in row]
            if missing:
                raise ValueError(f"{path}:{lineno}: missing field(s) {missing}")
            bad = [k for k in fields if not isinstance(row[k], str)]
            if bad:
                raise ValueError(f"{path}:{lineno}: field(s) {bad} must be strings")
            task = row.get("task", "running_total")  # files written before tasks were named
            if not isinstance(task, str):
                raise ValueError(f"{path}:{lineno}: field 'task' must be a string")
            problems.append(Problem(row["question"], row["answer"], row["final_answer"], task))
    return problems
