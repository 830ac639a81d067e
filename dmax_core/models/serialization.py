"""Reading and writing LLaDA2-MoE checkpoints in the Hugging Face layout, safetensors only (spec §6.3).

Writes `config.json`, `model.safetensors` and `SHA256SUMS` (the digest of every weight file, in
coreutils' `sha256sum` format, written last), or HF shards with their index and `SHA256SUMS` over the
shards (`save_sharded`, for hub exports). Reads a single `model.safetensors` or the shards of a
`model.safetensors.index.json`, in the per-expert names of the released checkpoints or dFactory's
merged-expert layout, and verifies `SHA256SUMS` when there is one: flipped bytes in a tensor payload
have no other symptom (safetensors has no checksum), so a dmax checkpoint is never used with them.
Foreign checkpoints (no `SHA256SUMS`) load unverified. Never unpickles (`torch.load` is never called).

Errors name the file: `FileNotFoundError` for a missing part, `ValueError` for a malformed one,
`dmax_core.errors.DataError` for a checksum mismatch.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import torch
from safetensors import safe_open
from safetensors.torch import save_file

from dmax_core.files import atomic_file, atomic_write_json, verify_checksums, write_checksums

from .configuration import CONFIG_NAME, LLaDA2MoeConfig

if TYPE_CHECKING:
    from .modeling import LLaDA2MoeForDiffusionLM

WEIGHTS_NAME = "model.safetensors"
WEIGHTS_INDEX_NAME = "model.safetensors.index.json"
EXPERT_PROJECTIONS = ("gate_proj", "up_proj", "down_proj")
ModelT = TypeVar("ModelT", bound="LLaDA2MoeForDiffusionLM")


def _state_tensors(model: LLaDA2MoeForDiffusionLM) -> dict[str, torch.Tensor]:
    """The state dict on the CPU, each tensor with storage of its own (what safetensors can write)."""
    tensors = {}
    for name, tensor in model.state_dict().items():
        tensor = tensor.detach().cpu()
        # A view into a larger storage (experts packed by `pack_experts`) is saved as its own copy:
        # safetensors refuses tensors that share memory.
        shares = tensor.untyped_storage().nbytes() != tensor.numel() * tensor.element_size()
        tensors[name] = tensor.clone() if shares else tensor.contiguous()
    return tensors


def _target_directory(directory: str | os.PathLike[str]) -> Path:
    target = Path(directory).absolute()
    if target.exists() and not target.is_dir():
        raise FileExistsError(f"save_pretrained: {target} exists and is not a directory")
    target.mkdir(parents=True, exist_ok=True)
    return target


def save_model(model: LLaDA2MoeForDiffusionLM, directory: str | os.PathLike[str]) -> Path:
    """Weights, then config, then checksums, each file replaced atomically (see module docstring)."""
    target = _target_directory(directory)
    for stale in [target / WEIGHTS_INDEX_NAME, *target.glob("model-*-of-*.safetensors")]:
        stale.unlink(missing_ok=True)  # shards of an earlier save would shadow nothing but mislead a reader
    tensors = _state_tensors(model)
    with atomic_file(target / WEIGHTS_NAME) as tmp:
        save_file(tensors, str(tmp), metadata={"format": "pt"})
    model.config.save(target)
    write_checksums(target, [WEIGHTS_NAME])
    return target


def plan_shards(sizes: Mapping[str, int], max_shard_size: int) -> list[list[str]]:
    """Tensor names grouped into shards of at most `max_shard_size` bytes, in the given order.

    Greedy, as transformers' `save_pretrained` does: a shard is closed when the next tensor would push it
    over the limit, and a tensor larger than the limit gets a shard of its own (tensors are never split,
    so every loader can read a shard on its own)."""
    if max_shard_size < 1:
        raise ValueError(f"max_shard_size must be at least 1 byte, got {max_shard_size}")
    shards: list[list[str]] = []
    used = 0
    for name, size in sizes.items():
        if not shards or (used + size > max_shard_size and shards[-1]):
            shards.append([])
            used = 0
        shards[-1].append(name)
        used += size
    return shards


def shard_name(index: int, count: int) -> str:
    """HF's shard file name: `model-00001-of-00003.safetensors` (1-based)."""
    return f"model-{index:05d}-of-{count:05d}.safetensors"


