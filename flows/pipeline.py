"""Prefect flows for dmax, derived from the stage table: one task per stage, the `dmax` pipeline flow,
and the `dmax-stage` flow that runs one stage alone.

Thin wrappers: every task calls `dmax_core.stages.run_stage` with an MLflow `Tracker`, which runs the one
implementation of the stage inside an MLflow run. Nothing here computes anything; change behaviour in
`dmax_core`, not in a flow.

Deployments (prefect.yaml): `dmax/full-pipeline`, `dmax/scheduled-retrain` (cron, shipped inactive),
`dmax-distill/sharded` (distillation fanned out over workers) and `dmax-stage/<stage>` for each stage.
Parameters are the CLI's: `preset` (a name in params/ or a YAML path) and `overrides` (`dotted.key=value`
strings); `dmax-stage` also takes `stage`, `dmax-distill` `shards`.

Tasks pass strings (preset, overrides, MLflow run id), never the config object, so every task run is
self-contained, JSON-serialisable and visible in the UI. Caching is off: deciding what is up to date
is DVC's job; a flow run always runs its stages.
"""

from __future__ import annotations

from dmax_core.env import configure_environment

configure_environment()  # telemetry off and project-local state before prefect/mlflow are imported

import time  # noqa: E402
from datetime import UTC, datetime  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402

from prefect import flow, get_client, get_run_logger, task  # noqa: E402
from prefect.cache_policies import NO_CACHE  # noqa: E402
from prefect.deployments import run_deployment  # noqa: E402
from prefect.runtime import deployment, flow_run  # noqa: E402

from dmax_core.config import DmaxConfig, load_config  # noqa: E402
from dmax_core.errors import DmaxError  # noqa: E402
from dmax_core.stages.distill import pending_shards  # noqa: E402
from dmax_core.stages.runner import run_stage  # noqa: E402
from dmax_core.stages.table import STAGES, Stage, get_stage, plan  # noqa: E402
from dmax_core.tracking import Tracker  # noqa: E402

STAGE_RETRIES = 2
RETRY_DELAY_SECONDS = 10
# Errors that say the input is wrong (bad config, corrupt trajectories, missing checkpoint): retrying
# cannot fix them, so the flow run fails at once with the message in words.
PERMANENT_ERRORS: tuple[type[BaseException], ...] = (
    DmaxError,
    ValueError,
    TypeError,
    KeyError,
    FileNotFoundError,
    NotADirectoryError,
    PermissionError,
)


def retry_only_transient(task: Any, task_run: Any, state: Any) -> bool:
    """Prefect `retry_condition_fn`: retry crashes and I/O hiccups, never user errors."""
    try:
        state.result()
    except PERMANENT_ERRORS:
        return False
    except Exception:
        return True
    return True


def _config(preset: str, overrides: list[str] | None) -> DmaxConfig:
    return load_config(preset, list(overrides or []))


def _stage_task(stage: Stage):
    """One Prefect task per stage: named `<stage>`, task runs named `<stage>[<preset>]`, with retries."""

    def run(preset: str, overrides: list[str] | None = None, parent_run_id: str | None = None) -> dict[str, str]:
        result = run_stage(stage, _config(preset, overrides), tracker=Tracker(), parent_run_id=parent_run_id)
        get_run_logger().info("%s", result.describe())
        return {name: str(path) for name, path in result.outputs.items()}

    # Distinct names: Prefect derives the task key from the function's qualified name.
    run.__name__ = run.__qualname__ = f"{stage.name}_task"
    run.__doc__ = f"Run the `{stage.name}` stage under MLflow tracking: {stage.help}."
    return task(
        run,
        name=stage.name,
        task_run_name=f"{stage.name}[{{preset}}]",
        retries=STAGE_RETRIES,
        retry_delay_seconds=RETRY_DELAY_SECONDS,
        retry_condition_fn=retry_only_transient,
        cache_policy=NO_CACHE,
        log_prints=True,
    )


STAGE_TASKS = {stage.name: _stage_task(stage) for stage in STAGES}


def _flow_run_tags() -> dict[str, str]:
    """Links the MLflow run back to the Prefect flow run (and vice versa through the run name)."""
    tags = {
        "prefect.flow_run_id": flow_run.id,
        "prefect.flow_run_name": flow_run.name,
        "prefect.deployment_name": deployment.name,
        "prefect.flow_run_url": flow_run.ui_url,
    }
    return {key: str(value) for key, value in tags.items() if value}


