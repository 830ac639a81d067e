"""What a training objective is: named loss terms on one micro-batch, and the checkpoint it writes.

An objective class registers itself by its `name` (the `Registry` pattern of decoding policies and tasks):
its knobs are its `__init__` keyword arguments, checked there. The trainer owns everything around the loss
(batches and noise drawn from (seed, step), the optimiser, clipping, accumulation, checkpoints, logging) and
calls `loss_terms` once per micro-batch; it sums the terms into the loss it back-propagates and logs each
term beside the total (`<prefix>/loss/<term>`), and every statistic under `<prefix>/<name>`.

An objective must not step the optimiser, draw the batch or its noise, or write files. It may hold frozen
helpers built in `setup` (a reference copy of the starting weights, say), which runs once, on the starting
weights, before any checkpoint is resumed or the model is sharded; when the trainer shards the model (FSDP)
it hands the objective the same sharding through `shard`, so a frozen helper that runs forwards is split
across the processes like the trained model instead of being held whole by each.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar

import torch
from torch import nn

from dmax_core.diffusion import TrainingLayout
from dmax_core.registry import Registry

OBJECTIVES: Registry[Objective] = Registry("training objective")


@dataclass(frozen=True)
class ObjectiveBatch:
    """One micro-batch on the [noisy; clean] layout (spec §1.2), on the training device.

    `noisy` is the masked copy the trainer drew, `labels` the targets (IGNORE_INDEX elsewhere, already
    restricted to masked positions when `train.loss_positions=masked`), `flags` marks on-policy rows (OPUT's
    duplicated half). `step` and `seed` identify the draw, for objectives that sample; `rows` are these
    rows' positions in the step's global batch (so a draw per row is the same at any world size or
    accumulation) and `block_length` the block size B of the layout. `always_forward`: the model is sharded
    (FSDP), so every process must run the same number of forwards."""

    noisy: torch.Tensor
    clean: torch.Tensor
    labels: torch.Tensor
    flags: torch.Tensor
    layout: TrainingLayout
    mask_id: int
    step: int
    seed: int
    always_forward: bool = False
    rows: torch.Tensor | None = None  # Long[b]; None: 0..b-1
    block_length: int | None = None


@dataclass(frozen=True)
class ObjectiveOutput:
    """The loss terms of one micro-batch (summed by the trainer) and statistics logged beside them."""

    terms: Mapping[str, torch.Tensor]
    stats: Mapping[str, float] = field(default_factory=dict)


class Objective(ABC):
    """A registered training objective (module docstring).

    `checkpoint` is the model name its `train` run writes (a directory of the run, an evaluable model
    and the registry family's checkpoints); `from_scratch` says whether it can train a base model from
    random weights (`pretrain`); `starts_from` is the model its `train` run starts from (`base`, or the
    checkpoint another objective writes: a post-training objective such as `mmd` starts from `dmax`);
    `description` is the registered model's description."""

    name: ClassVar[str]
    checkpoint: ClassVar[str]
    from_scratch: ClassVar[bool] = False
    starts_from: ClassVar[str] = "base"
    description: ClassVar[str] = "dmax checkpoints"

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if "name" in cls.__dict__:
            if not isinstance(cls.__dict__.get("checkpoint"), str) or not cls.checkpoint.isidentifier():
                raise TypeError(f"objective {cls.name!r} must name the checkpoint it writes (an identifier)")
            OBJECTIVES.register(cls)

    def setup(self, model: nn.Module) -> None:  # noqa: B027 - a hook with a do-nothing default, not abstract
        """Called once with the starting weights, before resuming or sharding (default: nothing to do)."""

    def shard(self, shard: Callable[[nn.Module], nn.Module]) -> None:  # noqa: B027 - a do-nothing hook
        """Called once after the trainer sharded the model (FSDP), with the function that shards a module the
        same way; an objective shards its frozen helpers with it (default: it holds none)."""

    @abstractmethod
    def loss_terms(self, model: nn.Module, batch: ObjectiveBatch) -> ObjectiveOutput:
        """The named loss terms of `batch` (each a scalar tensor with gradients)."""

    def config(self) -> dict[str, Any]:
        """The knobs (attributes of the same names), for logging next to what they produced."""
        return {"objective": self.name, **{knob: getattr(self, knob) for knob in OBJECTIVES.knobs(self.name)}}
