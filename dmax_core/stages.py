"""The pipeline stages: one function each, called by the CLI, the Prefect flows and DVC alike.

pretrain -> distill -> train (OPUT) -> evaluate -> report (design.md). Each takes the validated
config and an optional `MetricLogger`, reads its inputs from `cfg.run_dir`, writes its outputs there
atomically and returns the path it wrote. No stage keeps state between calls.
"""

from __future__ import annotations

import json
import platform
import time
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import torch
from tqdm.auto import tqdm

from dmax_core.config import DmaxConfig
from dmax_core.data import TASKS, Problem
from dmax_core.env import device_name
from dmax_core.errors import ConfigError, DataError
from dmax_core.evaluation.headline import compute_headline
from dmax_core.evaluation.report import plot_tradeoff, render_markdown
from dmax_core.evaluation.runner import build_policy, cell_metrics, decode_problems
from dmax_core.io import (
    StagingDirectory,
    atomic_write_json,
    atomic_write_text,
    load_bundle,
    save_bundle,
    sha256_file,
)
from dmax_core.metric_logger import MetricLogger, NullLogger
from dmax_core.models import LLaDA2MoeConfig, LLaDA2MoeForDiffusionLM
from dmax_core.tokenizer import build_tokenizer, special_token_ids
from dmax_core.training import duplicate_for_oput, encode_conversations, train_model

TRAJECTORY_FILE = "trajectories.parquet"
TRAJECTORY_COLUMNS = ("question", "answer")


# ----------------------------------------------------------------------------------------- paths
def base_dir(cfg: DmaxConfig) -> Path:
    return Path(cfg.model.base_path) if cfg.model.base_path else cfg.run_dir / "base"


def trajectories_dir(cfg: DmaxConfig) -> Path:
    return cfg.run_dir / "trajectories"


def dmax_dir(cfg: DmaxConfig) -> Path:
    return cfg.run_dir / "dmax"


def control_dir(cfg: DmaxConfig) -> Path:
    """The self-distillation-only control (same data and steps as OPUT, plain masked objective)."""
    return cfg.run_dir / "control"


def trained_dir(cfg: DmaxConfig) -> Path:
    """Where `train` writes: OPUT -> dmax/, the plain-SFT control -> control/ (never overwrites dmax/)."""
    return dmax_dir(cfg) if cfg.train.objective == "oput" else control_dir(cfg)


def model_dirs(cfg: DmaxConfig) -> dict[str, Path]:
    return {"base": base_dir(cfg), "dmax": dmax_dir(cfg), "control": control_dir(cfg)}


def eval_dir(cfg: DmaxConfig) -> Path:
    return cfg.run_dir / "eval"


def report_dir(cfg: DmaxConfig) -> Path:
    return cfg.run_dir / "report"


# ---------------------------------------------------------------------------------------- helpers
def _setup(cfg: DmaxConfig) -> None:
    torch.manual_seed(cfg.seed)
    if cfg.num_threads:
        torch.set_num_threads(cfg.num_threads)


def task_splits(cfg: DmaxConfig) -> dict[str, list[Problem]]:
    """The deterministic train/validation/test problems of the embedded task (no question overlap)."""
    t = cfg.task
    try:
        return TASKS[t.name].make_splits(
            t.n_train, t.n_validation, t.n_test, t.seed, min_steps=t.min_steps, max_steps=t.max_steps
        )
    except ValueError as exc:  # knobs the task cannot satisfy (too many people, too small a space)
        raise ConfigError(f"task {t.name!r}: {exc}") from exc


def _labelled_pads(cfg: DmaxConfig, train_cfg) -> int:
    # Spec §1.1 labels the first 32 trailing pads, 32 being the block length: keep that coupling.
    return cfg.block_length if train_cfg.labelled_pad_tokens is None else train_cfg.labelled_pad_tokens


def task_tokenizer(cfg: DmaxConfig):
    """The word-level tokenizer of the embedded task at this preset's difficulty."""
    try:
        words = TASKS[cfg.task.name].vocabulary(min_steps=cfg.task.min_steps, max_steps=cfg.task.max_steps)
    except ValueError as exc:
        raise ConfigError(f"task {cfg.task.name!r}: {exc}") from exc
    return build_tokenizer(words)


