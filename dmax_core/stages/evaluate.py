"""`evaluate`: {model} x {decoder} x {threshold} on held-out problems -> eval/metrics.json + samples.

Every cell decodes the same test problems at batch 1 (as the paper measures TPF/TPS); the validation split
is decoded only for dmax + SPD, where it chooses the headline threshold (`evaluation.rules`). Each cell's
figures are logged as soon as it is measured, so a long evaluation shows progress in MLflow too.
"""

from __future__ import annotations

import json
import time
from contextlib import nullcontext
from dataclasses import replace

from tqdm.auto import tqdm

from dmax_core.bundle import load_bundle
from dmax_core.config import DmaxConfig
from dmax_core.decoding import build_policy
from dmax_core.env import device_name, environment_info
from dmax_core.evaluation.records import Cell, Evaluation
from dmax_core.evaluation.rules import compute_headline, ratio_interval
from dmax_core.evaluation.runner import decode_problems
from dmax_core.evaluation.speed import RoutingMonitor, bytes_per_forward, mbu, peak_bandwidth
from dmax_core.files import atomic_directory, atomic_write_text, checksums_digest
from dmax_core.metric_logger import MetricLogger
from dmax_core.results import StageResult
from dmax_core.stages.common import setup, task_of, task_splits
from dmax_core.stages.layout import EVAL, METRICS_FILE, SAMPLES_FILE, RunLayout


def dtype_name(loaded: dict[str, tuple]) -> str:
    """The weight dtype(s) of the loaded models, as the setting names them (`float32`, `bfloat16`)."""
    return ", ".join(sorted({str(model.dtype).removeprefix("torch.") for model, _ in loaded.values()}))


def evaluate(cfg: DmaxConfig, logger: MetricLogger) -> StageResult:
    """Measure every cell of the grid, apply the headline rule, write `eval/`."""
    layout = RunLayout.of(cfg)
    setup(cfg, "decode", cfg.evaluate.batch_size)
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
    samples_of: dict[tuple, list] = {}  # cell key -> its samples, for the headline's interval
    kept_samples: list[dict] = []
    device = device_name()
    measure_bandwidth = peak_bandwidth(device) is not None  # MBU where the device's peak is known (GPUs)
    bar = tqdm(plan, desc="evaluate", dynamic_ncols=True)
    for model_name, decoder, threshold, split in bar:
        model, tokenizer = loaded[model_name]
        routing = RoutingMonitor()
        with routing.attach(model) if measure_bandwidth else nullcontext():
            run = decode_problems(
                model, tokenizer, task, problems[split],
                build_policy(decoder, threshold, cfg.decoding.knobs(decoder)), gen_length=ev.gen_length,
                block_length=cfg.block_length, batch_size=ev.batch_size,
                max_forwards_per_block=cfg.decoding.max_forwards_per_block, compiled=cfg.decoding.compile,
            )
        samples = run.samples
        utilisation = (mbu(bytes_per_forward(model, routing.mean_experts()), run.forwards_per_second, device)
                       if measure_bandwidth else None)
        cell = Cell.from_samples(model_name, decoder, threshold, split, samples, batch_size=run.batch_size,
                                 throughput=run.throughput, forwards_per_second=run.forwards_per_second,
                                 mbu=utilisation)
        cells.append(cell)
        samples_of[cell.key] = samples
        bar.set_postfix(cell=cell.label, acc=f"{cell.accuracy:.3f}", tpf=f"{cell.tpf:.2f}")
        logger.log_metrics(cell.metrics())
        key = {"model": model_name, "decoder": decoder, "threshold": threshold, "split": split}
        kept_samples += [{**key, **vars(s)} for s in samples[: ev.samples_to_keep]]

    env = environment_info()
    headline = compute_headline(cells, cfg.report.accuracy_tolerance_pp, cfg.report.min_base_accuracy)
    if headline.valid:
        headline = replace(headline, tpf_ratio_interval=ratio_interval(
            [s.tpf for s in samples_of[headline.baseline.key]], [s.tpf for s in samples_of[headline.dmax.key]],
            seed=cfg.seed))
    evaluation = Evaluation(
        cells=tuple(cells),
        headline=headline,
        settings={
            "preset": cfg.preset, "block_length": cfg.block_length, "gen_length": ev.gen_length,
            "n_test": len(problems["test"]), "n_validation": len(problems["validation"]),
            "batch_size": ev.batch_size, "dtype": dtype_name(loaded), "decoding": cfg.decoding.model_dump(mode="json"),
            **env,
            "setting": f"batch {ev.batch_size}, {env['device']}, {env['threads']} threads, block {cfg.block_length}, "
                       f"gen {ev.gen_length}, {dtype_name(loaded)}",
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
        # Where and how fast: beside every cell's throughput, forwards/s and MBU (metrics) in MLflow.
        tags={"dmax.eval_device": device, "dmax.eval_dtype": dtype_name(loaded),
              "dmax.eval_batch_size": str(ev.batch_size), "dmax.eval_threads": str(env["threads"])},
        evaluation=evaluation,
        evaluated={family: digest for name in ev.models
                   if (family := layout.family(name)) and (digest := checksums_digest(layout.model(name)))},
    )
