"""`pretrain`: block-diffusion SFT of a tiny LLaDA2-shaped model from scratch on the embedded task.

It stands in for LLaDA2.0-mini, which real users download instead (`model.base_path`); with a base path
set, the stage table skips this stage.
"""

from __future__ import annotations

import torch

from dmax_core.bundle import save_bundle
from dmax_core.config import DmaxConfig
from dmax_core.files import checksums_digest
from dmax_core.metric_logger import MetricLogger
from dmax_core.models import LLaDA2MoeForDiffusionLM
from dmax_core.results import StageResult
from dmax_core.stages.common import (
    is_main_process,
    labelled_pads,
    model_config,
    setup,
    task_of,
    task_splits,
    task_tokenizer,
)
from dmax_core.stages.layout import BASE, RunLayout
from dmax_core.training import encode_conversations, train_model


def pretrain(cfg: DmaxConfig, logger: MetricLogger) -> StageResult:
    """Train the base model on the task's training split -> `base/` (model, tokenizer, provenance)."""
    layout = RunLayout.of(cfg)
    setup(cfg, "train")
    task = task_of(cfg)
    splits = task_splits(cfg, task)
    tokenizer = task_tokenizer(cfg, task)
    torch.manual_seed(cfg.seed)
    model = LLaDA2MoeForDiffusionLM(model_config(cfg, tokenizer))
    data = encode_conversations(
        tokenizer, [(p.question, p.answer) for p in splits["train"]], cfg.pretrain.max_seq_len,
        labelled_pads(cfg, cfg.pretrain),
    )
    logger.log_params({"pretrain.num_parameters": sum(p.numel() for p in model.parameters())})
    result = train_model(
        model, data, cfg.pretrain, block_length=cfg.block_length, mask_id=model.mask_token_id,
        checkpoint_dir=layout.checkpoints("pretrain"), logger=logger, description="pretrain",
        metric_prefix="pretrain",
    )
    if not is_main_process():  # a distributed launch: rank 0 writes the checkpoint
        return StageResult(stage="pretrain", skipped="not the main process of a distributed launch")
    provenance = {"stage": "pretrain", "steps": result.steps, "final_loss": result.final_loss,
                  "seconds": result.seconds, "examples": len(data), "preset": cfg.preset}
    out = save_bundle(result.model or model, tokenizer, layout.path(BASE), provenance,
                      block_length=cfg.block_length)
    return StageResult(
        stage="pretrain",
        outputs={BASE: out},
        metrics={"pretrain/final_loss": result.final_loss, "pretrain/seconds": result.seconds},
        checkpoints={BASE: checksums_digest(out)},
    )
