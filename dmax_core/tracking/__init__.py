"""MLflow tracking of dmax runs, one job per module: `store` (where), `logger` (the MetricLogger on a
run), `runs` (pipeline and stage runs, recording a `StageResult`), `lineage` (dataset inputs, logged
models), `registry` (candidates, champion).

It logs what stages return and decides nothing itself: the champion rule is `evaluation.rules`, the
stage order is `stages.table`. Importing it imports MLflow (`dmax_core/__init__` has already switched
telemetry off and set the offline defaults).
"""

from dmax_core.tracking.logger import MlflowLogger
from dmax_core.tracking.registry import (
    CANDIDATE_ALIAS,
    CHAMPION_ALIAS,
    find_version,
    promote_if_better,
    register_candidate,
    registered_model_name,
)
from dmax_core.tracking.runs import StageRun, Tracker, config_params, environment_tags
from dmax_core.tracking.store import default_artifact_location, experiment_id, tracking_client, tracking_uri

__all__ = [
    "CANDIDATE_ALIAS",
    "CHAMPION_ALIAS",
    "MlflowLogger",
    "StageRun",
    "Tracker",
    "config_params",
    "default_artifact_location",
    "environment_tags",
    "experiment_id",
    "find_version",
    "promote_if_better",
    "register_candidate",
    "registered_model_name",
    "tracking_client",
    "tracking_uri",
]
