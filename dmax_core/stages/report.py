"""`report`: markdown tables and the TPF-vs-accuracy plot from eval/metrics.json (nothing recomputed)."""

from __future__ import annotations

from dmax_core.config import DmaxConfig
from dmax_core.evaluation.records import Evaluation
from dmax_core.evaluation.report import plot_tradeoff, render_markdown
from dmax_core.files import atomic_write_json, atomic_write_text
from dmax_core.metric_logger import MetricLogger
from dmax_core.results import StageResult
from dmax_core.stages.layout import METRICS, REPORT, REPORT_MARKDOWN, TRADEOFF_DATA, TRADEOFF_PLOT, RunLayout


def report(cfg: DmaxConfig, logger: MetricLogger) -> StageResult:
    """Write `report/report.md`, `report/tradeoff.png` and its data `report/tradeoff.json` (DVC plots)."""
    layout = RunLayout.of(cfg)
    evaluation = Evaluation.load(layout.path(METRICS))
    plot_tradeoff(evaluation.cells, evaluation.headline, layout.path(TRADEOFF_PLOT), f"dmax preset {cfg.preset}")
    atomic_write_text(layout.path(REPORT_MARKDOWN), render_markdown(evaluation))
    atomic_write_json(layout.path(TRADEOFF_DATA), [
        {"model": c.model, "decoder": c.decoder, "threshold": c.threshold, "tpf": c.tpf, "accuracy": c.accuracy}
        for c in evaluation.select(split="test")
    ])
    return StageResult(stage="report", outputs={REPORT: layout.path(REPORT)})
