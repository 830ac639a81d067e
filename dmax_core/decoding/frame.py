"""The block-decoding frame shared by every policy (spec §3.1 frame, §4.3, §5.4).

The frame owns everything outside a single block step: the [prompt, MASK...] layout over absolute
B-aligned blocks, the prefill of the prompt prefix, the prefix KV cache and the cross-block commit,
NFE counting, EOS stop, wall-clock timing and the per-forward trace. A `BlockPolicy` owns only what
happens inside a block (which tokens change, what is fed next, when the block is done).

Batching (`generate_batch`): every row (prompt) keeps its own block progress, policy state, KV cache,
NFE, EOS stop and trace; rows start as slots free up (at most `max_batch` at once) and a finished row
costs nothing more. Each round, every live row takes one step; rows whose next forward has the same
shape (a cross-block commit of 2B ids, B ids, or B embeddings) share one model forward, with one cache
per row. Every model op but attention treats rows independently and attention runs row by row over
each row's own cache, so a row's tokens, NFE and stop reasons are exactly what a batch of one gives
(`generate` is `generate_batch` with one row; tests check it). Timing: a row's `seconds` run from its
prefill to its last forward, so per-sample TPS in a batch is latency-based; the paper's TPS is batch 1.

It must not contain policy logic (thresholds, revision, soft embeddings), must not define attention
rules (they come from `dmax_core.diffusion.block_causal_mask`), and must not count NFE anywhere but
here.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor

from dmax_core.decoding.policy import BlockPolicy, TokenEmbedder
from dmax_core.diffusion import block_causal_mask
from dmax_core.errors import DecodingError
from dmax_core.models.kv_cache import KVCache, StaticKVCache
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
    after the policy step (None for the prefill); `changed_positions` are block-relative. `row` is the
    prompt's index in a batched call (0 for `generate`).
    """

    block_index: int
    step_index: int
    input_kind: str
    block_ids: Tensor | None
    confidence: Tensor | None
    changed_positions: list[int]
    stop_reason: str | None
    row: int = 0


@dataclass
class DecodeResult:
    """The outcome of decoding one prompt, with the §5.4 counting rules applied.

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
        prompt_ids: Long[P] (or Long[1, P]): one prompt; `generate_batch` decodes several.
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
    if prompt_ids.dim() == 2:
        if prompt_ids.shape[0] != 1:
            raise ValueError(f"generate takes one prompt (batch size 1), got prompt_ids {tuple(prompt_ids.shape)}; "
                             "use generate_batch for several")
        prompt_ids = prompt_ids[0]
    return generate_batch(
        model, [prompt_ids], [policy], gen_length=gen_length, block_length=block_length,
        record_trace=record_trace, use_cache=use_cache, callback=callback,
        max_forwards_per_block=max_forwards_per_block,
    )[0]


def generate_batch(
    model: Any,
    prompts: Sequence[Tensor],
    policies: Sequence[BlockPolicy],
    *,
    gen_length: int,
    block_length: int,
    max_batch: int | None = None,
    record_trace: bool = False,
    trace_rows: Collection[int] | None = None,
    use_cache: bool = True,
    callback: Callable[[StepRecord], None] | None = None,
    max_forwards_per_block: int | None = None,
    on_forward: Callable[[ForwardInfo], None] | None = None,
    on_finish: Callable[[int, DecodeResult], None] | None = None,
    compiled: bool = False,
) -> list[DecodeResult]:
    """Decode every prompt as `generate` would, at most `max_batch` rows at a time (default: all).

    `policies[i]` decodes `prompts[i]` (one object per row: a policy holds the state of its block).
    Each row's result is exactly its batch-of-one result; `seconds` is the row's own latency from its
    prefill to its last forward (module docstring). Prompts may differ in length. `on_forward` is called
    after every model forward (batched or not) with its `ForwardInfo`, for speed accounting; `on_finish`
    with (row index, result) as soon as a row is done, for progress bars. `record_trace` keeps every row's
    `StepRecord`s in its result's `trace`; `trace_rows` keeps only those rows' (the others build none), so a
    measured run can picture a few samples at the cost of their host copies alone.

    `compiled=True` runs every block forward through `torch.compile` over a fixed-shape cache
    (`StaticKVCache`: 3 graphs, for B ids, B embeddings and the 2B cross-block commit), one row at a time
    (`max_batch` must be 1): the batch-1 setting in which the paper measures speed, on GPUs. Attention
    then spans the whole preallocated cache with a mask, equal to the exact path up to float rounding.
    """
    gen_length = check_int("gen_length", gen_length, 1)
    block_length = check_int("block_length", block_length, 1)
    if len(prompts) != len(policies):
        raise ValueError(f"{len(prompts)} prompts but {len(policies)} policies (one policy object per row)")
    if len({id(p) for p in policies}) != len(policies):
        raise ValueError("each row needs its own policy object (a policy holds the state of its block)")
    slots = len(prompts) if max_batch is None else check_int("max_batch", max_batch, 1)
    for policy in policies:
        if not isinstance(policy, BlockPolicy):
            raise ValueError(f"policy must be a BlockPolicy, got {type(policy).__name__}")
    for prompt in prompts:
        if prompt.dim() != 1:
            raise ValueError(f"prompt_ids must be Long[P], got shape {tuple(prompt.shape)}")
        if bool((prompt == int(model.mask_token_id)).any()):
            # A MASK in the prompt tail would be decoded as if it were a generated position (§4.1).
            raise ValueError("prompt_ids must not contain the MASK token")
    caps = [max(block_length, p.forward_limit(block_length) or block_length) if max_forwards_per_block is None
            else check_int("max_forwards_per_block", max_forwards_per_block, 1) for p in policies]
    if compiled and (slots != 1 or not use_cache):
        raise ValueError("compiled decoding runs one row at a time with a cache: max_batch=1, use_cache=True")
    traced = None if record_trace or trace_rows is None else frozenset(trace_rows)
    frame = _Frame(model, block_length, gen_length, use_cache, record_trace or traced is not None, callback,
                   on_forward, compiled, traced)
    with torch.inference_mode():
        return frame.run(prompts, policies, caps, slots, on_finish)


@dataclass(frozen=True)
class ForwardInfo:
    """One model forward of the frame: what it fed, for how many rows, and how many new positions each."""

    kind: str  # INPUT_PREFILL, INPUT_IDS_COMMIT, INPUT_IDS or INPUT_EMBEDS
    rows: int
    length: int


@dataclass
class _Row:
    """One prompt's decoding state."""

    index: int
    policy: BlockPolicy
    cap: int
    prompt_length: int
    x: Tensor  # [T]: prompt, then MASK until blocks are committed
    cache: KVCache | None
    started: float
    s: int = 0  # start of the current block
    pending: bool = False  # §4.1: false after the prefill, true after every finished block
    start_ids: Tensor | None = None
    active: Tensor | None = None
    block_ids: Tensor | None = None
    embeds: Tensor | None = None
    step_index: int = 0
    nfe: int = 0
    reasons: list[str] = field(default_factory=list)
    trace: list[StepRecord] = field(default_factory=list)
    seconds: float = 0.0
    done: bool = False

    @property
    def kind(self) -> str:
        """What the next forward of this row feeds."""
        if self.step_index == 0:
            return INPUT_IDS_COMMIT if self.pending else INPUT_IDS
        return INPUT_EMBEDS if self.embeds is not None else INPUT_IDS


