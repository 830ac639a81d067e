"""`evaluate`: {task} x {model} x {decoder} x {threshold} on held-out problems -> eval/metrics.json + samples.

Every cell of a task decodes the same test problems (`evaluate.batch_size` at a time; per-sample TPS is
the paper's at batch 1). The run's own task also decodes its validation split for dmax + SPD, where it
chooses the headline threshold (`evaluation.rules`); the benchmarks of `evaluate.tasks` are measured over
the same grid and reported each on its own, nothing chosen on them. Models are loaded one at a time. Each
cell's figures are logged as soon as it is measured, so a long evaluation shows progress in MLflow too.
"""

from __future__ import annotations

import gc
import json
import time
from contextlib import nullcontext
from dataclasses import asdict, dataclass, replace
from typing import Any

import torch
from tqdm.auto import tqdm

from dmax_core.config import DmaxConfig
from dmax_core.decoding import POLICIES, build_policy
from dmax_core.env import device_name, environment_info
from dmax_core.errors import ConfigError
from dmax_core.evaluation.records import Cell, Evaluation
from dmax_core.evaluation.rules import compute_headline, ratio_interval
from dmax_core.evaluation.runner import decode_problems
from dmax_core.evaluation.speed import RoutingMonitor, bytes_per_forward, mbu, peak_bandwidth
from dmax_core.evaluation.traces import record_traces
from dmax_core.files import atomic_directory, atomic_write_json, atomic_write_text, checksums_digest
from dmax_core.metric_logger import MetricLogger
from dmax_core.results import StageResult
from dmax_core.stages.common import load_for_decoding, setup, task_of, task_splits
from dmax_core.stages.layout import EVAL, METRICS_FILE, SAMPLES_FILE, TRACES_FILE, RunLayout
from dmax_core.tasks import Problem, Task, build_task


def release_memory() -> None:
    """Return a dropped model's memory before the next one loads (one 16B model at a time on a GPU)."""
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


@dataclass(frozen=True)
class EvalTask:
    """One task of the evaluation: the run's own (`name` None: test cells, plus validation cells that choose
    the headline's DMax threshold) or a benchmark of `evaluate.tasks` (test cells only)."""

    name: str | None
    task: Task
    problems: dict[str, list[Problem]]


def _decoder_order(ev: Any) -> Any:
    """Decoders in the order `evaluate.decoders` lists them, the others after."""
    listed = list(ev.decoders)
    return lambda d: (listed.index(d) if d in listed else len(listed), d)


def evaluation_tasks(cfg: DmaxConfig) -> list[EvalTask]:
    """The run's own task (when it has scored test problems) and every benchmark of `evaluate.tasks`."""
    ev = cfg.evaluate
    out = []
    task = task_of(cfg)
    if task.has_reference:
        splits = task_splits(cfg, task)
        problems = {"test": splits["test"][: ev.n_test] if ev.n_test else splits["test"]}
        if "dmax" in ev.models and "spd" in ev.decoders_of.get("dmax", ev.decoders):  # chooses the DMax threshold
            problems["validation"] = splits["validation"][: ev.n_validation] if ev.n_validation else \
                splits["validation"]
        if problems["test"]:
            out.append(EvalTask(None, task, problems))
    for spec in ev.tasks:
        benchmark = build_task(spec.name, **spec.knobs)
        out.append(EvalTask(spec.name, benchmark, {"test": task_splits(cfg, benchmark, spec.name)["test"]}))
    if not out:
        raise ConfigError(f"nothing to evaluate: task {cfg.task.name!r} has no scored test problems and "
                          "evaluate.tasks is empty")
    return out


def trace_samples(cfg: DmaxConfig, model: Any, tokenizer: Any, tasks: list[EvalTask], model_name: str) -> list[dict]:
    """SPD traces of the first `report.trace_samples` test problems of every task (`evaluation.traces`)."""
    if not cfg.report.trace_samples or "spd" not in POLICIES.names():
        return []
    threshold = min(cfg.evaluate.thresholds)
    out = []
    for spec in tasks:
        traces = record_traces(
            model, tokenizer, spec.task, spec.problems["test"][: cfg.report.trace_samples],
            build_policy("spd", threshold, cfg.decoding.knobs("spd")), gen_length=cfg.evaluate.gen_length,
            block_length=cfg.block_length, max_blocks=cfg.report.trace_blocks,
            max_forwards_per_block=cfg.decoding.max_forwards_per_block)
        out += [{"task": spec.name or cfg.task.name, "model": model_name, "decoder": "spd", "threshold": threshold,
                 **trace} for trace in traces]
    return out


