"""Problems of an embedded task read from a file: any evaluation set a tiny model can solve, as data.

Schema: `question`, `answer`, `final_answer` and optionally `task` per row (what
`tasks.base.save_problems` writes), in any file `datafiles` reads. Each problem is prompted and scored
exactly as the generated task it came from (`scored_as`, else the row's `task`): a ledger problem in a
file scores as `ledger` does. It is how a run shaped like the real-model presets (a base read from a
directory, prompts and evaluation tasks from files) is tried end to end on a CPU with problems the
embedded model can actually solve; a benchmark's file needs its own task (`gsm8k`, ...), not this one.
"""

from __future__ import annotations

from collections.abc import Mapping
from functools import cached_property
from typing import Any

from dmax_core.errors import DataError
from dmax_core.tasks.base import TASKS, GeneratedTask, Problem, Task
from dmax_core.tasks.benchmark import BenchmarkTask, text_field


class ProblemFile(BenchmarkTask):
    name = "problem_file"
    columns = ("question", "answer", "final_answer")
    score_names = ("correct",)

    def __init__(self, path: str, split: str = "test", limit: int | None = None, allow_download: bool = False,
                 scored_as: str | None = None) -> None:
        super().__init__(path, split, limit, allow_download)
        if scored_as is not None:
            self._scorer_class(scored_as)  # an unknown or unsuitable task fails with the config
        self.scored_as = scored_as

    @staticmethod
    def _scorer_class(name: str) -> type[Task]:
        cls = TASKS.get(name)
        if not issubclass(cls, GeneratedTask):
            raise ValueError(f"scored_as={name!r} is not an embedded (generated) task; a benchmark's file "
                             f"is read by its own task (`{name}`), not by problem_file")
        return cls

    @cached_property
    def _scorers(self) -> dict[str, Task]:
        return {}

    def _scorer(self, name: str) -> Task:
        """One instance per scoring task (its scorer is a pure function of text and problem)."""
        if name not in self._scorers:
            self._scorers[name] = self._scorer_class(name)()
        return self._scorers[name]

    def problem(self, row: Mapping[str, Any], where: str) -> Problem:
        task = self.scored_as or row.get("task")
        if not isinstance(task, str):
            raise DataError(f"{where}: no `task` to score the problem as (set the row's `task` or the task's "
                            "`scored_as` knob)")
        try:
            self._scorer_class(task)
        except ValueError as exc:
            raise DataError(f"{where}: {exc}") from exc
        return Problem(text_field(row, "question", where), text_field(row, "answer", where),
                       text_field(row, "final_answer", where), task=task)

    def prompt(self, problem: Problem) -> str:
        return self._scorer(problem.task).prompt(problem)

    def score(self, text: str, problem: Problem) -> dict[str, bool]:
        return {"correct": self._scorer(problem.task).is_correct(text, problem)}
