"""The headline rule of issue 4 on synthetic results tables (no model involved)."""

from dmax_core.evaluation.headline import compute_headline


def cell(model, decoder, thr, acc, tpf, split="test"):
    return {"model": model, "decoder": decoder, "threshold": thr, "split": split, "accuracy": acc,
            "tpf_mean": tpf}


def table():
    return [
        cell("base", "threshold", 1.0, 0.98, 0.8),
        cell("base", "threshold", 0.9, 0.975, 4.0),  # within 1 pp of 0.98: eligible, fastest eligible
        cell("base", "threshold", 0.7, 0.95, 6.0),  # 3 pp worse: not eligible
        cell("base", "threshold", 0.5, 0.85, 9.0),
        cell("dmax", "spd", 0.9, 0.99, 6.0, "validation"),
        cell("dmax", "spd", 0.5, 0.985, 11.0, "validation"),  # chosen on validation
        cell("dmax", "spd", 0.3, 0.95, 12.0, "validation"),
        cell("dmax", "spd", 0.9, 0.97, 6.5),
        cell("dmax", "spd", 0.5, 0.98, 10.0),
        cell("dmax", "spd", 0.3, 0.99, 13.0),  # best on test, but the test split must not choose
    ]


def test_ratio_uses_validation_choice_and_baseline_tolerance():
    h = compute_headline(table(), tolerance_pp=1.0, min_base_accuracy=0.9)
    assert h["valid"]
    assert h["baseline"]["threshold"] == 0.9
    assert h["dmax"]["threshold"] == 0.5 and h["dmax"]["split"] == "test"
    assert abs(h["tpf_ratio"] - 10.0 / 4.0) < 1e-12
    assert abs(h["accuracy_delta_pp"] - (0.98 - 0.975) * 100) < 1e-9


def test_gate_low_one_token_accuracy():
    t = table()
    t[0]["accuracy"] = 0.6
    h = compute_headline(t)
    assert not h["valid"] and "under-trained" in h["reason"] and h["tpf_ratio"] is None


def test_gate_no_error_accumulation():
    t = [c for c in table() if not (c["model"] == "base" and c["threshold"] < 1.0)]
    t.append(cell("base", "threshold", 0.3, 0.98, 12.0))  # as good as one token per forward
    h = compute_headline(t)
    assert not h["valid"] and "no better" in h["reason"]


def test_missing_cells_are_explained():
    h = compute_headline([c for c in table() if c["threshold"] != 1.0])
    assert not h["valid"] and "threshold 1.0" in h["reason"]
    h = compute_headline([c for c in table() if c["split"] != "validation"])
    assert not h["valid"] and "validation" in h["reason"]
