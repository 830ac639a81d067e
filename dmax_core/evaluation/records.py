"""The typed records of an evaluation: one scored sample, one grid cell, the headline, the whole run.

One naming scheme for every figure, used by metrics.json, the report, the headline and champion rules,
the reproduction criteria, MLflow and DVC alike (spec §5.4 for the definitions):

    accuracy   fraction of samples scored correct
    tpf        mean over samples of tokens / NFE        (the paper's TPF)
    tps        mean over samples of tokens / seconds    (the paper's TPS, batch 1)
    nfe        mean forwards per sample (prefill counted as one)
    tokens     mean generated non-EOS tokens per sample
    tpf_total  total tokens / total NFE                 (pooled; a different question than tpf)
    tps_total  total tokens / sum of per-sample seconds

and, how fast the cell ran as a whole (decoded `batch_size` rows at a time; `tps` and `tps_total` are
latency-based and equal the paper's only at batch 1):

    throughput           total tokens / wall-clock seconds of the whole cell
    forwards_per_second  model forwards (each for one or many rows) / wall-clock seconds
    mbu                  memory-bandwidth utilisation (bytes read per forward x forwards/s / peak), where
                         the device's peak bandwidth is known

A task's other scores (a benchmark's `strict` beside the DMax-compatible `accuracy`) are `accuracy_<name>`.

A cell's MLflow key is `eval/<task>/<split>/<model>/<decoder>/thr_<threshold>/<figure>` (`Cell.metrics`),
for every task, the run's own included. Each task's headline is logged under `eval/<task>/headline/`
(`tpf_ratio`, `accuracy_delta_pp`, `valid`, ..., the method cell's figures under `method/`, the
baseline's under `baseline/`); the primary task's headline, the run's, is also logged under the bare
names (`tpf_ratio`, `tpf`, `accuracy`, `baseline/tpf`, `headline_valid`, ...), the columns people sort
runs by (`Headline.metrics`). `Evaluation.metrics()` is all of them. No other code builds these keys.

This module only holds and (de)serialises numbers it is given: it must not decode, time or score.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from dmax_core.errors import DataError
from dmax_core.evaluation.comparison import Ranking
from dmax_core.files import atomic_write_json

FIGURES: tuple[str, ...] = ("accuracy", "tpf", "tps", "nfe", "tokens", "tpf_total", "tps_total")
SPEED_FIGURES: tuple[str, ...] = ("throughput", "forwards_per_second", "mbu")
# What the headline logs under bare names (and `baseline/...`): the comparison people look at.
HEADLINE_FIGURES: tuple[str, ...] = ("accuracy", "tpf", "tps", "tps_total", "nfe")


def summarize(tokens: Sequence[int], nfe: Sequence[int], seconds: Sequence[float] | None = None,
              correct: Sequence[bool] | None = None) -> dict[str, float]:
    """The per-sample figures of one set of samples, by the names above (§5.4): `n`, `tpf`, `nfe`, `tokens`,
    `tpf_total`, with `seconds` also `tps`, `tps_total` and `seconds` (mean latency), with `correct` also
    `accuracy`.

    The one place these means are taken: evaluation cells (`Cell.from_samples`), the teacher's figures of
    merged distillation shards (whose table keeps no latencies) and the lm-eval adapter's speed summary
    (which has no scores) all call it, so a figure means the same everywhere. A latency that is not
    positive (a record that was never timed) adds no tokens per second but still counts in `n`."""
    n = len(tokens)
    if n == 0 or len(nfe) != n:
        raise ValueError(f"summarize needs one tokens and one nfe count per sample, got {n} and {len(nfe)}")
    total_tokens, total_nfe = sum(tokens), sum(nfe)
    out: dict[str, float] = {"n": n}
    if correct is not None:
        out["accuracy"] = sum(correct) / n
    out["tpf"] = sum(t / f for t, f in zip(tokens, nfe, strict=True)) / n
    if seconds is not None:
        out["tps"] = sum(t / s for t, s in zip(tokens, seconds, strict=True) if s > 0) / n
    out["nfe"] = total_nfe / n
    out["tokens"] = total_tokens / n
    out["tpf_total"] = total_tokens / total_nfe
    if seconds is not None:
        total_seconds = sum(seconds)
        out["tps_total"] = total_tokens / total_seconds if total_seconds > 0 else 0.0
        out["seconds"] = total_seconds / n
    return out


@dataclass(frozen=True)
class Sample:
    """One decoded and scored sample: what the model wrote, whether it is right, and what it cost."""

    question: str
    reference: str
    text: str
    correct: bool
    tokens: int  # generated ids that are not EOS (§5.4)
    nfe: int  # model forwards, prefill included
    seconds: float  # wall clock of the decode call
    # The task's other named scores (a benchmark's `strict` beside its DMax-compatible `correct`).
    scores: Mapping[str, bool] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.tokens < 0:
            raise ValueError(f"tokens must be >= 0, got {self.tokens}")
        if self.nfe < 1:
            raise ValueError(f"nfe must be >= 1 (every decode runs at least one forward), got {self.nfe}")
        if not self.seconds > 0:
            raise ValueError(f"seconds must be > 0, got {self.seconds}")

    @property
    def tpf(self) -> float:
        return self.tokens / self.nfe

    @property
    def tps(self) -> float:
        return self.tokens / self.seconds


@dataclass(frozen=True)
class Cell:
    """One {model, decoder, threshold, split} cell of the evaluation grid and its figures.

    Cross-seed summaries use the same record with the mean in each figure, the standard deviation over
    seeds in `std` and the seed count in `seeds`."""

    model: str
    decoder: str
    threshold: float
    split: str
    n: int
    accuracy: float
    tpf: float
    tps: float
    nfe: float
    tokens: float
    tpf_total: float
    tps_total: float
    batch_size: int = 1
    throughput: float | None = None
    forwards_per_second: float | None = None
    mbu: float | None = None
    std: Mapping[str, float] | None = None
    seeds: int | None = None
    # The task the cell measured (None only in metrics files written before every cell named its task).
    task: str | None = None
    # Fraction of samples passing each of the task's other scores (`accuracy_<name>` in `figures`).
    accuracies: Mapping[str, float] | None = None

    @classmethod
    def from_samples(cls, model: str, decoder: str, threshold: float, split: str, samples: Sequence[Sample],
                     **speed: Any) -> Cell:
        """Aggregate samples into the reported figures (means of per-sample ratios, §5.4); `speed` sets
        `batch_size`, `throughput`, `forwards_per_second`, `mbu` of the run that decoded them, and may set
        `task`."""
        if not samples:
            raise ValueError("a cell needs at least one sample (a mean over nothing is not a number)")
        figures = summarize([s.tokens for s in samples], [s.nfe for s in samples], [s.seconds for s in samples],
                            [s.correct for s in samples])
        n = len(samples)
        names = list(dict.fromkeys(name for s in samples for name in s.scores))
        accuracies = {name: sum(bool(s.scores.get(name)) for s in samples) / n for name in names} or None
        return cls(model=model, decoder=decoder, threshold=threshold, split=split, n=n,
                   **{name: figures[name] for name in FIGURES}, accuracies=accuracies, **speed)

    @property
    def key(self) -> tuple[str | None, str, str, float, str]:
        """Which cell of the evaluation this is."""
        return (self.task, self.model, self.decoder, self.threshold, self.split)

    @property
    def label(self) -> str:
        """`model+decoder@threshold`, as the report and logs name a cell."""
        return f"{self.model}+{self.decoder}@{self.threshold:g}"

    def figures(self) -> dict[str, float]:
        """The figures of FIGURES, then those of SPEED_FIGURES that were measured."""
        out = {name: float(getattr(self, name)) for name in FIGURES}
        out.update({f"accuracy_{name}": float(value) for name, value in (self.accuracies or {}).items()})
        out.update({name: float(value) for name in SPEED_FIGURES if (value := getattr(self, name)) is not None})
        return out

    def metrics(self) -> dict[str, float]:
        """This cell's figures under their MLflow / DVC keys (module docstring)."""
        task = f"{self.task}/" if self.task else ""
        prefix = f"eval/{task}{self.split}/{self.model}/{self.decoder}/thr_{self.threshold:g}"
        return {f"{prefix}/{name}": value for name, value in self.figures().items()}

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        for optional in ("std", "seeds", "task", "accuracies", *SPEED_FIGURES):
            if data[optional] is None:
                del data[optional]
        return data

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Cell:
        names = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - names)
        if unknown:
            raise ValueError(f"unknown cell field(s) {unknown}")
        return cls(**{k: dict(v) if k in ("std", "accuracies") and v is not None else v for k, v in data.items()})


