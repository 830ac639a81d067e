"""The DMax reproduction benchmark: train from scratch per seed, run the 2x2 ablation plus the
self-distillation-only control, and summarise the headline ratio over seeds.

    dmax benchmark --preset ledger --seeds 0 1 2        # writes runs/benchmark-ledger/{seed-N/, summary/}
    dmax benchmark --preset tiny-scratch --seeds 0 1 2  # the `make pipeline` default trained from scratch, 3 seeds

Per seed: pretrain -> distill -> train (OPUT) -> train (plain SFT on the same data and steps, the
control) -> evaluate {base, dmax, control} x {threshold, spd} x thresholds -> report. The summary
(JSON, markdown, PNG) holds mean +- std over seeds; criteria are those of `evaluation.criteria`.
Only orchestration lives here: every step is a stage of the stage table, run by `stages.run_stage`.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from dmax_core.config import DmaxConfig, ObjectiveConfig, load_config
from dmax_core.evaluation.criteria import summarize_seeds
from dmax_core.evaluation.records import Cell, Evaluation
from dmax_core.evaluation.report import markdown_table, plot_tradeoff, sweep_table
from dmax_core.files import atomic_write_json, atomic_write_text
from dmax_core.stages.layout import METRICS, RunLayout
from dmax_core.stages.runner import run_stage


def seed_config(preset: str, seed: int, overrides: list[str], root: Path) -> DmaxConfig:
    """The config of one seed: model init, pretrain and OPUT batches/noise all change with the seed;
    the task splits do not, so every seed is scored on the same held-out problems."""
    return load_config(preset, [
        *overrides, f"seed={seed}", f"pretrain.seed={1000 + seed}", f"train.seed={2000 + seed}",
        f"run_dir={root / f'seed-{seed}'}", "evaluate.models=[base, dmax, control]",
    ])


def run_seed(cfg: DmaxConfig, reuse: bool = False) -> Evaluation:
    metrics_path = RunLayout.of(cfg).path(METRICS)
    if reuse and metrics_path.is_file():
        return Evaluation.load(metrics_path)
    run_stage("pretrain", cfg)
    run_stage("distill", cfg)
    run_stage("train", cfg)
    control = cfg.model_copy(update={"train": cfg.train.model_copy(update={"objective": ObjectiveConfig(name="sft")})})
    run_stage("train", control)
    evaluation = run_stage("evaluate", cfg).evaluation
    run_stage("report", cfg)
    assert evaluation is not None
    return evaluation


def _fmt_spread(s: dict[str, float] | None, scale: float = 1.0, digits: int = 2) -> str:
    if not s:
        return "n/a"
    return f"{s['mean'] * scale:.{digits}f} ± {s['std'] * scale:.{digits}f} (min {s['min'] * scale:.{digits}f}, " \
           f"max {s['max'] * scale:.{digits}f})"


def render_summary(summary: dict[str, Any], command: str) -> str:
    lines = [f"# DMax reproduction benchmark — preset `{summary['preset']}`, seeds {summary['seeds']}", "",
             f"Command: `{command}`", ""]
    headline = summary["headline"]
    if headline:
        lines += [f"**Headline TPF ratio (DMax / baseline): {_fmt_spread(headline['tpf_ratio'])}**",
                  f"- accuracy change DMax − baseline (pp): {_fmt_spread(headline['accuracy_delta_pp'])}",
                  f"- baseline TPF: {_fmt_spread(headline['baseline/tpf'])}",
                  f"- DMax TPF: {_fmt_spread(headline['tpf'])}"]
    if not summary["all_seeds_valid"]:
        lines += ["", "**Some seeds have no meaningful comparison** (see the per-seed reasons below)."]
    lines += ["", "## Per seed", "", "| seed | valid | baseline | DMax | ratio | Δacc (pp) | reason |",
              "|---|---|---|---|---|---|---|"]
    for seed, h in summary["per_seed_headline"].items():
        if h["valid"]:
            b, d = h["baseline"], h.get("method", h.get("dmax"))
            lines.append(f"| {seed} | yes | thr {b['threshold']:g}: {100 * b['accuracy']:.1f}% / TPF "
                         f"{b['tpf']:.2f} | thr {d['threshold']:g}: {100 * d['accuracy']:.1f}% / TPF "
                         f"{d['tpf']:.2f} | {h['tpf_ratio']:.2f} | {h['accuracy_delta_pp']:+.1f} | |")
        else:
            lines.append(f"| {seed} | no | | | | | {h['reason']} |")
    lines += ["", "## Reproduction criteria", "", "| criterion | on means | " +
              " | ".join(f"seed {s}" for s in summary["per_seed_criteria"]) + " |",
              "|---|---|" + "---|" * len(summary["per_seed_criteria"])]
    for name, value in summary["criteria_on_means"].items():
        per = [summary["per_seed_criteria"][s][name] for s in summary["per_seed_criteria"]]
        lines.append(f"| {name} | {value} | " + " | ".join(str(v) for v in per) + " |")
    mean_cells = [Cell.from_json(c) for c in summary["mean_cells"]]
    lines += ["", "## Mean over seeds (test split)", "", "Accuracy % (mean ± std over seeds) / TPF per threshold:", "",
              sweep_table(mean_cells, "test"), "", markdown_table(mean_cells, "test"), "",
              "The standard deviation of every figure over seeds is in summary.json (`std`).", "",
              "![trade-off](tradeoff.png)"]
    return "\n".join(lines) + "\n"


def run_benchmark(preset: str, seeds: list[int], overrides: list[str], root: Path | None = None,
                  reuse: bool = False) -> Path:
    root = Path(root) if root else Path("runs") / f"benchmark-{preset}"
    per_seed = {}
    for seed in seeds:
        cfg = seed_config(preset, seed, overrides, root)
        per_seed[seed] = run_seed(cfg, reuse=reuse)
    tolerance = cfg.experiment.tolerance_pp
    summary = summarize_seeds(per_seed, tolerance)
    summary["preset"] = preset
    summary["overrides"] = overrides
    summary["settings"] = dict(per_seed[seeds[0]].settings)
    out = root / "summary"
    command = " ".join(["dmax benchmark --preset", preset, "--seeds", *map(str, seeds), *overrides])
    atomic_write_json(out / "summary.json", summary)
    ratio = summary["headline"].get("tpf_ratio")
    note = f"ratio {ratio['mean']:.2f} ± {ratio['std']:.2f} over seeds" if ratio else "no valid ratio"
    plot_tradeoff([Cell.from_json(c) for c in summary["mean_cells"]], None, out / "tradeoff.png",
                  f"dmax benchmark {preset}, mean of {len(seeds)} seed(s)  ({note})")
    atomic_write_text(out / "summary.md", render_summary(summary, command))
    return out


def load_summary(out: Path) -> dict[str, Any]:
    return json.loads((out / "summary.json").read_text())
