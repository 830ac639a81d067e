"""The decisions made on measured cells: the headline comparison and the model-registry champion rule.

Both are pure functions of typed records (`evaluation.records`) and were fixed before any test number
was looked at. They share one notion of "within tolerance" (`within_tolerance`), so an accuracy loss of
exactly the tolerance is accepted everywhere, despite float noise (0.99 - 1.0 is -1.0000000000000009 pp).

Headline:
- *baseline* = base model + threshold decoding at the largest-TPF threshold whose test accuracy is
  within `tolerance_pp` of the base model's one-token-per-forward accuracy (threshold 1.0);
- *DMax* = OPUT model + SPD at the threshold chosen on the **validation** split: the largest
  validation TPF among thresholds within `tolerance_pp` of the best validation accuracy;
- ratio = TPF(DMax) / TPF(baseline) on the test split.
A sanity gate refuses the comparison when the base model is under-trained (one-token accuracy below
`min_base_accuracy`, or no better than its most aggressive threshold): then accuracy differences are
not caused by parallel decoding and any ratio would mislead.

Champion: a new registered checkpoint replaces the champion when its headline DMax cell has more TPF at
no more than `tolerance_pp` accuracy loss.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch

from dmax_core.evaluation.records import Cell, Headline, select_cells

# Accuracies are k / n fractions; 1e-9 pp is far below one sample at any n dmax evaluates, and far above
# the float error of a subtraction of two such fractions.
TOLERANCE_SLACK_PP = 1e-9


def within_tolerance(value: float, reference: float, tolerance_pp: float) -> bool:
    """True when `value` (a fraction) is at most `tolerance_pp` percentage points below `reference`."""
    return 100.0 * (reference - value) <= tolerance_pp + TOLERANCE_SLACK_PP


def _fastest_within(cells: Sequence[Cell], reference_accuracy: float, tolerance_pp: float) -> Cell:
    eligible = [c for c in cells if within_tolerance(c.accuracy, reference_accuracy, tolerance_pp)]
    return max(eligible, key=lambda c: (c.tpf, c.accuracy))


def compute_headline(cells: Sequence[Cell], tolerance_pp: float = 1.0, min_base_accuracy: float = 0.9) -> Headline:
    """The headline comparison of a grid (module docstring); never raises on missing cells, says why."""

    def refused(reason: str, **found: Cell) -> Headline:
        return Headline(valid=False, reason=reason, tolerance_pp=tolerance_pp, **found)

    cells = [c for c in cells if c.task is None]  # benchmarks of `evaluate.tasks` are reported, never chosen on

    base = select_cells(cells, model="base", decoder="threshold", split="test")
    one_token = [c for c in base if c.threshold == 1.0]
    if not one_token:
        return refused("no base/threshold cell at threshold 1.0 (one token per forward) on the test split")
    reference = one_token[0]
    aggressive = min(base, key=lambda c: c.threshold)
    if reference.accuracy < min_base_accuracy:
        return refused(
            f"base model under-trained: one-token-per-forward accuracy {100 * reference.accuracy:.1f}% "
            f"< {100 * min_base_accuracy:.0f}%; the comparison is not meaningful"
        )
    if aggressive is not reference and reference.accuracy <= aggressive.accuracy:
        return refused(
            f"base model under-trained: one-token-per-forward accuracy {100 * reference.accuracy:.1f}% is no "
            f"better than at threshold {aggressive.threshold} ({100 * aggressive.accuracy:.1f}%), so its "
            "errors are not caused by parallel decoding; the comparison is not meaningful"
        )
    baseline = _fastest_within(base, reference.accuracy, tolerance_pp)

    validation = select_cells(cells, model="dmax", decoder="spd", split="validation")
    if not validation:
        return refused("no dmax/spd cells on the validation split to choose the DMax threshold", baseline=baseline)
    chosen = _fastest_within(validation, max(c.accuracy for c in validation), tolerance_pp)
    test_cell = select_cells(cells, model="dmax", decoder="spd", split="test", threshold=chosen.threshold)
    if not test_cell:
        return refused(f"no dmax/spd test cell at the validation-chosen threshold {chosen.threshold}",
                       baseline=baseline)
    dmax = test_cell[0]
    if not baseline.tpf > 0:
        return refused("the baseline cell has TPF 0; no ratio", baseline=baseline, dmax=dmax)
    return Headline(
        valid=True,
        reason=f"baseline = base+threshold@{baseline.threshold}, DMax = dmax+spd@{dmax.threshold} "
               "(threshold chosen on validation)",
        tolerance_pp=tolerance_pp,
        baseline=baseline,
        dmax=dmax,
        tpf_ratio=dmax.tpf / baseline.tpf,
        accuracy_delta_pp=100.0 * (dmax.accuracy - baseline.accuracy),
    )


def ratio_interval(baseline_tpf: Sequence[float], dmax_tpf: Sequence[float], *, resamples: int = 2000,
                   seed: int = 0, level: float = 0.95) -> tuple[float, float]:
    """Bootstrap interval of mean(dmax TPF) / mean(baseline TPF) over the test problems.

    Both cells decode the same problems, so problems are resampled in pairs (one draw of indices for both
    sequences); the interval is the (1 - level) / 2 and (1 + level) / 2 percentiles of the resampled
    ratios. It says how much the headline ratio depends on which problems the test split holds (at 100
    problems one problem moves the baseline's threshold), not how a retrained model would do."""
    if len(baseline_tpf) != len(dmax_tpf) or not baseline_tpf:
        raise ValueError("the two cells must hold the same, non-empty set of problems")
    base = torch.tensor(baseline_tpf, dtype=torch.float64)
    dmax = torch.tensor(dmax_tpf, dtype=torch.float64)
    draws = torch.randint(0, len(base), (resamples, len(base)), generator=torch.Generator().manual_seed(seed))
    ratios = dmax[draws].mean(1) / base[draws].mean(1).clamp_min(1e-12)
    low, high = torch.quantile(ratios, torch.tensor([(1 - level) / 2, (1 + level) / 2], dtype=torch.float64))
    return float(low), float(high)


@dataclass(frozen=True)
class ChampionDecision:
    promote: bool
    reason: str


@dataclass(frozen=True)
class Standing:
    """What the champion rule compares: the headline DMax cell's accuracy (fraction) and TPF."""

    accuracy: float
    tpf: float

    @classmethod
    def of(cls, headline: Headline) -> Standing | None:
        """None unless the headline is valid: a refused comparison must not crown a champion."""
        if not headline.valid or headline.dmax is None or not math.isfinite(headline.dmax.tpf):
            return None
        return cls(accuracy=headline.dmax.accuracy, tpf=headline.dmax.tpf)


def beats_champion(new: Standing | None, champion: Standing | None, tolerance_pp: float = 1.0,
                   champion_exists: bool | None = None) -> ChampionDecision:
    """More TPF at no more than `tolerance_pp` points of accuracy loss than the current champion.

    `new=None`: the run measured no headline DMax cell, so there is nothing to promote. No champion yet
    (`champion_exists` False): the first evaluated version takes the title. A champion whose standing
    was never recorded (`champion=None`, `champion_exists` True) cannot be compared and is replaced."""
    if new is None:
        return ChampionDecision(False, "no headline dmax cell in the evaluation: nothing to compare")
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