def select_cells(cells: Sequence[Cell], **match: Any) -> list[Cell]:
    """The cells whose attributes equal every `name=value` given."""
    return [c for c in cells if all(getattr(c, k) == v for k, v in match.items())]


@dataclass(frozen=True)
class Headline:
    """The comparison of one task (rules in `evaluation.rules`); `valid` False says why not.

    `method` is the method arm's test cell (DMax's, in the default experiment), `baseline` the baseline's;
    `reason` says how each threshold was picked (fixed, or chosen on which split against what)."""

    valid: bool
    reason: str
    tolerance_pp: float
    baseline: Cell | None = None
    method: Cell | None = None
    tpf_ratio: float | None = None
    accuracy_delta_pp: float | None = None
    # 95 % bootstrap interval of tpf_ratio over the test problems (`rules.ratio_interval`).
    tpf_ratio_interval: tuple[float, float] | None = None
    task: str | None = None
    # The method's accuracy is at most `tolerance_pp` below the baseline's (the claim "as accurate").
    within_tolerance: bool | None = None

    def metrics(self, prefix: str = "") -> dict[str, float]:
        """Only finite numbers. `prefix=""` (the run's headline): the method cell's `accuracy`, `tpf`, ...,
        `baseline/...`, `tpf_ratio`, `accuracy_delta_pp` and `headline_valid` (1/0); a task's prefix
        (`eval/<task>/headline/`): `valid`, `method/...`, `baseline/...` and the ratio's figures."""
        out: dict[str, float] = {f"{prefix}valid" if prefix else "headline_valid": 1.0 if self.valid else 0.0}
        for cell, role in ((self.method, "method/" if prefix else ""), (self.baseline, "baseline/")):
            if cell is not None:
                figures = cell.figures()
                out.update({f"{prefix}{role}{name}": figures[name] for name in (*HEADLINE_FIGURES, "throughput")
                            if name in figures})
        for name in ("tpf_ratio", "accuracy_delta_pp"):
            value = getattr(self, name)
            if value is not None:
                out[f"{prefix}{name}"] = float(value)
        if self.tpf_ratio_interval is not None:
            out[f"{prefix}tpf_ratio_low"], out[f"{prefix}tpf_ratio_high"] = map(float, self.tpf_ratio_interval)
        if self.within_tolerance is not None:
            out[f"{prefix}within_tolerance"] = 1.0 if self.within_tolerance else 0.0
        return {k: v for k, v in out.items() if math.isfinite(v)}

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["baseline"] = None if self.baseline is None else self.baseline.to_json()
        data["method"] = None if self.method is None else self.method.to_json()
        return data

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Headline:
        values = dict(data)
        if "dmax" in values:  # metrics files written before the experiment named its arms
            values["method"] = values.pop("dmax")
        for role in ("baseline", "method"):
            if values.get(role) is not None:
                values[role] = Cell.from_json(values[role])
        if values.get("tpf_ratio_interval") is not None:
            values["tpf_ratio_interval"] = tuple(values["tpf_ratio_interval"])
        return cls(**values)


