"""Atomic file and directory writes, SHA-256 digests and checksum manifests: the one copy of each.

Every file dmax produces (checkpoints, trajectories, metrics, reports, plots) is written through here,
so an interrupted or failing step never leaves a half-written output that a later stage, DVC or a user
could mistake for a finished one. The pattern is the standard one: write beside the target in the same
directory (same filesystem), then `os.replace`, which POSIX makes atomic. No third-party library is
used because the one that packaged this (`atomicwrites`) is archived; digests use the standard
library's `hashlib.file_digest`.

Checksums are kept in a `SHA256SUMS` file in the format of coreutils' `sha256sum` (`<hex>  <name>`), so
a user can check a checkpoint without dmax: `cd CHECKPOINT && sha256sum -c SHA256SUMS`.

This module knows nothing about models, tokenizers or stages; it imports only the standard library and
`dmax_core.errors`.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from dmax_core.errors import DataError

CHECKSUM_FILE = "SHA256SUMS"


@contextmanager
def atomic_file(path: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a temporary path beside `path`; on success it replaces `path`, on any error it is removed.

    For writers that want a file name rather than a handle (safetensors, matplotlib, pyarrow)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp = Path(name)
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def atomic_write_text(path: str | os.PathLike[str], text: str) -> Path:
    """Write `text` (UTF-8) to `path` atomically; returns `path`."""
    with atomic_file(path) as tmp:
        tmp.write_text(text, encoding="utf-8")
    return Path(path)


def atomic_write_json(path: str | os.PathLike[str], data: Any) -> Path:
    """Write `data` as indented JSON atomically; returns `path`."""
    return atomic_write_text(path, json.dumps(data, indent=2) + "\n")


@contextmanager
def atomic_directory(final: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a fresh, empty staging directory that replaces `final` only if the body succeeds.

    The previous `final` (if any) is moved aside first and deleted after the swap, so readers see either
    the old complete directory or the new complete one. On failure the staging directory is removed and
    `final` is left exactly as it was."""
    final = Path(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    root = Path(tempfile.mkdtemp(prefix=f".{final.name}.", dir=final.parent))
    staging = root / final.name
    staging.mkdir()
    try:
        yield staging
        previous = root / ".previous"
        if final.exists():
            os.replace(final, previous)
        try:
            os.replace(staging, final)
        except BaseException:
            if previous.exists() and not final.exists():
                os.replace(previous, final)  # put the old version back
            raise
    finally:
        shutil.rmtree(root, ignore_errors=True)


def read_json_object(path: str | os.PathLike[str], what: str) -> dict[str, Any] | None:
    """The JSON object in `path` (None when there is no such file); anything else is a `DataError`
    naming `what` and the file. For the small records stored beside outputs (provenance, manifests)."""
    path = Path(path)
    if not path.is_file():
        return None
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise DataError(f"{what} {path} is not valid JSON: {exc}") from exc
    if not isinstance(data, dict):
        raise DataError(f"{what} {path} must hold a JSON object")
    return data


def sha256_file(path: str | os.PathLike[str]) -> str:
    """Hex SHA-256 of a file's bytes, streamed (weights can be tens of GB)."""
    with open(path, "rb") as handle:
        return hashlib.file_digest(handle, "sha256").hexdigest()


def write_checksums(directory: str | os.PathLike[str], names: Iterable[str]) -> Path:
    """Record the SHA-256 of `directory/<name>` for each name in `directory/SHA256SUMS` (sha256sum format)."""
    directory = Path(directory)
    lines = [f"{sha256_file(directory / name)}  {name}\n" for name in sorted(names)]
    return atomic_write_text(directory / CHECKSUM_FILE, "".join(lines))


def read_checksums(directory: str | os.PathLike[str]) -> dict[str, str] | None:
    """`{file name: hex digest}` from `directory/SHA256SUMS`, or None when there is no such file.

    Raises `DataError` when the file exists but is not a valid checksum list."""
    path = Path(directory) / CHECKSUM_FILE
    if not path.is_file():
        return None
    recorded: dict[str, str] = {}
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise DataError(f"{path} is unreadable: {exc}") from exc
    for number, line in enumerate(text.splitlines(), start=1):
        digest, sep, name = line.partition("  ")
        name = name.removeprefix("*")  # sha256sum's binary-mode marker
        if not sep or len(digest) != 64 or any(c not in "0123456789abcdef" for c in digest) or not name \
                or "/" in name or name in {".", ".."}:
            raise DataError(f"{path}, line {number}: not a '<sha256>  <file name>' line")
        recorded[name] = digest
    if not recorded:
        raise DataError(f"{path} lists no files")
    return recorded


def verify_checksums(directory: str | os.PathLike[str]) -> dict[str, str] | None:
    """Check every file listed in `directory/SHA256SUMS`; return the recorded digests (None: no record).

    A missing file or a digest mismatch is a `DataError` naming the file: a checkpoint whose bytes changed
    after dmax wrote it (a flipped bit, a truncated copy, an edit) must never be used silently."""
    directory = Path(directory)
    recorded = read_checksums(directory)
    if recorded is None:
        return None
    for name, expected in recorded.items():
        path = directory / name
        if not path.is_file():
            raise DataError(f"{path} is missing but listed in {directory / CHECKSUM_FILE}")
        if sha256_file(path) != expected:
            raise DataError(f"{path} does not match its SHA-256 in {CHECKSUM_FILE} (corrupted or modified)")
    return recorded


def checksums_digest(directory: str | os.PathLike[str]) -> str | None:
    """One identity for a checkpoint: the SHA-256 of its SHA256SUMS file (None without one).

    Cheap (no weight bytes are read) and stable: it changes exactly when a listed file's digest does."""
    path = Path(directory) / CHECKSUM_FILE
    return sha256_file(path) if path.is_file() else None