def _run_name(kind: str | None = None):
    """Flow run names like `smoke-pipeline-20261123-015312`: readable, unique, and reused as the MLflow
    run name, so a Prefect run and its MLflow run are found by the same words. `kind=None`: the stage."""

    def name() -> str:
        parameters = flow_run.parameters
        preset = Path(str(parameters.get("preset", "run"))).stem
        return f"{preset}-{kind or parameters.get('stage', 'stage')}-{datetime.now(UTC):%Y%m%d-%H%M%S}"

    return name


@flow(name="dmax", flow_run_name=_run_name("pipeline"), log_prints=True)
def full_pipeline(preset: str = "tiny", overrides: list[str] | None = None) -> dict[str, dict[str, str]]:
    """The stages of `dmax_core.stages.plan` in order (pretrain only when the preset trains its own base).

    One MLflow parent run for the flow run, one nested run per task."""
    logger = get_run_logger()
    cfg = _config(preset, overrides)  # a bad preset or override fails the flow before anything runs
    stages = plan(cfg)
    logger.info("preset %s, run dir %s, stages %s", cfg.preset, cfg.run_dir, " -> ".join(s.name for s in stages))
    tracker = Tracker()
    outputs: dict[str, dict[str, str]] = {}
    with tracker.pipeline_run(cfg, run_name=flow_run.name, tags=_flow_run_tags()) as parent_run_id:
        logger.info("MLflow parent run %s at %s", parent_run_id, tracker.uri)
        for stage in stages:
            outputs[stage.name] = STAGE_TASKS[stage.name](preset, overrides, parent_run_id)
    return outputs


@flow(name="dmax-stage", flow_run_name=_run_name(), log_prints=True)
def stage_flow(stage: str, preset: str = "tiny", overrides: list[str] | None = None) -> dict[str, str]:
    """Run one stage on its own (tracked as a single MLflow run); reads and writes under the config's run_dir."""
    get_stage(stage)  # fail fast on an unknown stage
    _config(preset, overrides)  # ... and on a bad preset or override
    return STAGE_TASKS[stage](preset, overrides, None)


@flow(name="dmax-distill", flow_run_name=_run_name("distill-sharded"), log_prints=True)
def distill_sharded(preset: str = "tiny", overrides: list[str] | None = None, shards: int = 2) -> dict[str, str]:
    """Distillation over the work pool: one `dmax-stage/distill` flow run per shard not yet decoded (each a
    flow run any worker can take, one GPU per worker, retried alone on transient errors), then the merge
    into one trajectory dataset with its digest. Decoded shards are kept, so a rerun after a failure decodes
    only the shards that failed."""
    logger = get_run_logger()
    sharded = [*(overrides or []), f"distill.shards={shards}"]
    cfg = _config(preset, sharded)
    pending = pending_shards(cfg)
    logger.info("%d of %d shards to decode: %s", len(pending), shards, pending)
    runs = {index: run_deployment("dmax-stage/distill", timeout=0, as_subflow=True,
                                  parameters={"stage": "distill", "preset": preset,
                                              "overrides": [*sharded, f"distill.shard={index}"]})
            for index in pending}
    states = {index: _wait_flow_run(run.id) for index, run in runs.items()}
    failed = sorted(index for index, state in states.items() if state != "COMPLETED")
    if failed:
        raise RuntimeError(f"distillation shard(s) {failed} ended {[states[i] for i in failed]}; the other shards "
                           "are kept: rerun this deployment to decode only these")
    return STAGE_TASKS["distill"](preset, sharded, None)  # every shard is there: this merges


def _wait_flow_run(flow_run_id: Any, poll_seconds: float = 2.0) -> str:
    """The terminal state type of a flow run (polled through the API)."""
    with get_client(sync_client=True) as client:
        while True:
            state = client.read_flow_run(flow_run_id).state
            if state is not None and state.is_final():
                return state.type.value
            time.sleep(poll_seconds)


if __name__ == "__main__":  # python flows/pipeline.py [preset]: run once in-process (ephemeral server)
    import sys

    print(full_pipeline(preset=sys.argv[1] if len(sys.argv) > 1 else "smoke", overrides=sys.argv[2:]))
