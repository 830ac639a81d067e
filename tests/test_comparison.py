"""Decoders compared on one harness (`evaluation.comparison`): frontiers, the ranking within tolerance of the
base's one-token accuracy and its bootstrap intervals, checked on cells built by hand."""

import json

import pytest

from dmax_core.evaluation.comparison import Ranking, bootstrap_mean_interval, pareto_frontier, rank_decoders
from dmax_core.evaluation.records import Cell, Evaluation, Headline, Sample


def cell(model, decoder, threshold, accuracy, tpf, split="test", task="ledger"):
    return Cell(model=model, decoder=decoder, threshold=threshold, split=split, n=4, accuracy=accuracy, tpf=tpf,
                tps=10.0, nfe=10.0, tokens=10.0, tpf_total=tpf, tps_total=10.0, task=task)


def samples(correct, tpfs):
    return [Sample(question="q", reference="r", text="t", correct=c, tokens=int(t * 10), nfe=10, seconds=1.0)
            for c, t in zip(correct, tpfs, strict=True)]


CELLS = [
    cell("base", "threshold", 1.0, 0.90, 1.0), cell("base", "threshold", 0.7, 0.90, 2.0),
    cell("base", "threshold", 0.3, 0.50, 4.0),
    cell("dmax", "spd", 1.0, 0.95, 1.0), cell("dmax", "spd", 0.5, 0.90, 3.0), cell("dmax", "spd", 0.0, 0.85, 5.0),
    cell("dmax", "factor", 1.0, 0.80, 1.0), cell("dmax", "factor", 0.0, 0.70, 6.0),
    cell("dmax", "spd", 0.5, 1.0, 9.0, split="validation"),  # never ranked: validation
]


def test_pareto_frontier_by_hand():
    own = [c for c in CELLS if (c.model, c.decoder, c.split) == ("base", "threshold", "test")]
    # (1.0, 0.90) is beaten by (2.0, 0.90); (4.0, 0.50) is the fastest
    assert [(c.tpf, c.accuracy) for c in pareto_frontier(own)] == [(2.0, 0.90), (4.0, 0.50)]


def test_ranking_by_tpf_within_tolerance_of_the_base_one_token_accuracy():
    best_spd = CELLS[4]
    kept = {best_spd.key: samples([True, True, True, False], [2.0, 3.0, 3.0, 4.0])}
    ranking = rank_decoders(CELLS, kept, "ledger", tolerance_pp=1.0)
    assert ranking.floor == pytest.approx(0.89)
    order = [(e.model, e.decoder, e.threshold, e.tpf) for e in ranking.entries]
    # spd@0.5 (0.90 >= 0.89, TPF 3) beats base threshold@0.7 (TPF 2); factor never reaches the floor
    assert order == [("dmax", "spd", 0.5, 3.0), ("base", "threshold", 0.7, 2.0), ("dmax", "factor", None, None)]
    spd = ranking.entries[0]
    assert spd.tpf_interval[0] <= 3.0 <= spd.tpf_interval[1] and spd.tpf_interval[0] >= 2.0
    assert spd.accuracy_interval[1] <= 1.0
    assert ranking.entries[1].tpf_interval is None  # no samples kept for it: no interval, not a made-up one
    metrics = ranking.metrics()
    assert metrics["eval/ledger/rank/dmax/spd/place"] == 1.0 and metrics["eval/ledger/rank/dmax/spd/tpf"] == 3.0
    assert not any("factor" in k for k in metrics)
    assert Ranking.from_json(json.loads(json.dumps(ranking.to_json()))) == ranking


def test_a_ranking_without_the_base_one_token_cell_says_why():
    ranking = rank_decoders([c for c in CELLS if c.model != "base"], {}, "ledger", tolerance_pp=1.0)
    assert ranking.floor is None and "base + threshold @ 1.0" in ranking.reason
    assert all(e.tpf is None for e in ranking.entries)


def test_bootstrap_interval_of_a_constant_is_the_constant_and_widens_with_spread():
    assert bootstrap_mean_interval([2.0] * 10) == (2.0, 2.0)
    low, high = bootstrap_mean_interval([0.0, 1.0] * 10)
    assert 0.2 < low < 0.5 < high < 0.8


def test_rankings_travel_with_the_evaluation_and_into_its_metrics(tmp_path):
    ranking = rank_decoders(CELLS, {}, "ledger", tolerance_pp=1.0)
    headline = Headline(valid=False, reason="n/a", tolerance_pp=1.0)
    evaluation = Evaluation(cells=tuple(CELLS), headline=headline, rankings={"ledger": ranking})
    again = Evaluation.load(evaluation.save(tmp_path / "metrics.json"))
    assert again.rankings == {"ledger": ranking}
    assert again.metrics()["eval/ledger/rank/base/threshold/place"] == 2.0
