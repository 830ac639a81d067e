"""GSM8K (grade-school math, 0-shot): the DMax repository's prompt and lenient scorer beside a strict one.

Schema: `question`, `answer` (a worked solution ending in `#### N`). User turn, as DMax's
`dInfer/evaluations/tasks/gsm8k/gsm8k-llada-mini.yaml`: ``Question: {question}\\nLet's think step by
step\\nAnswer:``. Scores: `answers.score_gsm8k` (DMax-compatible: the gold number is one of the top two
extracted candidates; strict: the final answer only).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from dmax_core.errors import DataError
from dmax_core.tasks.answers import gsm8k_gold, score_gsm8k
from dmax_core.tasks.base import Problem
from dmax_core.tasks.benchmark import BenchmarkTask, text_field


class GSM8K(BenchmarkTask):
    name = "gsm8k"
    columns = ("question", "answer")

    def problem(self, row: Mapping[str, Any], where: str) -> Problem:
        answer = text_field(row, "answer", where)
        try:
            gold = gsm8k_gold(answer)
        except ValueError as exc:
            raise DataError(f"{where}: {exc}") from exc
        return Problem(text_field(row, "question", where), answer, gold, task=self.name)

    def prompt(self, problem: Problem) -> str:
        return f"Question: {problem.question}\nLet's think step by step\nAnswer:"

    def score(self, text: str, problem: Problem) -> dict[str, bool]:
        result = score_gsm8k(text, problem.final_answer)
        return {"dmax_compatible": result.dmax_compatible, "strict": result.strict}
