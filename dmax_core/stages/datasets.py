"""The trajectory dataset as a stage run lists it (`results.DatasetUse`), for distill (which writes it) and
train (which reads it).

Its own module, not `stages.common`: every stage imports `common`, and DVC derives each stage's code deps
from its imports, so pretrain would rerun whenever `trajectories.py` changed. Nor in `trajectories`,
which sits below `results` (docs/layers.md).
"""

from __future__ import annotations

from pathlib import Path

from dmax_core.config import DmaxConfig
from dmax_core.results import DatasetUse
from dmax_core.trajectories import dataset_name


def trajectory_dataset(cfg: DmaxConfig, directory: Path, digest: str, context: str) -> DatasetUse:
    """The trajectories in `directory` with their `digest`; `context` is `output` when the stage wrote them,
    `training` when it trained on them."""
    return DatasetUse(name=dataset_name(directory, cfg.preset), digest=digest, path=Path(directory), context=context)
