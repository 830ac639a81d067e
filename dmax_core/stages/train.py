"""`train`: fine-tune the base model on its own trajectories -> the DMax checkpoint (OPUT, spec §2).

The objective is `train.objective` (a registered `objectives.Objective`); it starts from the model the
objective names (`starts_from`) and its checkpoint goes to the directory the objective names. With
`train.objective=sft` the same duplicated data and steps train the plain masked objective: the
self-distillation-only control, written to `control/` so it never replaces `dmax/`. With
`train.objective=mmd` it is a second run in the same run directory: DMax-MMD post-training of `dmax/` on
the same trajectories, written to `mmd/`. Either way the checkpoint is a registry candidate of its
objective's family.
"""

from __future__ import annotations

import torch

from dmax_core.bundle import load_bundle, save_bundle
from dmax_core.config import DmaxConfig
from dmax_core.errors import DataError
from dmax_core.files import checksums_digest
from dmax_core.metric_logger import MetricLogger
from dmax_core.results import ModelCandidate, StageResult
from dmax_core.stages.common import is_main_process, labelled_pads, setup
from dmax_core.stages.datasets import trajectory_dataset
from dmax_core.stages.layout import BASE, TRAJECTORIES, RunLayout
from dmax_core.training import duplicate_for_oput, encode_conversations, train_model
from dmax_core.trajectories import load_trajectories


def train(cfg: DmaxConfig, logger: MetricLogger) -> StageResult:
    """Train `train.objective` on `trajectories/` from its starting model -> its checkpoint (`base/` -> `dmax/`
    for oput, `base/` -> `control/` for sft, `dmax/` -> `mmd/` for mmd)."""
    layout = RunLayout.of(cfg)
    objective = cfg.train.objective.name
    start = layout.starting_model(objective)
    source = layout.model(start)
    if start != BASE and not source.is_dir():
        raise DataError(f"train.objective={objective} starts from the {start} model, and {source} does not exist: "
                        f"train it first (dmax train train.objective={layout.family(start)})")
    setup(cfg, "train")
    trajectories = load_trajectories(layout.path(TRAJECTORIES))
    # bf16 mixed precision keeps fp32 master weights: a bf16 checkpoint (LLaDA2.0-mini) is widened on load.
    # Every process loads the whole checkpoint before sharding (host RAM: processes x weights).
    model, tokenizer = load_bundle(source, dtype=torch.float32 if cfg.train.mixed_precision == "bf16" else None)
    data = duplicate_for_oput(
        encode_conversations(tokenizer, trajectories.pairs, cfg.train.max_seq_len, labelled_pads(cfg, cfg.train))
    )
    result = train_model(
        model, data, cfg.train, block_length=cfg.block_length, mask_id=model.mask_token_id,
        checkpoint_dir=layout.checkpoints(f"train-{objective}"), logger=logger,
        description=f"train ({objective})", metric_prefix="train",
    )
    if not is_main_process():  # a distributed launch: rank 0 writes the checkpoint
        return StageResult(stage="train", skipped="not the main process of a distributed launch")
    provenance = {"stage": "train", "objective": objective, "starts_from": start, "steps": result.steps,
                  "final_loss": result.final_loss, "seconds": result.seconds, "examples": len(data),
                  "resumed_from": result.resumed_from,
                  "dataset_digest": trajectories.digest, "preset": cfg.preset}
    name = layout.trained_model(objective)
    out = save_bundle(result.model or model, tokenizer, layout.model(name), provenance,
                      block_length=cfg.block_length)
    return StageResult(
        stage="train",
        outputs={name: out},
        metrics={"train/final_loss": result.final_loss, "train/seconds": result.seconds},
        tags={"dmax.dataset_digest": trajectories.digest},
        datasets=(trajectory_dataset(cfg, layout.path(TRAJECTORIES), trajectories.digest, "training"),),
        candidate=ModelCandidate(output=name, family=objective, digest=checksums_digest(out)),
    )
