"""Every decoder against every other on one harness: per task, each (model, decoder)'s accuracy-vs-TPF
frontier and a ranking by TPF at no more than the tolerance below the base model's one-token accuracy.

    floor   = accuracy of base + threshold @ 1.0 on test  -  experiment.tolerance_pp
    best    = for each (model, decoder): its fastest test cell (largest TPF) with accuracy >= floor
    ranking = the pairs by best TPF, each with 95 % bootstrap intervals of its TPF and accuracy over the test
              problems (the same resampling as the headline's ratio, `rules.ratio_interval`)

The operating point is picked on test, so each decoder's figure is the best its own sweep reached on these
problems: an upper bound per decoder, the same bound for all of them (a fair comparison of decoders, not a
headline claim; the headline picks its thresholds by `experiment`'s rules, on validation where they say so).
Every decoder sweeps the same knob values (`evaluate.thresholds`); each policy maps them onto its own rule
(`dmax_core.decoding.policies`). A pair none of whose cells reaches the floor is listed without a figure.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

import torch

if TYPE_CHECKING:  # records holds a task's Ranking, so this module does not import it at run time
    from dmax_core.evaluation.records import Cell

ONE_TOKEN = 1.0  # the threshold at which the threshold decoder commits one token per forward


@dataclass(frozen=True)
class Ranked:
    """One (model, decoder) of a task's ranking: its fastest cell within tolerance (None: no cell is)."""

    model: str
    decoder: str
    threshold: float | None = None
    accuracy: float | None = None
    tpf: float | None = None
    tpf_interval: tuple[float, float] | None = None
    accuracy_interval: tuple[float, float] | None = None
    frontier: tuple[tuple[float, float, float], ...] = ()  # (threshold, tpf, accuracy) of the Pareto front

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Ranked:
        def pair(value: Any) -> tuple[float, float] | None:
            return None if value is None else (float(value[0]), float(value[1]))

        return cls(model=data["model"], decoder=data["decoder"], threshold=data.get("threshold"),
                   accuracy=data.get("accuracy"), tpf=data.get("tpf"), tpf_interval=pair(data.get("tpf_interval")),
                   accuracy_interval=pair(data.get("accuracy_interval")),
                   frontier=tuple(tuple(map(float, p)) for p in data.get("frontier", ())))


@dataclass(frozen=True)
class Ranking:
    """A task's decoders ranked (module docstring); `floor` None when the base one-token cell is missing."""

    task: str
    floor: float | None
    tolerance_pp: float
    entries: tuple[Ranked, ...]
    reason: str = ""

    def to_json(self) -> dict[str, Any]:
        return {"task": self.task, "floor": self.floor, "tolerance_pp": self.tolerance_pp, "reason": self.reason,
                "entries": [e.to_json() for e in self.entries]}

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Ranking:
        return cls(task=data["task"], floor=data.get("floor"), tolerance_pp=float(data["tolerance_pp"]),
                   entries=tuple(Ranked.from_json(e) for e in data.get("entries", ())), reason=data.get("reason", ""))

    def metrics(self) -> dict[str, float]:
        """`eval/<task>/rank/<model>/<decoder>/{tpf,accuracy,threshold,place}` for every ranked pair."""
        out: dict[str, float] = {}
        place = 0
        for entry in self.entries:
            if entry.tpf is None:
                continue
            place += 1
            prefix = f"eval/{self.task}/rank/{entry.model}/{entry.decoder}/"
            out.update({f"{prefix}tpf": entry.tpf, f"{prefix}accuracy": entry.accuracy,
                        f"{prefix}threshold": entry.threshold, f"{prefix}place": float(place)})
            if entry.tpf_interval is not None:
                out[f"{prefix}tpf_low"], out[f"{prefix}tpf_high"] = entry.tpf_interval
        return out


def pareto_frontier(cells: Sequence[Cell]) -> list[Cell]:
    """The cells no other cell beats on both TPF and accuracy (ties kept once), by increasing TPF."""
    front = [c for c in cells if not any((o.tpf >= c.tpf and o.accuracy >= c.accuracy)
                                         and (o.tpf > c.tpf or o.accuracy > c.accuracy) for o in cells)]
    unique = {(c.tpf, c.accuracy): c for c in sorted(front, key=lambda c: -c.threshold)}
    return sorted(unique.values(), key=lambda c: c.tpf)


def bootstrap_mean_interval(values: Sequence[float], *, resamples: int = 2000, seed: int = 0,
                            level: float = 0.95) -> tuple[float, float]:
    """Percentile bootstrap interval of the mean of `values` over problems."""
    data = torch.tensor(list(values), dtype=torch.float64)
    draws = torch.randint(0, len(data), (resamples, len(data)), generator=torch.Generator().manual_seed(seed))
    means = data[draws].mean(1)
    low, high = torch.quantile(means, torch.tensor([(1 - level) / 2, (1 + level) / 2], dtype=torch.float64))
    return float(low), float(high)


def rank_decoders(cells: Sequence[Cell], samples_of: Mapping[tuple, Sequence[Any]], task: str, *,
                  tolerance_pp: float, seed: int = 0) -> Ranking:
    """The ranking of `task` (module docstring). `samples_of` maps `Cell.key` to its per-problem samples
    (each with `.tpf` and `.correct`), for the bootstrap."""
    test = [c for c in cells if c.split == "test" and c.task == task]
    anchor = [c for c in test if (c.model, c.decoder, c.threshold) == ("base", "threshold", ONE_TOKEN)]
    pairs = list(dict.fromkeys((c.model, c.decoder) for c in test))
    if not anchor:
        reason = "no base + threshold @ 1.0 test cell (evaluate.models needs base, decoders threshold, thresholds 1.0)"
        return Ranking(task, None, tolerance_pp, tuple(Ranked(m, d) for m, d in pairs), reason)
    floor = anchor[0].accuracy - tolerance_pp / 100.0
    entries = []
    for model, decoder in pairs:
        own = [c for c in test if (c.model, c.decoder) == (model, decoder)]
        frontier = tuple((c.threshold, c.tpf, c.accuracy) for c in pareto_frontier(own))
        eligible = [c for c in own if c.accuracy >= floor - 1e-12]
        if not eligible:
            entries.append(Ranked(model, decoder, frontier=frontier))
            continue
        best = max(eligible, key=lambda c: (c.tpf, c.accuracy))
        samples = samples_of.get(best.key) or ()
        tpf_interval = accuracy_interval = None
        if samples:
            tpf_interval = bootstrap_mean_interval([s.tpf for s in samples], seed=seed)
            accuracy_interval = bootstrap_mean_interval([float(s.correct) for s in samples], seed=seed)
        entries.append(Ranked(model, decoder, best.threshold, best.accuracy, best.tpf, tpf_interval,
                              accuracy_interval, frontier))
    entries.sort(key=lambda e: (e.tpf is None, -(e.tpf or 0.0)))
    reason = (f"floor = base + threshold @ 1.0 accuracy {100 * anchor[0].accuracy:.1f}% - {tolerance_pp:g} pp; "
              "each pair's fastest test cell at or above it")
    return Ranking(task, floor, tolerance_pp, tuple(entries), reason)
