"""The headline comparison of issue 4, as a pure function of the measured cells.

Defined before looking at any test number:
- *baseline* = base model + threshold decoding at the largest-TPF threshold whose test accuracy is
  within `tolerance_pp` of the base model's one-token-per-forward accuracy (threshold 1.0);
- *DMax* = OPUT model + SPD at the threshold chosen on the **validation** split: the largest
  validation TPF among thresholds within `tolerance_pp` of the best validation accuracy;
- ratio = TPF(DMax) / TPF(baseline) on the test split.
A sanity gate refuses the comparison when the base model is under-trained (one-token accuracy below
`min_base_accuracy`, or no better than its most aggressive threshold): then accuracy differences are
not caused by parallel decoding and any ratio would mislead.
"""

from __future__ import annotations

from typing import Any

Cell = dict[str, Any]


def select_cells(cells: list[Cell], **match: Any) -> list[Cell]:
    return [c for c in cells if all(c.get(k) == v for k, v in match.items())]


def _pick_fastest_within(cells: list[Cell], reference_accuracy: float, tolerance_pp: float) -> Cell:
    eligible = [c for c in cells if c["accuracy"] >= reference_accuracy - tolerance_pp / 100.0 - 1e-12]
    return max(eligible, key=lambda c: (c["tpf_mean"], c["accuracy"]))


def compute_headline(
    cells: list[Cell], tolerance_pp: float = 1.0, min_base_accuracy: float = 0.9
) -> dict[str, Any]:
    """Return {baseline, dmax, tpf_ratio, accuracy_delta_pp, valid, reason} (see module docstring)."""
    result: dict[str, Any] = {
        "baseline": None, "dmax": None, "tpf_ratio": None, "accuracy_delta_pp": None,
        "valid": False, "reason": "", "tolerance_pp": tolerance_pp,
    }
    base = select_cells(cells, model="base", decoder="threshold", split="test")
    one_token = [c for c in base if c["threshold"] == 1.0]
    if not one_token:
        result["reason"] = "no base/threshold cell at threshold 1.0 (one token per forward) on the test split"
        return result
    reference = one_token[0]
    aggressive = min(base, key=lambda c: c["threshold"])
    if reference["accuracy"] < min_base_accuracy:
        result["reason"] = (
            f"base model under-trained: one-token-per-forward accuracy {100 * reference['accuracy']:.1f}% "
            f"< {100 * min_base_accuracy:.0f}%; the comparison is not meaningful"
        )
        return result
    if aggressive is not reference and reference["accuracy"] <= aggressive["accuracy"]:
        result["reason"] = (
            f"base model under-trained: one-token-per-forward accuracy {100 * reference['accuracy']:.1f}% is no "
            f"better than at threshold {aggressive['threshold']} ({100 * aggressive['accuracy']:.1f}%), so its "
            "errors are not caused by parallel decoding; the comparison is not meaningful"
        )
        return result
    baseline = _pick_fastest_within(base, reference["accuracy"], tolerance_pp)
    result["baseline"] = baseline

    validation = select_cells(cells, model="dmax", decoder="spd", split="validation")
    if not validation:
        result["reason"] = "no dmax/spd cells on the validation split to choose the DMax threshold"
        return result
    best_validation = max(c["accuracy"] for c in validation)
    chosen = _pick_fastest_within(validation, best_validation, tolerance_pp)
    test_cell = select_cells(cells, model="dmax", decoder="spd", split="test", threshold=chosen["threshold"])
    if not test_cell:
        result["reason"] = f"no dmax/spd test cell at the validation-chosen threshold {chosen['threshold']}"
        return result
    dmax = test_cell[0]
    result["dmax"] = dmax
    result["tpf_ratio"] = dmax["tpf_mean"] / baseline["tpf_mean"] if baseline["tpf_mean"] > 0 else None
    result["accuracy_delta_pp"] = 100.0 * (dmax["accuracy"] - baseline["accuracy"])
    result["valid"] = result["tpf_ratio"] is not None
    result["reason"] = (
        f"baseline = base+threshold@{baseline['threshold']}, DMax = dmax+spd@{dmax['threshold']} "
        "(threshold chosen on validation)"
    )
    return result
