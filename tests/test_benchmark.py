"""The reproduction criteria and cross-seed summary on hand-made tables, and the benchmark's plumbing."""

import json
from dataclasses import replace

import pytest

from dmax_core.config import ExperimentConfig
from dmax_core.evaluation.criteria import reproduction_criteria, summarize_seeds
from dmax_core.evaluation.records import Cell, Evaluation
from dmax_core.evaluation.rules import compute_headline


def cell(model, decoder, thr, acc, tpf, split="test"):
    return Cell(model=model, decoder=decoder, threshold=thr, split=split, n=100, accuracy=acc, tpf=tpf,
                tps=100.0, nfe=10.0, tokens=30.0, tpf_total=tpf, tps_total=90.0)


def dmax_like(ratio_scale=1.0, base_spd_acc=0.4):
    cells = [
        cell("base", "threshold", 1.0, 0.98, 0.8), cell("base", "threshold", 0.9, 0.975, 3.0),
        cell("base", "threshold", 0.5, 0.80, 8.0),
        cell("base", "spd", 0.9, base_spd_acc, 2.0), cell("base", "spd", 0.5, base_spd_acc - 0.1, 2.0),
        cell("dmax", "spd", 0.9, 0.985, 6.0 * ratio_scale), cell("dmax", "spd", 0.5, 0.98, 8.0 * ratio_scale),
        cell("dmax", "spd", 0.9, 0.99, 6.0, "validation"), cell("dmax", "spd", 0.5, 0.985, 8.0, "validation"),
    ]
    return Evaluation(cells=tuple(cells), headline=compute_headline(cells, ExperimentConfig()))


def criteria(evaluation: Evaluation):
    return reproduction_criteria(evaluation.cells, evaluation.headline)


def test_criteria_all_met_on_a_dmax_like_table():
    crit = criteria(dmax_like())
    assert crit == {"base_one_token_accuracy_ge_95": True, "base_error_accumulation": True,
                    "base_spd_collapses": True, "oput_spd_flat": True, "ratio_ge_2_5": True}


def test_criteria_fail_where_they_should():
    m = dmax_like(ratio_scale=0.8, base_spd_acc=0.95)  # ratio 6.4/3 = 2.13; base SPD does not collapse
    crit = criteria(m)
    assert crit["ratio_ge_2_5"] is False and crit["base_spd_collapses"] is False
    cells = tuple(c for c in m.cells if c.model != "base")
    crit = criteria(Evaluation(cells=cells, headline=compute_headline(cells, ExperimentConfig())))
    assert crit["base_one_token_accuracy_ge_95"] is None and crit["ratio_ge_2_5"] is None


def test_summary_mean_and_spread_over_seeds():
    summary = summarize_seeds({0: dmax_like(1.0), 1: dmax_like(1.2)})
    ratios = [8.0 / 3.0, 9.6 / 3.0]
    assert summary["all_seeds_valid"]
    assert summary["headline"]["tpf_ratio"]["mean"] == pytest.approx(sum(ratios) / 2)
    assert summary["headline"]["tpf_ratio"]["min"] == pytest.approx(ratios[0])
    assert summary["headline"]["baseline/tpf"] == {"mean": 3.0, "std": 0.0, "min": 3.0, "max": 3.0}
    assert summary["headline"]["tpf"]["mean"] == pytest.approx((8.0 + 9.6) / 2)
    mean_dmax = next(c for c in summary["mean_cells"] if c["model"] == "dmax" and c["threshold"] == 0.5)
    assert mean_dmax["tpf"] == pytest.approx((8.0 + 9.6) / 2)
    assert mean_dmax["std"]["tpf"] == pytest.approx(abs(9.6 - 8.0) / 2 ** 0.5)  # sample std of two values
    assert mean_dmax["seeds"] == 2 and mean_dmax["n"] == 200
    assert summary["criteria_on_means"]["ratio_ge_2_5"] is True


def test_benchmark_plumbing_on_smoke(tmp_path):
    from dmax_core.benchmark import run_benchmark

    out = run_benchmark("smoke", [0], ["task.n_test=4", "task.n_validation=2"], root=tmp_path)
    summary = json.loads((out / "summary.json").read_text())
    assert summary["seeds"] == [0]
    assert {c["model"] for c in summary["mean_cells"]} == {"base", "dmax", "control"}
    assert (tmp_path / "seed-0" / "control" / "model.safetensors").is_file()
    assert (out / "tradeoff.png").stat().st_size > 1000
    text = (out / "summary.md").read_text()
    assert "dmax benchmark --preset smoke --seeds 0" in text
    # the smoke model is untrained: the product must refuse the comparison, not print a ratio
    assert summary["all_seeds_valid"] is False and "under-trained" in text


def test_sweep_table_is_one_row_per_model_and_decoder():
    from dmax_core.evaluation.report import sweep_table

    table = sweep_table(dmax_like().cells).splitlines()
    assert table[0] == "| model + decoder | 1 | 0.9 | 0.5 |"
    assert table[2] == "| base + spd | – | 40.0 / 2.00 | 30.0 / 2.00 |"
    assert table[3] == "| base + threshold | 98.0 / 0.80 | 97.5 / 3.00 | 80.0 / 8.00 |"
    assert len(table) == 5  # header, rule, base+spd, base+threshold, dmax+spd: validation cells excluded
    spread = sweep_table([replace(cell("dmax", "spd", 0.5, 0.985, 8.0), std={"accuracy": 0.015})])
    assert spread.splitlines()[2] == "| dmax + spd | 98.5 ± 1.5 / 8.00 |"


@pytest.mark.parametrize(("reference", "aggressive", "accumulates"), [
    (0.10, 0.09, False),  # exactly 1 pp: not *more* than the tolerance (0.10 - 0.01 is 0.09000000000000001)
    (0.13, 0.12, False), (0.98, 0.96, True), (0.98, 0.975, False),
])
def test_error_accumulation_means_more_than_the_tolerance_below(reference, aggressive, accumulates):
    cells = [cell("base", "threshold", 1.0, reference, 1.0), cell("base", "threshold", 0.3, aggressive, 9.0)]
    assert criteria(Evaluation(cells=tuple(cells), headline=compute_headline(cells, ExperimentConfig())))[
        "base_error_accumulation"] is accumulates


@pytest.mark.parametrize(("reference", "best_spd", "collapses"), [
    (0.30, 0.20, True),  # exactly 10 pp below: at least 10 pp (0.3 - 0.1 is 0.19999999999999998)
    (1.00, 0.90, True), (1.00, 0.91, False), (0.98, 0.75, True),
])
def test_base_spd_collapse_means_at_least_ten_pp_below(reference, best_spd, collapses):
    cells = [cell("base", "threshold", 1.0, reference, 1.0), cell("base", "spd", 0.5, best_spd, 2.0)]
    assert criteria(Evaluation(cells=tuple(cells), headline=compute_headline(cells, ExperimentConfig())))[
        "base_spd_collapses"] is collapses


def test_a_loss_of_exactly_one_pp_passes_the_ratio_criterion():
    m = dmax_like()
    exactly = replace(m.headline, accuracy_delta_pp=100 * (0.99 - 1.0))  # -1.0000000000000009
    assert reproduction_criteria(m.cells, exactly)["ratio_ge_2_5"] is True
    assert reproduction_criteria(m.cells, replace(m.headline, accuracy_delta_pp=-1.5))["ratio_ge_2_5"] is False
