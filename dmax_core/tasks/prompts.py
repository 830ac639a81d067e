"""A local prompt set: user turns without reference answers, for distillation (the base model answers them
and its answers become the trajectory dataset, spec §2.1: OPUT trains on the model's own outputs).

Schema: one of `prompt`, `question` or `problem` per row, in any file `datafiles` reads; every row is a
training prompt. Nothing can be scored (`has_reference` is false): distillation then reports no teacher
accuracy, and evaluation refuses the task.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from dmax_core.tasks.base import Problem
from dmax_core.tasks.benchmark import BenchmarkTask, text_field


class PromptSet(BenchmarkTask):
    name = "prompts"
    columns = (("prompt", "question", "problem"),)
    score_names = ("correct",)
    has_reference = False

    def __init__(self, path: str, split: str = "train", limit: int | None = None,
                 allow_download: bool = False) -> None:
        super().__init__(path, split, limit, allow_download)

    def problem(self, row: Mapping[str, Any], where: str) -> Problem:
        return Problem(text_field(row, "prompt", where), "", "", task=self.name)

    def splits(self) -> dict[str, list[Problem]]:
        return {"train": self.problems, "validation": [], "test": []}

    def score(self, text: str, problem: Problem) -> dict[str, bool]:
        return {"correct": False}  # no reference answer: nothing to score against
