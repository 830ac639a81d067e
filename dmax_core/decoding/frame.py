"""The block-decoding frame shared by every policy (spec §3.1 frame, §4.3, §5.4).

The frame owns everything outside a single block step: the [prompt, MASK...] layout over absolute
B-aligned blocks, the prefill of the prompt prefix, the prefix KV cache and the cross-block commit,
NFE counting, EOS stop, wall-clock timing and the per-forward trace. A `BlockPolicy` owns only what
happens inside a block (which tokens change, what is fed next, when the block is done).

It must not contain policy logic (thresholds, revision, soft embeddings), must not define attention
rules (they come from `dmax_core.diffusion.block_causal_mask`), and must not count NFE anywhere but
here. Batch size 1 only, as in the paper's speed measurements (§0, §5.4); a batch > 1 is refused.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor

from dmax_core.decoding.policy import BlockPolicy, TokenEmbedder
from dmax_core.diffusion import block_causal_mask
from dmax_core.errors import DecodingError
from dmax_core.models.kv_cache import KVCache
from dmax_core.registry import check_int

INPUT_PREFILL = "prefill"
INPUT_IDS = "ids"
INPUT_IDS_COMMIT = "ids+commit"
INPUT_EMBEDS = "embeds"


@dataclass
class StepRecord:
    """One model forward, as seen by traces, callbacks and visualisations (CPU copies only).

    `block_index` is the absolute block number (block start // B); the prefill record has -1.
    `step_index` counts forwards within the block from 0. `block_ids`/`confidence` are the block
    after the policy step (None for the prefill); `changed_positions` are block-relative.
    """

    block_index: int
    step_index: int
    input_kind: str
    block_ids: Tensor | None
    confidence: Tensor | None
    changed_positions: list[int]
    stop_reason: str | None


@dataclass
class DecodeResult:
    """The outcome of one `generate` call, with the §5.4 counting rules applied.

    `output_ids` is the whole [prompt + generated] sequence with every EOS removed; `generated_ids`
    is the part after the prompt with every EOS removed. Non-EOS ids that follow an EOS inside the
    final block are kept and counted (§5.4, §7.12). `raw_ids` is the decoded [T] array before EOS
    removal (EOS fill included), for inspection.
    """

    prompt_length: int
    output_ids: Tensor
    generated_ids: Tensor
    nfe: int
    seconds: float
    block_stop_reasons: list[str]
    trace: list[StepRecord] = field(default_factory=list)
    raw_ids: Tensor | None = None

    @property
    def tokens(self) -> int:
        """tokens(sample) of §5.4: generated ids that are not EOS."""
        return int(self.generated_ids.numel())

    @property
    def tokens_per_forward(self) -> float:
        """TPF(sample) = tokens / NFE (§5.4); the prefill forward counts as 1 NFE."""
        return self.tokens / self.nfe if self.nfe else 0.0


def _model_device(model: Any, fallback: torch.device) -> torch.device:
    try:
        return next(model.parameters()).device
    except (AttributeError, StopIteration):
        return fallback


def generate(
    model: Any,
    prompt_ids: Tensor,
    policy: BlockPolicy,
    *,
    gen_length: int,
    block_length: int,
    record_trace: bool = True,
    use_cache: bool = True,
    callback: Callable[[StepRecord], None] | None = None,
    max_forwards_per_block: int | None = None,
) -> DecodeResult:
    """Decode `gen_length` tokens after `prompt_ids` block by block with `policy` (§3.1, §4).

    Layout: T = ceil((P + G) / B) * B positions, x = [prompt, MASK...], blocks at absolute multiples
    of B, the first at s0 = floor(P / B) * B (so it may hold the prompt tail, which stays fixed).

    Forwards (each one is 1 NFE, §5.4):
      * prefill of [0, s0) with the block-causal mask, writing the cache; skipped when s0 == 0
        (the clean fix of §7.11; the official code prefills a block of masks instead);
      * per block, the first forward feeds ids: the B block ids, or, when the previous block is
        finished and its K/V not yet cached, 2B ids [previous block, this block] at [s - B, s + B)
        with the block-causal mask, committing the first B to the cache (one forward, both jobs);
      * later forwards feed the policy's `next_inputs_embeds` (or its ids when None), attending to
        the cache and the whole block, writing nothing.
    After a block: its ids are committed to x; if it holds an EOS, the rest of x becomes EOS and
    decoding stops (§3.1), so the last block's K/V are never computed.

    Args:
        model: implements the dmax model interface (docs/interfaces.md): `forward`, `embed`,
            `mask_token_id`, `eos_token_id`, `config.num_hidden_layers`.
        prompt_ids: Long[P] (or Long[1, P]); batch size 1 only.
        policy: a `BlockPolicy` (e.g. `ThresholdPolicy`, `SPDPolicy`).
        gen_length: G, the number of positions requested after the prompt (rounded up to a block).
        block_length: B.
        record_trace: keep a `StepRecord` per forward in `DecodeResult.trace` (costs host copies).
        use_cache: False recomputes the whole prefix [0, block end) with the block-causal mask at
            every forward instead of using a KV cache. It exists to verify the cached path: both
            give the same tokens and the same NFE. The NFE of this mode counts the cached
            schedule: the prefill is counted (its work is folded into every later forward) but
            not run, and a cross-block forward is one forward either way.
        callback: called with each `StepRecord` right after the forward it describes.
        max_forwards_per_block: the frame's cap on forwards in one block (default: the larger of
            `block_length` and the policy's own `forward_limit`); a policy that has not finished a block
            by then is a `DecodingError` naming the policy and the block, never an endless loop.

    Returns:
        A `DecodeResult`; `seconds` is the wall-clock time of the whole call (CUDA synchronised).
    """
    start = time.perf_counter()
    if not isinstance(policy, BlockPolicy):
        raise ValueError(f"policy must be a BlockPolicy, got {type(policy).__name__}")
    gen_length = check_int("gen_length", gen_length, 1)
    block_length = check_int("block_length", block_length, 1)
    if max_forwards_per_block is None:
        cap = max(block_length, policy.forward_limit(block_length) or block_length)
    else:
        cap = check_int("max_forwards_per_block", max_forwards_per_block, 1)
    if prompt_ids.dim() == 2:
        if prompt_ids.shape[0] != 1:
            raise ValueError(f"generate supports batch size 1 only, got prompt_ids {tuple(prompt_ids.shape)}")
        prompt_ids = prompt_ids[0]
    if prompt_ids.dim() != 1:
        raise ValueError(f"prompt_ids must be Long[P], got shape {tuple(prompt_ids.shape)}")
    if bool((prompt_ids == int(model.mask_token_id)).any()):
        # A MASK in the prompt tail would be decoded as if it were a generated position (§4.1).
        raise ValueError("prompt_ids must not contain the MASK token")

    with torch.inference_mode():
        raw_ids, nfe, reasons, trace = _decode(
            model, prompt_ids, policy, gen_length, block_length, record_trace, use_cache, callback, cap
        )
    prompt_length = int(prompt_ids.numel())
    eos = int(model.eos_token_id)
    raw_ids = raw_ids.clone()  # a normal tensor, usable outside inference mode
    generated = raw_ids[prompt_length:]
    output_ids = raw_ids[raw_ids != eos]
    generated_ids = generated[generated != eos]
    if raw_ids.is_cuda:
        torch.cuda.synchronize(raw_ids.device)
    seconds = time.perf_counter() - start
    return DecodeResult(
        prompt_length=prompt_length,
        output_ids=output_ids,
        generated_ids=generated_ids,
        nfe=nfe,
        seconds=seconds,
        block_stop_reasons=reasons,
        trace=trace,
        raw_ids=raw_ids,
    )


def _decode(
    model: Any,
    prompt_ids: Tensor,
    policy: BlockPolicy,
    gen_length: int,
    block_length: int,
    record_trace: bool,
    use_cache: bool,
    callback: Callable[[StepRecord], None] | None,
    cap: int,
) -> tuple[Tensor, int, list[str], list[StepRecord]]:
    device = _model_device(model, prompt_ids.device)
    mask_id, eos_id = int(model.mask_token_id), int(model.eos_token_id)
    prompt_length = int(prompt_ids.numel())
    total_length = math.ceil((prompt_length + gen_length) / block_length) * block_length
    x = torch.full((total_length,), mask_id, dtype=torch.long, device=device)
    x[:prompt_length] = prompt_ids.to(device)
    positions = torch.arange(total_length, device=device)
    s0 = (prompt_length // block_length) * block_length
    embedder = TokenEmbedder.from_model(model, device)
    cache = KVCache(model.config.num_hidden_layers) if use_cache else None
    trace: list[StepRecord] = []
    reasons: list[str] = []
    want_records = record_trace or callback is not None

    def emit(record: StepRecord) -> None:
        if record_trace:
            trace.append(record)
        if callback is not None:
            callback(record)

    nfe = 0
    if s0 > 0:
        if cache is not None:
            prefix = positions[:s0]
            model.forward(
                input_ids=x[None, :s0],
                position_ids=prefix,
                attention_mask=block_causal_mask(prefix, block_length),
                kv_cache=cache,
                cache_commit_length=s0,
            )
            _check_cache_length(cache, s0)
        nfe += 1
        if want_records:
            emit(StepRecord(-1, 0, INPUT_PREFILL, None, None, [], None))

    forward = _BlockForward(model, x, positions, block_length, cache, embedder)
    pending = False  # §4.1: false after the prefill, true after every finished block
    for s in range(s0, total_length, block_length):
        e = s + block_length
        start_ids = x[s:e].clone()
        active = start_ids == mask_id
        policy.begin_block(start_ids, active, embedder)
        block_ids, embeds = start_ids, None
        step_index = 0
        while True:
            if step_index == 0:
                kind = INPUT_IDS_COMMIT if pending else INPUT_IDS
            else:
                kind = INPUT_EMBEDS if embeds is not None else INPUT_IDS
            logits = forward(kind, s, block_ids, embeds)
            nfe += 1
            out = policy.step(logits)
            if want_records:
                emit(
                    StepRecord(
                        block_index=s // block_length,
                        step_index=step_index,
                        input_kind=kind,
                        block_ids=out.block_ids.detach().cpu().clone(),
                        confidence=out.confidence.detach().float().cpu().clone(),
                        changed_positions=out.changed.nonzero().flatten().tolist(),
                        stop_reason=out.stop_reason,
                    )
                )
            if out.done:
                break
            step_index += 1
            if step_index >= cap:
                raise DecodingError(
                    f"decoding policy {policy.name!r} did not finish block {s // block_length} within {cap} "
                    f"forwards (the frame's cap, decoding.max_forwards_per_block); its knobs: {policy.config()}"
                )
            block_ids, embeds = out.block_ids, out.next_inputs_embeds
        final = out.block_ids
        if not bool((final[~active] == start_ids[~active]).all()):
            raise RuntimeError(f"policy {policy.name!r} changed an inactive (prompt) position")
        x[s:e] = final
        pending = True
        reasons.append(out.stop_reason or "done")
        if bool((final == eos_id).any()):  # §3.1 EOS stop: fill the rest with EOS
            x[e:] = eos_id
            break
    return x, nfe, reasons, trace


def _check_cache_length(cache: KVCache, expected: int) -> None:
    if cache.length != expected:
        raise RuntimeError(f"KV cache holds {cache.length} positions, expected {expected}")


@dataclass
class _BlockForward:
    """Runs one block forward and returns the block logits [B, V]; the only place `model.forward`
    is called during block decoding (the prefill is in `_decode`)."""

    model: Any
    x: Tensor  # the whole [T] sequence; committed blocks are final
    positions: Tensor
    block_length: int
    cache: KVCache | None
    embedder: TokenEmbedder

    def __post_init__(self) -> None:
        # Both masks depend only on the relative block layout, so they are built once. One block:
        # all True (bidirectional). Finished + new block: the finished block cannot see the new one.
        b = self.block_length
        self.block_mask = block_causal_mask(self.positions[:b], b)
        self.commit_mask = block_causal_mask(self.positions[: 2 * b], b)

    def __call__(self, kind: str, s: int, block_ids: Tensor, embeds: Tensor | None) -> Tensor:
        if self.cache is None:
            return self._uncached(kind, s, block_ids, embeds)
        b, cache = self.block_length, self.cache
        if kind == INPUT_IDS_COMMIT:
            # §3.1 / §4.2 step 1: [finished block, new block] in one forward; the finished block's
            # K/V (hard final ids, block-causal) go into the cache, the new block's logits are its
            # step 1.
            logits = self.model.forward(
                input_ids=torch.cat([self.x[s - b : s], block_ids])[None],
                position_ids=self.positions[s - b : s + b],
                attention_mask=self.commit_mask,
                kv_cache=cache,
                cache_commit_length=b,
            )
            _check_cache_length(cache, s)
            return logits[0, b:]
        inputs = {"inputs_embeds": embeds[None]} if kind == INPUT_EMBEDS else {"input_ids": block_ids[None]}
        logits = self.model.forward(
            **inputs,
            position_ids=self.positions[s : s + b],
            attention_mask=self.block_mask,
            kv_cache=cache,
            cache_commit_length=0,  # decoding steps never write the cache (§4.2 step 1)
        )
        return logits[0]

    def _uncached(self, kind: str, s: int, block_ids: Tensor, embeds: Tensor | None) -> Tensor:
        """The same block forward recomputing [0, s + B) from scratch (verification mode)."""
        prefix_positions = self.positions[: s + self.block_length]
        mask = block_causal_mask(prefix_positions, self.block_length)
        if kind == INPUT_EMBEDS:
            inputs = torch.cat([self.embedder(self.x[:s]), embeds]) if s > 0 else embeds
            logits = self.model.forward(
                inputs_embeds=inputs[None], position_ids=prefix_positions, attention_mask=mask
            )
        else:
            ids = torch.cat([self.x[:s], block_ids])
            logits = self.model.forward(
                input_ids=ids[None], position_ids=prefix_positions, attention_mask=mask
            )
        return logits[0, s:]
