"""One trainer for block-diffusion SFT and OPUT (spec §1-§2).

The trainer (accelerate, the pydantic config) loads on first use of `train_model` / `TrainResult`, so
that `dmax_core.training.sharding` and `.data` import on a bare GPU machine with only torch
(benchmarks/gpu_check.py runs FSDP2 there without accelerate or pydantic).
"""

from typing import Any

from dmax_core.training.data import ConversationTensors, duplicate_for_oput, encode_conversations

__all__ = ["ConversationTensors", "TrainResult", "duplicate_for_oput", "encode_conversations", "train_model"]


def __getattr__(name: str) -> Any:
    """PEP 562: the trainer's names, imported when first asked for."""
    if name in ("TrainResult", "train_model"):
        from dmax_core.training import trainer

        return getattr(trainer, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
