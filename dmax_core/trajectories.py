"""The trajectory dataset: the base model's own answers to training prompts, which OPUT trains on (§2.1).

    trajectories/  trajectories.parquet   question, answer (+ reference_answer, correct, nfe, tokens)
                   manifest.json          rows, digest (SHA-256 of the parquet), teacher accuracy, decoder...

Written in one piece; read back with every failure in words: a missing, unreadable or malformed file, and
a parquet whose bytes no longer match the digest in its manifest (the digest identifies the dataset in
MLflow, so a silently edited file would make that record lie).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from dmax_core.errors import DataError
from dmax_core.evaluation.records import Sample
from dmax_core.files import atomic_directory, atomic_write_json, read_json_object, sha256_file

TRAJECTORY_FILE = "trajectories.parquet"
MANIFEST_FILE = "manifest.json"
REQUIRED_COLUMNS = ("question", "answer")


@dataclass(frozen=True)
class Trajectories:
    """(question, answer) pairs to train on and the SHA-256 of the file they came from."""

    pairs: list[tuple[str, str]]
    digest: str


def write_trajectories(directory: Path, rows: Sequence[Sample], manifest: Mapping[str, Any]) -> str:
    """Write the kept samples as the trajectory dataset (atomically); returns the parquet's digest."""
    table = pa.table({
        "question": [s.question for s in rows],
        "answer": [s.text for s in rows],
        "reference_answer": [s.reference for s in rows],
        "correct": [s.correct for s in rows],
        "nfe": [s.nfe for s in rows],
        "tokens": [s.tokens for s in rows],
    })
    return _write_table(directory, table, manifest)


def write_trajectory_pairs(directory: Path, pairs: Sequence[tuple[str, str]], manifest: Mapping[str, Any]) -> str:
    """Write (question, answer) pairs that no decode here produced (an imported dataset); returns the digest."""
    return _write_table(directory, pa.table({"question": [q for q, _ in pairs], "answer": [a for _, a in pairs]}),
                        manifest)


def write_trajectory_table(directory: Path, table: pa.Table, manifest: Mapping[str, Any]) -> str:
    """Write an already built table (merged shards) as the dataset; returns its digest."""
    return _write_table(directory, table, manifest)


def read_trajectory_table(directory: Path) -> pa.Table:
    """The whole table of a dataset written here (every column), its digest checked first."""
    load_trajectories(directory)  # digest, columns and rows checked, with the errors in words
    return pq.read_table(Path(directory) / TRAJECTORY_FILE)


def _write_table(directory: Path, table: pa.Table, manifest: Mapping[str, Any]) -> str:
    with atomic_directory(directory) as staging:
        pq.write_table(table, staging / TRAJECTORY_FILE)
        digest = sha256_file(staging / TRAJECTORY_FILE)
        atomic_write_json(staging / MANIFEST_FILE,
                          {"rows": table.num_rows, "digest": digest, "columns": table.column_names, **manifest})
    return digest


def read_manifest(directory: Path) -> dict[str, Any]:
    """The dataset's manifest (`{}` when there is none); malformed -> `DataError`."""
    return read_json_object(Path(directory) / MANIFEST_FILE, "trajectory manifest") or {}


def dataset_name(directory: Path, preset: str) -> str:
    """The name a stage run lists the dataset in `directory` under in MLflow: the release it was imported
    from (`imported_from` in its manifest), else `<preset>-trajectories`, so the runs of one preset list one
    dataset name and its digest tells the versions apart."""
    imported = read_manifest(directory).get("imported_from")
    return str(imported) if imported else f"{preset}-trajectories"


def load_trajectories(directory: Path) -> Trajectories:
    """Read and validate the dataset (module docstring); every problem is a `DataError` naming the file."""
    path = Path(directory) / TRAJECTORY_FILE
    if not path.is_file():
        raise DataError(f"trajectory file not found: {path} (run `dmax distill` first)")
    digest = sha256_file(path)
    recorded = read_manifest(directory).get("digest")
    if recorded is not None and recorded != digest:
        raise DataError(f"trajectory file {path} does not match the digest in {MANIFEST_FILE} (corrupted or "
                        "modified); rerun `dmax distill`")
    try:
        table = pq.read_table(path)
    except (pa.ArrowException, OSError) as exc:
        raise DataError(f"trajectory file {path} is corrupt or not parquet: {exc}") from exc
    missing = [c for c in REQUIRED_COLUMNS if c not in table.column_names]
    if missing:
        raise DataError(f"trajectory file {path} lacks column(s) {missing}; found {table.column_names}")
    questions, answers = table.column("question").to_pylist(), table.column("answer").to_pylist()
    for row, (q, a) in enumerate(zip(questions, answers, strict=True)):
        if not isinstance(q, str) or not isinstance(a, str) or not q.strip():
            raise DataError(f"trajectory file {path}, row {row}: question/answer must be non-empty strings")
    if not questions:
        raise DataError(f"trajectory file {path} has no rows")
    return Trajectories(list(zip(questions, answers, strict=True)), digest)
