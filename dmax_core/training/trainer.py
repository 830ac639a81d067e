"""The one training loop of dmax: AdamW, warmup + cosine, clipping, checkpoints, resume, progress.

It runs every registered objective (`objectives`: `sft`, plain block-diffusion masking; `oput`,
on-policy rollout for the flagged rows, spec §2.2; ...) on the same [noisy; clean] layout: the objective
returns named loss terms, the loop sums them, back-propagates the sum and logs each term. `accelerate`
owns device placement, backward and gradient clipping so the same loop scales to several processes; each process takes
its share of every global batch. Batches and noise are pure functions of (seed, step), so a resumed
run sees exactly the batches an uninterrupted run would have seen.
"""

from __future__ import annotations

import hashlib
import math
import time
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from tqdm.auto import tqdm

from accelerate import Accelerator, DistributedDataParallelKwargs
from dmax_core.config import TrainConfig
from dmax_core.diffusion import (
    IGNORE_INDEX,
    TrainingLayout,
    add_noise,
    labelled_block_span,
    sample_mask_ratios,
    training_layout,
)
from dmax_core.metric_logger import MetricLogger, NullLogger
from dmax_core.objectives import ObjectiveBatch, build_objective
from dmax_core.training.checkpoint import found_fingerprint, latest_checkpoint, load_checkpoint, save_checkpoint
from dmax_core.training.data import ConversationTensors
from dmax_core.training.schedule import learning_rate_at
from dmax_core.training.sharding import (
    full_model,
    load_optimizer_state,
    optimizer_state_by_name,
    plain_optimizer_state,
    shard_model,
)


@dataclass
class TrainResult:
    steps: int
    final_loss: float
    seconds: float
    resumed_from: int = 0
    loss_history: list[tuple[int, float]] = field(default_factory=list)
    # The trained model: the one passed in, or under FSDP a plain copy with the full weights (rank 0).
    model: torch.nn.Module | None = None


def total_steps_for(cfg: TrainConfig, num_examples: int) -> int:
    """`steps` if given, else epochs x floor(N / batch) (spec §2.3: steps per epoch = floor(N / 8))."""
    if cfg.steps is not None:
        return cfg.steps
    assert cfg.epochs is not None
    return max(1, math.floor(num_examples / cfg.batch_size * cfg.epochs))


def run_fingerprint(cfg: TrainConfig, data: ConversationTensors, block_length: int, model: torch.nn.Module) -> str:
    """Identity of a training run: settings, data and starting weights. A checkpoint is resumed only
    by the run that wrote it, never by a rerun with other settings (which would silently mix them)."""
    digest = hashlib.sha256()
    digest.update(cfg.model_dump_json().encode())
    digest.update(str(block_length).encode())
    for tensor in (data.clean_ids, data.labels, data.prompt_lengths, data.flags):
        digest.update(tensor.contiguous().numpy().tobytes())
    for name, value in sorted(model.state_dict().items()):
        digest.update(name.encode())
        digest.update(value.detach().float().sum().item().hex().encode())
    return digest.hexdigest()[:16]


