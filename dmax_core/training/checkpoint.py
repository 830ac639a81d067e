"""Resumable training checkpoints, stored without pickle.

A checkpoint is a directory `step-NNNNNNN/` holding the model (`save_pretrained`: config.json +
model.safetensors + SHA256SUMS), the optimiser tensors (`optimizer.safetensors`, also checksummed) and
`trainer_state.json` (step, param-group settings, loss history). Directories are written through
`files.atomic_directory`, so a crash never leaves a checkpoint that looks complete but is not, and a
resume verifies every checksum, so a damaged one is refused in words.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from dmax_core.errors import DataError
from dmax_core.files import atomic_directory, atomic_write_json, verify_checksums, write_checksums

STATE_FILE = "trainer_state.json"
OPTIMIZER_FILE = "optimizer.safetensors"


def _optimizer_to_tensors(optimizer: torch.optim.Optimizer) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    state_dict = optimizer.state_dict()
    tensors: dict[str, torch.Tensor] = {}
    scalars: dict[str, dict[str, Any]] = {}
    for index, param_state in state_dict["state"].items():
        for key, value in param_state.items():
            if torch.is_tensor(value):
                tensors[f"{index}/{key}"] = value.detach().cpu().contiguous()
            else:
                scalars.setdefault(str(index), {})[key] = value
    return tensors, {"param_groups": state_dict["param_groups"], "scalars": scalars}


def _optimizer_from_tensors(tensors: dict[str, torch.Tensor], meta: dict[str, Any]) -> dict[str, Any]:
    state: dict[int, dict[str, Any]] = {}
    for name, tensor in tensors.items():
        index, key = name.split("/", 1)
        state.setdefault(int(index), {})[key] = tensor
    for index, values in meta["scalars"].items():
        state.setdefault(int(index), {}).update(values)
    return {"state": state, "param_groups": meta["param_groups"]}


def save_checkpoint(
    root: Path, step: int, model, optimizer: torch.optim.Optimizer, extra: dict[str, Any], keep: int = 2
) -> Path:
    """Write `root/step-{step}` atomically and keep only the newest `keep` checkpoints."""
    final = root / f"step-{step:07d}"
    with atomic_directory(final) as staging:
        model.save_pretrained(staging / "model")
        tensors, meta = _optimizer_to_tensors(optimizer)
        save_file(tensors, str(staging / OPTIMIZER_FILE))
        write_checksums(staging, [OPTIMIZER_FILE])
        atomic_write_json(staging / STATE_FILE, {"step": step, "optimizer": meta, **extra})
    for old in sorted(root.glob("step-*"))[:-keep]:
        shutil.rmtree(old, ignore_errors=True)
    return final


def latest_checkpoint(root: Path) -> Path | None:
    """Newest complete checkpoint under `root`, or None."""
    if not root.is_dir():
        return None
    complete = [p for p in sorted(root.glob("step-*")) if (p / STATE_FILE).is_file()]
    return complete[-1] if complete else None


def found_fingerprint(path: Path) -> str | None:
    """The run fingerprint stored in a checkpoint (None for unreadable or older checkpoints)."""
    try:
        return json.loads((path / STATE_FILE).read_text()).get("fingerprint")
    except (OSError, json.JSONDecodeError):
        return None


def load_checkpoint(path: Path, model, optimizer: torch.optim.Optimizer) -> dict[str, Any]:
    """Restore model weights and optimiser state in place; return the trainer state dict."""
    try:
        state = json.loads((path / STATE_FILE).read_text())
        verify_checksums(path / "model")
        verify_checksums(path)
        weights = load_file(str(path / "model" / "model.safetensors"))
        optim_tensors = load_file(str(path / OPTIMIZER_FILE))
    except (OSError, ValueError, SafetensorError, DataError) as exc:
        raise DataError(f"cannot resume from checkpoint {path}: {exc}") from exc
    missing, unexpected = model.load_state_dict(weights, strict=False)
    if missing or unexpected:
        raise DataError(
            f"checkpoint {path} does not match the model (missing {missing[:3]}, unexpected {unexpected[:3]})"
        )
    optimizer.load_state_dict(_optimizer_from_tensors(optim_tensors, state["optimizer"]))
    return state
