"""Per-block decoding policies: the baseline threshold decoder (§3.1) and Soft Parallel Decoding (§4).

A policy owns one question, in the style of a diffusers scheduler: "given this block's logits and my
state, which tokens change, what is fed in next, and is the block done?". It sees one block at a
time through `begin_block` and then one `step(logits)` per forward.

What a policy must not do: run the model, touch the KV cache, count forwards, look at other blocks
or check for EOS. Those belong to the frame (`dmax_core.decoding.frame`), so that a new policy
(e.g. token editing) can be added without touching the frame and NFE is counted in one place.

Documented deviation shared by both policies (spec §7.10): the MASK token is excluded from the
argmax. Probabilities come from the full softmax over the vocabulary (fp32); the MASK column is then
zeroed and the argmax taken over the rest, and the confidence p is the full-softmax probability of
that token (not renormalised). The official code lets the argmax be MASK (the threshold decoder then
drops that candidate; SPD "decodes" a mask to MASK, which can fake convergence or re-mask a token).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from torch import Tensor

from dmax_core.kernels.soft_embedding import soft_embedding

# §3.1 step 3: the fallback threshold sits 1e-5 below the best candidate so near-ties commit together.
FALLBACK_MARGIN = 1e-5


class TokenEmbedder:
    """Input embeddings of one model for one block: ids -> E[ids], plus the mask id and E[MASK].

    Policies that feed embeddings (SPD) need the model's embedding table but must not hold the model,
    so the frame hands them this small callable instead.
    """

    def __init__(
        self, embed_fn: Callable[[Tensor], Tensor], mask_token_id: int, device: torch.device | str = "cpu"
    ) -> None:
        self._embed_fn = embed_fn
        self.mask_token_id = int(mask_token_id)
        self.device = torch.device(device)
        self._mask_embedding: Tensor | None = None

    @classmethod
    def from_model(cls, model: Any, device: torch.device | str = "cpu") -> TokenEmbedder:
        """Wrap `model.embed` (which takes [b, L] ids) as a Long[n] -> [n, d] function."""
        return cls(lambda ids: model.embed(ids[None])[0], model.mask_token_id, device)

    def __call__(self, ids: Tensor) -> Tensor:
        """E[ids] for Long[n] ids, shape [n, d], in the model's dtype."""
        return self._embed_fn(ids)

    @property
    def mask_embedding(self) -> Tensor:
        """E[MASK], shape [d]; looked up once and reused for every block."""
        if self._mask_embedding is None:
            ids = torch.tensor([self.mask_token_id], dtype=torch.long, device=self.device)
            self._mask_embedding = self._embed_fn(ids)[0]
        return self._mask_embedding


@dataclass
class PolicyStep:
    """What one policy step decided for the block (all tensors have the block length B).

    `next_inputs_embeds` is None when the next forward should be fed the ids in `block_ids`
    (threshold decoding, or a finished block); otherwise it is the [B, d] input-embedding buffer.
    """

    block_ids: Tensor  # Long[B], the block after this step
    changed: Tensor  # Bool[B], positions whose id differs from before this step
    confidence: Tensor  # fp32[B], full-softmax probability of each position's (non-MASK) argmax
    done: bool
    stop_reason: str | None
    next_inputs_embeds: Tensor | None = None


def greedy_tokens(logits: Tensor, mask_token_id: int) -> tuple[Tensor, Tensor]:
    """Greedy argmax and its probability, with MASK excluded (module docstring, §7.10 deviation).

    Args:
        logits: [B, V] block logits, any dtype.
        mask_token_id: the id that may never be chosen.

    Returns:
        (tokens Long[B], confidence fp32[B]).
    """
    probs = torch.softmax(logits.float(), dim=-1)  # §3.1 step 2: probabilities in fp32
    probs[:, mask_token_id] = 0.0  # deviation (§7.10): MASK is never a prediction
    confidence, tokens = probs.max(dim=-1)
    return tokens, confidence


def _check_probability(knob: str, value: float) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0.0 <= float(value) <= 1.0:
        raise ValueError(f"{knob} must be a number in [0, 1], got {value!r}")
    return float(value)


