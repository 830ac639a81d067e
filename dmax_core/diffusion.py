"""Block-diffusion layout: attention rules, training examples, noise (spec §1).

This is the single home of every attention rule in dmax (training and decoding both call it) and
of the label/noise construction. It knows nothing about models or optimisers. Boolean masks use
True = "query may attend key"; rows are queries, columns are keys.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch

IGNORE_INDEX = -100


def block_causal_mask(positions: torch.Tensor, block_length: int) -> torch.Tensor:
    """q sees k iff blk(k) <= blk(q), blk = absolute position // B (spec §3.1, the clean stream of §1.2).

    Blocks are aligned to absolute multiples of B, so a prompt is not special-cased: a prompt block
    sees itself and earlier blocks. Used for prefill, the cross-block commit (finished block + new
    block) and a single decoding block (where it is simply all-true).

    positions: Long[L] gives [L, L]; Long[b, L] (a row's own positions each) gives [b, L, L].
    """
    blocks = positions // block_length
    return blocks[..., None, :] <= blocks[..., :, None]


def training_attention_mask(seq_len: int, block_length: int, device: torch.device | None = None) -> torch.Tensor:
    """The 2n x 2n mask over [noisy; clean] of spec §1.2.

    noisy->noisy: same block only (bidirectional inside it); noisy->clean: strictly earlier blocks;
    clean->clean: block-causal; clean->noisy: never.
    """
    pos = torch.arange(seq_len, device=device)
    blk = pos // block_length
    same_block = blk[:, None] == blk[None, :]
    earlier = blk[None, :] < blk[:, None]
    causal = blk[None, :] <= blk[:, None]
    none = torch.zeros(seq_len, seq_len, dtype=torch.bool, device=device)
    top = torch.cat([same_block, earlier], dim=1)
    bottom = torch.cat([none, causal], dim=1)
    return torch.cat([top, bottom], dim=0)


def training_position_ids(seq_len: int, device: torch.device | None = None) -> torch.Tensor:
    """Noisy and clean copies of position i share RoPE position i (spec §1.2)."""
    pos = torch.arange(seq_len, device=device)
    return torch.cat([pos, pos])


@dataclass(frozen=True)
class TrainingLayout:
    """The part of the 2n-token input [noisy; clean] that one batch needs, with its mask and positions.

    Kept are the noisy positions `noisy` (a block-aligned slice of [0, n)) and the clean positions
    [0, clean_end). `training_layout(n, B)` is the full spec §1.2 layout; with a block span it is the
    trimmed one (see `training_layout`).
    """

    noisy: slice
    clean_end: int
    position_ids: torch.Tensor  # Long[len]
    attention_mask: torch.Tensor  # Bool[len, len]

    @property
    def noisy_length(self) -> int:
        return self.noisy.stop - self.noisy.start

    def input_ids(self, noisy: torch.Tensor, clean: torch.Tensor) -> torch.Tensor:
        """[b, len] ids: the kept noisy slice, then the kept clean prefix."""
        return torch.cat([noisy[:, self.noisy], clean[:, : self.clean_end]], dim=1)


def labelled_block_span(labels: torch.Tensor, block_length: int) -> tuple[int, int] | None:
    """(first, last) block index, inclusive, that holds any label in the batch; None if nothing is labelled."""
    labelled = (labels != IGNORE_INDEX).any(dim=0).nonzero()
    if len(labelled) == 0:
        return None
    return int(labelled[0]) // block_length, int(labelled[-1]) // block_length


def training_layout(
    seq_len: int, block_length: int, span: tuple[int, int] | None = None, device: torch.device | None = None
) -> TrainingLayout:
    """The §1.2 layout, trimmed to the blocks a batch with labels in `span` (first, last) can use.

    Why trimming is exact (same loss, same gradients, same OPUT rollout on labelled blocks): a noisy
    block attends only to itself and to strictly earlier clean blocks, and no query outside it attends
    to it, so a noisy block without labels changes nothing; clean block k is read only by noisy blocks
    after k and by later clean blocks, so clean blocks from the last labelled block on are never read by
    a labelled query. With the LLaDA2 chat template every prompt here is longer than one block, so the
    first noisy block and the last clean block go: at n = 64 that halves the tokens of every step.
    """
    blocks = -(-seq_len // block_length)
    first, last = (0, blocks - 1) if span is None else span
    if not 0 <= first <= last < blocks:
        raise ValueError(f"block span {span} outside the {blocks} blocks of n={seq_len}")
    noisy = slice(first * block_length, min((last + 1) * block_length, seq_len))
    clean_end = seq_len if span is None else last * block_length
    keep = torch.cat([torch.arange(noisy.start, noisy.stop), seq_len + torch.arange(clean_end)]).to(device)
    full_mask = training_attention_mask(seq_len, block_length, device=device)
    return TrainingLayout(
        noisy=noisy,
        clean_end=clean_end,
        position_ids=training_position_ids(seq_len, device=device)[keep],
        attention_mask=full_mask[keep][:, keep],
    )


@dataclass(frozen=True)
class TrainingExample:
    """One conversation as fixed-length tensors (spec §1.1)."""

    clean_ids: torch.Tensor  # Long[n]
    labels: torch.Tensor  # Long[n], IGNORE_INDEX where unlabelled
    prompt_length: int


def build_example(
    prompt_ids: Sequence[int],
    full_ids: Sequence[int],
    max_seq_len: int,
    pad_id: int,
    labelled_pad_tokens: int,
) -> TrainingExample:
    """Truncate/pad `full_ids` to n and build same-position labels (spec §1.1 steps 2-5).

    Labels cover every response position (masked or not, DMax's deviation from upstream dFactory)
    plus the first `labelled_pad_tokens` of the trailing pad run, so the model learns to stop.
    """
    prompt_length = len(prompt_ids)
    if list(full_ids[:prompt_length]) != list(prompt_ids):
        raise ValueError("the rendered conversation does not start with the rendered prompt")
    if prompt_length >= max_seq_len:
        raise ValueError(f"prompt of {prompt_length} tokens does not fit max_seq_len={max_seq_len}")
    ids = list(full_ids[:max_seq_len])
    ids += [pad_id] * (max_seq_len - len(ids))
    clean = torch.tensor(ids, dtype=torch.long)
    labels = clean.clone()
    labels[:prompt_length] = IGNORE_INDEX
    not_pad = (clean != pad_id).nonzero()
    last_real = int(not_pad[-1]) if len(not_pad) else -1
    run_start = last_real + 1
    if run_start < max_seq_len:  # there is a trailing pad run: label only its head
        cut = max(run_start + labelled_pad_tokens, prompt_length)
        labels[cut:] = IGNORE_INDEX
    return TrainingExample(clean_ids=clean, labels=labels, prompt_length=prompt_length)


def sample_mask_ratios(batch: int, low: float, high: float, generator: torch.Generator) -> torch.Tensor:
    """One mask probability per sequence, t ~ U[low, high] (spec §1.1 step 4; OPUT: low = high = 0.75)."""
    return low + (high - low) * torch.rand(batch, generator=generator)


def add_noise(
    clean_ids: torch.Tensor,
    prompt_lengths: torch.Tensor,
    mask_ratios: torch.Tensor,
    mask_id: int,
    generator: torch.Generator,
) -> torch.Tensor:
    """Replace each response position (padding included) by MASK with probability t of its sequence."""
    batch, seq_len = clean_ids.shape
    response = torch.arange(seq_len)[None, :] >= prompt_lengths[:, None]
    draws = torch.rand(batch, seq_len, generator=generator)
    masked = response & (draws < mask_ratios[:, None])
    return torch.where(masked, torch.full_like(clean_ids, mask_id), clean_ids)


def per_sequence_token_mean_ce(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Spec §1.3: sum_j CE(logits_j, label_j) / #labelled per sequence, then the mean over sequences.

    Same-position labels (no shift). Sequences with no label contribute 0 rather than NaN.
    """
    vocab = logits.shape[-1]
    token_loss = torch.nn.functional.cross_entropy(
        logits.float().reshape(-1, vocab), labels.reshape(-1), ignore_index=IGNORE_INDEX, reduction="none"
    ).view(labels.shape)
    counts = (labels != IGNORE_INDEX).sum(dim=1)
    per_sequence = token_loss.sum(dim=1) / counts.clamp(min=1)
    return per_sequence.mean()
