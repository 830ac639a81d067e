"""The stage table: every pipeline stage declared once, in pipeline order.

A row says what the stage is (its function and help text), what it reads and writes (names from
`layout`), which config groups it depends on and when it has nothing to do; the code it runs is derived
from its function's imports (`code_deps`). The `dmax` CLI, the Prefect flows and tasks, the MLflow stage
runs, the pipeline order, `dvc.yaml` and `prefect.yaml` are all derived from this table
(`dmax_core.stages.dvc` and `flows.deployments` write the two files; tests hold the committed ones to it).

Adding a stage = one module with its function + one row here (+ its test; `make platform-files`
regenerates dvc.yaml, prefect.yaml and params.yaml).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from dmax_core.config import DmaxConfig
from dmax_core.errors import DataError
from dmax_core.metric_logger import MetricLogger
from dmax_core.results import StageResult
from dmax_core.stages import layout
from dmax_core.stages.code_deps import code_deps
from dmax_core.stages.distill import distill
from dmax_core.stages.evaluate import evaluate
from dmax_core.stages.pretrain import pretrain
from dmax_core.stages.report import report
from dmax_core.stages.train import train

# Config values every stage depends on (DVC params of each stage).
SHARED_PARAMS: tuple[str, ...] = ("seed", "block_length")
# Config values that say which run a stage belongs to and how it ran, not what it computes: every MLflow
# stage run carries them beside its parameter groups, DVC does not track them.
RUN_IDENTITY: tuple[str, ...] = ("preset", "run_dir", "threads")


# DVC tracks the `train` run of the default objective (OPUT: base/ -> dmax/). Another objective reads and writes
# what it names (`train.objective=mmd`: dmax/ -> mmd/, `StageResult.outputs`), run with `dmax train`.
_TRAIN_OBJECTIVE = DmaxConfig.model_fields["train"].get_default(call_default_factory=True).objective.name


def _never(cfg: DmaxConfig) -> str | None:
    return None


def _base_model_given(cfg: DmaxConfig) -> str | None:
    """Skip pretraining when the config names a downloaded base model; a path that is not a directory is
    an error now, not at the next stage."""
    if cfg.model.base_path is None:
        return None
    if not Path(cfg.model.base_path).is_dir():
        raise DataError(f"model.base_path {cfg.model.base_path} is not a directory (download the base model "
                        "there, or unset model.base_path to pretrain one)")
    return f"model.base_path is set: the base model is read from {cfg.model.base_path}, not trained"


@dataclass(frozen=True)
class Stage:
    """One row of the table.

    `reads`/`writes` are run-dir names (`layout`) with the default config: what DVC tracks. A run's
    `StageResult.outputs` says what it actually wrote (`train.objective=sft` writes `control/`)."""

    name: str
    run: Callable[[DmaxConfig, MetricLogger], StageResult]
    help: str
    reads: tuple[str, ...]
    writes: tuple[str, ...]
    params: tuple[str, ...]
    metrics: tuple[str, ...] = ()
    plots: Mapping[str, Mapping[str, str]] = field(default_factory=dict)
    skip_reason: Callable[[DmaxConfig], str | None] = _never

    @property
    def param_groups(self) -> tuple[str, ...]:
        """Every config key the stage depends on: the shared scalars and its own groups (DVC params)."""
        return SHARED_PARAMS + self.params

    @property
    def logged_params(self) -> tuple[str, ...]:
        """What its MLflow run records as params: the run's identity and every key it depends on."""
        return RUN_IDENTITY + self.param_groups

    @property
    def code(self) -> tuple[str, ...]:
        """The files its function's module runs when imported, read from the source (DVC code deps): derived,
        so a new import can never be missing from dvc.yaml."""
        return code_deps(self.run.__module__)


STAGES: tuple[Stage, ...] = (
    Stage(
        name="pretrain", run=pretrain,
        help="block-diffusion SFT of the tiny base model from scratch (skipped when model.base_path is set)",
        reads=(), writes=(layout.BASE,), params=("task", "model", "pretrain"),
        skip_reason=_base_model_given,
    ),
    Stage(
        name="distill", run=distill,
        help="the base model answers training prompts with its own decoder -> trajectory dataset",
        reads=(layout.BASE,), writes=(layout.TRAJECTORIES,), params=("task", "decoding", "distill"),
    ),
    Stage(
        name="train", run=train,
        help="OPUT fine-tuning on the trajectories -> the DMax model (train.objective=sft: the control; "
             "train.objective=mmd: DMax-MMD post-training of the DMax model)",
        reads=(layout.RunLayout.starting_model(_TRAIN_OBJECTIVE), layout.TRAJECTORIES),
        writes=(layout.RunLayout.trained_model(_TRAIN_OBJECTIVE),), params=("train",),
    ),
    Stage(
        name="evaluate", run=evaluate,
        help="the {model} x {decoder} x {threshold} grid on held-out problems and the benchmarks of "
             "evaluate.tasks -> metrics, the headline and SPD traces",
        reads=(layout.BASE, layout.DMAX), writes=(layout.SAMPLES, layout.TRACES), metrics=(layout.METRICS,),
        # `experiment` is the comparison (arms, tolerance, gate) applied here; `report` the traces it records.
        params=("task", "decoding", "evaluate", "experiment", "report"),
    ),
    Stage(
        name="report", run=report,
        help="markdown tables, a TPF-vs-accuracy plot per task and the decoding trace pictures from the evaluation",
        reads=(layout.METRICS, layout.TRACES), writes=(layout.REPORT_MARKDOWN, layout.TRADEOFF_PLOT, layout.TASK_PLOTS),
        params=("report",),
        plots={layout.TRADEOFF_DATA: {"template": "scatter", "x": "tpf", "y": "accuracy"}},
    ),
)


def get_stage(name: str) -> Stage:
    for stage in STAGES:
        if stage.name == name:
            return stage
    raise ValueError(f"unknown stage {name!r}; expected one of {', '.join(s.name for s in STAGES)}")


def plan(cfg: DmaxConfig) -> list[Stage]:
    """The stages a pipeline runs for this config, in order (those with nothing to do are left out)."""
    return [stage for stage in STAGES if stage.skip_reason(cfg) is None]
