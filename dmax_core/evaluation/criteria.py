"""The reproduction criteria of the DMax benchmark and the cross-seed summary, as pure functions of records.

The definitions are fixed here, before any test number is looked at:
- `base_one_token_accuracy_ge_95`: base + threshold 1.0 (one token per forward) >= 95 % on test;
- `base_error_accumulation`: base + threshold at the most aggressive threshold is more than
  `tolerance_pp` below its one-token accuracy;
- `base_spd_collapses`: the best base + SPD accuracy over the sweep is at least 10 pp below the base
  one-token accuracy (SPD without OPUT fails, the paper's ablation);
- `oput_spd_flat`: OPUT + SPD accuracy varies by at most `tolerance_pp` across the whole sweep;
- `ratio_ge_2_5`: the headline TPF ratio >= 2.5 with at most `tolerance_pp` accuracy loss.
"""

from __future__ import annotations

import statistics
from collections.abc import Mapping, Sequence
from typing import Any

from dmax_core.evaluation.records import FIGURES, Cell, Evaluation, Headline, select_cells
from dmax_core.evaluation.rules import TOLERANCE_SLACK_PP, within_tolerance

COLLAPSE_PP = 10.0
TARGET_RATIO = 2.5
CRITERIA = ("base_one_token_accuracy_ge_95", "base_error_accumulation", "base_spd_collapses", "oput_spd_flat",
            "ratio_ge_2_5")


def reproduction_criteria(cells: Sequence[Cell], headline: Headline, tolerance_pp: float = 1.0
                          ) -> dict[str, bool | None]:
    """Each criterion -> True/False, or None when the cells it needs were not measured."""
    out: dict[str, bool | None] = dict.fromkeys(CRITERIA)
    base = select_cells(cells, model="base", decoder="threshold", split="test")
    one = [c for c in base if c.threshold == 1.0]
    if one:
        reference = one[0].accuracy
        out["base_one_token_accuracy_ge_95"] = reference >= 0.95
        aggressive = min(base, key=lambda c: c.threshold)
        out["base_error_accumulation"] = not within_tolerance(aggressive.accuracy, reference, tolerance_pp)
        base_spd = select_cells(cells, model="base", decoder="spd", split="test")
        if base_spd:
            best = max(c.accuracy for c in base_spd)
            out["base_spd_collapses"] = 100.0 * (reference - best) >= COLLAPSE_PP - TOLERANCE_SLACK_PP
    dmax_spd = select_cells(cells, model="dmax", decoder="spd", split="test")
    if dmax_spd:
        accuracies = [c.accuracy for c in dmax_spd]
        out["oput_spd_flat"] = within_tolerance(min(accuracies), max(accuracies), tolerance_pp)
    if headline.valid and headline.tpf_ratio is not None and headline.accuracy_delta_pp is not None:
        out["ratio_ge_2_5"] = headline.tpf_ratio >= TARGET_RATIO and within_tolerance(
            headline.accuracy_delta_pp / 100.0, 0.0, tolerance_pp)
    return out


def spread(values: Sequence[float]) -> dict[str, float]:
    """Mean, sample standard deviation, min and max (std 0 for a single value)."""
    return {
        "mean": statistics.fmean(values),
        "std": statistics.stdev(values) if len(values) > 1 else 0.0,
        "min": min(values),
        "max": max(values),
    }


def mean_cells(per_seed: Mapping[int, Evaluation]) -> list[Cell]:
    """Test cells averaged over seeds: each figure is the mean, `std` the spread, `seeds` the count."""
    runs = [per_seed[s] for s in sorted(per_seed)]
    keys = sorted({c.key for run in runs for c in run.cells if c.split == "test"}, key=str)
    out = []
    for task, model, decoder, threshold, split in keys:
        rows = [c for run in runs for c in run.select(task=task, model=model, decoder=decoder, threshold=threshold,
                                                       split=split)]
        spreads = {name: spread([getattr(r, name) for r in rows]) for name in FIGURES}
        out.append(Cell(task=task, model=model, decoder=decoder, threshold=threshold, split=split,
                        n=sum(r.n for r in rows), seeds=len(rows),
                        std={name: s["std"] for name, s in spreads.items()},
                        **{name: s["mean"] for name, s in spreads.items()}))
    return out


def summarize_seeds(per_seed: Mapping[int, Evaluation], tolerance_pp: float = 1.0) -> dict[str, Any]:
    """Mean and spread over seeds of every test cell and of the headline; criteria per seed and on means."""
    seeds = sorted(per_seed)
    headlines = {s: per_seed[s].headline for s in seeds}
    valid = [h for h in headlines.values() if h.valid]
    cells = mean_cells(per_seed)
    summary: dict[str, Any] = {
        "seeds": seeds,
        "mean_cells": [c.to_json() for c in cells],
        "per_seed_headline": {str(s): h.to_json() for s, h in headlines.items()},
        "per_seed_criteria": {str(s): reproduction_criteria(per_seed[s].select(task=headlines[s].task),
                                                            headlines[s], tolerance_pp)
                              for s in seeds},
        "all_seeds_valid": len(valid) == len(seeds),
    }
    # Every headline figure under its one name (`tpf_ratio`, `tpf`, `baseline/tpf`, ...), spread over the
    # seeds whose headline is valid.
    per_seed_figures = [h.metrics() for h in valid]
    summary["headline"] = {name: spread([figures[name] for figures in per_seed_figures])
                           for name in (per_seed_figures[0] if valid else {}) if name != "headline_valid"}
    on_means = Headline(valid=False, reason="not every seed has a valid headline", tolerance_pp=tolerance_pp)
    if valid and len(valid) == len(seeds):
        on_means = Headline(valid=True, reason="means over seeds", tolerance_pp=tolerance_pp,
                            tpf_ratio=summary["headline"]["tpf_ratio"]["mean"],
                            accuracy_delta_pp=summary["headline"]["accuracy_delta_pp"]["mean"])
    summary["criteria_on_means"] = reproduction_criteria(cells, on_means, tolerance_pp)
    return summary
