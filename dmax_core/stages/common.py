"""What several stages need from a config: the task, its tokenizer, the model architecture, the RNG setup.

Knob values a task cannot satisfy at run time (a split larger than its question space) become
`ConfigError`s here, so they reach the user as one line naming the task.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch

from dmax_core.bundle import load_bundle
from dmax_core.config import DmaxConfig, TrainConfig
from dmax_core.errors import ConfigError
from dmax_core.models import LLaDA2MoeConfig
from dmax_core.tasks import GeneratedTask, Problem, Task, build_task
from dmax_core.tokenizer import build_tokenizer, special_token_ids

# torch's own default, read before any stage changes it, so an automatic choice can go back to it.
DEFAULT_THREADS = torch.get_num_threads()


def setup(cfg: DmaxConfig, kind: str, batch_size: int | None = None) -> None:
    """Seed torch's global RNG and set the thread count of this kind of stage (`train` or `decode`, with
    the decode batch size; `config.ThreadsConfig`), the same way at the start of every stage."""
    torch.manual_seed(cfg.seed)
    threads = getattr(cfg.threads, kind)
    if threads is None and kind == "decode" and batch_size == 1:
        threads = 1  # batch-1 decoding is as fast on one thread idle, and 4x faster beside a busy process
    # Under a distributed launcher the processes of one machine share its cores.
    local_processes = int(os.environ.get("LOCAL_WORLD_SIZE", "1"))
    torch.set_num_threads(threads or max(1, DEFAULT_THREADS // local_processes))


def is_main_process() -> bool:
    """True unless this is a non-zero rank of a distributed launch (`accelerate launch`, `torchrun`): only
    the main process writes a stage's outputs and records the run."""
    return int(os.environ.get("RANK", "0")) == 0


def decode_device(cfg: DmaxConfig) -> str:
    """The device models decode on: `cfg.device`, with `auto` meaning the first GPU when there is one."""
    if cfg.device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if cfg.device.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError(f"device={cfg.device} but torch sees no CUDA device (set device=cpu or auto)")
    return cfg.device


def load_for_decoding(cfg: DmaxConfig, directory: Path) -> tuple[Any, Any]:
    """(model, tokenizer) of a checkpoint on the configured device and dtype (`model.dtype`)."""
    dtype = None if cfg.model.dtype == "auto" else getattr(torch, cfg.model.dtype)
    return load_bundle(directory, device=decode_device(cfg), dtype=dtype)


def task_of(cfg: DmaxConfig) -> Task:
    """The configured task (validated with the config; built again here because tasks hold state)."""
    return build_task(cfg.task.name, **cfg.task.knobs)


def task_splits(cfg: DmaxConfig, task: Task | None = None, name: str | None = None) -> dict[str, list[Problem]]:
    """The task's train/validation/test problems (no question overlap); `name` names it in errors."""
    task = task or task_of(cfg)
    try:
        return task.splits()
    except ValueError as exc:  # knobs the task cannot satisfy (too many people, too small a space)
        raise ConfigError(f"task {name or cfg.task.name!r}: {exc}") from exc


def task_tokenizer(cfg: DmaxConfig, task: Task | None = None) -> Any:
    """The word-level tokenizer of an embedded task at this preset's difficulty."""
    task = task or task_of(cfg)
    if not isinstance(task, GeneratedTask):
        raise ConfigError(f"task {cfg.task.name!r} has no word list: pretraining needs an embedded task")
    return build_tokenizer(task.vocabulary())


def model_config(cfg: DmaxConfig, tokenizer: Any) -> LLaDA2MoeConfig:
    """The preset's architecture with the tokenizer's vocabulary and special ids filled in."""
    ids = special_token_ids(tokenizer)
    arch = cfg.model.model_dump(exclude={"base_path", "dtype"})
    needed = max(cfg.pretrain.max_seq_len, cfg.train.max_seq_len)
    if arch["max_position_embeddings"] < needed:
        raise ConfigError(f"model.max_position_embeddings={arch['max_position_embeddings']} < max_seq_len {needed}")
    return LLaDA2MoeConfig.from_dict(
        {**arch, "vocab_size": len(tokenizer), "pad_token_id": ids["pad"], "eos_token_id": ids["eos"],
         "mask_token_id": ids["mask"]}
    )


def labelled_pads(cfg: DmaxConfig, train_cfg: TrainConfig) -> int:
    """Trailing pads that carry a label. Spec §1.1 labels the first 32, 32 being the block length: keep
    that coupling unless the preset says otherwise."""
    return cfg.block_length if train_cfg.labelled_pad_tokens is None else train_cfg.labelled_pad_tokens

