"""The decisions made on measured cells: the headline comparison of each task and the champion rule.

Both are pure functions of typed records (`evaluation.records`) and an experiment (`config.ExperimentConfig`,
read by duck typing: this module imports no config), fixed before any test number was looked at. They
share one notion of "within tolerance" (`within_tolerance`), so an accuracy loss of exactly the tolerance
is accepted everywhere, despite float noise (0.99 - 1.0 is -1.0000000000000009 pp).

Headline of one task: a *baseline* and a *method* arm, each a {model, decoder} pair with a threshold that
is either fixed or chosen: the largest-TPF threshold whose accuracy on the arm's `choose_on` split is within
`tolerance_pp` of its reference (`one_token`: the pair at threshold 1.0; `best`: its most accurate cell).
The compared cells are the arms' test cells at those thresholds; ratio = TPF(method) / TPF(baseline). The
default experiment is the paper's question at tiny scale:
- baseline = base + threshold decoding, chosen on the **test** split against its own one-token accuracy
  (the choice most favourable to the baseline);
- method = OPUT model + SPD, chosen on the **validation** split against its best validation accuracy.
A sanity gate refuses the comparison when the baseline pair is under-trained (one-token accuracy below
`min_base_accuracy`, or no better than its most aggressive threshold): then accuracy differences are
not caused by parallel decoding and any ratio would mislead. `min_base_accuracy=None` turns it off.

Champion: a new registered checkpoint replaces the champion when the primary task's headline method cell
has more TPF at no more than `tolerance_pp` accuracy loss.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import torch

from dmax_core.evaluation.records import Cell, Headline, select_cells

# Accuracies are k / n fractions; 1e-9 pp is far below one sample at any n dmax evaluates, and far above
# the float error of a subtraction of two such fractions.
TOLERANCE_SLACK_PP = 1e-9


class Arm(Protocol):
    """What the rule reads of one arm (`config.ArmConfig`)."""

    model: str
    decoder: str
    choose_on: str
    reference: str

    @property
    def fixed(self) -> float | None: ...


def within_tolerance(value: float, reference: float, tolerance_pp: float) -> bool:
    """True when `value` (a fraction) is at most `tolerance_pp` percentage points below `reference`."""
    return 100.0 * (reference - value) <= tolerance_pp + TOLERANCE_SLACK_PP


def _fastest_within(cells: Sequence[Cell], reference_accuracy: float, tolerance_pp: float) -> Cell:
    eligible = [c for c in cells if within_tolerance(c.accuracy, reference_accuracy, tolerance_pp)]
    return max(eligible, key=lambda c: (c.tpf, c.accuracy))


def _pair(arm: Arm) -> str:
    return f"{arm.model}/{arm.decoder}"


def pick_cell(cells: Sequence[Cell], arm: Arm, tolerance_pp: float) -> tuple[Cell | None, str]:
    """The arm's test cell and how its threshold was picked, or (None, why there is none)."""
    pair = select_cells(cells, model=arm.model, decoder=arm.decoder)
    if arm.fixed is not None:
        test = select_cells(pair, split="test", threshold=arm.fixed)
        if not test:
            return None, f"no {_pair(arm)} test cell at its fixed threshold {arm.fixed:g}"
        return test[0], f"fixed threshold {arm.fixed:g}"
    candidates = select_cells(pair, split=arm.choose_on)
    if not candidates:
        return None, (f"no {_pair(arm)} cells on the {arm.choose_on} split to choose its threshold on (a "
                      "benchmark has no validation split: hold test problems out with "
                      "experiment.tasks.<task>.holdout=N, or fix the threshold)")
    if arm.reference == "one_token":
        one_token = select_cells(candidates, threshold=1.0)
        if not one_token:
            return None, (f"no {_pair(arm)} cell at threshold 1.0 (one token per forward) on the "
                          f"{arm.choose_on} split")
        reference, against = one_token[0].accuracy, "its one-token-per-forward accuracy"
    else:
        reference, against = max(c.accuracy for c in candidates), "its best accuracy"
    chosen = _fastest_within(candidates, reference, tolerance_pp)
    test = select_cells(pair, split="test", threshold=chosen.threshold)
    if not test:
        return None, f"no {_pair(arm)} test cell at the {arm.choose_on}-chosen threshold {chosen.threshold:g}"
    return test[0], f"threshold {chosen.threshold:g} chosen on {arm.choose_on}, within tolerance of {against}"


def _gate(cells: Sequence[Cell], arm: Arm, min_base_accuracy: float) -> str | None:
    """Why the baseline pair is too weak to compare against (None: it is not)."""
    base = select_cells(cells, model=arm.model, decoder=arm.decoder, split="test")
    one_token = select_cells(base, threshold=1.0)
    if not one_token:
        return (f"no {_pair(arm)} cell at threshold 1.0 (one token per forward) on the test split, which the "
                "base-accuracy gate needs (experiment.min_base_accuracy=null turns the gate off)")
    reference = one_token[0]
    aggressive = min(base, key=lambda c: c.threshold)
    if reference.accuracy < min_base_accuracy:
        return (f"base model under-trained: one-token-per-forward accuracy {100 * reference.accuracy:.1f}% "
                f"< {100 * min_base_accuracy:.0f}%; the comparison is not meaningful")
    if aggressive is not reference and reference.accuracy <= aggressive.accuracy:
        return (f"base model under-trained: one-token-per-forward accuracy {100 * reference.accuracy:.1f}% is no "
                f"better than at threshold {aggressive.threshold} ({100 * aggressive.accuracy:.1f}%), so its "
                "errors are not caused by parallel decoding; the comparison is not meaningful")
    return None


