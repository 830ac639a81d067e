"""DMax-MMD post-training (Yandex's dlm-mmd, `src/mmd.py` and `src/training.py` of yandex-research/dlm-mmd):
one-step corrections sampled from the policy are rewarded by how close their hidden features are to the
reference response's, and the policy follows the score-function (REINFORCE) gradient of that reward.

Per micro-batch, on the OPUT inputs (the flagged rows' masks filled by the model's argmax, `on_policy_rollout`):
1. the policy's no-grad logits on the noisy half give, at every selected position, G x B sampled tokens
   (G groups of B samples; one sample = the noisy half with every selected position replaced by its draw);
2. a frozen copy of the starting model, cut after `feature_layer`, reads features of every sample and of the
   reference (the selected positions holding the clean tokens) on the same [noisy; clean] layout;
3. per block and group, the reward is 2 k(samples, reference) - k(samples, samples) with an RBF kernel on
   the mean squared feature distance: minus the unbiased MMD^2 estimate, without its action-free
   reference-reference term (`block_mmd_rewards`);
4. a group's advantage is its reward minus the mean of the other groups' (`leave_one_group_out`), and the
   loss is minus advantage x the log-probability of the group's samples in the block (`score_surrogate`).

It starts from the DMax checkpoint (`starts_from = "dmax"`) and writes `mmd/`. This module must not step the
optimiser, draw batches or write files (`base.Objective`).
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import ClassVar

import torch
from torch import nn

from dmax_core.diffusion import IGNORE_INDEX, TrainingLayout
from dmax_core.errors import ConfigError
from dmax_core.objectives.base import Objective, ObjectiveBatch, ObjectiveOutput
from dmax_core.objectives.losses import forward_noisy_half, on_policy_rollout
from dmax_core.registry import check_int

__all__ = ["MMD", "block_mmd_rewards", "leave_one_group_out", "rbf_kernel_sum", "score_surrogate"]


# ------------------------------------------------------------------------------ the reward (pure functions)
def rbf_kernel_sum(x: torch.Tensor, y: torch.Tensor, x_weights: torch.Tensor, y_weights: torch.Tensor,
                   bandwidth: float, pair_mask: torch.Tensor | None = None) -> torch.Tensor:
    """sum_ij wx_i wy_j exp(-|x_i - y_j|^2 / (d 2 sigma^2)) over the points of the last two axes: [..., n, d],
    [..., m, d], weights [..., n], [..., m] -> [...]; `pair_mask` [n, m] keeps only some pairs (i, j).

    The squared distance is divided by the feature width d (a mean over features), as dlm-mmd's
    `_token_mmd_rewards_fp32.weighted_kernel_sum` does, so one bandwidth suits any hidden size. Computed in
    fp32 from norms and one matmul; roundoff below zero is clamped, nothing else."""
    x, y = x.float(), y.float()
    squared = (x.square().sum(-1)[..., :, None] + y.square().sum(-1)[..., None, :]
               - 2 * x @ y.transpose(-1, -2)).clamp_min(0) / x.shape[-1]
    kernel = torch.exp(-squared / (2 * bandwidth**2))
    kernel = kernel * x_weights.float()[..., :, None] * y_weights.float()[..., None, :]
    if pair_mask is not None:
        kernel = kernel * pair_mask
    return kernel.sum((-1, -2))


def _blocks(values: torch.Tensor, block_length: int, axis: int) -> torch.Tensor:
    """Split the position axis `axis` into [blocks, block_length], zero-padding a final partial block."""
    length = values.shape[axis]
    blocks = -(-length // block_length)
    pad = blocks * block_length - length
    if pad:
        shape = list(values.shape)
        shape[axis] = pad
        values = torch.cat([values, values.new_zeros(shape)], dim=axis)
    return values.unflatten(axis, (blocks, block_length))


def block_mmd_rewards(reference: torch.Tensor, generated: torch.Tensor, selected: torch.Tensor,
                      block_length: int, bandwidth: float) -> tuple[torch.Tensor, torch.Tensor]:
    """(rewards, reference_term), both [b, blocks, G]: per block and group, the reward
    2 k(samples, reference) - k(samples, samples), and the action-free k(reference, reference).

    reference [b, L, d], generated [b, G, B, L, d] features; selected Bool[b, L]: the scored positions.
    Within a block each selected token of a sample weighs 1 / #selected, so k(., .) is a mean over token
    pairs. k(samples, reference) is the mean over the B samples; k(samples, samples) the mean over ordered
    pairs of different samples (every token pair between them, same positions included), 0 when B = 1.
    reference_term - reward is the unbiased MMD^2 estimate of the block (for logging only). Blocks with no
    selected position get 0. Follows dlm-mmd's `block_rewards` and `_token_mmd_rewards_fp32`."""
    batch, groups, samples = generated.shape[:3]
    with torch.autocast(device_type=reference.device.type, enabled=False):  # fp32 kernels under bf16 autocast
        mask = _blocks(selected.float(), block_length, 1)  # [b, nb, W]
        weights = mask / mask.sum(-1, keepdim=True).clamp_min(1)
        active = mask.sum(-1) > 0  # [b, nb]
        ref = _blocks(reference.float(), block_length, 1)  # [b, nb, W, d]
        gen = _blocks(generated.float(), block_length, 3).permute(0, 3, 1, 2, 4, 5)  # [b, nb, G, B, W, d]
        blocks = gen.shape[1]
        w = weights[:, :, None, None, :].expand(batch, blocks, groups, samples, block_length)
        to_reference = rbf_kernel_sum(gen, ref[:, :, None, None], w, weights[:, :, None, None], bandwidth)
        to_reference = to_reference.mean(-1)  # over the B samples: [b, nb, G]
        among = torch.zeros_like(to_reference)
        if samples > 1:  # every token pair between two different samples of a group, same positions included
            sample_of = torch.arange(samples, device=gen.device).repeat_interleave(block_length)
            flat_w = w.flatten(3, 4)
            among = rbf_kernel_sum(gen.flatten(3, 4), gen.flatten(3, 4), flat_w, flat_w, bandwidth,
                                   pair_mask=sample_of[:, None] != sample_of[None, :]) / (samples * (samples - 1))
        rewards = torch.where(active[..., None], 2 * to_reference - among, torch.zeros_like(among))
        reference_term = rbf_kernel_sum(ref, ref, weights, weights, bandwidth)[..., None].expand_as(rewards)
        reference_term = torch.where(active[..., None], reference_term, torch.zeros_like(reference_term))
    return rewards, reference_term


