"""FSDP2 for the trainer: shard the model by decoder layer across the processes of a distributed launch.

Why FSDP and not DDP for real models: DDP keeps a full copy of the weights, gradients and AdamW state in
every process (about 248 GiB for LLaDA2.0-mini, benchmarks/train_memory.py); FSDP keeps 1/N of each and
gathers one decoder layer's weights at a time. `train.fsdp=true` turns it on (it needs a launch with more
than one process); `train.mixed_precision=bf16` computes in bf16 with fp32 master weights and fp32
gradient reduction; `train.cpu_offload=true` keeps a GPU run's shards on the CPU (GPU runs only, not
tested here); `train.activation_checkpointing=true` recomputes each decoder layer's activations in the
backward pass. Gradient accumulation (`train.grad_accumulation`) is the trainer's, for DDP and FSDP alike.

Checkpoints stay what they are without FSDP: rank 0 gathers the full weights and the full optimizer state
and writes the same safetensors checkpoint a one-process run writes (`full_model`, `optimizer_state_by_name`),
so a run can resume under any world size, and the final bundle has the official tensor names.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from dmax_core.errors import ConfigError

__all__ = ["full_model", "load_optimizer_state", "optimizer_state_by_name", "shard_model"]


def checkpoint_activations(layer: nn.Module) -> None:
    """Recompute `layer`'s activations in the backward pass instead of keeping them (inside its FSDP unit,
    so its weights are gathered once for the recomputation and the backward)."""
    from torch.utils.checkpoint import checkpoint

    forward = layer.forward

    def recomputed(*args: Any, **kwargs: Any) -> Any:
        return checkpoint(forward, *args, use_reentrant=False, **kwargs)

    layer.forward = recomputed


def shard_model(model: nn.Module, device: torch.device, mixed_precision: str, cpu_offload: bool,
                activation_checkpointing: bool = False) -> nn.Module:
    """`fully_shard` every decoder layer, then the root (embeddings, final norm, lm_head), in place."""
    import torch.distributed as dist
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.fsdp import CPUOffloadPolicy, MixedPrecisionPolicy, OffloadPolicy, fully_shard

    if cpu_offload and device.type == "cpu":
        raise ConfigError("train.cpu_offload keeps a GPU run's shards on the CPU; this run has no GPU "
                          "(its shards are on the CPU already): set train.cpu_offload=false")
    for module in model.modules():  # every expert in every backward (see `moe.LLaDA2MoeSparseMoeBlock`)
        if hasattr(module, "every_expert_in_graph"):
            module.every_expert_in_graph = True
    mesh = init_device_mesh(device.type, (dist.get_world_size(),))
    options: dict[str, Any] = {"mesh": mesh, "offload_policy": CPUOffloadPolicy() if cpu_offload else OffloadPolicy()}
    if mixed_precision == "bf16":
        options["mp_policy"] = MixedPrecisionPolicy(param_dtype=torch.bfloat16, reduce_dtype=torch.float32)
    for layer in model.model.layers:
        if activation_checkpointing:
            checkpoint_activations(layer)
        fully_shard(layer, **options)
    fully_shard(model, **options)
    return model


def _full_options() -> Any:
    from torch.distributed.checkpoint.state_dict import StateDictOptions

    return StateDictOptions(full_state_dict=True, cpu_offload=True)


def full_model(model: nn.Module, template: nn.Module) -> nn.Module | None:
    """Collective: the full weights gathered into `template` (a plain model) on rank 0; None elsewhere."""
    import torch.distributed as dist
    from torch.distributed.checkpoint.state_dict import get_model_state_dict

    state = get_model_state_dict(model, options=_full_options())
    if dist.get_rank() != 0:
        return None
    template.load_state_dict(state)
    return template


def optimizer_state_by_name(model: nn.Module, optimizer: torch.optim.Optimizer) -> dict[str, Any]:
    """Collective: the full optimizer state keyed by parameter name (empty off rank 0)."""
    from torch.distributed.checkpoint.state_dict import get_optimizer_state_dict

    return get_optimizer_state_dict(model, optimizer, options=_full_options())


def plain_optimizer_state(by_name: dict[str, Any], names: list[str]) -> dict[str, Any]:
    """A name-keyed full optimizer state as a one-process optimizer's `state_dict()` (keyed by position)."""
    index = {name: i for i, name in enumerate(names)}
    state = {index[name]: value for name, value in by_name["state"].items()}
    groups = [{**group, "params": [index[name] for name in group["params"]]} for group in by_name["param_groups"]]
    return {"state": state, "param_groups": groups}


def load_optimizer_state(model: nn.Module, optimizer: torch.optim.Optimizer, plain_state: dict[str, Any],
                         names: list[str]) -> None:
    """Give a sharded model's optimizer the state a one-process checkpoint holds (keyed by position)."""
    from torch.distributed.checkpoint.state_dict import set_optimizer_state_dict

    by_name = {"state": {names[i]: value for i, value in plain_state["state"].items()},
               "param_groups": [{**group, "params": [names[i] for i in group["params"]]}
                                for group in plain_state["param_groups"]]}
    set_optimizer_state_dict(model, optimizer, optim_state_dict=by_name, options=_full_options())
