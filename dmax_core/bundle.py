"""Model bundles: a checkpoint directory with the model, its tokenizer and a record of where it came from.

    base/  config.json  model.safetensors  SHA256SUMS  tokenizer.json  tokenizer_config.json  ...
           dmax_bundle.json   (the stage, steps, loss, dataset digest... that produced it)

A bundle is written in one piece (`files.atomic_directory`) and loaded with every part checked: the
weights against `SHA256SUMS` (where dmax wrote one), the config, the tokenizer and the provenance record
parsed with errors that name the file. Any problem is a `DataError`, which the CLI prints as one line
with exit status 2. HF checkpoints from elsewhere (no SHA256SUMS, no dmax_bundle.json) load as well.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from dmax_core.errors import DataError
from dmax_core.files import atomic_directory, atomic_write_json, read_json_object
from dmax_core.models import LLaDA2MoeForDiffusionLM
from dmax_core.tokenizer import load_tokenizer, save_tokenizer

PROVENANCE_FILE = "dmax_bundle.json"


def save_bundle(model: LLaDA2MoeForDiffusionLM, tokenizer: Any, final: Path, provenance: dict[str, Any]) -> Path:
    """Write model, tokenizer and provenance to `final` atomically; returns `final`."""
    with atomic_directory(final) as staging:
        model.save_pretrained(staging)
        save_tokenizer(tokenizer, staging)
        atomic_write_json(staging / PROVENANCE_FILE, provenance)
    return final


def load_bundle(directory: Path, device: str = "cpu") -> tuple[LLaDA2MoeForDiffusionLM, Any]:
    """(model, tokenizer) from a bundle or any HF-layout checkpoint directory, verified (module docstring)."""
    directory = Path(directory)
    if not directory.is_dir():
        raise DataError(f"checkpoint directory not found: {directory} (run the stage that produces it first)")
    read_provenance(directory)  # a malformed record is refused before the (possibly large) weights are read
    try:
        model = LLaDA2MoeForDiffusionLM.from_pretrained(directory, device=device)
        tokenizer = load_tokenizer(directory)
    except (FileNotFoundError, ValueError, OSError, DataError) as exc:
        raise DataError(f"cannot load checkpoint {directory}: {exc}") from exc
    return model.eval(), tokenizer


def read_provenance(directory: Path) -> dict[str, Any]:
    """The bundle's provenance record (`{}` for a checkpoint without one); malformed -> `DataError`."""
    return read_json_object(Path(directory) / PROVENANCE_FILE, "checkpoint record") or {}