def save_sharded(model: LLaDA2MoeForDiffusionLM, directory: str | os.PathLike[str], max_shard_size: int,
                 dtypes: Mapping[str, torch.dtype] | None = None) -> Path:
    """The weights as HF shards with `model.safetensors.index.json`, then config, then `SHA256SUMS` over the
    shards, so `load_model` verifies every shard as it does a single `model.safetensors`.

    The index's `total_size` is the sum of the tensors' bytes (HF's meaning; the files add their headers).
    Meant for a fresh directory (an export's staging directory); a `model.safetensors` already there would
    be read instead of the shards, so it is refused. `dtypes` (`stored_dtypes` of the source) puts each
    floating tensor back in the dtype its source file stored it in: loading casts every floating tensor to
    one dtype, and an export must not change a stored byte."""
    target = _target_directory(directory)
    if (target / WEIGHTS_NAME).exists():
        raise FileExistsError(f"save_sharded: {target / WEIGHTS_NAME} would shadow the shards")
    tensors = _state_tensors(model)
    for name, dtype in (dtypes or {}).items():
        if name in tensors and tensors[name].is_floating_point():
            tensors[name] = tensors[name].to(dtype)
    groups = plan_shards({name: t.numel() * t.element_size() for name, t in tensors.items()}, max_shard_size)
    weight_map: dict[str, str] = {}
    names = []
    for number, group in enumerate(groups, start=1):
        name = shard_name(number, len(groups))
        with atomic_file(target / name) as tmp:
            save_file({key: tensors[key] for key in group}, str(tmp), metadata={"format": "pt"})
        weight_map.update(dict.fromkeys(group, name))
        names.append(name)
    index = {"metadata": {"total_size": sum(t.numel() * t.element_size() for t in tensors.values())},
             "weight_map": dict(sorted(weight_map.items()))}
    atomic_write_json(target / WEIGHTS_INDEX_NAME, index)
    model.config.save(target)
    write_checksums(target, names)
    return target


def load_model(cls: type[ModelT], directory: str | os.PathLike[str], dtype: torch.dtype | None = None,
               device: str | torch.device = "cpu", config_defaults: dict[str, Any] | None = None) -> ModelT:
    """`cls.from_pretrained`: verify, read, check names and shapes, cast, place (module docstring);
    `config_defaults` fill config keys config.json does not name (the tokenizer's special ids)."""
    directory = Path(directory)
    if not directory.is_dir():
        raise FileNotFoundError(f"from_pretrained: no model directory at {directory}")
    config = LLaDA2MoeConfig.from_json_file(directory / CONFIG_NAME, config_defaults)
    verify_checksums(directory)
    tensors = _split_merged_experts(load_safetensors_dir(directory), config)
    with torch.device("meta"):
        model = cls(config)
    _check_state_names_and_shapes(tensors, model.state_dict(), directory)
    if dtype is None:
        dtype = tensors["model.word_embeddings.weight"].dtype
    # copy=True: own, aligned storage instead of views into the safetensors mmap (unaligned views
    # are slower and change low-order bits of CPU matmuls).
    state: dict[str, torch.Tensor] = {}
    for name in list(tensors):  # pop as we go: at most one tensor exists twice at a time
        t = tensors.pop(name)
        state[name] = t.to(device=device, dtype=dtype if t.is_floating_point() else t.dtype, copy=True)
    model.load_state_dict(state, strict=True, assign=True)
    if torch.device(device).type == "cuda":
        model.pack_experts()  # grouped MoE dispatch reads the stacked experts in place
    return model.eval()


# safetensors' header names of the floating dtypes (the only ones `load_model` casts).
_SAFETENSORS_FLOATS = {"F64": torch.float64, "F32": torch.float32, "F16": torch.float16, "BF16": torch.bfloat16}


def stored_dtypes(directory: str | os.PathLike[str]) -> dict[str, torch.dtype]:
    """Tensor name -> stored floating dtype, read from the safetensors headers only (no payload is read)."""
    directory = Path(directory)
    single, index = directory / WEIGHTS_NAME, directory / WEIGHTS_INDEX_NAME
    files = [single] if single.is_file() else sorted(
        {directory / shard for shard in json.loads(index.read_text(encoding="utf-8"))["weight_map"].values()})
    found: dict[str, torch.dtype] = {}
    for path in files:
        with safe_open(str(path), framework="pt", device="cpu") as handle:
            for name in handle.keys():  # noqa: SIM118
                dtype = _SAFETENSORS_FLOATS.get(handle.get_slice(name).get_dtype())
                if dtype is not None:
                    found[name] = dtype
    return found


