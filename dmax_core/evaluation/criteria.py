"""Issue 4's reproduction criteria and the cross-seed summary, as pure functions of metrics dicts.

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
from typing import Any

from dmax_core.evaluation.headline import select_cells

COLLAPSE_PP = 10.0
TARGET_RATIO = 2.5


def _cells(metrics: dict[str, Any], model: str, decoder: str) -> list[dict[str, Any]]:
    return select_cells(metrics["cells"], model=model, decoder=decoder, split="test")


def reproduction_criteria(metrics: dict[str, Any], tolerance_pp: float = 1.0) -> dict[str, bool | None]:
    """Each criterion -> True/False, or None when the cells it needs were not measured."""
    tol = tolerance_pp / 100.0
    base = _cells(metrics, "base", "threshold")
    one = [c for c in base if c["threshold"] == 1.0]
    out: dict[str, bool | None] = dict.fromkeys(
        ("base_one_token_accuracy_ge_95", "base_error_accumulation", "base_spd_collapses", "oput_spd_flat",
         "ratio_ge_2_5"))
    if one:
        ref = one[0]["accuracy"]
        out["base_one_token_accuracy_ge_95"] = ref >= 0.95
        aggressive = min(base, key=lambda c: c["threshold"])
        out["base_error_accumulation"] = aggressive["accuracy"] < ref - tol
        base_spd = _cells(metrics, "base", "spd")
        if base_spd:
            out["base_spd_collapses"] = max(c["accuracy"] for c in base_spd) <= ref - COLLAPSE_PP / 100.0
    dmax_spd = _cells(metrics, "dmax", "spd")
    if dmax_spd:
        accs = [c["accuracy"] for c in dmax_spd]
        out["oput_spd_flat"] = max(accs) - min(accs) <= tol + 1e-12
    h = metrics.get("headline", {})
    if h.get("valid"):
        # 1e-9: 0.99 - 1.0 is -1.0000000000000009 pp in floats, which is "1 pp", not more.
        out["ratio_ge_2_5"] = h["tpf_ratio"] >= TARGET_RATIO and h["accuracy_delta_pp"] >= -tolerance_pp - 1e-9
    return out


def _spread(values: list[float]) -> dict[str, float]:
    return {
        "mean": statistics.fmean(values),
        "std": statistics.stdev(values) if len(values) > 1 else 0.0,
        "min": min(values),
        "max": max(values),
    }


def summarize_seeds(per_seed: dict[int, dict[str, Any]], tolerance_pp: float = 1.0) -> dict[str, Any]:
    """Mean and spread over seeds of every test cell and of the headline; criteria on the means."""
    seeds = sorted(per_seed)
    keys = sorted({(c["model"], c["decoder"], c["threshold"]) for s in seeds for c in per_seed[s]["cells"]
                   if c["split"] == "test"})
    mean_cells = []
    for model, decoder, threshold in keys:
        rows = [c for s in seeds for c in per_seed[s]["cells"]
                if (c["model"], c["decoder"], c["threshold"], c["split"]) == (model, decoder, threshold, "test")]
        cell = {"model": model, "decoder": decoder, "threshold": threshold, "split": "test", "seeds": len(rows),
                "n": sum(r.get("n", 0) for r in rows)}
        for metric in ("accuracy", "tpf_mean", "nfe_mean", "tps_mean", "tps_total", "tokens_mean"):
            spread = _spread([r[metric] for r in rows])
            cell[metric] = spread["mean"]
            cell[f"{metric}_std"] = spread["std"]
        mean_cells.append(cell)
    headlines = {s: per_seed[s]["headline"] for s in seeds}
    valid = [h for h in headlines.values() if h.get("valid")]
    summary: dict[str, Any] = {
        "seeds": seeds,
        "mean_cells": mean_cells,
        "per_seed_headline": {str(s): h for s, h in headlines.items()},
        "per_seed_criteria": {str(s): reproduction_criteria(per_seed[s], tolerance_pp) for s in seeds},
        "all_seeds_valid": len(valid) == len(seeds),
    }
    if valid:
        summary["tpf_ratio"] = _spread([h["tpf_ratio"] for h in valid])
        summary["accuracy_delta_pp"] = _spread([h["accuracy_delta_pp"] for h in valid])
        summary["baseline_tpf"] = _spread([h["baseline"]["tpf_mean"] for h in valid])
        summary["dmax_tpf"] = _spread([h["dmax"]["tpf_mean"] for h in valid])
    mean_metrics = {"cells": mean_cells, "headline": {"valid": False}}
    if valid and len(valid) == len(seeds):
        mean_metrics["headline"] = {
            "valid": True, "tpf_ratio": summary["tpf_ratio"]["mean"],
            "accuracy_delta_pp": summary["accuracy_delta_pp"]["mean"],
        }
    summary["criteria_on_means"] = reproduction_criteria(mean_metrics, tolerance_pp)
    return summary