def leave_one_group_out(rewards: torch.Tensor) -> torch.Tensor:
    """The baseline of each group [..., G]: the mean reward of the other G - 1 groups (0 when G = 1).

    It does not depend on the group's own samples, so subtracting it keeps the score-function gradient
    unbiased while cutting its variance (dlm-mmd `_score_surrogate`)."""
    groups = rewards.shape[-1]
    if groups == 1:
        return torch.zeros_like(rewards)
    return (rewards.sum(-1, keepdim=True) - rewards) / (groups - 1)


def score_surrogate(log_probs: torch.Tensor, selected: torch.Tensor, advantages: torch.Tensor,
                    block_length: int) -> torch.Tensor:
    """The REINFORCE surrogate whose gradient is minus the advantage-weighted score (dlm-mmd `_score_surrogate`).

    log_probs [b, G, B, L]: the policy's log-probability of each sample's token at each position (with
    gradients); selected Bool[b, L]; advantages [b, blocks, G] (treated as constants). A group's score in a
    block is the sum over its B samples and the block's selected positions (summed, not averaged over B:
    averaging would shrink the gradient by B). Per row: -sum over blocks of the mean over groups of
    advantage x score, divided by the row's number of blocks with a selected position; then the mean over rows."""
    scores = _blocks(log_probs.masked_fill(~selected[:, None, None], 0.0), block_length, 3).sum(-1)
    scores = scores.sum(2).transpose(1, 2)  # [b, nb, G]
    active = _blocks(selected, block_length, 1).any(-1).sum(-1)  # [b]
    per_row = -(advantages.detach() * scores).mean(-1).sum(-1) / active.clamp_min(1)
    return per_row.mean()


# ------------------------------------------------------------------------------ the objective
def _masked_logits(logits: torch.Tensor, mask_id: int, temperature: float) -> torch.Tensor:
    """fp32 logits / temperature with MASK excluded: a correction never proposes MASK (dlm-mmd `_gather_log_probs`)."""
    logits = logits.float() / temperature
    if mask_id < logits.shape[-1]:
        logits = logits.index_fill(-1, torch.tensor([mask_id], device=logits.device), float("-inf"))
    return logits


def _draw_seed(seed: int, step: int, row: int) -> int:
    """A distinct generator seed per (run seed, step, row of the global batch); odd constants keep it apart
    from the trainer's noise stream (seed * 1_000_003 + step)."""
    return ((seed * 1_000_033 + step) * 2_000_029 + row * 7_919 + 0x4D4D44) % (2**63 - 1)


