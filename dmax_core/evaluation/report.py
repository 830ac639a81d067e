"""Render an evaluation as markdown tables and a TPF-vs-accuracy trade-off plot.

Reads only the typed records the `evaluate` stage wrote (`evaluation.records`); it never recomputes a
metric.
When the headline's sanity gate failed, the report leads with the reason and marks the grid as raw
measurements rather than a comparison.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt

from dmax_core.evaluation.comparison import Ranking
from dmax_core.evaluation.records import Cell, Evaluation, Headline
from dmax_core.files import atomic_file

STYLE = {
    ("base", "threshold"): ("tab:blue", "o", "-"),
    ("base", "spd"): ("tab:orange", "s", "--"),
    ("dmax", "threshold"): ("tab:green", "^", "-"),
    ("dmax", "spd"): ("tab:red", "D", "-"),
    ("control", "threshold"): ("tab:purple", "v", ":"),
    ("control", "spd"): ("tab:brown", "P", ":"),
}


def _fmt_cell(cell: Cell | None) -> str:
    if cell is None:
        return "n/a"
    return f"{cell.label}: accuracy {100 * cell.accuracy:.1f}%, TPF {cell.tpf:.2f}"


def markdown_table(cells: Sequence[Cell], split: str = "test") -> str:
    rows = sorted((c for c in cells if c.split == split), key=lambda c: (c.model, c.decoder, -c.threshold))
    lines = [
        "| model | decoder | threshold | accuracy % | TPF | NFE | tokens | TPS per sample | throughput tok/s "
        "| forwards/s | batch | n |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for c in rows:
        throughput = "–" if c.throughput is None else f"{c.throughput:.0f}"
        forwards = "–" if c.forwards_per_second is None else f"{c.forwards_per_second:.0f}"
        lines.append(
            f"| {c.model} | {c.decoder} | {c.threshold:g} | {100 * c.accuracy:.1f} | {c.tpf:.2f} | {c.nfe:.1f} | "
            f"{c.tokens:.1f} | {c.tps:.0f} | {throughput} | {forwards} | {c.batch_size} | {c.n} |"
        )
    return "\n".join(lines)


def sweep_table(cells: Sequence[Cell], split: str = "test") -> str:
    """The sweep at a glance: one row per {model, decoder}, one column per threshold, "accuracy % / TPF".

    The long table has every measurement; this is the shape a reader compares with the paper's figure.
    Cross-seed cells (with `std`) show the accuracy as mean ± std over seeds."""
    rows = [c for c in cells if c.split == split]
    thresholds = sorted({c.threshold for c in rows}, reverse=True)
    lines = ["| model + decoder | " + " | ".join(f"{t:g}" for t in thresholds) + " |",
             "|---|" + "---|" * len(thresholds)]
    for key in sorted({(c.model, c.decoder) for c in rows}):
        by_threshold = {c.threshold: c for c in rows if (c.model, c.decoder) == key}
        entries = []
        for t in thresholds:
            c = by_threshold.get(t)
            if c is None:
                entries.append("–")
                continue
            spread = f" ± {100 * c.std['accuracy']:.1f}" if c.std else ""
            entries.append(f"{100 * c.accuracy:.1f}{spread} / {c.tpf:.2f}")
        lines.append(f"| {key[0]} + {key[1]} | " + " | ".join(entries) + " |")
    return "\n".join(lines)


def task_table(cells: Sequence[Cell]) -> str:
    """One benchmark's cells: both scores (the DMax repository's lenient one and the strict one), TPF, TPS."""
    rows = sorted((c for c in cells if c.split == "test"), key=lambda c: (c.model, c.decoder, -c.threshold))
    extra = list(dict.fromkeys(name for c in rows for name in (c.accuracies or {})))
    header = " | ".join(["DMax-compatible %" if extra else "accuracy %", *(f"{name} %" for name in extra)])
    lines = [f"| model | decoder | threshold | {header} | TPF | TPS per sample | throughput tok/s | NFE | tokens | n |",
             "|---|---|---|" + "---|" * (1 + len(extra)) + "---|---|---|---|---|---|"]
    for c in rows:
        scores = " | ".join([f"{100 * c.accuracy:.1f}",
                             *(f"{100 * (c.accuracies or {}).get(name, float('nan')):.1f}" for name in extra)])
        throughput = "–" if c.throughput is None else f"{c.throughput:.0f}"
        lines.append(f"| {c.model} | {c.decoder} | {c.threshold:g} | {scores} | {c.tpf:.2f} | {c.tps:.0f} | "
                     f"{throughput} | {c.nfe:.1f} | {c.tokens:.1f} | {c.n} |")
    return "\n".join(lines)


def headline_text(headline: Headline) -> str:
    """The comparison in words: the ratio with its interval, both cells, and how each was chosen."""
    if not headline.valid:
        return f"**Headline not computed:** {headline.reason}"
    interval = ""
    if headline.tpf_ratio_interval is not None:
        low, high = headline.tpf_ratio_interval
        interval = f", 95% bootstrap interval over test problems {low:.2f}-{high:.2f}x"
    verdict = ("within" if headline.within_tolerance else "outside") + f" the {headline.tolerance_pp:g} pp tolerance"
    return (
        f"**TPF ratio method / baseline = {headline.tpf_ratio:.2f}x** "
        f"(accuracy change {headline.accuracy_delta_pp:+.1f} pp, {verdict}{interval})\n\n"
        f"- baseline: {_fmt_cell(headline.baseline)}\n"
        f"- method: {_fmt_cell(headline.method)}\n"
        f"- rule: {headline.reason}"
    )


def plot_tradeoff(cells: Sequence[Cell], headline: Headline | None, path: Path, title: str) -> Path:
    """One line per {model, decoder} over the threshold sweep of one task's test cells, the headline's
    baseline and method circled and named.

    `headline=None` (a cross-seed summary, which has no single headline cell) leaves `title` as given."""
    fig, ax = plt.subplots(figsize=(7.5, 5))
    test = [c for c in cells if c.split == "test"]
    for key in sorted({(c.model, c.decoder) for c in test}):
        points = sorted((c for c in test if (c.model, c.decoder) == key), key=lambda c: c.tpf)
        color, marker, line = STYLE.get(key, ("gray", "x", ":"))
        xs = [c.tpf for c in points]
        ys = [100 * c.accuracy for c in points]
        ax.plot(xs, ys, linestyle=line, marker=marker, color=color, label=f"{key[0]} + {key[1]}")
        for c, x, y in zip(points, xs, ys, strict=True):
            ax.annotate(f"{c.threshold:g}", (x, y), textcoords="offset points", xytext=(4, 4), fontsize=7)
    if headline is not None and headline.valid:
        for cell, name in ((headline.baseline, "baseline"), (headline.method, "method")):
            ax.scatter([cell.tpf], [100 * cell.accuracy], s=220, facecolors="none", edgecolors="black",
                       linewidths=1.5)
            ax.annotate(name, (cell.tpf, 100 * cell.accuracy), textcoords="offset points", xytext=(-10, -16),
                        fontsize=8, fontweight="bold")
        title += f"  (ratio {headline.tpf_ratio:.2f}x)"
    elif headline is not None:
        title += "  (headline not meaningful)"
    return _save_tpf_accuracy(fig, ax, title, path, "tokens per forward (TPF, mean of per-sample ratios)",
                              "accuracy on held-out test split (%)")


def ranking_table(ranking: Ranking) -> str:
    """The decoders of one task by TPF within tolerance of the base's one-token accuracy (`comparison`)."""
    lines = ["| place | model | decoder | knob | accuracy % (95% CI) | TPF (95% CI) | frontier points |",
             "|---|---|---|---|---|---|---|"]
    place = 0
    for e in ranking.entries:
        front = len(e.frontier)
        if e.tpf is None:
            lines.append(f"| - | {e.model} | {e.decoder} | - | no cell within tolerance | - | {front} |")
            continue
        place += 1
        acc = f"{100 * e.accuracy:.1f}"
        if e.accuracy_interval:
            acc += f" ({100 * e.accuracy_interval[0]:.1f}-{100 * e.accuracy_interval[1]:.1f})"
        tpf = f"{e.tpf:.2f}" + (f" ({e.tpf_interval[0]:.2f}-{e.tpf_interval[1]:.2f})" if e.tpf_interval else "")
        lines.append(f"| {place} | {e.model} | {e.decoder} | {e.threshold:g} | {acc} | {tpf} | {front} |")
    return "\n".join(lines)


