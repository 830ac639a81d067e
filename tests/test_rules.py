"""The headline and champion rules and the shared tolerance, on hand-made cells (no model involved)."""

import pytest

from dmax_core.evaluation.records import Cell, Evaluation, Headline
from dmax_core.evaluation.rules import Standing, beats_champion, compute_headline, within_tolerance


def cell(model, decoder, thr, acc, tpf, split="test"):
    return Cell(model=model, decoder=decoder, threshold=thr, split=split, n=200, accuracy=acc, tpf=tpf,
                tps=100.0, nfe=10.0, tokens=30.0, tpf_total=tpf, tps_total=90.0)


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
    assert h.valid
    assert h.baseline.threshold == 0.9
    assert h.dmax.threshold == 0.5 and h.dmax.split == "test"
    assert h.tpf_ratio == pytest.approx(10.0 / 4.0, abs=1e-12)
    assert h.accuracy_delta_pp == pytest.approx((0.98 - 0.975) * 100, abs=1e-9)
    assert h.reason == "baseline = base+threshold@0.9, DMax = dmax+spd@0.5 (threshold chosen on validation)"


def test_gate_low_one_token_accuracy():
    t = table()
    t[0] = cell("base", "threshold", 1.0, 0.6, 0.8)
    h = compute_headline(t)
    assert not h.valid and "under-trained" in h.reason and "60.0% < 90%" in h.reason and h.tpf_ratio is None


def test_gate_no_error_accumulation():
    t = [c for c in table() if not (c.model == "base" and c.threshold < 1.0)]
    t.append(cell("base", "threshold", 0.3, 0.98, 12.0))  # as good as one token per forward
    h = compute_headline(t)
    assert not h.valid and "no better than at threshold 0.3" in h.reason


def test_missing_cells_are_explained():
    h = compute_headline([c for c in table() if c.threshold != 1.0])
    assert not h.valid and "threshold 1.0" in h.reason
    h = compute_headline([c for c in table() if c.split != "validation"])
    assert not h.valid and "validation" in h.reason and h.baseline.threshold == 0.9


def test_a_loss_of_exactly_the_tolerance_is_within_it_despite_float_noise():
    assert 100 * (1.0 - 0.99) > 1.0  # the float noise this guards against
    assert within_tolerance(0.99, 1.0, 1.0)
    assert not within_tolerance(0.985, 1.0, 1.0)
    assert within_tolerance(0.5, 0.5, 0.0) and not within_tolerance(0.49, 0.5, 0.0)
    # the headline uses the same rule: a baseline exactly 1 pp below the one-token accuracy is eligible
    t = [cell("base", "threshold", 1.0, 1.0, 0.8), cell("base", "threshold", 0.7, 0.99, 5.0),
         cell("base", "threshold", 0.5, 0.5, 9.0), *table()[4:]]
    assert compute_headline(t).baseline.threshold == 0.7


@pytest.mark.parametrize(
    ("new", "champion", "exists", "promote", "reason"),
    [
        (Standing(0.90, 3.0), None, False, True, "no champion yet"),
        (Standing(0.895, 4.0), Standing(0.90, 3.0), True, True, "more TPF within 1 pp accuracy"),
        (Standing(0.89, 4.0), Standing(0.90, 3.0), True, True, "more TPF within 1 pp accuracy"),  # exactly 1 pp
        (Standing(0.885, 9.0), Standing(0.90, 3.0), True, False, "accuracy loss 1.50 pp > 1 pp"),
        (Standing(0.99, 3.0), Standing(0.90, 3.0), True, False, "no TPF gain"),
        (Standing(0.99, 3.0), None, True, True, "current champion has no recorded metrics"),
        (None, Standing(0.90, 3.0), True, False, "no headline dmax cell"),
    ],
)
def test_beats_champion(new, champion, exists, promote, reason):
    decision = beats_champion(new, champion, tolerance_pp=1.0, champion_exists=exists)
    assert decision.promote is promote
    assert decision.reason.startswith(reason), decision.reason


def test_only_a_valid_headline_gives_a_champion_standing():
    from dataclasses import replace

    h = compute_headline(table())
    assert Standing.of(h) == Standing(accuracy=h.dmax.accuracy, tpf=h.dmax.tpf)
    assert Standing.of(replace(h, valid=False, reason="refused")) is None


def test_headline_metrics_use_the_one_naming_scheme():
    h = compute_headline(table())
    metrics = h.metrics()
    assert metrics["tpf"] == h.dmax.tpf and metrics["accuracy"] == h.dmax.accuracy
    assert metrics["baseline/tpf"] == h.baseline.tpf and metrics["tpf_ratio"] == h.tpf_ratio
    assert metrics["headline_valid"] == 1.0
    refused = Headline(valid=False, reason="x", tolerance_pp=1.0)
    assert refused.metrics() == {"headline_valid": 0.0}
    evaluation = Evaluation(cells=tuple(table()), headline=h)
    flat = evaluation.metrics()
    assert flat["eval/validation/dmax/spd/thr_0.5/tpf"] == 11.0 and flat["tpf"] == 10.0
    assert Evaluation.from_json(evaluation.to_json()) == evaluation


def test_the_ratio_interval_resamples_problems_in_pairs():
    from dmax_core.evaluation.rules import ratio_interval

    # Every problem has the same ratio 3: every resample gives exactly 3.
    assert ratio_interval([2.0, 1.0, 4.0], [6.0, 3.0, 12.0]) == pytest.approx((3.0, 3.0))
    # Two kinds of problems: the interval spans the ratios of the extreme resamples and holds the full one.
    base, dmax = [1.0] * 50 + [2.0] * 50, [4.0] * 50 + [2.0] * 50
    low, high = ratio_interval(base, dmax, resamples=4000, seed=1)
    full = sum(dmax) / sum(base)
    assert 1.0 < low < full < high < 4.0
    assert ratio_interval(base, dmax, resamples=4000, seed=1) == (low, high)  # seeded: reproducible
    with pytest.raises(ValueError, match="same"):
        ratio_interval([1.0], [1.0, 2.0])