def model_config(cfg: DmaxConfig, tokenizer) -> LLaDA2MoeConfig:
    """The preset's architecture with the tokenizer's vocabulary and special ids filled in."""
    ids = special_token_ids(tokenizer)
    arch = cfg.model.model_dump(exclude={"base_path"})
    needed = max(cfg.pretrain.max_seq_len, cfg.train.max_seq_len)
    if arch["max_position_embeddings"] < needed:
        raise ConfigError(f"model.max_position_embeddings={arch['max_position_embeddings']} < max_seq_len {needed}")
    return LLaDA2MoeConfig.from_dict(
        {**arch, "vocab_size": len(tokenizer), "pad_token_id": ids["pad"], "eos_token_id": ids["eos"],
         "mask_token_id": ids["mask"]}
    )


def environment_info() -> dict[str, Any]:
    import transformers

    return {
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "python": platform.python_version(),
        "device": device_name(),
        "threads": torch.get_num_threads(),
    }


def _train_pairs_from_problems(problems: list[Problem]) -> list[tuple[str, str]]:
    return [(p.question, p.answer) for p in problems]


# ----------------------------------------------------------------------------------------- stages
def pretrain(cfg: DmaxConfig, logger: MetricLogger | None = None) -> Path:
    """Block-diffusion SFT of a tiny LLaDA2-shaped model from scratch (stands in for LLaDA2.0-mini)."""
    logger = logger or NullLogger()
    if cfg.model.base_path is not None:
        load_bundle(base_dir(cfg))  # validate only: a real base model is downloaded, not pretrained
        return base_dir(cfg)
    _setup(cfg)
    splits = task_splits(cfg)
    tokenizer = task_tokenizer(cfg)
    torch.manual_seed(cfg.seed)
    model = LLaDA2MoeForDiffusionLM(model_config(cfg, tokenizer))
    data = encode_conversations(
        tokenizer, _train_pairs_from_problems(splits["train"]), cfg.pretrain.max_seq_len,
        _labelled_pads(cfg, cfg.pretrain),
    )
    logger.log_params({"pretrain.num_parameters": sum(p.numel() for p in model.parameters())})
    result = train_model(
        model, data, cfg.pretrain, block_length=cfg.block_length, mask_id=model.mask_token_id,
        checkpoint_dir=cfg.run_dir / "checkpoints" / "pretrain", logger=logger, description="pretrain",
        metric_prefix="pretrain",
    )
    info = {"stage": "pretrain", "steps": result.steps, "final_loss": result.final_loss,
            "seconds": result.seconds, "examples": len(data), "preset": cfg.preset}
    logger.log_metrics({"pretrain/final_loss": result.final_loss, "pretrain/seconds": result.seconds})
    return save_bundle(model, tokenizer, base_dir(cfg), info)


def distill(cfg: DmaxConfig, logger: MetricLogger | None = None) -> Path:
    """The base model answers training prompts with its own decoder; the answers are the trajectories."""
    logger = logger or NullLogger()
    _setup(cfg)
    model, tokenizer = load_bundle(base_dir(cfg))
    problems = task_splits(cfg)["train"][: cfg.distill.n_prompts]
    policy = build_policy(cfg.distill.decoder, cfg.distill.threshold)
    bar = tqdm(total=len(problems), desc="distill", dynamic_ncols=True)
    state = {"correct": 0, "done": 0}

    def progress(sample) -> None:
        state["done"] += 1
        state["correct"] += int(sample.correct)
        bar.update(1)
        bar.set_postfix(acc=f"{state['correct'] / state['done']:.3f}", tpf=f"{sample.tokens / sample.nfe:.2f}")

    samples = decode_problems(
        model, tokenizer, problems, policy, gen_length=cfg.distill.gen_length,
        block_length=cfg.block_length, on_sample=progress,
    )
    bar.close()
    rows = [s for s in samples if cfg.distill.keep_incorrect or s.correct]
    if not rows:
        raise DataError("distillation produced no usable trajectories (all answers were filtered out)")
    table = pa.table({
        "question": [s.question for s in rows],
        "answer": [s.generated_text for s in rows],
        "reference_answer": [s.reference for s in rows],
        "correct": [s.correct for s in rows],
        "nfe": [s.nfe for s in rows],
        "tokens": [s.tokens for s in rows],
    })
    out = trajectories_dir(cfg)
    with StagingDirectory(out) as staging:
        staging.mkdir(parents=True)
        pq.write_table(table, staging / TRAJECTORY_FILE)
        accuracy = sum(s.correct for s in samples) / len(samples)
        manifest = {
            "rows": len(rows), "digest": sha256_file(staging / TRAJECTORY_FILE), "columns": table.column_names,
            "teacher_accuracy": accuracy, "decoder": cfg.distill.decoder, "threshold": cfg.distill.threshold,
            "mean_tpf": sum(s.tokens / s.nfe for s in samples) / len(samples),
        }
        atomic_write_json(staging / "manifest.json", manifest)
    logger.log_metrics({"distill/teacher_accuracy": accuracy, "distill/rows": float(len(rows))})
    logger.set_tags({"dataset_digest": manifest["digest"]})
    return out


