"""Running stages: one at a time or the whole plan, untracked or inside MLflow runs.

The CLI (`dmax <stage>`, `dmax pipeline`, `--track`), the Prefect tasks and the benchmark call these, so
a stage runs the same way everywhere. Tracking only records around the call: it gets the stage's typed
result and logs it (`dmax_core.tracking`).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from dmax_core.config import DmaxConfig
from dmax_core.metric_logger import NullLogger
from dmax_core.results import StageResult
from dmax_core.stages.table import Stage, get_stage, plan

if TYPE_CHECKING:
    from dmax_core.tracking import Tracker


def run_stage(stage: Stage | str, cfg: DmaxConfig, *, tracker: Tracker | None = None,
              parent_run_id: str | None = None) -> StageResult:
    """Run one stage (tracked in its own MLflow run, nested under `parent_run_id`, when `tracker` is given).

    A stage with nothing to do for this config returns a result that says why, and records nothing."""
    stage = get_stage(stage) if isinstance(stage, str) else stage
    reason = stage.skip_reason(cfg)
    if reason is not None:
        return StageResult(stage=stage.name, skipped=reason)
    if tracker is None:
        return stage.run(cfg, NullLogger())
    with tracker.stage_run(cfg, stage.name, stage.logged_params, parent_run_id=parent_run_id) as run:
        result = stage.run(cfg, run.logger)
        run.record(result)
    return result


def run_pipeline(cfg: DmaxConfig, *, tracker: Tracker | None = None, run_name: str | None = None,
                 tags: Mapping[str, Any] | None = None) -> dict[str, StageResult]:
    """Every stage of `plan(cfg)` in order; with `tracker`, under one MLflow parent run."""
    stages = plan(cfg)
    if tracker is None:
        return {stage.name: run_stage(stage, cfg) for stage in stages}
    with tracker.pipeline_run(cfg, run_name=run_name, tags=tags) as parent_run_id:
        return {stage.name: run_stage(stage, cfg, tracker=tracker, parent_run_id=parent_run_id) for stage in stages}