def plot_frontiers(ranking: Ranking, path: Path, title: str) -> Path:
    """Every (model, decoder)'s accuracy-vs-TPF Pareto frontier of one task in one picture, the tolerance floor
    as a dashed line and each pair's ranked cell circled."""
    fig, ax = plt.subplots(figsize=(7.5, 5))
    colors = plt.get_cmap("tab10")
    for i, e in enumerate(ranking.entries):
        if not e.frontier:
            continue
        xs = [tpf for _, tpf, _ in e.frontier]
        ys = [100 * acc for _, _, acc in e.frontier]
        line = "-" if e.model != "base" else "--"
        ax.plot(xs, ys, marker="o", linestyle=line, color=colors(i % 10), label=f"{e.model} + {e.decoder}")
        if e.tpf is not None:
            ax.scatter([e.tpf], [100 * e.accuracy], s=160, facecolors="none", edgecolors=colors(i % 10),
                       linewidths=1.5)
    if ranking.floor is not None:
        ax.axhline(100 * ranking.floor, color="black", linestyle=":", linewidth=1,
                   label=f"base one-token accuracy - {ranking.tolerance_pp:g} pp")
    return _save_tpf_accuracy(fig, ax, title, path, "tokens per forward (TPF)", "accuracy on the test split (%)")