def batch_indices(step: int, num_examples: int, batch_size: int, seed: int) -> torch.Tensor:
    """Indices of the global batch for `step`: a fresh shuffle each epoch, deterministic in (seed, step)."""
    steps_per_epoch = max(1, num_examples // batch_size)
    epoch, within = divmod(step, steps_per_epoch)
    order = torch.randperm(num_examples, generator=torch.Generator().manual_seed(seed + 7919 * epoch))
    if num_examples < batch_size:  # tiny datasets: sample with wrap-around
        order = order.repeat(math.ceil(batch_size / num_examples))
        return order[:batch_size]
    return order[within * batch_size : (within + 1) * batch_size]


def train_model(
    model: torch.nn.Module,
    data: ConversationTensors,
    cfg: TrainConfig,
    *,
    block_length: int,
    mask_id: int,
    checkpoint_dir: Path | None = None,
    logger: MetricLogger | None = None,
    description: str = "train",
    metric_prefix: str = "train",
) -> TrainResult:
    """Train `model` in place on `data` with `cfg.objective`; resume from `checkpoint_dir` if it holds one."""
    logger = logger or NullLogger()
    # Unused-parameter detection: a rank whose tokens route to no token of some expert has no gradient
    # for it, which plain DDP would wait for forever.
    accelerator = Accelerator(cpu=not torch.cuda.is_available(),
                              kwargs_handlers=[DistributedDataParallelKwargs(find_unused_parameters=True)])
    total_steps = total_steps_for(cfg, len(data))
    objective = build_objective(cfg.objective.name, cfg.objective.knobs)
    objective.setup(model)  # on the starting weights: before a checkpoint is resumed or the model sharded
    seq_len = data.clean_ids.shape[1]
    device = accelerator.device
    layouts: dict[tuple[int, int] | None, TrainingLayout] = {}  # one trimmed layout per labelled block span
    optimizer = torch.optim.AdamW(
        model.parameters(), lr=cfg.lr, betas=cfg.betas, eps=cfg.eps, weight_decay=cfg.weight_decay
    )
    start_step, history = 0, []
    fingerprint = run_fingerprint(cfg, data, block_length, model)
    if checkpoint_dir is not None and (found := latest_checkpoint(checkpoint_dir)) is not None:
        if found_fingerprint(found) == fingerprint:
            state = load_checkpoint(found, model, optimizer)
            start_step, history = int(state["step"]), [tuple(x) for x in state.get("loss_history", [])]
        else:
            warnings.warn(f"ignoring checkpoint {found}: it belongs to a run with other settings or data",
                          stacklevel=2)
    names = [name for name, _ in model.named_parameters()]
    config = getattr(model, "config", None)

    def template() -> torch.nn.Module:  # a plain CPU model of the same architecture, for gathered weights
        return type(model)(config)

    fsdp = cfg.fsdp and accelerator.num_processes > 1
    if cfg.fsdp and not fsdp:
        warnings.warn("train.fsdp needs a distributed launch with more than one process; training unsharded",
                      stacklevel=2)
    if fsdp:  # shard the (possibly resumed) weights, then give the sharded optimizer the resumed state
        resumed_state = optimizer.state_dict() if start_step else None
        shard_model(model, device, cfg.mixed_precision, cfg.cpu_offload, cfg.activation_checkpointing)
        # The objective's frozen helpers (MMD's feature model) are split the same way; they never run a
        # backward, so they are sharded without activation checkpointing.
        objective.shard(lambda module: shard_model(module, device, cfg.mixed_precision, cfg.cpu_offload))
        optimizer = torch.optim.AdamW(
            model.parameters(), lr=cfg.lr, betas=cfg.betas, eps=cfg.eps, weight_decay=cfg.weight_decay
        )
        if resumed_state is not None:
            load_optimizer_state(model, optimizer, resumed_state, names)
    else:
        model, optimizer = accelerator.prepare(model, optimizer)
    model.train()

    rank, world = accelerator.process_index, accelerator.num_processes
    started = time.perf_counter()
    window: list[float] = []
    term_window: dict[str, list[float]] = {}  # each loss term and statistic, averaged like the loss
    loss_value = float("nan")
    bar = tqdm(
        range(start_step, total_steps),
        initial=start_step,
        total=total_steps,
        desc=description,
        disable=not accelerator.is_main_process,
        dynamic_ncols=True,
    )
    for step in bar:
        lr = learning_rate_at(step, total_steps, cfg.lr, cfg.min_lr, cfg.warmup_ratio)
        for group in optimizer.param_groups:
            group["lr"] = lr
        # The global batch and its noise are drawn whole, then each process takes its rows: the same
        # (seed, step) gives the same data and masks at any world size.
        index = batch_indices(step, len(data), cfg.batch_size, cfg.seed)
        global_batch = data.select(index)
        noise_rng = torch.Generator().manual_seed(cfg.seed * 1_000_003 + step)
        ratios = sample_mask_ratios(len(index), cfg.noise_low, cfg.noise_high, noise_rng)
        noisy = add_noise(global_batch.clean_ids, global_batch.prompt_lengths, ratios, mask_id, noise_rng)
        rows = torch.arange(len(index))[rank::world]
        parts = rows.tensor_split(cfg.grad_accumulation)
        if any(len(part) == 0 for part in parts):
            raise ValueError(f"train.grad_accumulation={cfg.grad_accumulation} is more than the {len(rows)} rows "
                             "each process takes per step (batch_size / processes)")
        loss = torch.zeros((), device=device)
        step_terms: dict[str, float] = {}
        for number, part in enumerate(parts):
            with _gradient_sync(model, accelerator, fsdp, enabled=number == len(parts) - 1):
                batch, part_noisy = data.select(index[part]), noisy[part].to(device)
                clean, labels = batch.clean_ids.to(device), batch.labels.to(device)
                if cfg.loss_positions == "masked":  # decided on the noise, before any rollout fills the masks
                    labels = torch.where(part_noisy == mask_id, labels, torch.full_like(labels, IGNORE_INDEX))
                # Skip the blocks that cannot touch the loss (exact; see diffusion.training_layout).
                span = labelled_block_span(labels, block_length)
                if span not in layouts:
                    layouts[span] = training_layout(seq_len, block_length, span, device=device)
                layout = layouts[span]
                output = objective.loss_terms(model, ObjectiveBatch(
                    noisy=part_noisy, clean=clean, labels=labels, flags=batch.flags.to(device), layout=layout,
                    mask_id=mask_id, step=step, seed=cfg.seed, always_forward=fsdp, rows=part,
                    block_length=block_length))
                part_loss = sum(output.terms.values())
                share = len(part) / len(rows)  # the mean over sequences of the whole step, a micro-batch at a time
                if len(parts) > 1:
                    part_loss = part_loss * share
                accelerator.backward(part_loss)
                loss = loss + part_loss.detach()
                for name, value in [*((f"loss/{k}", v.detach()) for k, v in output.terms.items()),
                                    *output.stats.items()]:
                    step_terms[name] = step_terms.get(name, 0.0) + float(value) * share
        grad_norm = accelerator.clip_grad_norm_(model.parameters(), cfg.grad_clip)
        if hasattr(grad_norm, "full_tensor"):  # a sharded model's norm is a DTensor
            grad_norm = grad_norm.full_tensor()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

        loss_value = float(accelerator.reduce(loss.detach(), reduction="mean"))
        window.append(loss_value)
        for name, value in step_terms.items():  # this process's rows (rank 0 logs them)
            term_window.setdefault(name, []).append(value)
        bar.set_postfix(loss=f"{loss_value:.4f}", lr=f"{lr:.2e}")
        if (step + 1) % cfg.log_every == 0 or step + 1 == total_steps:
            mean_loss = sum(window) / len(window)
            history.append((step + 1, mean_loss))
            window.clear()
            terms = {f"{metric_prefix}/{name}": sum(values) / len(values) for name, values in term_window.items()}
            term_window.clear()
            if accelerator.is_main_process:
                logger.log_metrics(
                    {f"{metric_prefix}/loss": mean_loss, **terms, f"{metric_prefix}/lr": lr,
                     f"{metric_prefix}/grad_norm": float(grad_norm)},
                    step=step + 1,
                )
        if checkpoint_dir is not None and cfg.checkpoint_every and (step + 1) % cfg.checkpoint_every == 0:
            accelerator.wait_for_everyone()
            extra = {"total_steps": total_steps, "loss_history": history, "fingerprint": fingerprint}
            if fsdp:  # every process takes part in the gathers; rank 0 writes a one-process checkpoint
                whole, whole_optimizer = _gathered(model, optimizer, names, template)
                if whole is not None:
                    save_checkpoint(checkpoint_dir, step + 1, whole, whole_optimizer, extra)
            elif accelerator.is_main_process:
                save_checkpoint(checkpoint_dir, step + 1, accelerator.unwrap_model(model), optimizer, extra)
    bar.close()
    trained = accelerator.unwrap_model(model)  # the module itself, not a DDP wrapper
    if fsdp:  # the full trained weights on rank 0, in a plain model (the bundle writes official names)
        trained = full_model(model, template()) or model
    trained.eval()
    return TrainResult(
        steps=total_steps,
        final_loss=history[-1][1] if history else loss_value,
        seconds=time.perf_counter() - started,
        resumed_from=start_step,
        loss_history=history,
        model=trained,
    )


@contextmanager
def _gradient_sync(model: torch.nn.Module, accelerator: Accelerator, fsdp: bool, enabled: bool) -> Iterator[None]:
    """Reduce gradients across processes only in the last micro-batch of a step (gradient accumulation)."""
    if enabled or accelerator.num_processes == 1:
        yield
    elif fsdp:
        model.set_requires_gradient_sync(False)
        try:
            yield
        finally:
            model.set_requires_gradient_sync(True)
    else:
        with accelerator.no_sync(model):
            yield


def _gathered(model: torch.nn.Module, optimizer: torch.optim.Optimizer, names: list[str],
              template: Any) -> tuple[torch.nn.Module | None, torch.optim.Optimizer | None]:
    """Collective: on rank 0, a plain model and optimizer holding the full state of a sharded pair."""
    by_name = optimizer_state_by_name(model, optimizer)
    whole = full_model(model, template())
    if whole is None:
        return None, None
    plain = torch.optim.AdamW(whole.parameters())
    plain.load_state_dict(plain_optimizer_state(by_name, names))
    return whole, plain
