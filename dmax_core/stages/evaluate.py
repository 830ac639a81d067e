"""`evaluate`: {model} x {decoder} x {threshold} on held-out problems -> eval/metrics.json + samples.

Every cell decodes the same test problems at batch 1 (as the paper measures TPF/TPS); the validation split
is decoded only for dmax + SPD, where it chooses the headline threshold (`evaluation.rules`). Each cell's
figures are logged as soon as it is measured, so a long evaluation shows progress in MLflow too.
"""

from __future__ import annotations

import json
import time

from tqdm.auto import tqdm

from dmax_core.bundle import load_bundle
from dmax_core.config import DmaxConfig
from dmax_core.decoding import build_policy
from dmax_core.env import environment_info
from dmax_core.evaluation.records import Cell, Evaluation
from dmax_core.evaluation.rules import compute_headline
from dmax_core.evaluation.runner import decode_problems
from dmax_core.files import atomic_directory, atomic_write_text, checksums_digest
from dmax_core.metric_logger import MetricLogger
from dmax_core.results import StageResult
from dmax_core.stages.common import setup, task_of, task_splits
from dmax_core.stages.layout import EVAL, METRICS_FILE, SAMPLES_FILE, RunLayout


def evaluate(cfg: DmaxConfig, logger: MetricLogger) -> StageResult:
    """Measure every cell of the grid, apply the headline rule, write `eval/`."""
    layout = RunLayout.of(cfg)
    setup(cfg)
    ev = cfg.evaluate
    task = task_of(cfg)
    splits = task_splits(cfg, task)
    problems = {
        "test": splits["test"][: ev.n_test] if ev.n_test else splits["test"],
        "validation": splits["validation"][: ev.n_validation] if ev.n_validation else splits["validation"],
    }
    loaded = {name: load_bundle(layout.model(name)) for name in ev.models}

    plan = [(m, d, t, "test") for m in ev.models for d in ev.decoders for t in ev.thresholds]
    if "dmax" in ev.models and "spd" in ev.decoders:  # validation only chooses the DMax threshold
        plan += [("dmax", "spd", t, "validation") for t in ev.thresholds]
    cells: list[Cell] = []
    kept_samples: list[dict] = []
    bar = tqdm(plan, desc="evaluate", dynamic_ncols=True)
    for model_name, decoder, threshold, split in bar:
        model, tokenizer = loaded[model_name]
        samples = decode_problems(
            model, tokenizer, task, problems[split], build_policy(decoder, threshold, cfg.decoding.knobs(decoder)),
            gen_length=ev.gen_length, block_length=cfg.block_length,
            max_forwards_per_block=cfg.decoding.max_forwards_per_block,
        )
        cell = Cell.from_samples(model_name, decoder, threshold, split, samples)
        cells.append(cell)
        bar.set_postfix(cell=cell.label, acc=f"{cell.accuracy:.3f}", tpf=f"{cell.tpf:.2f}")
        logger.log_metrics(cell.metrics())
        key = {"model": model_name, "decoder": decoder, "threshold": threshold, "split": split}
        kept_samples += [{**key, **vars(s)} for s in samples[: ev.samples_to_keep]]

    env = environment_info()
    evaluation = Evaluation(
        cells=tuple(cells),
        headline=compute_headline(cells, cfg.report.accuracy_tolerance_pp, cfg.report.min_base_accuracy),
        settings={
            "preset": cfg.preset, "block_length": cfg.block_length, "gen_length": ev.gen_length,
            "n_test": len(problems["test"]), "n_validation": len(problems["validation"]), "batch_size": 1,
            "decoding": cfg.decoding.model_dump(mode="json"), **env,
            "setting": f"batch 1, {env['device']}, {env['threads']} threads, block {cfg.block_length}, "
                       f"gen {ev.gen_length}, fp32",
            "timestamp": time.strftime("%Y-%m-%dT%H:%M:%S"),
        },
    )
    with atomic_directory(layout.path(EVAL)) as staging:
        atomic_write_text(staging / SAMPLES_FILE, "".join(json.dumps(s) + "\n" for s in kept_samples))
        evaluation.save(staging / METRICS_FILE)
    return StageResult(
        stage="evaluate",
        outputs={EVAL: layout.path(EVAL)},
        metrics=evaluation.headline.metrics(),
        evaluation=evaluation,
        evaluated={family: digest for name in ev.models
                   if (family := layout.family(name)) and (digest := checksums_digest(layout.model(name)))},
    )