class BlockPolicy(ABC):
    """One block-decoding rule. The frame calls `begin_block` once, then `step` once per forward."""

    name: ClassVar[str]

    @abstractmethod
    def begin_block(self, block_ids: Tensor, active: Tensor, embedder: TokenEmbedder) -> None:
        """Start a block.

        Args:
            block_ids: Long[B], the block as it stands (prompt tail + MASKs).
            active: Bool[B], the positions to decode (those holding MASK at block start, §4.1).
            embedder: the model's input embeddings and mask id.
        """

    @abstractmethod
    def step(self, logits: Tensor) -> PolicyStep:
        """Consume the block logits [B, V] of one forward and decide the next state."""

    @abstractmethod
    def config(self) -> dict[str, Any]:
        """The knobs, for logging next to the numbers they produced."""

    @staticmethod
    def _check_block(block_ids: Tensor, active: Tensor, mask_token_id: int) -> None:
        if block_ids.dim() != 1 or active.shape != block_ids.shape or active.dtype != torch.bool:
            raise ValueError("block_ids must be Long[B] and active Bool[B] of the same length")
        if not bool((block_ids[active] == mask_token_id).all()):
            raise ValueError("every active position must hold MASK when the block starts (§4.1)")


class ThresholdPolicy(BlockPolicy):
    """The dInfer threshold decoder (§3.1 steps 2-4): commit confident masks, never revise.

    Per forward: candidates are the positions still holding MASK; the effective threshold is
    min(threshold, best candidate p - 1e-5), so every candidate with p >= threshold commits and, if
    none does, the single most confident one (plus near-ties) commits. Committed tokens are final.
    The block is done when it has no MASK left. Next forwards are fed ids.

    NFE note (§7.8): the official loop runs forwards in bursts of up to 4 and counts no-op forwards
    after a block completes; this policy reports the strict count (the block ends at its last commit).
    """

    name: ClassVar[str] = "threshold"

    def __init__(self, threshold: float) -> None:
        self.threshold = _check_probability("threshold", threshold)
        self._block_ids: Tensor | None = None
        self._mask_token_id = -1

    def config(self) -> dict[str, Any]:
        return {"policy": self.name, "threshold": self.threshold}

    def begin_block(self, block_ids: Tensor, active: Tensor, embedder: TokenEmbedder) -> None:
        self._check_block(block_ids, active, embedder.mask_token_id)
        self._mask_token_id = embedder.mask_token_id
        self._block_ids = block_ids.clone()

    def step(self, logits: Tensor) -> PolicyStep:
        if self._block_ids is None:
            raise RuntimeError("ThresholdPolicy.step called outside a block; call begin_block first")
        old = self._block_ids
        tokens, confidence = greedy_tokens(logits, self._mask_token_id)
        candidates = old == self._mask_token_id
        best = confidence.masked_fill(~candidates, -1.0).max()
        effective = torch.clamp(best - FALLBACK_MARGIN, max=self.threshold)  # min(tau, best - 1e-5)
        commit = candidates & (confidence >= effective)
        new = torch.where(commit, tokens, old)
        done = not bool((new == self._mask_token_id).any())
        self._block_ids = None if done else new
        return PolicyStep(
            block_ids=new,
            changed=commit,  # a MASK always becomes a real token (MASK is excluded from the argmax)
            confidence=confidence,
            done=done,
            stop_reason="all_decoded" if done else None,
            next_inputs_embeds=None,
        )


