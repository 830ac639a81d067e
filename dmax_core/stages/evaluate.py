"""`evaluate`: {task} x {model} x {decoder} x {threshold} on held-out problems -> eval/metrics.json + samples.

The tasks are the run's own (when it is scored) and every benchmark of `evaluate.tasks`; on each, the
experiment (`experiment`, `evaluation.rules`) compares a baseline arm with a method arm. Every cell of a
task decodes the same test problems (`evaluate.batch_size` at a time; per-sample TPS is the paper's at
batch 1). An arm that chooses its threshold on the validation split also decodes that split over the
sweep (the run's own task has one; a benchmark gets one from `experiment.tasks.<name>.holdout`); an arm
with a fixed threshold adds that threshold to its test cells. Models are loaded one at a time. Each
cell's figures are logged as soon as it is measured, so a long evaluation shows progress in MLflow too.
"""

from __future__ import annotations

import gc
import json
import logging
import time
from contextlib import nullcontext
from dataclasses import asdict, dataclass, replace
from typing import Any

import torch
from tqdm.auto import tqdm

from dmax_core.config import DmaxConfig
from dmax_core.decoding import build_policy
from dmax_core.env import device_name, environment_info
from dmax_core.errors import ConfigError
from dmax_core.evaluation.comparison import rank_decoders
from dmax_core.evaluation.records import Cell, Evaluation
from dmax_core.evaluation.rules import compute_headline, ratio_interval
from dmax_core.evaluation.runner import decode_problems
from dmax_core.evaluation.speed import RoutingMonitor, bytes_per_forward, mbu, peak_bandwidth
from dmax_core.evaluation.traces import trace_record
from dmax_core.files import atomic_directory, atomic_write_json, atomic_write_text, checksums_digest
from dmax_core.metric_logger import MetricLogger
from dmax_core.results import StageResult
from dmax_core.stages.common import load_for_decoding, setup, task_of, task_splits
from dmax_core.stages.eval_cache import EvalCache, key_of, problems_digest, weights_identity
from dmax_core.stages.layout import EVAL, EVAL_CELLS, METRICS_FILE, SAMPLES_FILE, TRACES_FILE, RunLayout
from dmax_core.tasks import Problem, Task, build_task

log = logging.getLogger(__name__)


def release_memory() -> None:
    """Return a dropped model's memory before the next one loads (one 16B model at a time on a GPU)."""
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


@dataclass(frozen=True)
class EvalTask:
    """One evaluated task: its name, the task, its problems by split (`test`, and `validation` where an arm
    chooses on it) and the experiment's arms on it."""

    name: str
    task: Task
    problems: dict[str, list[Problem]]
    arms: tuple[Any, Any]  # (baseline, method): `config.ArmConfig`


def _decoder_order(ev: Any) -> Any:
    """Decoders in the order `evaluate.decoders` lists them, the others after."""
    listed = list(ev.decoders)
    return lambda d: (listed.index(d) if d in listed else len(listed), d)


def _measured(ev: Any, arm: Any) -> bool:
    return arm.model in ev.models and arm.decoder in ev.decoders_of.get(arm.model, ev.decoders)


def _with_holdout(name: str, problems: dict[str, list[Problem]], holdout: int) -> dict[str, list[Problem]]:
    """The first `holdout` test problems become the validation split, the rest the test split."""
    if not holdout:
        return problems
    test = problems["test"]
    if holdout >= len(test):
        raise ConfigError(f"experiment.tasks.{name}.holdout={holdout} leaves no test problems (the task has "
                          f"{len(test)})")
    return {**problems, "validation": test[:holdout], "test": test[holdout:]}


def evaluation_tasks(cfg: DmaxConfig) -> list[EvalTask]:
    """The run's own task (when it has scored test problems) and every benchmark of `evaluate.tasks`, each
    with the splits its experiment needs (a validation split only where an arm chooses on it)."""
    ev, experiment = cfg.evaluate, cfg.experiment
    found: list[tuple[str, Task, dict[str, list[Problem]]]] = []
    task = task_of(cfg)
    if task.has_reference:
        splits = task_splits(cfg, task)
        problems = {"test": splits["test"][: ev.n_test] if ev.n_test else splits["test"],
                    "validation": splits["validation"][: ev.n_validation] if ev.n_validation else
                    splits["validation"]}
        if problems["test"]:
            found.append((cfg.task.name, task, problems))
    for spec in ev.tasks:
        benchmark = build_task(spec.name, **spec.knobs)
        splits = task_splits(cfg, benchmark, spec.name)
        found.append((spec.name, benchmark, {"test": splits["test"], "validation": splits["validation"]}))
    if not found:
        raise ConfigError(f"nothing to evaluate: task {cfg.task.name!r} has no scored test problems and "
                          "evaluate.tasks is empty")
    out = []
    for name, task, problems in found:
        problems = _with_holdout(name, problems, experiment.holdout(name))
        arms = experiment.arms(name)
        # Without a validation split, an arm that chooses on it gets no cells: its headline says why.
        choosing = problems["validation"] and any(
            arm.fixed is None and arm.choose_on == "validation" and _measured(ev, arm) for arm in arms)
        out.append(EvalTask(name, task, {"test": problems["test"], **(
            {"validation": problems["validation"]} if choosing else {})}, arms))
    return out


