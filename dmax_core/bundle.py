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

import torch

from dmax_core.errors import DataError
from dmax_core.files import atomic_directory, atomic_write_json, read_json_object
from dmax_core.models import LLaDA2MoeForDiffusionLM
from dmax_core.models.configuration import BLOCK_LENGTH_KEY, CONFIG_NAME
from dmax_core.tokenizer import load_tokenizer, save_tokenizer, special_token_ids

PROVENANCE_FILE = "dmax_bundle.json"


def save_bundle(model: LLaDA2MoeForDiffusionLM, tokenizer: Any, final: Path, provenance: dict[str, Any],
                block_length: int | None = None) -> Path:
    """Write model, tokenizer and provenance to `final` atomically; returns `final`.

    `block_length` (the B the model was trained with) is recorded in config.json (`BLOCK_LENGTH_KEY`), so
    tools that only see the checkpoint (diffusers' pipeline, `dmax export`) use the model's own block."""
    if block_length is not None:
        model.config.extra[BLOCK_LENGTH_KEY] = block_length
        model.config.validate()
    with atomic_directory(final) as staging:
        model.save_pretrained(staging)
        save_tokenizer(tokenizer, staging)
        atomic_write_json(staging / PROVENANCE_FILE, provenance)
    return final


def load_bundle(directory: Path, device: str = "cpu",
                dtype: torch.dtype | None = None) -> tuple[LLaDA2MoeForDiffusionLM, Any]:
    """(model, tokenizer) from a bundle or any HF-layout checkpoint directory, verified (module docstring).

    `dtype` None keeps the checkpoint's. The mask and EOS ids the decoders use are the tokenizer's: a
    config.json that does not name them (LLaDA2.0-mini's names only `pad_token_id`) takes them from the
    tokenizer, one that names different ids is refused (`check_special_ids`)."""
    directory = Path(directory)
    if not directory.is_dir():
        raise DataError(f"checkpoint directory not found: {directory} (run the stage that produces it first)")
    read_provenance(directory)  # a malformed record is refused before the (possibly large) weights are read
    try:
        tokenizer = load_tokenizer(directory)  # first: a tokenizer problem is found before the weights are read
        ids = special_token_ids(tokenizer)
        check_special_ids(directory, ids)
        model = LLaDA2MoeForDiffusionLM.from_pretrained(directory, dtype=dtype, device=device, config_defaults={
            "mask_token_id": ids["mask"], "eos_token_id": ids["eos"], "pad_token_id": ids["pad"]})
    except (FileNotFoundError, ValueError, OSError, DataError) as exc:
        raise DataError(f"cannot load checkpoint {directory}: {exc}") from exc
    return model.eval(), tokenizer


def check_special_ids(directory: Path, ids: dict[str, int]) -> None:
    """Refuse a checkpoint whose config.json names other mask/EOS/PAD ids than its tokenizer has.

    Why: the decoders read the ids from the model config, but a released config.json may omit them (the
    dataclass defaults are LLaDA2.0-mini's ids, wrong for any other vocabulary), so omitted ids are taken
    from the tokenizer; an id the config names and the tokenizer contradicts means a mismatched pair of
    files."""
    named = read_json_object(Path(directory) / CONFIG_NAME, "model config") or {}
    for key, role in (("mask_token_id", "mask"), ("eos_token_id", "eos"), ("pad_token_id", "pad")):
        if key in named and named[key] != ids[role]:
            raise ValueError(f"{CONFIG_NAME} says {key}={named[key]} but the tokenizer's {role} token is id "
                             f"{ids[role]}; the model and tokenizer files do not belong together")


def read_provenance(directory: Path) -> dict[str, Any]:
    """The bundle's provenance record (`{}` for a checkpoint without one); malformed -> `DataError`."""
    return read_json_object(Path(directory) / PROVENANCE_FILE, "checkpoint record") or {}