class _Frame:
    """The rounds of a batched decode: prefill new rows, one step for every live row, retire finished ones."""

    def __init__(self, model: Any, block_length: int, gen_length: int, use_cache: bool, record_trace: bool,
                 callback: Callable[[StepRecord], None] | None,
                 on_forward: Callable[[ForwardInfo], None] | None, compiled: bool = False,
                 trace_rows: frozenset[int] | None = None) -> None:
        self.model = model
        self.on_forward = on_forward
        self.compiled = compiled
        # One compiled forward for the fixed-shape block steps (its graphs are cached by shape).
        self.block_forward = compiled_forward(model) if compiled else model.forward
        self.b = block_length
        self.gen_length = gen_length
        self.use_cache = use_cache
        self.record_trace = record_trace
        self.trace_rows = trace_rows  # None: every row's records are kept (when record_trace)
        self.callback = callback
        self.want_records = record_trace or callback is not None
        self.mask_id, self.eos_id = int(model.mask_token_id), int(model.eos_token_id)
        self.device = _model_device(model, torch.device("cpu"))
        self.embedder = TokenEmbedder.from_model(model, self.device)
        # Both masks depend only on the relative block layout. One block: all True (bidirectional).
        # Finished + new block: the finished block cannot see the new one.
        local = torch.arange(2 * block_length, device=self.device)
        self.block_mask = block_causal_mask(local[:block_length], block_length)
        self.commit_mask = block_causal_mask(local, block_length)

    # ---------------------------------------------------------------------------------- the loop
    def run(self, prompts: Sequence[Tensor], policies: Sequence[BlockPolicy], caps: list[int], slots: int,
            on_finish: Callable[[int, DecodeResult], None] | None) -> list[DecodeResult]:
        waiting = list(range(len(prompts)))
        live: list[_Row] = []
        results: dict[int, DecodeResult] = {}
        while waiting or live:
            joining = [self._new_row(i, prompts[i], policies[i], caps[i]) for i in waiting[: slots - len(live)]]
            del waiting[: len(joining)]
            self._prefill(joining)
            live += joining
            self._step(live)
            for row in [r for r in live if r.done]:
                live.remove(row)
                results[row.index] = self._result(row)
                if on_finish is not None:
                    on_finish(row.index, results[row.index])
        return [results[i] for i in range(len(prompts))]

    def _new_row(self, index: int, prompt: Tensor, policy: BlockPolicy, cap: int) -> _Row:
        prompt_length = int(prompt.numel())
        total = math.ceil((prompt_length + self.gen_length) / self.b) * self.b
        x = torch.full((total,), self.mask_id, dtype=torch.long, device=self.device)
        x[:prompt_length] = prompt.to(self.device)
        # Preallocated to the row's final length: a forward writes its keys in place, nothing is copied.
        cache: KVCache | StaticKVCache | None = None
        if self.compiled:
            # Capacity rounded up to a multiple of 128 positions, so few distinct shapes get compiled.
            cfg = self.model.config
            capacity = math.ceil(total / 128) * 128
            cache = StaticKVCache(cfg.num_hidden_layers, capacity, cfg.num_key_value_heads, cfg.head_dim,
                                  self.model.dtype, self.device)
        elif self.use_cache:
            cache = KVCache(self.model.config.num_hidden_layers, capacity=total)
        return _Row(index, policy, cap, prompt_length, x, cache, time.perf_counter())

    def _prefill(self, rows: list[_Row]) -> None:
        """One forward over [0, s0) per row with s0 > 0 (rows of equal s0 share it), then the first block."""
        by_length: dict[int, list[_Row]] = {}
        for row in rows:
            by_length.setdefault((row.prompt_length // self.b) * self.b, []).append(row)
        for s0, group in by_length.items():
            if s0 > 0:
                if self.use_cache:
                    positions = torch.arange(s0, device=self.device)
                    # A static cache takes one row per forward; the prefill runs eagerly (its shape is the prompt's).
                    batches = [[r] for r in group] if self.compiled else [group]
                    for rows in batches:
                        self._model(
                            INPUT_PREFILL, input_ids=torch.stack([r.x[:s0] for r in rows]), position_ids=positions,
                            attention_mask=block_causal_mask(positions, self.b),
                            kv_cache=rows[0].cache if self.compiled else [r.cache for r in rows],
                            cache_commit_length=s0,
                        )
                for row in group:
                    _check_cache_length(row.cache, s0)
                    row.nfe += 1
                    self._emit(row, StepRecord(-1, 0, INPUT_PREFILL, None, None, [], None, row.index))
            for row in group:
                self._begin_block(row, s0)

    def _step(self, live: list[_Row]) -> None:
        """One forward for every live row: rows of the same input kind share a batched forward."""
        groups: dict[str, list[_Row]] = {}
        for row in live:
            groups.setdefault(row.kind, []).append(row)
        for kind, group in groups.items():
            if not self.use_cache:
                logits = [self._uncached(kind, r) for r in group]
            elif self.compiled:
                logits = [self._forward(kind, [r])[0] for r in group]
            else:
                logits = self._forward(kind, group)
            for row, row_logits in zip(group, logits, strict=True):
                self._advance(row, kind, row_logits)

    # ------------------------------------------------------------------------------- forwards
    def _forward(self, kind: str, rows: list[_Row]) -> list[Tensor]:
        """Block logits [B, V] per row, from one forward for all `rows`."""
        b = self.b
        caches = rows[0].cache if self.compiled else [r.cache for r in rows]
        if kind == INPUT_IDS_COMMIT:
            # §3.1 / §4.2 step 1: [finished block, new block] in one forward; the finished block's K/V
            # (hard final ids, block-causal) go into the cache, the new block's logits are its step 1.
            logits = self._model(
                kind, block=True, input_ids=torch.stack([torch.cat([r.x[r.s - b : r.s], r.block_ids]) for r in rows]),
                position_ids=torch.stack([torch.arange(r.s - b, r.s + b, device=self.device) for r in rows]),
                attention_mask=self.commit_mask, kv_cache=caches, cache_commit_length=b,
            )
            for r in rows:
                _check_cache_length(r.cache, r.s)
            return list(logits[:, b:])
        inputs = ({"inputs_embeds": torch.stack([r.embeds for r in rows])} if kind == INPUT_EMBEDS
                  else {"input_ids": torch.stack([r.block_ids for r in rows])})
        logits = self._model(
            kind, block=True, **inputs,
            position_ids=torch.stack([torch.arange(r.s, r.s + b, device=self.device) for r in rows]),
            attention_mask=self.block_mask, kv_cache=caches,
            cache_commit_length=0,  # decoding steps never write the cache (§4.2 step 1)
        )
        return list(logits)

    def _uncached(self, kind: str, row: _Row) -> Tensor:
        """The same block forward recomputing [0, s + B) from scratch (verification mode, one row)."""
        s = row.s
        positions = torch.arange(s + self.b, device=self.device)
        mask = block_causal_mask(positions, self.b)
        if kind == INPUT_EMBEDS:
            inputs = torch.cat([self.embedder(row.x[:s]), row.embeds]) if s > 0 else row.embeds
            logits = self._model(kind, inputs_embeds=inputs[None], position_ids=positions, attention_mask=mask)
        else:
            ids = torch.cat([row.x[:s], row.block_ids])
            logits = self._model(kind, input_ids=ids[None], position_ids=positions, attention_mask=mask)
        return logits[0, s:]

    def _model(self, kind: str, block: bool = False, **inputs: Any) -> Tensor:
        """`model.forward` (the frame's only call site; compiled for block steps when asked), reported to
        `on_forward`."""
        logits = (self.block_forward if block else self.model.forward)(**inputs)
        if self.on_forward is not None:
            fed = inputs["input_ids"] if "input_ids" in inputs else inputs["inputs_embeds"]
            self.on_forward(ForwardInfo(kind, int(fed.shape[0]), int(fed.shape[1])))
        return logits

    # ------------------------------------------------------------------------------ the blocks
    def _begin_block(self, row: _Row, s: int) -> None:
        row.s, row.step_index, row.embeds = s, 0, None
        row.start_ids = row.x[s : s + self.b].clone()
        row.active = row.start_ids == self.mask_id
        row.policy.begin_block(row.start_ids, row.active, self.embedder)
        row.block_ids = row.start_ids

    def _advance(self, row: _Row, kind: str, logits: Tensor) -> None:
        row.nfe += 1
        out = row.policy.step(logits)
        if self.want_records and (self.callback is not None or self._traced(row)):
            self._emit(row, StepRecord(
                block_index=row.s // self.b,
                step_index=row.step_index,
                input_kind=kind,
                block_ids=out.block_ids.detach().cpu().clone(),
                confidence=out.confidence.detach().float().cpu().clone(),
                changed_positions=out.changed.nonzero().flatten().tolist(),
                stop_reason=out.stop_reason,
                row=row.index,
            ))
        if not out.done:
            row.step_index += 1
            if row.step_index >= row.cap:
                policy = row.policy
                raise DecodingError(
                    f"decoding policy {policy.name!r} did not finish block {row.s // self.b} within {row.cap} "
                    f"forwards (the frame's cap, decoding.max_forwards_per_block); its knobs: {policy.config()}"
                )
            row.block_ids, row.embeds = out.block_ids, out.next_inputs_embeds
            return
        final, s, e = out.block_ids, row.s, row.s + self.b
        inactive = ~row.active
        if not bool((final[inactive] == row.start_ids[inactive]).all()):
            raise RuntimeError(f"policy {row.policy.name!r} changed an inactive (prompt) position")
        row.x[s:e] = final
        row.pending = True
        row.reasons.append(out.stop_reason or "done")
        if bool((final == self.eos_id).any()) or e >= row.x.numel():  # §3.1 EOS stop: fill the rest with EOS
            row.x[e:] = self.eos_id
            row.done = True
            if row.x.is_cuda:
                torch.cuda.synchronize(row.x.device)
            row.seconds = time.perf_counter() - row.started
        else:
            self._begin_block(row, e)

    def _traced(self, row: _Row) -> bool:
        return self.record_trace and (self.trace_rows is None or row.index in self.trace_rows)

    def _emit(self, row: _Row, record: StepRecord) -> None:
        if self._traced(row):
            row.trace.append(record)
        if self.callback is not None:
            self.callback(record)

    def _result(self, row: _Row) -> DecodeResult:
        raw_ids = row.x.clone()  # a normal tensor, usable outside inference mode
        generated = raw_ids[row.prompt_length:]
        return DecodeResult(
            prompt_length=row.prompt_length,
            output_ids=raw_ids[raw_ids != self.eos_id],
            generated_ids=generated[generated != self.eos_id],
            nfe=row.nfe,
            seconds=row.seconds,
            block_stop_reasons=row.reasons,
            trace=row.trace,
            raw_ids=raw_ids,
        )


def compiled_forward(model: Any) -> Callable[..., Tensor]:
    """`torch.compile(model.forward)`, one per model (its graphs are reused across calls)."""
    compiled = getattr(model, "_dmax_compiled_forward", None)
    if compiled is None:
        compiled = torch.compile(model.forward, dynamic=False)
        model._dmax_compiled_forward = compiled
    return compiled


def _check_cache_length(cache: KVCache | StaticKVCache | None, expected: int) -> None:
    if cache is not None and cache.length != expected:
        raise RuntimeError(f"KV cache holds {cache.length} positions, expected {expected}")