def _save_tpf_accuracy(fig: plt.Figure, ax: plt.Axes, title: str, path: Path, xlabel: str, ylabel: str) -> Path:
    """The axes, grid and legend every TPF-vs-accuracy picture shares, then `save_png`."""
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title, fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(loc="best", fontsize=8, framealpha=0.85)
    return save_png(fig, path, dpi=120)


def frontier_name(task: str | None) -> str:
    """The frontier picture of a task, relative to the report."""
    return f"tasks/frontiers-{task}.png"


def save_png(fig: plt.Figure, path: Path, dpi: int) -> Path:
    """Lay out `fig`, write it to `path` atomically as PNG and close it (the one copy for every picture)."""
    fig.tight_layout()
    try:
        with atomic_file(path) as tmp:
            fig.savefig(tmp, dpi=dpi, format="png")
    finally:
        plt.close(fig)
    return path


def plot_name(task: str | None) -> str:
    """The trade-off picture of a task, relative to the report (`tradeoff.png` is also the primary's)."""
    return f"tasks/tradeoff-{task}.png"


def task_headline(evaluation: Evaluation, task: str | None) -> Headline | None:
    """A task's headline; in a file of an older dmax, the run's own task (None) has the run's headline."""
    if task in evaluation.headlines:
        return evaluation.headlines[task]
    return evaluation.headline if task is None else None


def _task_section(evaluation: Evaluation, task: str | None, primary: str | None) -> list[str]:
    cells = evaluation.select(task=task)
    headline = task_headline(evaluation, task)
    test = [c for c in cells if c.split == "test"]
    name = task or evaluation.settings.get("preset", "run")
    valid = headline is not None and headline.valid
    parts = [f"## {name}" + (" (primary: the run's headline)" if task == primary else ""), ""]
    if headline is not None:
        parts += [headline_text(headline), ""]
    parts += [f"Test split, {test[0].n if test else 0} problems" + ("" if valid else " (raw measurements, no "
              "comparison)") + ". Accuracy % / TPF per threshold:", "", sweep_table(cells, "test"), ""]
    if any(c.accuracies for c in test):
        parts += ["DMax-compatible = the DMax repository's lenient scorer; strict = the final answer only "
                  "(math) or the first code block as written (code).", "", task_table(cells)]
    else:
        parts.append(markdown_table(cells, "test"))
    if any(c.split == "validation" for c in cells):
        holdout = (evaluation.settings.get("experiment", {}).get("tasks", {}).get(task) or {}).get("holdout")
        source = (f"the first {holdout} problems of the task's test data, held out (experiment.tasks.{task}."
                  "holdout); the test split is the rest" if holdout else "the task's own validation split")
        parts += ["", f"Validation split of {name}: {source}. Used only to choose thresholds, never reported "
                  "as a result:", "", markdown_table(cells, "validation")]
    parts += ["", f"![TPF vs accuracy, {name}]({plot_name(task)})", ""]
    ranking = evaluation.rankings.get(task) if task is not None else None
    if ranking is not None and len(ranking.entries) > 1:
        parts += [f"### Decoders compared on {name}", "", ranking.reason + " (picked on test: the best each "
                  "decoder's own sweep reached, an upper bound for every decoder alike; the knob is each "
                  "decoder's swept value).", "", ranking_table(ranking), "",
                  f"![Frontiers, {name}]({frontier_name(task)})", ""]
    return parts


def render_markdown(evaluation: Evaluation, trace_pictures: Sequence[tuple[str, str]] = ()) -> str:
    """The report: the run's headline, then one section per evaluated task (its headline, sweep, tables
    and trade-off plot, `plot_name`), then the decoding trace pictures (`trace_pictures`: (caption, file
    name) pairs)."""
    settings = evaluation.settings
    tasks = evaluation.tasks()
    primary = settings.get("primary_task", tasks[0] if tasks else None)
    parts = [f"# dmax evaluation report — preset `{settings.get('preset', '?')}`", ""]
    if len(tasks) > 1:
        parts += [f"Run headline (primary task `{primary}`): " + headline_text(evaluation.headline), ""]
    for task in tasks:
        parts += _task_section(evaluation, task, primary)
    if trace_pictures:
        parts += ["## How the method decoded a few samples", "",
                  "Rows are forwards within a block, columns positions; colour is the confidence of the token "
                  "written in the cell, red outlines mark the positions that changed in that forward (a position "
                  "outlined again later was revised).", ""]
        parts += [f"![{caption}]({file})\n" for caption, file in trace_pictures]
    parts += [
        "",
        "TPF = mean over samples of (non-EOS generated tokens / NFE), prefill counted as one forward. "
        "TPS per sample = mean of tokens / the sample's own decoding time (the paper's TPS at batch 1; in a "
        "batch, a latency); throughput = all tokens / the cell's wall-clock time; forwards/s counts batched "
        f"forwards once. Setting: {settings.get('setting', 'n/a')}.",
    ]
    return "\n".join(parts) + "\n"