def load_trajectories(directory: Path) -> list[tuple[str, str]]:
    """Read and validate the trajectory parquet; corrupt or malformed files are a clear `DataError`."""
    path = Path(directory) / TRAJECTORY_FILE
    if not path.is_file():
        raise DataError(f"trajectory file not found: {path} (run `dmax distill` first)")
    try:
        table = pq.read_table(path)
    except (pa.ArrowException, OSError) as exc:
        raise DataError(f"trajectory file {path} is corrupt or not parquet: {exc}") from exc
    missing = [c for c in TRAJECTORY_COLUMNS if c not in table.column_names]
    if missing:
        raise DataError(f"trajectory file {path} lacks column(s) {missing}; found {table.column_names}")
    questions, answers = table.column("question").to_pylist(), table.column("answer").to_pylist()
    for row, (q, a) in enumerate(zip(questions, answers, strict=True)):
        if not isinstance(q, str) or not isinstance(a, str) or not q.strip():
            raise DataError(f"trajectory file {path}, row {row}: question/answer must be non-empty strings")
    if not questions:
        raise DataError(f"trajectory file {path} has no rows")
    return list(zip(questions, answers, strict=True))


def train(cfg: DmaxConfig, logger: MetricLogger | None = None) -> Path:
    """OPUT fine-tuning of the base model on its own trajectories (spec §2) -> the DMax checkpoint.

    With `train.objective=sft` the same duplicated data and steps train the plain masked objective:
    the self-distillation-only control of issue 4, written to `control/` instead of `dmax/`.
    """
    logger = logger or NullLogger()
    _setup(cfg)
    pairs = load_trajectories(trajectories_dir(cfg))
    model, tokenizer = load_bundle(base_dir(cfg))
    data = duplicate_for_oput(
        encode_conversations(tokenizer, pairs, cfg.train.max_seq_len, _labelled_pads(cfg, cfg.train))
    )
    result = train_model(
        model, data, cfg.train, block_length=cfg.block_length, mask_id=model.mask_token_id,
        checkpoint_dir=cfg.run_dir / "checkpoints" / f"train-{cfg.train.objective}", logger=logger,
        description=f"train ({cfg.train.objective})", metric_prefix="train",
    )
    manifest = json.loads((trajectories_dir(cfg) / "manifest.json").read_text()) \
        if (trajectories_dir(cfg) / "manifest.json").is_file() else {}
    info = {"stage": "train", "objective": cfg.train.objective, "steps": result.steps,
            "final_loss": result.final_loss, "seconds": result.seconds, "examples": len(data),
            "dataset_digest": manifest.get("digest"), "preset": cfg.preset}
    logger.log_metrics({"train/final_loss": result.final_loss, "train/seconds": result.seconds})
    return save_bundle(model, tokenizer, trained_dir(cfg), info)


def _cell_record(model: str, decoder: str, threshold: float, split: str, metrics: dict[str, float]) -> dict:
    return {"model": model, "decoder": decoder, "threshold": threshold, "split": split, **metrics}


def flat_summary(cells: list[dict[str, Any]], headline: dict[str, Any]) -> dict[str, Any]:
    """Scalars only (no lists), so `dvc metrics show` / `dvc exp show` can display every cell."""
    summary: dict[str, Any] = {"headline_valid": int(bool(headline["valid"]))}
    if headline["valid"]:
        summary.update(tpf_ratio=headline["tpf_ratio"], accuracy_delta_pp=headline["accuracy_delta_pp"],
                       dmax_accuracy=headline["dmax"]["accuracy"], dmax_tpf=headline["dmax"]["tpf_mean"],
                       baseline_accuracy=headline["baseline"]["accuracy"],
                       baseline_tpf=headline["baseline"]["tpf_mean"])
    for c in cells:
        key = f"{c['split']}/{c['model']}/{c['decoder']}/{c['threshold']:g}"
        summary[key] = {"accuracy": c["accuracy"], "tpf": c["tpf_mean"], "nfe": c["nfe_mean"], "tps": c["tps_mean"]}
    return summary


