"""A SIGKILLed `dmax evaluate` resumes: finished cells are read back, the rest decoded, and the metrics
are those of an uninterrupted run (timing figures aside, which no two runs share)."""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

from dmax_core.config import load_config
from dmax_core.evaluation.records import Evaluation
from dmax_core.stages.runner import run_stage

REPO = Path(__file__).resolve().parent.parent
GRID = ["evaluate.models=[base]", "evaluate.thresholds=[1.0, 0.7, 0.0]", "report.trace_samples=1",
        "evaluate.tasks=[{name: problem_file, path: tests/assets/ledger-files/test.jsonl, limit: 60}]",
        "experiment.tasks.problem_file.holdout=20"]
TIMING = {"tps": 0.0, "tps_total": 0.0, "throughput": 0.0, "forwards_per_second": 0.0}


def _without_timing_cell(cell):
    return replace(cell, **TIMING)


def _without_timing(evaluation: Evaluation) -> list:
    return [_without_timing_cell(c) for c in evaluation.cells]


def test_a_killed_evaluation_resumes_to_the_same_metrics(tmp_path, caplog):
    run_dir = tmp_path / "killed"
    cells_dir = run_dir / "eval-cells"
    process = subprocess.Popen([sys.executable, "-m", "dmax_core.cli", "evaluate", "--preset", "tiny-files",
                                f"run_dir={run_dir}", *GRID], cwd=REPO, start_new_session=True,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 600
    while len(list(cells_dir.glob("cell-*.json"))) < 2:  # two of the six cells finished
        assert process.poll() is None, "the evaluation ended before it could be killed"
        assert time.monotonic() < deadline, "no cell was finished in 10 minutes"
        time.sleep(0.05)
    os.killpg(process.pid, signal.SIGKILL)
    process.wait()
    finished = len(list(cells_dir.glob("cell-*.json")))
    assert 2 <= finished < 6 and not (run_dir / "eval" / "metrics.json").exists()

    with caplog.at_level(logging.INFO, logger="dmax_core.stages.evaluate"):
        resumed = run_stage("evaluate", load_config("tiny-files", [f"run_dir={run_dir}", *GRID])).evaluation
    assert f"{finished} of 6 cells read from the interrupted run" in caplog.text
    assert not cells_dir.exists()  # eval/ is complete: nothing left to resume

    straight = run_stage("evaluate", load_config("tiny-files", [f"run_dir={tmp_path / 'straight'}", *GRID])).evaluation
    assert _without_timing(resumed) == _without_timing(straight)
    assert resumed.headlines.keys() == straight.headlines.keys()
    assert Evaluation.load(run_dir / "eval" / "metrics.json") == resumed
    traces = (run_dir / "eval" / "traces.json").read_text()
    assert traces == (tmp_path / "straight" / "eval" / "traces.json").read_text()


def test_a_changed_setting_decodes_again(tmp_path):
    """The cache key names what a cell depends on: another threshold sweep reuses only the shared cells."""
    from dmax_core.stages.eval_cache import EvalCache

    run_dir = tmp_path / "run"
    cfg = load_config("tiny-files", [f"run_dir={run_dir}", *GRID])
    cache = EvalCache(run_dir / "eval-cells")
    first = run_stage("evaluate", cfg).evaluation
    assert not cache.directory.exists()
    # Simulate an interruption after the first run's cells: keep them by writing them again.
    from dmax_core.stages import evaluate as stage

    original = stage.EvalCache.clear
    stage.EvalCache.clear = lambda self: None
    try:
        run_stage("evaluate", cfg)
        kept = len(list(cache.directory.glob("cell-*.json")))
        other = run_stage("evaluate", load_config("tiny-files", [f"run_dir={run_dir}", *GRID,
                                                                 "evaluate.thresholds=[1.0, 0.7, 0.5]"])).evaluation
    finally:
        stage.EvalCache.clear = original
    assert kept == 6
    # thresholds 1.0 and 0.7 were read back (same key); only 0.5 was decoded, on both splits: 6 + 2 files
    assert len(list(cache.directory.glob("cell-*.json"))) == 8
    shared = {c.key: c for c in first.cells}
    assert all(_without_timing_cell(c) == _without_timing_cell(shared[c.key]) for c in other.cells if c.key in shared)
    assert sorted({c.threshold for c in other.cells}) == [0.5, 0.7, 1.0]
