"""`distill`: the base model answers training prompts with its own decoder; the answers are the dataset.

Spec §2.1: OPUT trains on the base model's trajectories, not on reference solutions. Incorrect answers
are kept unless `distill.keep_incorrect` is false (the paper does not filter).
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pyarrow as pa
from tqdm.auto import tqdm

from dmax_core.config import DmaxConfig
from dmax_core.decoding import build_policy
from dmax_core.errors import DataError
from dmax_core.evaluation.records import Cell, Sample, summarize
from dmax_core.evaluation.runner import DecodeRun, decode_problems
from dmax_core.files import checksums_digest, sha256_file
from dmax_core.metric_logger import MetricLogger
from dmax_core.results import DatasetUse, StageResult
from dmax_core.stages.common import load_for_decoding, setup, task_of, task_splits
from dmax_core.stages.datasets import trajectory_dataset
from dmax_core.stages.layout import BASE, TRAJECTORIES, RunLayout
from dmax_core.tasks import Problem, Task
from dmax_core.tasks.datafiles import read_rows
from dmax_core.trajectories import (
    load_trajectories,
    read_manifest,
    read_trajectory_table,
    write_trajectories,
    write_trajectory_pairs,
    write_trajectory_table,
)


def distill(cfg: DmaxConfig, logger: MetricLogger) -> StageResult:
    """Decode `distill.n_prompts` training prompts with the base model -> `trajectories/`, or import a
    released trajectory dataset (`distill.trajectories`).

    With `distill.shards=K` the prompts are split into K contiguous shards, each decoded into its own
    directory (`distill.shard=i` decodes shard i alone: one worker's job) and merged in order once all exist;
    a shard already decoded for the same prompts, decoder and base model is not decoded again. Each row
    decodes exactly as alone, so the merged dataset is the unsharded one, byte for byte."""
    layout = RunLayout.of(cfg)
    if cfg.distill.trajectories:
        return import_released(cfg, layout)
    setup(cfg, "decode", cfg.distill.batch_size)
    task = task_of(cfg)
    problems = task_splits(cfg, task)["train"][: cfg.distill.n_prompts]
    if not problems:
        raise DataError(f"task {cfg.task.name!r} has no training prompts to distill (set its split to train)")
    if cfg.distill.shards > 1:
        return distill_sharded(cfg, layout, task, problems)
    samples, run = _decode(cfg, layout, task, problems)
    rows = [s for s in samples if cfg.distill.keep_incorrect or s.correct]
    if not rows:
        raise DataError("distillation produced no usable trajectories (all answers were filtered out)")
    # How well and how fast the teacher answered, as one evaluation cell on the prompts it was given.
    teacher = Cell.from_samples("base", cfg.distill.decoder, cfg.distill.threshold, "train", samples,
                                batch_size=run.batch_size, throughput=run.throughput)
    figures = {name: teacher.figures()[name] for name in ("accuracy", "tpf", "nfe", "tokens", "throughput")
               if name != "accuracy" or task.has_reference}
    digest = write_trajectories(layout.path(TRAJECTORIES), rows, {
        "teacher": {"decoder": cfg.distill.decoder, "threshold": cfg.distill.threshold, **figures},
    })
    return StageResult(
        stage="distill",
        outputs={TRAJECTORIES: layout.path(TRAJECTORIES)},
        metrics={**{f"distill/{name}": value for name, value in figures.items()}, "distill/rows": float(len(rows))},
        tags={"dmax.dataset_digest": digest},
        datasets=(_written(cfg, layout, digest),),
    )


def _decode(cfg: DmaxConfig, layout: RunLayout, task: Task, problems: list[Problem],
            label: str = "distill") -> tuple[list[Sample], DecodeRun]:
    """The base model's answers to `problems`, with a progress bar."""
    model, tokenizer = load_for_decoding(cfg, layout.path(BASE))
    policy = build_policy(cfg.distill.decoder, cfg.distill.threshold, cfg.decoding.knobs(cfg.distill.decoder))
    bar = tqdm(total=len(problems), desc=label, dynamic_ncols=True)
    done = {"correct": 0, "samples": 0}

    def progress(sample: Sample) -> None:
        done["samples"] += 1
        done["correct"] += int(sample.correct)
        bar.update(1)
        if task.has_reference:
            bar.set_postfix(acc=f"{done['correct'] / done['samples']:.3f}", tpf=f"{sample.tpf:.2f}")
        else:
            bar.set_postfix(tpf=f"{sample.tpf:.2f}")

    run = decode_problems(
        model, tokenizer, task, problems, policy, gen_length=cfg.distill.gen_length,
        block_length=cfg.block_length, batch_size=cfg.distill.batch_size,
        max_forwards_per_block=cfg.decoding.max_forwards_per_block, compiled=cfg.decoding.compile,
        on_sample=progress,
    )
    bar.close()
    return run.samples, run


# ------------------------------------------------------------------------------------------ shards
def shard_problems(problems: list[Problem], shard: int, shards: int) -> list[Problem]:
    """Shard `shard` of `shards` contiguous, near-equal slices (their concatenation is `problems`)."""
    size, extra = divmod(len(problems), shards)
    start = shard * size + min(shard, extra)
    return problems[start : start + size + (1 if shard < extra else 0)]


def shard_key(cfg: DmaxConfig, layout: RunLayout, problems: list[Problem]) -> str:
    """What a shard's answers depend on: its prompts, the decoder settings and the base weights."""
    digest = hashlib.sha256()
    for problem in problems:
        digest.update(problem.question.encode() + b"\0")
    settings = {"decoder": cfg.distill.decoder, "threshold": cfg.distill.threshold,
                "knobs": cfg.decoding.knobs(cfg.distill.decoder), "gen_length": cfg.distill.gen_length,
                "block_length": cfg.block_length, "cap": cfg.decoding.max_forwards_per_block,
                "base": checksums_digest(layout.path(BASE)) or str(layout.path(BASE))}
    digest.update(json.dumps(settings, sort_keys=True, default=str).encode())
    return digest.hexdigest()[:16]


def shard_done(directory: Path, key: str) -> bool:
    """True when `directory` holds a complete shard decoded for `key` (its parquet matching its digest)."""
    manifest = read_manifest(directory) if directory.is_dir() else {}
    if manifest.get("shard_key") != key:
        return False
    try:
        load_trajectories(directory)
    except DataError:
        return False
    return True


def pending_shards(cfg: DmaxConfig) -> list[int]:
    """The shards of `distill.shards` not yet decoded for this config (what a fan-out still has to run)."""
    layout = RunLayout.of(cfg)
    problems = task_splits(cfg)["train"][: cfg.distill.n_prompts]
    shards = cfg.distill.shards
    return [i for i in range(shards) if not shard_done(layout.trajectory_shard(i, shards),
                                                        shard_key(cfg, layout, shard_problems(problems, i, shards)))]


def distill_sharded(cfg: DmaxConfig, layout: RunLayout, task: Task, problems: list[Problem]) -> StageResult:
    """Decode the missing shards (only `distill.shard` when it is set), then merge when all are there."""
    shards = cfg.distill.shards
    if len(problems) < shards:
        raise DataError(f"distill.shards={shards} is more than the {len(problems)} prompts to distill")
    wanted = range(shards) if cfg.distill.shard is None else [cfg.distill.shard]
    written: dict[str, Path] = {}
    for index in wanted:
        part = shard_problems(problems, index, shards)
        directory = layout.trajectory_shard(index, shards)
        key = shard_key(cfg, layout, part)
        if shard_done(directory, key):
            continue
        samples, run = _decode(cfg, layout, task, part, label=f"distill shard {index + 1}/{shards}")
        write_trajectories(directory, samples, {"shard": index, "shards": shards, "shard_key": key,
                                                "wall_seconds": run.wall_seconds})
        written[f"shard-{index}"] = directory
    if cfg.distill.shard is not None:
        return StageResult(stage="distill", outputs=written,
                           metrics={"distill/shard_rows": float(len(shard_problems(problems, cfg.distill.shard,
                                                                                    shards)))})
    return merge_shards(cfg, layout, task)


def merge_shards(cfg: DmaxConfig, layout: RunLayout, task: Task) -> StageResult:
    """The shards' rows in order as `trajectories/` (the keep_incorrect filter applied here), with the
    teacher's figures over all of them."""
    shards = cfg.distill.shards
    tables = [read_trajectory_table(layout.trajectory_shard(i, shards)) for i in range(shards)]
    walls = [float(read_manifest(layout.trajectory_shard(i, shards)).get("wall_seconds", 0.0)) for i in range(shards)]
    table = pa.concat_tables(tables).combine_chunks()
    correct = table.column("correct").to_pylist()
    tokens, nfe = table.column("tokens").to_pylist(), table.column("nfe").to_pylist()
    # The unsharded path's figures (`Cell.from_samples` picks the same names); the table keeps no latencies.
    summary = summarize(tokens, nfe, correct=correct)
    figures = {name: summary[name] for name in ("accuracy", "tpf", "nfe", "tokens") if name != "accuracy"
               or task.has_reference}
    figures["throughput"] = sum(tokens) / max(sum(walls), 1e-9)
    if not cfg.distill.keep_incorrect:
        table = table.filter(pa.array(correct))
    if table.num_rows == 0:
        raise DataError("distillation produced no usable trajectories (all answers were filtered out)")
    digest = write_trajectory_table(layout.path(TRAJECTORIES), table, {
        "teacher": {"decoder": cfg.distill.decoder, "threshold": cfg.distill.threshold, **figures},
        "shards": shards,
    })
    return StageResult(
        stage="distill",
        outputs={TRAJECTORIES: layout.path(TRAJECTORIES)},
        metrics={**{f"distill/{name}": value for name, value in figures.items()},
                 "distill/rows": float(table.num_rows)},
        tags={"dmax.dataset_digest": digest},
        datasets=(_written(cfg, layout, digest),),
    )


def import_released(cfg: DmaxConfig, layout: RunLayout) -> StageResult:
    """A released trajectory dataset (DMax's `question`/`answer` rows) as this run's `trajectories/`.

    The rows are written in dmax's own format with a manifest naming the source and the digest of what
    was read, so a run trained on them records exactly which data it saw."""
    source = cfg.distill.trajectories
    file, rows = read_rows(source, split="train", columns=("question", "answer"), task="distill.trajectories",
                           allow_download=cfg.distill.allow_download)
    rows = rows[: cfg.distill.n_prompts]
    for index, row in enumerate(rows):
        if not isinstance(row["question"], str) or not isinstance(row["answer"], str) or not row["question"].strip():
            raise DataError(f"{file}: row {index}: question/answer must be non-empty strings")
    source_digest = sha256_file(file) if file.is_file() else None
    digest = write_trajectory_pairs(layout.path(TRAJECTORIES), [(r["question"], r["answer"]) for r in rows], {
        "imported_from": source, "source_file": str(file), "source_digest": source_digest,
    })
    return StageResult(
        stage="distill",
        outputs={TRAJECTORIES: layout.path(TRAJECTORIES)},
        metrics={"distill/rows": float(len(rows))},
        tags={"dmax.dataset_digest": digest, "dmax.dataset_source": source},
        datasets=(_written(cfg, layout, digest),),
    )


def _written(cfg: DmaxConfig, layout: RunLayout, digest: str) -> DatasetUse:
    """The trajectory dataset this stage wrote, for the run's dataset list (context `output`)."""
    return trajectory_dataset(cfg, layout.path(TRAJECTORIES), digest, "output")