def _read_safetensors_file(path: Path) -> dict[str, torch.Tensor]:
    if not path.is_file():
        raise FileNotFoundError(f"from_pretrained: missing weights file {path}")
    try:
        with safe_open(str(path), framework="pt", device="cpu") as handle:
            return {name: handle.get_tensor(name) for name in handle.keys()}  # noqa: SIM118
    except FileNotFoundError:
        raise
    except Exception as err:  # safetensors raises its own error type for bad headers / truncation
        raise ValueError(f"from_pretrained: cannot read {path} as safetensors (truncated or corrupt?): "
                         f"{type(err).__name__}: {err}") from err


def load_safetensors_dir(directory: Path) -> dict[str, torch.Tensor]:
    """All tensors of `model.safetensors`, or of the shards named by `model.safetensors.index.json`."""
    single, index = directory / WEIGHTS_NAME, directory / WEIGHTS_INDEX_NAME
    if single.is_file():
        return _read_safetensors_file(single)
    if not index.is_file():
        raise FileNotFoundError(
            f"from_pretrained: {directory} has neither {WEIGHTS_NAME} nor {WEIGHTS_INDEX_NAME}")
    try:
        weight_map = json.loads(index.read_text(encoding="utf-8"))["weight_map"]
    except (json.JSONDecodeError, KeyError, TypeError) as err:
        raise ValueError(f"from_pretrained: {index} is not a valid safetensors index: {err}") from err
    tensors: dict[str, torch.Tensor] = {}
    for shard in sorted(set(weight_map.values())):
        for name, tensor in _read_safetensors_file(directory / shard).items():
            if weight_map.get(name) == shard:
                tensors[name] = tensor
    absent = sorted(set(weight_map) - set(tensors))
    if absent:
        raise ValueError(f"from_pretrained: tensors listed in {index.name} are absent from their shard: "
                         f"{_preview(absent)}")
    return tensors


def _split_merged_experts(tensors: dict[str, torch.Tensor],
                          config: LLaDA2MoeConfig) -> dict[str, torch.Tensor]:
    """Turn dFactory's stacked `mlp.experts.{gate,up,down}_proj` [E, out, in] into per-expert
    `mlp.experts.{e}.{proj}.weight` (§6.3 last line). Per-expert checkpoints pass through."""
    out: dict[str, torch.Tensor] = {}
    for name, tensor in tensors.items():
        prefix, _, proj = name.rpartition(".")
        if proj in EXPERT_PROJECTIONS and prefix.endswith(".mlp.experts"):
            if tensor.dim() != 3 or tensor.shape[0] != config.num_experts:
                raise ValueError(f"from_pretrained: merged expert tensor {name} has shape "
                                 f"{tuple(tensor.shape)}, expected [{config.num_experts}, out, in]")
            for e in range(tensor.shape[0]):
                # clone: separate storage per parameter (safetensors refuses to save shared storage).
                out[f"{prefix}.{e}.{proj}.weight"] = tensor[e].clone()
        else:
            out[name] = tensor
    return out


def _preview(names: list[str], limit: int = 8) -> str:
    shown = ", ".join(names[:limit])
    return shown + (f", ... ({len(names) - limit} more)" if len(names) > limit else "")


def _check_state_names_and_shapes(tensors: Mapping[str, torch.Tensor], expected: Mapping[str, torch.Tensor],
                                  directory: Path) -> None:
    missing = sorted(set(expected) - set(tensors))
    unexpected = sorted(set(tensors) - set(expected))
    wrong = [f"{name}: checkpoint {tuple(tensors[name].shape)} vs model {tuple(expected[name].shape)}"
             for name in sorted(set(expected) & set(tensors))
             if tuple(tensors[name].shape) != tuple(expected[name].shape)]
    problems = []
    if missing:
        problems.append(f"missing tensors ({len(missing)}): {_preview(missing)}")
    if unexpected:
        problems.append(f"unexpected tensors ({len(unexpected)}): {_preview(unexpected)}")
    if wrong:
        problems.append(f"shape mismatches ({len(wrong)}): {_preview(wrong)}")
    if problems:
        raise ValueError(f"from_pretrained: checkpoint in {directory} does not match its config.json: "
                         + "; ".join(problems))
