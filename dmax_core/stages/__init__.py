"""The pipeline stages and the table that declares them (design.md: stages).

    from dmax_core.stages.runner import run_pipeline, run_stage
    from dmax_core.stages.table import STAGES
    run_pipeline(load_config("tiny"))              # pretrain -> distill -> train -> evaluate -> report
    run_stage("evaluate", cfg, tracker=Tracker())  # one stage, tracked in MLflow

Each stage is one function `(config, logger) -> StageResult` in its own module; `table.STAGES` declares
them once and everything else (CLI, Prefect, tracking, DVC) is derived from it.

This file imports nothing: importing one stage module runs it, and a stage's DVC code deps are what its
module imports (`code_deps`), so re-exporting the table here would make every stage depend on every other.
"""