def evaluate(cfg: DmaxConfig, logger: MetricLogger) -> StageResult:
    """Measure every cell of the grid on every task, apply the headline rule, write `eval/`.

    Models are loaded one at a time (a 16B checkpoint at a time fits one GPU)."""
    layout = RunLayout.of(cfg)
    setup(cfg, "decode", cfg.evaluate.batch_size)
    ev = cfg.evaluate
    tasks = evaluation_tasks(cfg)  # every dataset is read (and checked) before any model is loaded
    decoders = sorted({d for m in ev.models for d in ev.decoders_of.get(m, ev.decoders)}, key=_decoder_order(ev))
    plan = [(t, d, th, split) for t in tasks for split in t.problems for d in decoders for th in ev.thresholds
            if split == "test" or d == "spd"]
    cells: list[Cell] = []
    samples_of: dict[tuple, list] = {}  # (task, cell key) -> its samples, for the headline's interval
    kept_samples: list[dict] = []
    dtypes: set[str] = set()
    device = device_name()
    measure_bandwidth = peak_bandwidth(device) is not None  # MBU where the device's peak is known (GPUs)
    work = [(m, item) for m in ev.models for item in plan
            if (item[3] == "test" or m == "dmax") and item[1] in ev.decoders_of.get(m, ev.decoders)]
    bar = tqdm(total=sum(len(item[0].problems[item[3]]) for _, item in work), desc="evaluate", unit="problem",
               dynamic_ncols=True)
    traces: list[dict] = []
    tracer = "dmax" if "dmax" in ev.models else ev.models[-1]
    for model_name in ev.models:
        model, tokenizer = load_for_decoding(cfg, layout.model(model_name, ev.checkpoints))
        dtypes.add(str(model.dtype).removeprefix("torch."))
        for spec, decoder, threshold, split in (item for m, item in work if m == model_name):
            routing = RoutingMonitor()
            with routing.attach(model) if measure_bandwidth else nullcontext():
                run = decode_problems(
                    model, tokenizer, spec.task, spec.problems[split],
                    build_policy(decoder, threshold, cfg.decoding.knobs(decoder)), gen_length=ev.gen_length,
                    block_length=cfg.block_length, batch_size=ev.batch_size,
                    max_forwards_per_block=cfg.decoding.max_forwards_per_block, compiled=cfg.decoding.compile,
                    on_sample=lambda _sample: bar.update(1),
                )
            samples = run.samples
            utilisation = (mbu(bytes_per_forward(model, routing.mean_experts()), run.forwards_per_second, device)
                           if measure_bandwidth else None)
            cell = Cell.from_samples(model_name, decoder, threshold, split, samples, batch_size=run.batch_size,
                                     throughput=run.throughput, forwards_per_second=run.forwards_per_second,
                                     mbu=utilisation, task=spec.name)
            cells.append(cell)
            samples_of[(spec.name, *cell.key)] = samples
            bar.set_postfix(cell=f"{spec.name or cfg.task.name}/{cell.label}", acc=f"{cell.accuracy:.3f}",
                            tpf=f"{cell.tpf:.2f}")
            logger.log_metrics(cell.metrics())
            key = {"model": model_name, "decoder": decoder, "threshold": threshold, "split": split,
                   **({"task": spec.name} if spec.name else {})}
            kept_samples += [{**key, **asdict(s)} for s in samples[: ev.samples_to_keep]]
        if model_name == tracer:
            traces += trace_samples(cfg, model, tokenizer, tasks, model_name)
        del model, tokenizer
        release_memory()
    bar.close()
    dtype = ", ".join(sorted(dtypes))

    env = environment_info()
    headline = compute_headline(cells, cfg.report.accuracy_tolerance_pp, cfg.report.min_base_accuracy)
    if headline.valid:
        headline = replace(headline, tpf_ratio_interval=ratio_interval(
            [s.tpf for s in samples_of[(None, *headline.baseline.key)]],
            [s.tpf for s in samples_of[(None, *headline.dmax.key)]],
            seed=cfg.seed))
    evaluation = Evaluation(
        cells=tuple(cells),
        headline=headline,
        settings={
            "preset": cfg.preset, "block_length": cfg.block_length, "gen_length": ev.gen_length,
            "tasks": {spec.name or cfg.task.name: {split: len(p) for split, p in spec.problems.items()}
                      for spec in tasks},
            "n_test": len(tasks[0].problems["test"]), "n_validation": len(tasks[0].problems.get("validation", [])),
            "batch_size": ev.batch_size, "dtype": dtype, "decoding": cfg.decoding.model_dump(mode="json"),
            **env,
            "setting": f"batch {ev.batch_size}, {env['device']}, {env['threads']} threads, block {cfg.block_length}, "
                       f"gen {ev.gen_length}, {dtype}",
            "timestamp": time.strftime("%Y-%m-%dT%H:%M:%S"),
        },
    )
    with atomic_directory(layout.path(EVAL)) as staging:
        atomic_write_text(staging / SAMPLES_FILE, "".join(json.dumps(s) + "\n" for s in kept_samples))
        atomic_write_json(staging / TRACES_FILE, {"traces": traces})
        evaluation.save(staging / METRICS_FILE)
    return StageResult(
        stage="evaluate",
        outputs={EVAL: layout.path(EVAL)},
        metrics=evaluation.headline.metrics(),
        # Where and how fast: beside every cell's throughput, forwards/s and MBU (metrics) in MLflow.
        tags={"dmax.eval_device": device, "dmax.eval_dtype": dtype,
              "dmax.eval_batch_size": str(ev.batch_size), "dmax.eval_threads": str(env["threads"])},
        evaluation=evaluation,
        evaluated={family: digest for name in ev.models
                   if (family := layout.family(name))
                   and (digest := checksums_digest(layout.model(name, ev.checkpoints)))},
    )
