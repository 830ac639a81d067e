"""The pipeline stages and the table that declares them (design.md: stages).

    from dmax_core.stages import STAGES, run_stage, run_pipeline
    run_pipeline(load_config("tiny"))              # pretrain -> distill -> train -> evaluate -> report
    run_stage("evaluate", cfg, tracker=Tracker())  # one stage, tracked in MLflow

Each stage is one function `(config, logger) -> StageResult` in its own module; `table.STAGES` declares
them once and everything else (CLI, Prefect, tracking, DVC) is derived from it.
"""

from dmax_core.stages.layout import RunLayout
from dmax_core.stages.runner import run_pipeline, run_stage
from dmax_core.stages.table import STAGES, Stage, get_stage, plan

__all__ = ["STAGES", "RunLayout", "Stage", "get_stage", "plan", "run_pipeline", "run_stage"]