def evaluate(cfg: DmaxConfig, logger: MetricLogger | None = None) -> Path:
    """{base, dmax} x {threshold, spd} x thresholds on held-out problems -> eval/metrics.json."""
    logger = logger or NullLogger()
    _setup(cfg)
    ev = cfg.evaluate
    splits = task_splits(cfg)
    test = splits["test"][: ev.n_test] if ev.n_test else splits["test"]
    validation = splits["validation"][: ev.n_validation] if ev.n_validation else splits["validation"]
    directories = model_dirs(cfg)
    loaded = {name: load_bundle(directories[name]) for name in ev.models}

    plan = [(m, d, t, "test") for m in ev.models for d in ev.decoders for t in ev.thresholds]
    if "dmax" in ev.models and "spd" in ev.decoders:  # validation only chooses the DMax threshold
        plan += [("dmax", "spd", t, "validation") for t in ev.thresholds]
    cells, kept_samples = [], []
    bar = tqdm(plan, desc="evaluate", dynamic_ncols=True)
    for model_name, decoder, threshold, split in bar:
        model, tokenizer = loaded[model_name]
        problems = test if split == "test" else validation
        samples = decode_problems(
            model, tokenizer, problems, build_policy(decoder, threshold), gen_length=ev.gen_length,
            block_length=cfg.block_length,
        )
        cell = _cell_record(model_name, decoder, threshold, split, cell_metrics(samples))
        cells.append(cell)
        bar.set_postfix(cell=f"{model_name}/{decoder}@{threshold:g}", acc=f"{cell['accuracy']:.3f}",
                        tpf=f"{cell['tpf_mean']:.2f}")
        prefix = f"eval/{split}/{model_name}/{decoder}/thr_{threshold:g}"
        logger.log_metrics({f"{prefix}/{k}": float(cell[k]) for k in
                            ("accuracy", "tpf_mean", "tps_mean", "tps_total", "nfe_mean", "tokens_mean")})
        for s in samples[: ev.samples_to_keep]:
            kept_samples.append({"model": model_name, "decoder": decoder, "threshold": threshold, "split": split,
                                 **s.__dict__})
    headline = compute_headline(cells, cfg.report.accuracy_tolerance_pp, cfg.report.min_base_accuracy)
    env = environment_info()
    metrics = {
        "cells": cells,
        "headline": headline,
        "summary": flat_summary(cells, headline),
        "settings": {
            "preset": cfg.preset, "block_length": cfg.block_length, "gen_length": ev.gen_length,
            "n_test": len(test), "n_validation": len(validation), "batch_size": 1, **env,
            "setting": f"batch 1, {env['device']}, {env['threads']} threads, block {cfg.block_length}, "
                       f"gen {ev.gen_length}, fp32",
            "timestamp": time.strftime("%Y-%m-%dT%H:%M:%S"),
        },
    }
    if headline["valid"]:
        logger.log_metrics({"headline/tpf_ratio": headline["tpf_ratio"],
                            "headline/accuracy_delta_pp": headline["accuracy_delta_pp"]})
    out = eval_dir(cfg)
    atomic_write_text(out / "samples.jsonl", "".join(json.dumps(s) + "\n" for s in kept_samples))
    return atomic_write_json(out / "metrics.json", metrics)


def read_metrics(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise DataError(f"metrics file not found: {path} (run `dmax evaluate` first)")
    try:
        metrics = json.loads(path.read_text())
        metrics["cells"], metrics["headline"]
    except (json.JSONDecodeError, KeyError, TypeError) as exc:
        raise DataError(f"metrics file {path} is malformed: {exc}") from exc
    return metrics


def report(cfg: DmaxConfig, logger: MetricLogger | None = None) -> Path:
    """Markdown table + TPF-vs-accuracy PNG from eval/metrics.json."""
    metrics = read_metrics(eval_dir(cfg) / "metrics.json")
    out = report_dir(cfg)
    plot_tradeoff(metrics["cells"], metrics["headline"], out / "tradeoff.png", f"dmax preset {cfg.preset}")
    atomic_write_text(out / "report.md", render_markdown(metrics))
    plot_data = [
        {"model": c["model"], "decoder": c["decoder"], "threshold": c["threshold"], "tpf": c["tpf_mean"],
         "accuracy": c["accuracy"]}
        for c in metrics["cells"] if c["split"] == "test"
    ]
    atomic_write_json(out / "tradeoff.json", plot_data)
    return out


STAGES = {"pretrain": pretrain, "distill": distill, "train": train, "evaluate": evaluate, "report": report}


def run_pipeline(cfg: DmaxConfig, logger: MetricLogger | None = None) -> dict[str, Path]:
    """All stages in order with plain calls (the Prefect flow wraps the same functions as tasks)."""
    return {name: stage(cfg, logger) for name, stage in STAGES.items()}