def compute_headline(cells: Sequence[Cell], experiment: Any, task: str | None = None) -> Headline:
    """The headline comparison of one task's cells under `experiment` (module docstring); never raises on
    missing cells, says why. `cells` may hold every task's: only those of `task` are read."""
    tolerance_pp = experiment.tolerance_pp
    if task is not None:
        cells = select_cells(cells, task=task)
    baseline_arm, method_arm = experiment.arms(task) if task is not None else (experiment.baseline, experiment.method)

    def refused(reason: str, **found: Cell | None) -> Headline:
        return Headline(valid=False, reason=reason, tolerance_pp=tolerance_pp, task=task, **found)

    if experiment.min_base_accuracy is not None:
        weak = _gate(cells, baseline_arm, experiment.min_base_accuracy)
        if weak:
            return refused(weak)
    baseline, baseline_choice = pick_cell(cells, baseline_arm, tolerance_pp)
    if baseline is None:
        return refused(baseline_choice)
    method, method_choice = pick_cell(cells, method_arm, tolerance_pp)
    if method is None:
        return refused(method_choice, baseline=baseline)
    if not baseline.tpf > 0:
        return refused("the baseline cell has TPF 0; no ratio", baseline=baseline, method=method)
    delta_pp = 100.0 * (method.accuracy - baseline.accuracy)
    return Headline(
        valid=True,
        reason=f"baseline = {baseline.label} ({baseline_choice}); method = {method.label} ({method_choice})",
        tolerance_pp=tolerance_pp,
        task=task,
        baseline=baseline,
        method=method,
        tpf_ratio=method.tpf / baseline.tpf,
        accuracy_delta_pp=delta_pp,
        within_tolerance=within_tolerance(method.accuracy, baseline.accuracy, tolerance_pp),
    )


def ratio_interval(baseline_tpf: Sequence[float], method_tpf: Sequence[float], *, resamples: int = 2000,
                   seed: int = 0, level: float = 0.95) -> tuple[float, float]:
    """Bootstrap interval of mean(method TPF) / mean(baseline TPF) over the test problems.

    Both cells decode the same problems, so problems are resampled in pairs (one draw of indices for both
    sequences); the interval is the (1 - level) / 2 and (1 + level) / 2 percentiles of the resampled
    ratios. It says how much the headline ratio depends on which problems the test split holds (at 100
    problems one problem moves the baseline's threshold), not how a retrained model would do."""
    if len(baseline_tpf) != len(method_tpf) or not baseline_tpf:
        raise ValueError("the two cells must hold the same, non-empty set of problems")
    base = torch.tensor(baseline_tpf, dtype=torch.float64)
    method = torch.tensor(method_tpf, dtype=torch.float64)
    draws = torch.randint(0, len(base), (resamples, len(base)), generator=torch.Generator().manual_seed(seed))
    ratios = method[draws].mean(1) / base[draws].mean(1).clamp_min(1e-12)
    low, high = torch.quantile(ratios, torch.tensor([(1 - level) / 2, (1 + level) / 2], dtype=torch.float64))
    return float(low), float(high)


@dataclass(frozen=True)
class ChampionDecision:
    promote: bool
    reason: str


@dataclass(frozen=True)
class Standing:
    """What the champion rule compares: the headline method cell's accuracy (fraction) and TPF."""

    accuracy: float
    tpf: float

    @classmethod
    def of(cls, headline: Headline) -> Standing | None:
        """None unless the headline is valid: a refused comparison must not crown a champion."""
        if not headline.valid or headline.method is None or not math.isfinite(headline.method.tpf):
            return None
        return cls(accuracy=headline.method.accuracy, tpf=headline.method.tpf)


def beats_champion(new: Standing | None, champion: Standing | None, tolerance_pp: float = 1.0,
                   champion_exists: bool | None = None) -> ChampionDecision:
    """More TPF at no more than `tolerance_pp` points of accuracy loss than the current champion.

    `new=None`: the run measured no headline method cell, so there is nothing to promote. No champion yet
    (`champion_exists` False): the first evaluated version takes the title. A champion whose standing
    was never recorded (`champion=None`, `champion_exists` True) cannot be compared and is replaced."""
    if new is None:
        return ChampionDecision(False, "no headline method cell in the evaluation: nothing to compare")
    if champion is None:
        reason = "current champion has no recorded metrics" if champion_exists else "no champion yet"
        return ChampionDecision(True, reason)
    summary = (f"tpf {new.tpf:.3f} vs champion {champion.tpf:.3f}, "
               f"accuracy {new.accuracy:.4f} vs champion {champion.accuracy:.4f}")
    if new.tpf <= champion.tpf:
        return ChampionDecision(False, f"no TPF gain ({summary})")
    if not within_tolerance(new.accuracy, champion.accuracy, tolerance_pp):
        loss = 100.0 * (champion.accuracy - new.accuracy)
        return ChampionDecision(False, f"accuracy loss {loss:.2f} pp > {tolerance_pp:g} pp ({summary})")
    return ChampionDecision(True, f"more TPF within {tolerance_pp:g} pp accuracy ({summary})")
