"""Finished evaluation cells kept on disk while `evaluate` runs, so a killed evaluation resumes.

A 16B sweep takes hours; `evaluate` writes `eval/` only at the end, in one piece. Each cell (with every
sample it scored and the traces recorded while it decoded) is therefore written here, atomically, as soon as
they are measured, under a key that names everything the result depends on: the task and the exact
problems of the split, the model's weights (its `SHA256SUMS` digest, else the weight files' names, sizes
and modification times), the decoder with its knobs and threshold, every setting of the decoding frame
and the dmax source code. A rerun with the same key reads the cell instead of decoding it; anything else
is decoded again. The directory is removed when `evaluate` has written `eval/`, so a deliberate rerun
measures afresh. Nothing here is a DVC output (like training checkpoints, it is a resume point).
"""

from __future__ import annotations

import hashlib
import json
import shutil
from collections.abc import Mapping, Sequence
from dataclasses import asdict
from functools import cache
from pathlib import Path
from typing import Any

from dmax_core.evaluation.records import Cell, Sample
from dmax_core.files import atomic_write_json, checksums_digest, read_json_object
from dmax_core.tasks import Problem

PACKAGE = Path(__file__).resolve().parent.parent


@cache
def source_digest() -> str:
    """SHA-256 over every dmax_core source file (path and bytes): any code change invalidates the cache."""
    digest = hashlib.sha256()
    for path in sorted(PACKAGE.rglob("*.py")):
        digest.update(str(path.relative_to(PACKAGE)).encode() + b"\0" + path.read_bytes() + b"\0")
    return digest.hexdigest()


def weights_identity(directory: Path) -> str:
    """The checkpoint's digest, or (for a foreign checkpoint without SHA256SUMS) its files' names, sizes
    and modification times, which reading 32 GB of weights to hash them would not improve on for a resume."""
    digest = checksums_digest(directory)
    if digest is not None:
        return digest
    listing = sorted((p.name, p.stat().st_size, p.stat().st_mtime_ns) for p in Path(directory).iterdir()
                     if p.is_file())
    return hashlib.sha256(json.dumps(listing).encode()).hexdigest()


def problems_digest(problems: Sequence[Problem]) -> str:
    rows = [[p.question, p.answer, p.final_answer, p.task] for p in problems]
    return hashlib.sha256(json.dumps(rows, ensure_ascii=False).encode()).hexdigest()


def key_of(parts: Mapping[str, Any]) -> str:
    """A file name for `parts` (any JSON-able mapping; the source digest is always part of it)."""
    text = json.dumps({**parts, "source": source_digest()}, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:32]


class EvalCache:
    """Cells (with their traces) of one run directory's evaluation in progress (module docstring)."""

    def __init__(self, directory: Path) -> None:
        self.directory = Path(directory)

    def _path(self, key: str, kind: str) -> Path:
        return self.directory / f"{kind}-{key}.json"

    def load_cell(self, key: str) -> tuple[Cell, list[Sample], str, list[dict]] | None:
        """(cell, its samples, the model's dtype, its decoding traces) when the cell was finished, else None.
        A file that cannot be read (a disk error, a hand edit) is decoded again rather than trusted."""
        try:
            data = read_json_object(self._path(key, "cell"), "cached evaluation cell")
            if data is None:
                return None
            return (Cell.from_json(data["cell"]), [Sample(**s) for s in data["samples"]], str(data["dtype"]),
                    list(data.get("traces", [])))
        except (ValueError, KeyError, TypeError):
            return None

    def save_cell(self, key: str, cell: Cell, samples: Sequence[Sample], dtype: str,
                  traces: Sequence[dict] = ()) -> None:
        """Keep a finished cell with its samples and the traces recorded during its decode (if any)."""
        atomic_write_json(self._path(key, "cell"), {"cell": cell.to_json(), "samples": [asdict(s) for s in samples],
                                                    "dtype": dtype, "traces": list(traces)})

    def clear(self) -> None:
        shutil.rmtree(self.directory, ignore_errors=True)