def cell_plan(cfg: DmaxConfig, tasks: list[EvalTask]) -> list[tuple[str, EvalTask, str, float, str]]:
    """(model, task, decoder, threshold, split) of every cell, grouped by model (loaded once each).

    Test cells: every evaluated {model, decoder} over the sweep, plus each arm's fixed threshold for its
    own pair. Validation cells: the pairs of the arms that choose on it, over the sweep."""
    ev = cfg.evaluate
    decoders = sorted({d for m in ev.models for d in ev.decoders_of.get(m, ev.decoders)}, key=_decoder_order(ev))
    plan = []
    for model in ev.models:
        for spec in tasks:
            for split in spec.problems:
                for decoder in decoders:
                    if decoder not in ev.decoders_of.get(model, ev.decoders):
                        continue
                    arms = [a for a in spec.arms if (a.model, a.decoder) == (model, decoder)]
                    if split == "test":
                        extra = [a.fixed for a in arms if a.fixed is not None and a.fixed not in ev.thresholds]
                    elif any(a.fixed is None and a.choose_on == split for a in arms):
                        extra = []
                    else:
                        continue
                    for threshold in [*ev.thresholds, *dict.fromkeys(extra)]:
                        plan.append((model, spec, decoder, threshold, split))
    return plan


def traced_tasks(tasks: list[EvalTask], model_name: str, decoder: str) -> list[EvalTask]:
    """The tasks whose method arm is `model_name` + `decoder`: the ones whose decoding the report pictures."""
    return [spec for spec in tasks if (spec.arms[1].model, spec.arms[1].decoder) == (model_name, decoder)]


def traces_wanted(cfg: DmaxConfig, tasks: list[EvalTask], spec: EvalTask, model_name: str, decoder: str,
                  threshold: float, split: str) -> int:
    """How many of this cell's samples the report pictures: `report.trace_samples` for the method arm's
    test cell at the sweep's lowest threshold (where SPD revises most), recorded during that cell's own
    decode; none for every other cell."""
    if split != "test" or threshold != min(cfg.evaluate.thresholds) or spec not in traced_tasks(
            tasks, model_name, decoder):
        return 0
    return cfg.report.trace_samples


