"""What the code benchmarks (HumanEval-Instruct, MBPP) share: the prompt's code-fence request, and scoring
by running the answer against the tests in the sandbox (`dmax_core.sandbox`).

Two scores, both pass@1 with greedy decoding: `dmax_compatible` runs what the DMax repository runs (the
first ```python block, only its imports, functions and classes: `code_answers`), `strict` runs the first
```python block exactly as written (and, for MBPP, with the dataset's `test_imports`, which DMax leaves
out). A program identical under both rules runs once.
"""

from __future__ import annotations

import os
from abc import abstractmethod

from dmax_core.registry import check_int
from dmax_core.sandbox import Limits, Verdict, run_program
from dmax_core.tasks.base import Problem
from dmax_core.tasks.benchmark import BenchmarkTask

__all__ = ["CodeTask"]


class CodeTask(BenchmarkTask):
    """A benchmark scored by executing tests. Extra knobs: the sandbox's wall-clock `timeout` (seconds) and
    `memory_mb` per program, and `workers`, how many answers are scored (their programs run) at once while
    decoding goes on (`evaluation.runner`; default: one per CPU core)."""

    def __init__(self, path: str, split: str = "test", limit: int | None = None, allow_download: bool = False,
                 timeout: int = 10, memory_mb: int = 1024, workers: int | None = None) -> None:
        super().__init__(path, split, limit, allow_download)
        self.timeout = check_int("timeout", timeout, 1)
        self.memory_mb = check_int("memory_mb", memory_mb, 64)
        # A scoring thread only waits on its sandboxed subprocess, so one per core keeps the cores busy.
        self.score_workers = (os.cpu_count() or 1) if workers is None else check_int("workers", workers, 1)

    @property
    def limits(self) -> Limits:
        return Limits(cpu_seconds=float(self.timeout), wall_seconds=float(self.timeout) + 5.0,
                      memory_bytes=self.memory_mb << 20)

    @abstractmethod
    def program(self, text: str, problem: Problem, *, strict: bool) -> str:
        """The test program for one answer: the extracted code followed by the problem's tests."""

    def verdicts(self, text: str, problem: Problem) -> dict[str, Verdict]:
        """The sandbox verdict of each score's program (the report shows why a sample failed)."""
        programs = {name: self.program(text, problem, strict=name == "strict") for name in self.score_names}
        runs: dict[str, Verdict] = {}
        for source in dict.fromkeys(programs.values()):
            runs[source] = run_program(source, self.limits)
        return {name: runs[source] for name, source in programs.items()}

    def score(self, text: str, problem: Problem) -> dict[str, bool]:
        return {name: verdict.status == "passed" for name, verdict in self.verdicts(text, problem).items()}
