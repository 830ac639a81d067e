"""The headline and champion rules and the shared tolerance, on hand-made cells (no model involved)."""

from dataclasses import replace

import pytest

from dmax_core.config import ExperimentConfig
from dmax_core.evaluation.records import Cell, Evaluation, Headline
from dmax_core.evaluation.rules import Standing, beats_champion, within_tolerance
from dmax_core.evaluation.rules import compute_headline as headline_of

DEFAULT = ExperimentConfig()


def compute_headline(cells, experiment=DEFAULT, task=None):
    return headline_of(cells, experiment, task)


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
    h = compute_headline(table(), ExperimentConfig(tolerance_pp=1.0, min_base_accuracy=0.9))
    assert h.valid and h.within_tolerance
    assert h.baseline.threshold == 0.9
    assert h.method.threshold == 0.5 and h.method.split == "test"
    assert h.tpf_ratio == pytest.approx(10.0 / 4.0, abs=1e-12)
    assert h.accuracy_delta_pp == pytest.approx((0.98 - 0.975) * 100, abs=1e-9)
    assert h.reason == ("baseline = base+threshold@0.9 (threshold 0.9 chosen on test, within tolerance of its "
                        "one-token-per-forward accuracy); method = dmax+spd@0.5 (threshold 0.5 chosen on "
                        "validation, within tolerance of its best accuracy)")


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
        (None, Standing(0.90, 3.0), True, False, "no headline method cell"),
    ],
)
def test_beats_champion(new, champion, exists, promote, reason):
    decision = beats_champion(new, champion, tolerance_pp=1.0, champion_exists=exists)
    assert decision.promote is promote
    assert decision.reason.startswith(reason), decision.reason


def test_only_a_valid_headline_gives_a_champion_standing():
    h = compute_headline(table())
    assert Standing.of(h) == Standing(accuracy=h.method.accuracy, tpf=h.method.tpf)
    assert Standing.of(replace(h, valid=False, reason="refused")) is None


def test_headline_metrics_use_the_one_naming_scheme():
    h = compute_headline(table())
    metrics = h.metrics()
    assert metrics["tpf"] == h.method.tpf and metrics["accuracy"] == h.method.accuracy
    assert metrics["baseline/tpf"] == h.baseline.tpf and metrics["tpf_ratio"] == h.tpf_ratio
    assert metrics["headline_valid"] == 1.0
    refused = Headline(valid=False, reason="x", tolerance_pp=1.0)
    assert refused.metrics() == {"headline_valid": 0.0}
    cells = tuple(replace(c, task="ledger") for c in table())
    h = compute_headline(cells, DEFAULT, "ledger")
    evaluation = Evaluation(cells=cells, headline=h, headlines={"ledger": h})
    flat = evaluation.metrics()
    assert flat["eval/ledger/validation/dmax/spd/thr_0.5/tpf"] == 11.0 and flat["tpf"] == 10.0
    assert flat["eval/ledger/headline/tpf_ratio"] == flat["tpf_ratio"] == h.tpf_ratio
    assert flat["eval/ledger/headline/method/tpf"] == 10.0 and flat["eval/ledger/headline/baseline/tpf"] == 4.0
    assert flat["eval/ledger/headline/valid"] == 1.0 and flat["eval/ledger/headline/within_tolerance"] == 1.0
    assert not any(key.startswith("eval/test/") for key in flat)  # one key shape for every task
    assert Evaluation.from_json(evaluation.to_json()) == evaluation


def test_a_metrics_file_of_an_older_dmax_reads_its_dmax_cell_as_the_method():
    h = compute_headline(table())
    data = h.to_json()
    data["dmax"] = data.pop("method")
    del data["task"], data["within_tolerance"]
    assert Headline.from_json(data).method == h.method


def test_fixed_thresholds_need_no_one_token_cell_and_no_validation():
    """The paper's comparison: LLaDA2.0-mini at its 0.95, DMax + SPD at 0.5, no gate."""
    cells = [cell("base", "threshold", 0.95, 0.80, 2.0), cell("base", "threshold", 0.5, 0.60, 5.0),
             cell("dmax", "spd", 0.95, 0.81, 3.0), cell("dmax", "spd", 0.5, 0.79, 7.0)]
    paper = ExperimentConfig(baseline={"model": "base", "decoder": "threshold", "threshold": 0.95},
                             method={"model": "dmax", "decoder": "spd", "threshold": 0.5}, min_base_accuracy=None)
    h = compute_headline(cells, paper)
    assert h.valid and (h.baseline.threshold, h.method.threshold) == (0.95, 0.5)
    assert h.tpf_ratio == pytest.approx(3.5) and h.accuracy_delta_pp == pytest.approx(-1.0)
    assert h.within_tolerance  # exactly the 1 pp tolerance
    assert "fixed threshold 0.95" in h.reason and "fixed threshold 0.5" in h.reason
    # With the gate on, the missing one-token cell is named, with the switch that turns the gate off.
    gated = compute_headline(cells, paper.model_copy(update={"min_base_accuracy": 0.9}))
    assert not gated.valid and "min_base_accuracy=null" in gated.reason
    # A fixed threshold the grid lacks is named.
    missing = compute_headline(cells[:3], paper)
    assert not missing.valid and "fixed threshold 0.5" in missing.reason


def test_any_pair_can_be_either_arm_and_each_task_can_depart():
    """The arms are configuration: control + threshold against base + spd, chosen on test against the
    best accuracy, and on one task a fixed method threshold."""
    cells = [replace(c, task="t") for c in [
        cell("control", "threshold", 1.0, 0.9, 1.0), cell("control", "threshold", 0.5, 0.895, 3.0),
        cell("base", "spd", 1.0, 0.7, 2.0), cell("base", "spd", 0.5, 0.71, 6.0),
        cell("base", "spd", 0.3, 0.60, 9.0)]]
    experiment = ExperimentConfig(
        baseline={"model": "control", "decoder": "threshold", "choose_on": "test", "reference": "one_token"},
        method={"model": "base", "decoder": "spd", "choose_on": "test", "reference": "best"},
        min_base_accuracy=None, tasks={"t": {"method": {"threshold": 0.3}}})
    h = compute_headline(cells, experiment, "t")
    assert h.baseline.label == "control+threshold@0.5" and h.method.label == "base+spd@0.3"
    assert not h.within_tolerance and h.accuracy_delta_pp == pytest.approx(-29.5)
    chosen = compute_headline(cells, experiment.model_copy(update={"tasks": {}}), "t")
    assert chosen.method.label == "base+spd@0.5"  # 0.3 is 11 pp below the best, 0.71
    assert compute_headline(cells, experiment, "other").reason.startswith("no control/threshold cell")


def test_bad_experiments_are_refused_in_words():
    from pydantic import ValidationError

    with pytest.raises(ValidationError, match="unknown model 'dmx'"):
        ExperimentConfig(method={"model": "dmx", "decoder": "spd"})
    with pytest.raises(ValidationError, match=r"fixed threshold must lie in \[0, 1\]"):
        ExperimentConfig(method={"model": "dmax", "decoder": "spd", "threshold": 1.5})
    with pytest.raises(ValidationError, match=r"experiment\.tasks\.gsm8k"):
        ExperimentConfig(tasks={"gsm8k": {"method": {"thresold": 0.5}}})


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
