"""`export_checkpoint`: a checkpoint (directory or registered version) -> one hub-ready folder, atomically.

The weights are read through `bundle.load_bundle`, so an export starts from a verified checkpoint (checksums,
config, tokenizer, provenance) and writes what dmax's and HF's loaders both read: HF shards with their index,
`config.json`, the tokenizer and chat template, `generation_config.json`, `SHA256SUMS` over the shards, the
provenance record and a model card. Every floating tensor keeps the dtype its source stored it in. The folder
appears whole or not at all (`files.atomic_directory`); a non-empty OUT is replaced only with `force`.
"""

from __future__ import annotations

import json
import re
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from dmax_core.bundle import PROVENANCE_FILE, load_bundle, read_provenance
from dmax_core.errors import ConfigError, DataError
from dmax_core.evaluation.records import Evaluation
from dmax_core.files import atomic_directory, atomic_write_json, atomic_write_text, checksums_digest
from dmax_core.models.configuration import BLOCK_LENGTH_KEY
from dmax_core.models.serialization import WEIGHTS_INDEX_NAME, save_sharded, stored_dtypes
from dmax_core.tokenizer import save_tokenizer

from .card import generation_config, model_card
from .run_records import RunRecords, local_records, model_name_of

if TYPE_CHECKING:
    from mlflow import MlflowClient

REGISTRY_SCHEME = "models:/"  # MLflow's registry URIs (registry_source.py; mlflow is imported only for them)

DEFAULT_MAX_SHARD_SIZE = "2GB"
GENERATION_CONFIG = "generation_config.json"
MODEL_CARD = "README.md"
# transformers' convention (`convert_file_size_to_int`): KB/MB/GB are powers of ten, KiB/MiB/GiB of two.
_UNITS = {"": 1, "B": 1, "KB": 10**3, "MB": 10**6, "GB": 10**9, "TB": 10**12,
          "KIB": 2**10, "MIB": 2**20, "GIB": 2**30, "TIB": 2**40}


def parse_size(size: str | int) -> int:
    """Bytes of `2GB`, `500MB`, `200KB`, `1GiB` or a plain byte count; `ConfigError` in words otherwise."""
    if isinstance(size, int) and not isinstance(size, bool):
        value = size
    else:
        match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([A-Za-z]*)\s*", str(size))
        unit = match[2].upper() if match else None
        if match is None or unit not in _UNITS:
            raise ConfigError(f"max shard size {size!r} is not a size (use bytes or a unit: 200KB, 500MB, 2GB, 1GiB)")
        value = int(float(match[1]) * _UNITS[unit])
    if value < 1:
        raise ConfigError(f"max shard size must be at least 1 byte, got {size!r}")
    return value


@dataclass(frozen=True)
class ExportSource:
    checkpoint: Path
    records: RunRecords
    origin: dict[str, str]


def _check_out(out: Path, force: bool, checkpoint: Path | None) -> None:
    """Refuse an OUT that is a file, a non-empty directory (unless `force`), or the source or around it."""
    if out.exists() and not out.is_dir():
        raise DataError(f"export destination {out} exists and is not a directory")
    if checkpoint is not None:
        source, target = checkpoint.resolve(), out.resolve()
        if target == source or target in source.parents or source in target.parents:
            raise DataError(f"export destination {out} must not be the source checkpoint {checkpoint} or contain "
                            "or lie inside it")
    if out.is_dir() and any(out.iterdir()) and not force:
        raise DataError(f"export destination {out} is not empty (pass --force to replace it)")


def _local_source(source: Path, run_dir: Path | None, model: str | None) -> ExportSource:
    if not source.is_dir():
        raise DataError(f"checkpoint directory not found: {source}")
    name = model or model_name_of(source.resolve(), read_provenance(source))
    records = local_records(source, run_dir, name)
    return ExportSource(source, records, {"source": str(source)})


def export_checkpoint(source: str | Path, out: str | Path, *, max_shard_size: str | int = DEFAULT_MAX_SHARD_SIZE,
                      run_dir: Path | None = None, model: str | None = None, force: bool = False,
                      client: MlflowClient | None = None) -> Path:
    """Export `source` (a checkpoint directory, or `models:/<name>/<version>` / `models:/<name>@<alias>`) to
    `out`; returns `out`. `run_dir`: the run whose `eval/metrics.json` holds the records (default: the run a
    `runs/<run>/<model>` directory lies in); `model`: the checkpoint's model name in those records (default:
    its directory name or provenance). Any problem is a one-line `DmaxError`, and then no `out` is written."""
    limit = parse_size(max_shard_size)
    out = Path(out)
    registered = isinstance(source, str) and source.startswith(REGISTRY_SCHEME)
    _check_out(out, force, None if registered else Path(source))
    out.absolute().parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=f".{out.name}.source-", dir=out.absolute().parent) as scratch:
        if registered:
            from .registry_source import fetch_version

            fetched = fetch_version(str(source), Path(scratch), client)
            name = model or fetched.model
            if run_dir is not None:
                records = local_records(fetched.checkpoint, run_dir, name)
            elif fetched.metrics is not None:
                records = RunRecords(Evaluation.load(fetched.metrics), fetched.location, name)
            else:
                records = RunRecords(model=name)
            found = ExportSource(fetched.checkpoint, records, {"source": str(source), **fetched.origin})
        else:
            found = _local_source(Path(source), run_dir, model)
        _write(found, out, limit)
    return out


def _write(found: ExportSource, out: Path, limit: int) -> None:
    model, tokenizer = load_bundle(found.checkpoint)
    recorded, measured = model.config.block_length, found.records.settings.get("block_length")
    if recorded is not None and measured is not None and recorded != measured:
        raise DataError(f"{found.checkpoint}: config.json records block_length={recorded} but the run's records "
                        f"({found.records.location}) decoded it with block_length={measured}")
    if recorded is None and measured is not None:
        # A checkpoint written before config.json recorded its block length: the run's own setting is the one
        # HF callers need (transformers' Auto classes, diffusers' pipeline) to build the model's mask.
        model.config.extra[BLOCK_LENGTH_KEY] = measured
        model.config.validate()
    provenance = read_provenance(found.checkpoint)
    digest = checksums_digest(found.checkpoint)
    origin = {**found.origin, **({"weights digest (SHA-256 of its SHA256SUMS)": digest} if digest else {})}
    with atomic_directory(out) as staging:
        save_sharded(model, staging, limit, stored_dtypes(found.checkpoint))
        save_tokenizer(tokenizer, staging)
        if provenance:
            atomic_write_json(staging / PROVENANCE_FILE, provenance)
        atomic_write_json(staging / GENERATION_CONFIG, generation_config(found.records, model.config))
        shards = len(set(_weight_map(staging).values()))
        facts = {"parameters": sum(p.numel() for p in model.parameters()), "shards": shards,
                 "dtype": str(model.dtype).removeprefix("torch.")}
        atomic_write_text(staging / MODEL_CARD, model_card(out.name, provenance=provenance, records=found.records,
                                                           origin=origin, facts=facts))


def _weight_map(directory: Path) -> dict[str, str]:
    return json.loads((directory / WEIGHTS_INDEX_NAME).read_text(encoding="utf-8"))["weight_map"]
