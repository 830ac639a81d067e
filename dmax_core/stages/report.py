"""`report`: markdown tables, the TPF-vs-accuracy plot and the SPD trace pictures from `eval/` (nothing
recomputed). The directory is written in one piece, so no picture of an earlier evaluation survives."""

from __future__ import annotations

from pathlib import PurePosixPath

from dmax_core.config import DmaxConfig
from dmax_core.evaluation.records import Evaluation
from dmax_core.evaluation.report import (
    frontier_name,
    plot_frontiers,
    plot_name,
    plot_tradeoff,
    render_markdown,
    task_headline,
)
from dmax_core.evaluation.traces import plot_trace
from dmax_core.files import atomic_directory, atomic_write_json, atomic_write_text, read_json_object
from dmax_core.metric_logger import MetricLogger
from dmax_core.results import StageResult
from dmax_core.stages.layout import (
    METRICS,
    REPORT,
    REPORT_MARKDOWN,
    TASK_PLOTS,
    TRACES,
    TRADEOFF_DATA,
    TRADEOFF_PLOT,
    RunLayout,
)


def _inside(name: str) -> str:
    """A layout name's path relative to the report directory."""
    return str(PurePosixPath(name).relative_to(REPORT))


def report(cfg: DmaxConfig, logger: MetricLogger) -> StageResult:
    """Write `report/`: report.md, one trade-off plot per task (tasks/tradeoff-<task>.png; tradeoff.png is
    the primary task's), their data tradeoff.json (DVC plots) and trace-*.png."""
    layout = RunLayout.of(cfg)
    evaluation = Evaluation.load(layout.path(METRICS))
    traces = (read_json_object(layout.path(TRACES), "trace file") or {}).get("traces", [])
    tasks = evaluation.tasks()
    primary = evaluation.settings.get("primary_task", tasks[0] if tasks else None)
    with atomic_directory(layout.path(REPORT)) as staging:
        (staging / _inside(TASK_PLOTS)).mkdir()
        for task in tasks:
            for file in [plot_name(task), *([_inside(TRADEOFF_PLOT)] if task == primary else [])]:
                plot_tradeoff(evaluation.select(task=task), task_headline(evaluation, task), staging / file,
                              f"dmax preset {cfg.preset}, task {task}")
            ranking = evaluation.rankings.get(task)
            if ranking is not None and len(ranking.entries) > 1:
                plot_frontiers(ranking, staging / frontier_name(task),
                               f"dmax preset {cfg.preset}, task {task}: every decoder's frontier")
        pictures = []
        seen: dict[str, int] = {}
        for trace in traces:
            index = seen[trace["task"]] = seen.get(trace["task"], -1) + 1
            file = f"trace-{trace['task']}-{index}.png"
            decoder = trace.get("decoder", "spd")
            caption = (f"{trace['task']}: {trace['model']} + {decoder} at threshold {trace['threshold']:g}, "
                       f"sample {index}")
            plot_trace(trace, staging / file, caption)
            pictures.append((caption, file))
        atomic_write_text(staging / _inside(REPORT_MARKDOWN), render_markdown(evaluation, trace_pictures=pictures))
        # Every task's test cells, for `dvc plots` (one point per cell; `task` tells them apart).
        atomic_write_json(staging / _inside(TRADEOFF_DATA), [
            {"task": c.task, "model": c.model, "decoder": c.decoder, "threshold": c.threshold, "tpf": c.tpf,
             "accuracy": c.accuracy}
            for c in evaluation.select(split="test")
        ])
    return StageResult(stage="report", outputs={REPORT: layout.path(REPORT)})
