"""Prefect flows for dmax: one flow per stage and the `dmax` full-pipeline flow.

Thin wrappers: every task calls `dmax_core.tracking.run_stage`, which calls the one implementation in
`dmax_core.stages` inside an MLflow run. Nothing here computes anything; change behaviour in
`dmax_core`, not in a flow.

Deployments (prefect.yaml): `dmax/full-pipeline`, `dmax/scheduled-retrain` (cron, shipped inactive) and
`dmax-<stage>/<stage>` for each stage. Parameters are the CLI's: `preset` (a name in params/ or a YAML
path) and `overrides` (`dotted.key=value` strings).

Tasks pass strings (preset, overrides, MLflow run id), never the config object, so every task run is
self-contained, JSON-serialisable and visible in the UI. Caching is off: deciding what is up to date
is DVC's job; a flow run always runs its stages.
"""

from __future__ import annotations

from dmax_core.env import configure_environment

configure_environment()  # telemetry off and project-local state before prefect/mlflow are imported

from datetime import UTC, datetime  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402

from prefect import flow, get_run_logger, task  # noqa: E402
from prefect.cache_policies import NO_CACHE  # noqa: E402
from prefect.runtime import deployment, flow_run  # noqa: E402

from dmax_core import tracking  # noqa: E402
from dmax_core.config import DmaxConfig, load_config  # noqa: E402
from dmax_core.errors import DmaxError  # noqa: E402

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


def _stage_task(stage: str):
    """One Prefect task per stage: named `<stage>`, task runs named `<stage>[<preset>]`, with retries."""

    def run(preset: str, overrides: list[str] | None = None, parent_run_id: str | None = None) -> str:
        cfg = _config(preset, overrides)
        output = tracking.run_stage(cfg, stage, parent_run_id=parent_run_id)
        get_run_logger().info("%s wrote %s", stage, output)
        return str(output)

    # Distinct names: Prefect derives the task key from the function's qualified name.
    run.__name__ = run.__qualname__ = f"{stage}_task"
    run.__doc__ = f"Run `dmax_core.stages.{stage}` under MLflow tracking."
    return task(
        run,
        name=stage,
        task_run_name=f"{stage}[{{preset}}]",
        retries=STAGE_RETRIES,
        retry_delay_seconds=RETRY_DELAY_SECONDS,
        retry_condition_fn=retry_only_transient,
        cache_policy=NO_CACHE,
        log_prints=True,
    )


pretrain_task = _stage_task("pretrain")
distill_task = _stage_task("distill")
train_task = _stage_task("train")
evaluate_task = _stage_task("evaluate")
report_task = _stage_task("report")
STAGE_TASKS = {
    "pretrain": pretrain_task,
    "distill": distill_task,
    "train": train_task,
    "evaluate": evaluate_task,
    "report": report_task,
}


def _flow_run_tags() -> dict[str, str]:
    """Links the MLflow run back to the Prefect flow run (and vice versa through the run name)."""
    tags = {
        "prefect.flow_run_id": flow_run.id,
        "prefect.flow_run_name": flow_run.name,
        "prefect.deployment_name": deployment.name,
        "prefect.flow_run_url": flow_run.ui_url,
    }
    return {key: str(value) for key, value in tags.items() if value}


def _run_name(kind: str):
    """Flow run names like `smoke-pipeline-20261123-015312`: readable, unique, and reused as the MLflow
    run name, so a Prefect run and its MLflow run are found by the same words."""

    def name() -> str:
        preset = Path(str(flow_run.parameters.get("preset", "run"))).stem
        return f"{preset}-{kind}-{datetime.now(UTC):%Y%m%d-%H%M%S}"

    return name


@flow(name="dmax", flow_run_name=_run_name("pipeline"), log_prints=True)
def full_pipeline(
    preset: str = "tiny", overrides: list[str] | None = None, pretrain: bool | None = None
) -> dict[str, str]:
    """distill -> train (OPUT) -> evaluate -> report, after pretrain when the preset trains its own base.

    One MLflow parent run for the flow run, one nested run per task. `pretrain=None` decides from the
    preset (no `model.base_path` -> pretrain); `true`/`false` force it.
    """
    logger = get_run_logger()
    cfg = _config(preset, overrides)  # a bad preset or override fails the flow before anything runs
    stages = tracking.pipeline_stages(cfg, pretrain)
    logger.info("preset %s, run dir %s, stages %s", cfg.preset, cfg.run_dir, " -> ".join(stages))
    outputs: dict[str, str] = {}
    with tracking.pipeline_run(cfg, run_name=flow_run.name, tags=_flow_run_tags()) as parent_run_id:
        logger.info("MLflow parent run %s at %s", parent_run_id, tracking.tracking_uri())
        for stage in stages:
            outputs[stage] = STAGE_TASKS[stage](preset, overrides, parent_run_id)
    return outputs


def _stage_flow(stage: str):
    """A flow that runs one stage on its own (tracked as a single MLflow run)."""

    def run(preset: str = "tiny", overrides: list[str] | None = None) -> str:
        _config(preset, overrides)  # fail fast on a bad preset or override
        return STAGE_TASKS[stage](preset, overrides, None)

    run.__name__ = run.__qualname__ = f"{stage}_flow"
    run.__doc__ = f"Run the `{stage}` stage alone (reads and writes under the config's run_dir)."
    return flow(run, name=f"dmax-{stage}", flow_run_name=_run_name(stage), log_prints=True)


pretrain_flow = _stage_flow("pretrain")
distill_flow = _stage_flow("distill")
train_flow = _stage_flow("train")
evaluate_flow = _stage_flow("evaluate")
report_flow = _stage_flow("report")


if __name__ == "__main__":  # python flows/pipeline.py [preset]: run once in-process (ephemeral server)
    import sys

    print(full_pipeline(preset=sys.argv[1] if len(sys.argv) > 1 else "smoke", overrides=sys.argv[2:]))