class SPDPolicy(BlockPolicy):
    """Soft Parallel Decoding inside one block (§4.1-4.3), greedy, with self-revision.

    State: the active set A (fixed at block start), the block ids x_b and the embedding buffer H.
    Per forward t:
      * S = the left-to-right run of masks with p >= threshold, up to the first mask below it
        (decoded positions neither stop nor count); if empty, the leftmost mask (fallback).
      * U = S plus every previously decoded active position; x_b[U] <- argmax (revision).
      * Stop if (a) every active p >= confidence_stop (0.9, independent of threshold, still-masked
        positions included) or (b) no id changed, or t reaches max_steps (default B, the hard cap).
      * Otherwise H: decoded active positions get `soft_embedding` of (argmax, p) of this forward,
        masks stay E[MASK], the inactive prompt tail stays hard; H is the next forward's input.

    Documented deviations: MASK is excluded from the argmax (module docstring). And if rule (a)
    holds while masks are left (possible only when threshold > confidence_stop, §7.10), the block
    keeps going instead of stopping, so no MASK is ever committed by rule (a). With the default
    max_steps = B the cap can never leave masks behind either, since every forward decodes at least
    one; a smaller max_steps commits the block as it stands (§7.10, masks included).
    """

    name: ClassVar[str] = "spd"

    def __init__(self, threshold: float, confidence_stop: float = 0.9, max_steps: int | None = None) -> None:
        self.threshold = _check_probability("threshold", threshold)
        self.confidence_stop = _check_probability("confidence_stop", confidence_stop)
        if max_steps is not None and (
            isinstance(max_steps, bool) or not isinstance(max_steps, int) or max_steps < 1
        ):
            raise ValueError(f"max_steps must be None or an int >= 1, got {max_steps!r}")
        self.max_steps = max_steps
        self._ids: Tensor | None = None
        self._active: Tensor | None = None
        self._embedder: TokenEmbedder | None = None
        self._buffer: Tensor | None = None
        self._step_index = 0
        self._cap = 0

    def config(self) -> dict[str, Any]:
        return {
            "policy": self.name,
            "threshold": self.threshold,
            "confidence_stop": self.confidence_stop,
            "max_steps": self.max_steps,
        }

    def begin_block(self, block_ids: Tensor, active: Tensor, embedder: TokenEmbedder) -> None:
        self._check_block(block_ids, active, embedder.mask_token_id)
        self._ids = block_ids.clone()
        self._active = active.clone()
        self._embedder = embedder
        self._buffer = None  # §4.1: H does not exist at the start of the block
        self._step_index = 0
        self._cap = self.max_steps if self.max_steps is not None else block_ids.numel()

    def step(self, logits: Tensor) -> PolicyStep:
        if self._ids is None or self._active is None or self._embedder is None:
            raise RuntimeError("SPDPolicy.step called outside a block; call begin_block first")
        embedder, active, old = self._embedder, self._active, self._ids
        mask_id = embedder.mask_token_id
        self._step_index += 1
        tokens, confidence = greedy_tokens(logits, mask_id)
        block_length = old.numel()
        index = torch.arange(block_length, device=old.device)

        # §4.2 step 3: S = masks left of the first mask with p < tau; fallback = the leftmost mask.
        masked = (old == mask_id) & active
        first_unsure = torch.where(masked & (confidence < self.threshold), index, block_length).min()
        selected = masked & (index < first_unsure)
        leftmost = torch.where(masked, index, block_length).min()
        selected = selected | (masked & (index == leftmost) & ~selected.any())  # no host sync

        # §4.2 step 4: U = S plus every previously decoded active position (revision).
        update = selected | (active & ~masked)
        new = torch.where(update, tokens, old)
        changed = update & (new != old)
        self._ids = new

        # §4.2 step 5 (after the update) and step 7.
        flags = torch.stack(
            [
                ((confidence >= self.confidence_stop) | ~active).all(),  # rule (a)
                ((new == mask_id) & active).any(),
                changed.any(),
            ]
        ).tolist()  # one host sync per step for the three tests
        high_confidence, masks_left, any_changed = flags
        stop_reason: str | None = None
        if high_confidence and not masks_left:  # deviation: rule (a) never commits masks (§7.10)
            stop_reason = "high_confidence"
        elif not any_changed:  # rule (b)
            stop_reason = "stable_tokens"
        elif self._step_index >= self._cap:
            stop_reason = "max_steps"
        if stop_reason is not None:
            self._ids = self._active = self._embedder = self._buffer = None  # §4.3: H is discarded
            return PolicyStep(new, changed, confidence, True, stop_reason, None)

        # §4.2 step 6: the embedding buffer H for the next forward.
        hard = embedder(new)  # E[x_b]: prompt tail -> its token, masks -> E[MASK]
        mask_embedding = embedder.mask_embedding.to(hard.dtype)
        decoded = active & (new != mask_id)
        if self._buffer is None:
            buffer = hard
        else:
            # A position that left D by changing id is hard-refreshed to E[MASK] (re-masking). With
            # MASK excluded from the argmax this cannot happen; kept so the rule reads as in §4.2.
            buffer = torch.where((changed & ~decoded)[:, None], mask_embedding, self._buffer)
        # For j in D, x_b[j] is this forward's argmax, so E[x_b[j]] = E[v] with p from this forward.
        soft = soft_embedding(hard, mask_embedding, confidence)
        buffer = torch.where(decoded[:, None], soft, buffer)
        self._buffer = buffer
        return PolicyStep(new, changed, confidence, False, None, buffer)
