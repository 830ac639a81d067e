"""MBPP sanitized (427 Python problems, 0-shot): the DMax repository's prompt, scored by running the
problem's asserts in the sandbox.

Schema: `task_id`, `prompt` or `text` (the task), `code` (a reference solution), `test_list` (assert
lines), optionally `test_imports`. User turn, as DMax's
`dInfer/evaluations/tasks/mbpp_sanitized/mbpp_sanitized_llada_mini.yaml`: the task, then the asserts one
per line, then the code-fence request.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from dmax_core.errors import DataError
from dmax_core.tasks.base import Problem
from dmax_core.tasks.benchmark import text_field
from dmax_core.tasks.code_answers import mbpp_program, mbpp_prompt
from dmax_core.tasks.code_task import CodeTask


def _string_list(row: Mapping[str, Any], column: str, where: str) -> list[str]:
    value = row.get(column) or []
    if not isinstance(value, list) or not all(isinstance(item, str) for item in value):
        raise DataError(f"{where}: column {column!r} must be a list of strings")
    return list(value)


class MBPP(CodeTask):
    name = "mbpp"
    columns = ("task_id", ("prompt", "text"), "test_list")

    def problem(self, row: Mapping[str, Any], where: str) -> Problem:
        tests = _string_list(row, "test_list", where)
        if not tests:
            raise DataError(f"{where}: test_list is empty (nothing would be tested)")
        code = row.get("code")
        return Problem(text_field(row, "prompt", where), code if isinstance(code, str) else "", "", task=self.name,
                       data={"task_id": str(row["task_id"]), "test_list": tests,
                             "test_imports": _string_list(row, "test_imports", where)})

    def prompt(self, problem: Problem) -> str:
        return mbpp_prompt(problem.question, problem.data["test_list"])

    def program(self, text: str, problem: Problem, *, strict: bool) -> str:
        # DMax's program has no test_imports; the strict one adds them, as the dataset intends.
        return mbpp_program(text, problem.data["test_list"], problem.data["test_imports"] if strict else (),
                            strict=strict)