class MMD(Objective):
    """DMax-MMD (module docstring): knobs as in dlm-mmd's `src/configs/base.yaml` (`training.mmd`).

    group_size: G groups per position, each one MMD estimate (dlm-mmd `group_size`, 8); samples_per_group:
    B samples per group (`mmd_batch_size`, 2); bandwidth: the RBF sigma on the mean squared feature distance
    (`mmd_rbf_sigma`, 10.0); feature_layer: the decoder layer whose output is the feature (`mmd_feature_layer`,
    10 of LLaDA2.0-mini's 20 layers; None = the middle layer, num_hidden_layers // 2, which is 10 there and
    stays valid for the 2- and 4-layer tiny models); temperature: the policy's sampling temperature, the
    score is of the same tempered distribution (dlm-mmd samples at 1.0 and has no knob).

    The optimiser settings of the paper run (AdamW lr 2e-6, 400 steps, batch 8, warmup 3 %, weight decay 0.01,
    clip 1.0, mask ratio 0.75) are `train.*` settings, not knobs of this objective."""

    name: ClassVar[str] = "mmd"
    checkpoint: ClassVar[str] = "mmd"
    starts_from: ClassVar[str] = "dmax"
    description: ClassVar[str] = ("DMax-MMD post-trained checkpoints of the `{preset}` preset, from its DMax "
                                  "checkpoint (dmax train train.objective.name=mmd).")

    # Deviation: `temperature` is dmax's knob (dlm-mmd samples at 1.0, the default here).
    def __init__(self, group_size: int = 8, samples_per_group: int = 2, bandwidth: float = 10.0,
                 feature_layer: int | None = None, temperature: float = 1.0) -> None:
        self.group_size = check_int("group_size", group_size, 1)
        self.samples_per_group = check_int("samples_per_group", samples_per_group, 1)
        self.bandwidth = _positive("bandwidth", bandwidth)
        self.feature_layer = None if feature_layer is None else check_int("feature_layer", feature_layer, 0)
        self.temperature = _positive("temperature", temperature)
        self._features: nn.Module | None = None
        self._placed = False  # on the training device (or sharded there)

    # -------------------------------------------------------------------- the frozen feature model
    def setup(self, model: nn.Module) -> None:
        """A frozen copy of the starting weights cut after `feature_layer` (dlm-mmd `load_feature_extractor`).

        Its final norm and LM head are replaced by identities, so its forward returns the layer's output
        directly. Built here, on the starting (DMax)
        weights, before a checkpoint is resumed: a resumed run reads the same features as an uninterrupted one.
        Under FSDP the trainer shards it like the trained model (`shard`); otherwise each process holds it."""
        layers = model.config.num_hidden_layers
        layer = layers // 2 if self.feature_layer is None else self.feature_layer
        if layer >= layers:
            raise ConfigError(f"train.objective.feature_layer={layer} is not a layer of this {layers}-layer model "
                              f"(0..{layers - 1})")
        # Deviation: dlm-mmd loads a bf16 copy and reads the layer with a forward hook; this is a copy in the
        # trained model's dtype (fp32 master weights; under FSDP with bf16 mixed precision it computes in bf16
        # like the trained model) whose forward returns the layer output: the same features, no hook.
        frozen = copy.deepcopy(model)
        frozen.model.layers = frozen.model.layers[: layer + 1]
        frozen.model.norm = nn.Identity()
        frozen.lm_head = nn.Identity()
        frozen.requires_grad_(False)
        self._features = frozen.eval()

    def shard(self, shard: Callable[[nn.Module], nn.Module]) -> None:
        """Shard the feature model like the trained one (FSDP): its forwards then gather one layer at a time,
        collectively, which is why `loss_terms` runs the same number of them on every process."""
        assert self._features is not None, "setup() builds the feature model"
        shard(self._features)
        self._features.eval()
        self._placed = True

    @torch.no_grad()
    def _read_features(self, window: torch.Tensor, clean: torch.Tensor, layout: TrainingLayout) -> torch.Tensor:
        """Features [rows, noisy_length, d] of noisy-half tokens `window` [rows, noisy_length] beside their rows'
        clean prefix, on the training layout: each block sees itself and strictly earlier clean blocks, never
        the reference answer of its own block (dlm-mmd `MMDLoss.features`)."""
        assert self._features is not None, "setup() builds the feature model"
        ids = torch.cat([window, clean[:, : layout.clean_end]], dim=1)
        out = self._features(input_ids=ids, position_ids=layout.position_ids, attention_mask=layout.attention_mask)
        return out[:, : layout.noisy_length].float()

    # -------------------------------------------------------------------- one micro-batch
    def loss_terms(self, model: nn.Module, batch: ObjectiveBatch) -> ObjectiveOutput:
        if batch.block_length is None:
            raise ValueError("the mmd objective needs ObjectiveBatch.block_length (the trainer passes it)")
        assert self._features is not None, "setup() builds the feature model"
        if not self._placed:
            self._features.to(batch.clean.device)
            self._placed = True
        layout, mask_id = batch.layout, batch.mask_id
        groups, samples = self.group_size, self.samples_per_group
        # Scored positions, decided on the trainer's noise (dlm-mmd `correction_loss`): every labelled position of
        # an on-policy row, the masked labelled positions of the others.
        selected = (batch.labels != IGNORE_INDEX) & (batch.flags.bool()[:, None] | (batch.noisy == mask_id))
        selected = selected[:, layout.noisy]
        rolled = on_policy_rollout(model, batch.noisy, batch.clean, batch.flags, mask_id, layout,
                                   always_forward=batch.always_forward)
        context = rolled[:, layout.noisy]
        clean = batch.clean
        rows = batch.rows if batch.rows is not None else torch.arange(len(clean))

        # 1. G x B one-step corrections per position from the current policy (no grad).
        was_training = model.training
        model.eval()
        try:
            with torch.no_grad():
                logits = _masked_logits(forward_noisy_half(model, rolled, clean, layout), mask_id, self.temperature)
        finally:
            model.train(was_training)
        draws = torch.empty(len(clean), groups * samples, layout.noisy_length, dtype=torch.long,
                            device=clean.device)
        for row in range(len(clean)):
            # Deviation: dlm-mmd draws from the global RNG (seeded seed + rank); one generator per (seed, step,
            # global row) makes the draw independent of world size and accumulation, and a resumed run redraws it.
            generator = torch.Generator(device=logits.device).manual_seed(_draw_seed(batch.seed, batch.step,
                                                                                     int(rows[row])))
            draws[row] = torch.multinomial(logits[row].softmax(-1), groups * samples, replacement=True,
                                           generator=generator).T
        del logits
        corrections = torch.where(selected[:, None], draws, context[:, None])  # [b, G B, Ln]
        corrections = corrections.view(len(clean), groups, samples, layout.noisy_length)

        # 2. Features of the reference and of every sample, from the frozen starting model. Deviation: dlm-mmd
        # runs one row per forward (memory of the 16B model); here one forward for the reference and one per
        # group (B samples of every row): a fixed count, as FSDP needs on every process.
        clean_window = clean[:, layout.noisy]
        reference = self._read_features(torch.where(selected, clean_window, context), clean, layout)
        generated = torch.stack([
            self._read_features(corrections[:, g].reshape(-1, layout.noisy_length),
                                clean.repeat_interleave(samples, dim=0), layout
                                ).view(len(clean), samples, layout.noisy_length, -1)
            for g in range(groups)], dim=1)

        # 3-4. Rewards per block and group, the leave-one-group-out baseline, the surrogate.
        rewards, reference_term = block_mmd_rewards(reference, generated, selected, batch.block_length,
                                                    self.bandwidth)
        baseline = leave_one_group_out(rewards)
        advantages = rewards - baseline
        # Deviation: dlm-mmd scores the samples with a memory-bounded custom autograd function
        # (`_SampledLogProbs`, fp32 chunks of 64 positions); at dmax's scales the plain log-softmax is small.
        log_probs = _masked_logits(forward_noisy_half(model, rolled, clean, layout),
                                   mask_id, self.temperature).log_softmax(-1)
        taken = log_probs.gather(-1, corrections.flatten(1, 2).transpose(1, 2))  # [b, Ln, G B]
        taken = taken.transpose(1, 2).reshape(len(clean), groups, samples, layout.noisy_length)
        loss = score_surrogate(taken, selected, advantages, batch.block_length)

        active = _blocks(selected, batch.block_length, 1).any(-1)[..., None].expand_as(rewards)
        count = max(int(active.sum()), 1)
        stats = {
            "mmd/reward": float(rewards[active].sum()) / count,
            "mmd/mmd2": float((reference_term - rewards)[active].sum()) / count,
            "mmd/baseline": float(baseline[active].sum()) / count,
            "mmd/advantage_abs": float(advantages[active].abs().sum()) / count,
            "mmd/selected_tokens": float(selected.sum()) / len(clean),
        }
        return ObjectiveOutput({"pg": loss}, stats=stats)


def _positive(knob: str, value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not float(value) > 0:
        raise ValueError(f"{knob} must be a number > 0, got {value!r}")
    return float(value)
