"""What every benchmark task read from files shares: its source, split and limit knobs, lazy loading, and
a lenient + strict score.

A benchmark's problems come from a local file or directory in the upstream schema (`datafiles`), read the
first time they are needed, never when the config is validated (so `dmax config` works without the data).
The loaded split is the task's `test` split, or its `train` split when `split` is `train` (distillation
prompts); `limit` keeps the first N problems (smoke runs). Benchmarks have no validation split: nothing is
chosen on them, each is reported on its own.
"""

from __future__ import annotations

from abc import abstractmethod
from collections.abc import Mapping
from functools import cached_property
from typing import Any, ClassVar

from dmax_core.errors import DataError
from dmax_core.registry import check_optional_int
from dmax_core.tasks.base import Problem, Task
from dmax_core.tasks.datafiles import Column, read_rows

__all__ = ["BenchmarkTask", "text_field"]


def text_field(row: Mapping[str, Any], column: str, where: str) -> str:
    """`row[column]` as a string; anything else is a `DataError` naming the row."""
    value = row[column]
    if not isinstance(value, str):
        raise DataError(f"{where}: column {column!r} must be a string, got {type(value).__name__}")
    return value


class BenchmarkTask(Task):
    """A task whose problems are the rows of one split of a dataset (module docstring).

    Subclasses set `name`, `columns` and implement `problem` (one row -> one Problem), `prompt` and
    `score`. Knobs: `path` (a source, see `datafiles`), `split`, `limit` and `allow_download`."""

    columns: ClassVar[tuple[Column, ...]]
    score_names: ClassVar[tuple[str, ...]] = ("dmax_compatible", "strict")

    def __init__(self, path: str, split: str = "test", limit: int | None = None,
                 allow_download: bool = False) -> None:
        if not isinstance(path, str) or not path.strip():
            raise ValueError(f"path must name a dataset file or directory, got {path!r}")
        if not isinstance(split, str) or not split:
            raise ValueError(f"split must be a split name, got {split!r}")
        self.path, self.split = path, split
        self.limit = check_optional_int("limit", limit, 1)
        self.allow_download = bool(allow_download)

    @abstractmethod
    def problem(self, row: Mapping[str, Any], where: str) -> Problem:
        """One dataset row as a Problem (`where` names the file and row for errors)."""

    @cached_property
    def problems(self) -> list[Problem]:
        """The split's problems (the first `limit`), read once."""
        file, rows = read_rows(self.path, split=self.split, columns=self.columns, task=self.name,
                               allow_download=self.allow_download)
        rows = rows[: self.limit] if self.limit else rows
        return [self.problem(row, f"{file}: row {index}") for index, row in enumerate(rows)]

    def splits(self) -> dict[str, list[Problem]]:
        role = "train" if self.split == "train" else "test"
        return {"train": [], "validation": [], "test": [], role: self.problems}

    def is_correct(self, text: str, problem: Problem) -> bool:
        return self.score(text, problem)[self.score_names[0]]

    @abstractmethod
    def score(self, text: str, problem: Problem) -> dict[str, bool]:
        """`dmax_compatible` (the DMax repository's rule) and `strict` for one answer."""
