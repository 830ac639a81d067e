"""`distill`: the base model answers training prompts with its own decoder; the answers are the dataset.

Spec §2.1: OPUT trains on the base model's trajectories, not on reference solutions. Incorrect answers
are kept unless `distill.keep_incorrect` is false (the paper does not filter).
"""

from __future__ import annotations

from tqdm.auto import tqdm

from dmax_core.config import DmaxConfig
from dmax_core.decoding import build_policy
from dmax_core.errors import DataError
from dmax_core.evaluation.records import Cell, Sample
from dmax_core.evaluation.runner import decode_problems
from dmax_core.files import sha256_file
from dmax_core.metric_logger import MetricLogger
from dmax_core.results import StageResult
from dmax_core.stages.common import load_for_decoding, setup, task_of, task_splits
from dmax_core.stages.layout import BASE, TRAJECTORIES, RunLayout
from dmax_core.tasks.datafiles import read_rows
from dmax_core.trajectories import write_trajectories, write_trajectory_pairs


def distill(cfg: DmaxConfig, logger: MetricLogger) -> StageResult:
    """Decode `distill.n_prompts` training prompts with the base model -> `trajectories/`, or import a
    released trajectory dataset (`distill.trajectories`)."""
    layout = RunLayout.of(cfg)
    if cfg.distill.trajectories:
        return import_released(cfg, layout)
    setup(cfg, "decode", cfg.distill.batch_size)
    task = task_of(cfg)
    problems = task_splits(cfg, task)["train"][: cfg.distill.n_prompts]
    if not problems:
        raise DataError(f"task {cfg.task.name!r} has no training prompts to distill (set its split to train)")
    model, tokenizer = load_for_decoding(cfg, layout.path(BASE))
    policy = build_policy(cfg.distill.decoder, cfg.distill.threshold, cfg.decoding.knobs(cfg.distill.decoder))
    bar = tqdm(total=len(problems), desc="distill", dynamic_ncols=True)
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
    samples = run.samples
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
    )
