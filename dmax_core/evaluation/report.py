"""Render evaluation metrics as a markdown table and a TPF-vs-accuracy trade-off plot.

Reads only the metrics dictionary written by the `evaluate` stage; it never recomputes a metric.
When the headline's sanity gate failed, the report leads with the reason and marks the grid as raw
measurements rather than a comparison.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt

STYLE = {
    ("base", "threshold"): ("tab:blue", "o", "-"),
    ("base", "spd"): ("tab:orange", "s", "--"),
    ("dmax", "threshold"): ("tab:green", "^", "-"),
    ("dmax", "spd"): ("tab:red", "D", "-"),
    ("control", "threshold"): ("tab:purple", "v", ":"),
    ("control", "spd"): ("tab:brown", "P", ":"),
}


def _fmt_cell(cell: dict[str, Any] | None) -> str:
    if cell is None:
        return "n/a"
    return (
        f"{cell['model']}+{cell['decoder']}@{cell['threshold']:g}: accuracy {100 * cell['accuracy']:.1f}%, "
        f"TPF {cell['tpf_mean']:.2f}"
    )


def markdown_table(cells: list[dict[str, Any]], split: str = "test") -> str:
    rows = [c for c in cells if c["split"] == split]
    rows.sort(key=lambda c: (c["model"], c["decoder"], -c["threshold"]))
    lines = [
        "| model | decoder | threshold | accuracy % | TPF | NFE | tokens | TPS (mean) | TPS (total) | n |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for c in rows:
        lines.append(
            f"| {c['model']} | {c['decoder']} | {c['threshold']:g} | {100 * c['accuracy']:.1f} | "
            f"{c['tpf_mean']:.2f} | {c['nfe_mean']:.1f} | {c['tokens_mean']:.1f} | {c['tps_mean']:.0f} | "
            f"{c['tps_total']:.0f} | {c['n']} |"
        )
    return "\n".join(lines)


def sweep_table(cells: list[dict[str, Any]], split: str = "test") -> str:
    """The sweep at a glance: one row per {model, decoder}, one column per threshold, "accuracy % / TPF".

    The long table has every measurement; this is the shape a reader compares with the paper's figure.
    Cross-seed cells (with `accuracy_std`) show the accuracy as mean ± std over seeds."""
    rows = [c for c in cells if c["split"] == split]
    thresholds = sorted({c["threshold"] for c in rows}, reverse=True)
    lines = ["| model + decoder | " + " | ".join(f"{t:g}" for t in thresholds) + " |",
             "|---|" + "---|" * len(thresholds)]
    for key in sorted({(c["model"], c["decoder"]) for c in rows}):
        by_threshold = {c["threshold"]: c for c in rows if (c["model"], c["decoder"]) == key}
        entries = []
        for t in thresholds:
            c = by_threshold.get(t)
            if c is None:
                entries.append("–")
                continue
            spread = f" ± {100 * c['accuracy_std']:.1f}" if "accuracy_std" in c else ""
            entries.append(f"{100 * c['accuracy']:.1f}{spread} / {c['tpf_mean']:.2f}")
        lines.append(f"| {key[0]} + {key[1]} | " + " | ".join(entries) + " |")
    return "\n".join(lines)


def headline_text(headline: dict[str, Any]) -> str:
    if not headline.get("valid"):
        return f"**Headline not computed:** {headline.get('reason', 'unknown reason')}"
    return (
        f"**TPF ratio DMax / baseline = {headline['tpf_ratio']:.2f}x** "
        f"(accuracy change {headline['accuracy_delta_pp']:+.1f} pp)\n\n"
        f"- baseline: {_fmt_cell(headline['baseline'])}\n"
        f"- DMax: {_fmt_cell(headline['dmax'])}\n"
        f"- rule: {headline['reason']}"
    )


def plot_tradeoff(cells: list[dict[str, Any]], headline: dict[str, Any] | None, path: Path, title: str) -> Path:
    """One line per {model, decoder} over the threshold sweep (test split), headline points circled.

    `headline=None` (a cross-seed summary, which has no single headline cell) leaves `title` as given."""
    fig, ax = plt.subplots(figsize=(7.5, 5))
    test = [c for c in cells if c["split"] == "test"]
    for key in sorted({(c["model"], c["decoder"]) for c in test}):
        points = sorted((c for c in test if (c["model"], c["decoder"]) == key), key=lambda c: c["tpf_mean"])
        color, marker, line = STYLE.get(key, ("gray", "x", ":"))
        xs = [c["tpf_mean"] for c in points]
        ys = [100 * c["accuracy"] for c in points]
        ax.plot(xs, ys, linestyle=line, marker=marker, color=color, label=f"{key[0]} + {key[1]}")
        for c, x, y in zip(points, xs, ys, strict=True):
            ax.annotate(f"{c['threshold']:g}", (x, y), textcoords="offset points", xytext=(4, 4), fontsize=7)
    if headline is not None and headline.get("valid"):
        for cell, name in ((headline["baseline"], "baseline"), (headline["dmax"], "DMax")):
            ax.scatter([cell["tpf_mean"]], [100 * cell["accuracy"]], s=220, facecolors="none",
                       edgecolors="black", linewidths=1.5)
            ax.annotate(name, (cell["tpf_mean"], 100 * cell["accuracy"]), textcoords="offset points",
                        xytext=(-10, -16), fontsize=8, fontweight="bold")
        title += f"  (ratio {headline['tpf_ratio']:.2f}x)"
    elif headline is not None:
        title += "  (headline not meaningful)"
    ax.set_xlabel("tokens per forward (TPF, mean of per-sample ratios)")
    ax.set_ylabel("accuracy on held-out test split (%)")
    ax.set_title(title, fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(loc="best", fontsize=8, framealpha=0.85)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp.png")
    fig.savefig(tmp, dpi=120)
    plt.close(fig)
    tmp.replace(path)
    return path


def render_markdown(metrics: dict[str, Any], plot_name: str = "tradeoff.png") -> str:
    settings = metrics.get("settings", {})
    parts = [
        f"# dmax evaluation report — preset `{settings.get('preset', '?')}`",
        "",
        headline_text(metrics["headline"]),
        "",
        "## Test split" + ("" if metrics["headline"].get("valid") else " (raw measurements, no comparison)"),
        "",
        "Accuracy % / TPF per threshold:",
        "",
        sweep_table(metrics["cells"], "test"),
        "",
        markdown_table(metrics["cells"], "test"),
    ]
    if any(c["split"] == "validation" for c in metrics["cells"]):
        parts += ["", "## Validation split (used only to choose the DMax threshold)", "",
                  markdown_table(metrics["cells"], "validation")]
    parts += [
        "",
        f"![TPF vs accuracy]({plot_name})",
        "",
        "TPF = mean over samples of (non-EOS generated tokens / NFE), prefill counted as one forward; "
        "TPS = mean of per-sample tokens / wall-clock seconds; batch 1. "
        f"Setting: {settings.get('setting', 'n/a')}.",
    ]
    return "\n".join(parts) + "\n"
