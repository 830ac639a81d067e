"""Atomic file output and model bundles (model + tokenizer + a small JSON of provenance).

Every file a stage produces goes through here, so an interrupted or failing stage never leaves a
half-written output that a later stage (or DVC) could mistake for a finished one.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

from dmax_core.errors import DataError

BUNDLE_INFO = "dmax_bundle.json"


def atomic_write_text(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "w") as handle:
            handle.write(text)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def atomic_write_json(path: Path, data: Any) -> Path:
    return atomic_write_text(path, json.dumps(data, indent=2, sort_keys=False) + "\n")


def replace_directory(staging: Path, final: Path) -> Path:
    """Move a fully written `staging` directory to `final`, replacing any previous version."""
    final.parent.mkdir(parents=True, exist_ok=True)
    old = None
    if final.exists():
        old = final.with_name(f".{final.name}.old")
        shutil.rmtree(old, ignore_errors=True)
        os.replace(final, old)
    os.replace(staging, final)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)
    return final


class StagingDirectory:
    """Context manager: a fresh directory next to `final` that becomes `final` only on success."""

    def __init__(self, final: Path) -> None:
        self.final = Path(final)
        self._root: Path | None = None

    def __enter__(self) -> Path:
        self.final.parent.mkdir(parents=True, exist_ok=True)
        self._root = Path(tempfile.mkdtemp(prefix=f".{self.final.name}.", dir=self.final.parent))
        return self._root / self.final.name

    def __exit__(self, exc_type, exc, tb) -> None:
        assert self._root is not None
        try:
            if exc_type is None:
                replace_directory(self._root / self.final.name, self.final)
        finally:
            shutil.rmtree(self._root, ignore_errors=True)


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def save_bundle(model, tokenizer, final: Path, info: dict[str, Any]) -> Path:
    """Write model (safetensors + config.json), tokenizer and provenance to `final`, atomically."""
    from dmax_core.tokenizer import save_tokenizer

    with StagingDirectory(final) as staging:
        model.save_pretrained(staging)
        save_tokenizer(tokenizer, staging)
        atomic_write_json(staging / BUNDLE_INFO, info)
    return final


def load_bundle(directory: Path, device: str = "cpu"):
    """Load (model, tokenizer) from a bundle or any HF-style checkpoint dir; clear error when missing."""
    from dmax_core.models import LLaDA2MoeForDiffusionLM
    from dmax_core.tokenizer import load_tokenizer

    directory = Path(directory)
    if not directory.is_dir():
        raise DataError(f"checkpoint directory not found: {directory} (run the stage that produces it first)")
    try:
        model = LLaDA2MoeForDiffusionLM.from_pretrained(directory, device=device)
        tokenizer = load_tokenizer(directory)
    except (FileNotFoundError, ValueError, OSError) as exc:
        raise DataError(f"cannot load checkpoint {directory}: {exc}") from exc
    model.eval()
    return model, tokenizer