def evaluate(cfg: DmaxConfig, logger: MetricLogger) -> StageResult:
    """Measure every cell of the grid on every task, apply the headline rule, write `eval/`.

    Models are loaded one at a time (a 16B checkpoint at a time fits one GPU)."""
    layout = RunLayout.of(cfg)
    setup(cfg, "decode", cfg.evaluate.batch_size)
    ev = cfg.evaluate
    tasks = evaluation_tasks(cfg)  # every dataset is read (and checked) before any model is loaded
    work = cell_plan(cfg, tasks)
    cells: list[Cell] = []
    samples_of: dict[tuple, list] = {}  # cell key -> its samples, for the headlines' intervals
    kept_samples: list[dict] = []
    dtypes: set[str] = set()
    device = device_name()
    measure_bandwidth = peak_bandwidth(device) is not None  # MBU where the device's peak is known (GPUs)
    bar = tqdm(total=sum(len(spec.problems[split]) for _, spec, _, _, split in work), desc="evaluate",
               unit="problem", dynamic_ncols=True)
    traces_of: dict[tuple[str, str, str], list[dict]] = {}  # (model, decoder, task) -> its traced samples
    cache = EvalCache(layout.path(EVAL_CELLS))
    frame = {"gen_length": ev.gen_length, "block_length": cfg.block_length, "batch_size": ev.batch_size,
             "max_forwards_per_block": cfg.decoding.max_forwards_per_block, "compile": cfg.decoding.compile,
             "dtype": cfg.model.dtype, "device": device}
    resumed = 0
    for model_name in ev.models:
        directory = layout.model(model_name, ev.checkpoints)
        weights = weights_identity(directory)
        loaded: tuple[Any, Any] | None = None  # loaded only when something of it must be decoded

        def model_and_tokenizer(directory: Any = directory) -> tuple[Any, Any]:
            nonlocal loaded
            if loaded is None:
                loaded = load_for_decoding(cfg, directory)
                dtypes.add(str(loaded[0].dtype).removeprefix("torch."))
            return loaded

        for _, spec, decoder, threshold, split in (item for item in work if item[0] == model_name):
            knobs = cfg.decoding.knobs(decoder)
            n_traces = traces_wanted(cfg, tasks, spec, model_name, decoder, threshold, split)
            key = key_of({"task": spec.name, "split": split, "problems": problems_digest(spec.problems[split]),
                          "model": model_name, "weights": weights, "decoder": decoder, "threshold": threshold,
                          "knobs": knobs, **frame,
                          **({"traces": [n_traces, cfg.report.trace_blocks]} if n_traces else {})})
            found = cache.load_cell(key)
            if found is not None:
                cell, samples, cell_dtype, cell_traces = found
                dtypes.add(cell_dtype)
                resumed += 1
                bar.update(len(samples))
            else:
                model, tokenizer = model_and_tokenizer()
                routing = RoutingMonitor()
                with routing.attach(model) if measure_bandwidth else nullcontext():
                    run = decode_problems(
                        model, tokenizer, spec.task, spec.problems[split],
                        build_policy(decoder, threshold, knobs), gen_length=ev.gen_length,
                        block_length=cfg.block_length, batch_size=ev.batch_size,
                        max_forwards_per_block=cfg.decoding.max_forwards_per_block, compiled=cfg.decoding.compile,
                        on_sample=lambda _sample: bar.update(1), trace_rows=n_traces,
                    )
                samples = run.samples
                utilisation = (mbu(bytes_per_forward(model, routing.mean_experts()), run.forwards_per_second,
                                   device) if measure_bandwidth else None)
                cell = Cell.from_samples(model_name, decoder, threshold, split, samples, batch_size=run.batch_size,
                                         throughput=run.throughput, forwards_per_second=run.forwards_per_second,
                                         mbu=utilisation, task=spec.name)
                cell_traces = [
                    {"task": spec.name, "model": model_name, "decoder": decoder, "threshold": threshold,
                     **trace_record(tokenizer, spec.problems[split][i], run.traced[i], samples[i].text,
                                    block_length=cfg.block_length, max_blocks=cfg.report.trace_blocks)}
                    for i in sorted(run.traced)]
                cache.save_cell(key, cell, samples, str(model.dtype).removeprefix("torch."), cell_traces)
            cells.append(cell)
            samples_of[cell.key] = samples
            if cell_traces:
                traces_of[(model_name, decoder, spec.name)] = cell_traces
            bar.set_postfix(cell=f"{spec.name}/{cell.label}", acc=f"{cell.accuracy:.3f}", tpf=f"{cell.tpf:.2f}")
            logger.log_metrics(cell.metrics())
            kept = {"model": model_name, "decoder": decoder, "threshold": threshold, "split": split, "task": spec.name}
            kept_samples += [{**kept, **asdict(s)} for s in samples[: ev.samples_to_keep]]
        loaded = model = tokenizer = None
        release_memory()
    # Traces in the report's order: by model, then the method arms' decoders, then task.
    traces = [trace for model_name in ev.models for decoder in dict.fromkeys(spec.arms[1].decoder for spec in tasks)
              for spec in traced_tasks(tasks, model_name, decoder)
              for trace in traces_of.get((model_name, decoder, spec.name), [])]
    if resumed:
        log.info("evaluate: %d of %d cells read from the interrupted run's %s", resumed, len(work),
                 layout.path(EVAL_CELLS))
    bar.close()
    dtype = ", ".join(sorted(dtypes))

    env = environment_info()
    headlines = {}
    for spec in tasks:
        headline = compute_headline(cells, cfg.experiment, spec.name)
        if headline.valid:
            headline = replace(headline, tpf_ratio_interval=ratio_interval(
                [s.tpf for s in samples_of[headline.baseline.key]],
                [s.tpf for s in samples_of[headline.method.key]],
                seed=cfg.seed))
        headlines[spec.name] = headline
    rankings = {spec.name: rank_decoders(cells, samples_of, spec.name, tolerance_pp=cfg.experiment.tolerance_pp,
                                         seed=cfg.seed) for spec in tasks}
    primary = cfg.primary_task if cfg.primary_task in headlines else tasks[0].name
    evaluation = Evaluation(
        cells=tuple(cells),
        headline=headlines[primary],
        headlines=headlines,
        rankings=rankings,
        settings={
            "preset": cfg.preset, "block_length": cfg.block_length, "gen_length": ev.gen_length,
            "tasks": {spec.name: {split: len(p) for split, p in spec.problems.items()} for spec in tasks},
            "primary_task": primary,
            "experiment": cfg.experiment.model_dump(mode="json"),
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
    cache.clear()  # eval/ is complete: a rerun measures afresh
    return StageResult(
        stage="evaluate",
        outputs={EVAL: layout.path(EVAL)},
        metrics={k: v for k, v in evaluation.metrics().items()
                 if not k.startswith("eval/") or "/headline/" in k or "/rank/" in k},
        # Where and how fast: beside every cell's throughput, forwards/s and MBU (metrics) in MLflow.
        tags={"dmax.eval_device": device, "dmax.eval_dtype": dtype,
              "dmax.eval_batch_size": str(ev.batch_size), "dmax.eval_threads": str(env["threads"])},
        evaluation=evaluation,
        evaluated={family: digest for name in ev.models
                   if (family := layout.family(name))
                   and (digest := checksums_digest(layout.model(name, ev.checkpoints)))},
        champion_family=layout.family(cfg.experiment.arms(primary)[1].model),
    )
