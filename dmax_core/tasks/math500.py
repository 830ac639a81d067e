"""MATH-500 (competition math, 0-shot): the DMax repository's prompt and lenient scorer beside a strict one.

Schema: `problem`, `answer` (LaTeX), optionally `solution`. User turn, as DMax's
`dInfer/evaluations/tasks/math/minerva_math500.yaml`: ``{problem}\\nLet's think step by step, and put your
final answer within \\boxed{}.``. Scores: `answers.score_math` (DMax-compatible: up to ten candidates
by normalised exact match, sympy, math-verify; strict: the last boxed answer, math-verify).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from dmax_core.tasks.answers import score_math
from dmax_core.tasks.base import Problem
from dmax_core.tasks.benchmark import BenchmarkTask, text_field


class MATH500(BenchmarkTask):
    name = "math500"
    columns = ("problem", "answer")

    def problem(self, row: Mapping[str, Any], where: str) -> Problem:
        solution = row.get("solution")
        gold = text_field(row, "answer", where)
        return Problem(text_field(row, "problem", where), solution if isinstance(solution, str) else gold, gold,
                       task=self.name)

    def prompt(self, problem: Problem) -> str:
        return f"{problem.question}\nLet's think step by step, and put your final answer within \\boxed{{}}."

    def score(self, text: str, problem: Problem) -> dict[str, bool]:
        result = score_math(text, problem.final_answer)
        return {"dmax_compatible": result.dmax_compatible, "strict": result.strict}