@dataclass(frozen=True)
class Evaluation:
    """Everything `evaluate` measured: the grid, each task's headline and the setting it was measured in.

    `headline` is the primary task's (`experiment.primary`), the run's headline; `headlines` has every
    evaluated task's, by task name."""

    cells: tuple[Cell, ...]
    headline: Headline
    settings: Mapping[str, Any] = field(default_factory=dict)
    headlines: Mapping[str, Headline] = field(default_factory=dict)
    # Every (model, decoder) ranked per task (`evaluation.comparison`), by task name.
    rankings: Mapping[str, Ranking] = field(default_factory=dict)

    def select(self, **match: Any) -> list[Cell]:
        return select_cells(self.cells, **match)

    def tasks(self) -> list[str]:
        """The evaluated tasks in the order they were measured (a file of an older dmax: its tasks, `None`
        standing for the run's own)."""
        return list(dict.fromkeys([*self.headlines, *(c.task for c in self.cells)]))

    def metrics(self) -> dict[str, float]:
        """Every figure under its one name: the run's headline under bare names, each task's headline
        under `eval/<task>/headline/` and each cell's `eval/...` keys.

        MLflow logs exactly this dict, and metrics.json carries it as `summary` for `dvc metrics show`."""
        out = self.headline.metrics()
        for task, headline in self.headlines.items():
            out.update(headline.metrics(f"eval/{task}/headline/"))
        for cell in self.cells:
            out.update(cell.metrics())
        for ranking in self.rankings.values():
            out.update(ranking.metrics())
        return out

    def to_json(self) -> dict[str, Any]:
        return {
            "cells": [c.to_json() for c in self.cells],
            "headline": self.headline.to_json(),
            "headlines": {task: h.to_json() for task, h in self.headlines.items()},
            "rankings": {task: r.to_json() for task, r in self.rankings.items()},
            "summary": self.metrics(),
            "settings": dict(self.settings),
        }

    def save(self, path: Path) -> Path:
        return atomic_write_json(path, self.to_json())

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Evaluation:
        return cls(
            cells=tuple(Cell.from_json(c) for c in data["cells"]),
            headline=Headline.from_json(data["headline"]),
            settings=dict(data.get("settings", {})),
            headlines={task: Headline.from_json(h) for task, h in data.get("headlines", {}).items()},
            rankings={task: Ranking.from_json(r) for task, r in data.get("rankings", {}).items()},
        )

    @classmethod
    def load(cls, path: Path) -> Evaluation:
        """Read metrics.json; a missing or malformed file is a `DataError` naming it."""
        path = Path(path)
        if not path.is_file():
            raise DataError(f"metrics file not found: {path} (run `dmax evaluate` first)")
        try:
            return cls.from_json(json.loads(path.read_text(encoding="utf-8")))
        except (json.JSONDecodeError, UnicodeDecodeError, KeyError, TypeError, ValueError) as exc:
            raise DataError(f"metrics file {path} is malformed or was written by an older dmax (rerun "
                            f"`dmax evaluate`): {exc}") from exc
