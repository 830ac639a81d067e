"""The contract of a per-block decoding policy, the helpers policies share, and the policy registry.

The policies themselves live one per file in `dmax_core.decoding.policies` (threshold decoding, the
baseline of §3.1; Soft Parallel Decoding, §4). A policy class registers itself by its `name`; its knobs
are its `__init__` keyword arguments (the first is always `threshold`, the knob evaluation sweeps), so
the config can set and validate every knob of every policy (`decoding.<name>.<knob>`).

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

from dmax_core.registry import Registry, class_knobs

POLICIES: Registry[BlockPolicy] = Registry("decoding policy")
# Every policy takes this knob first; evaluation sweeps it and distillation sets it (not `decoding.*`).
SWEPT_KNOB = "threshold"


class TokenEmbedder:
    """Input embeddings of one model for one block: ids -> E[ids], plus the mask id and E[MASK].

    Policies that feed embeddings (SPD) need the model's embedding table but must not hold the model,
    so the frame hands them this small callable instead.
    """

    def __init__(
        self, embed_fn: Callable[[Tensor], Tensor], mask_token_id: int, device: torch.device | str = "cpu",
        table: Tensor | None = None,
    ) -> None:
        self._embed_fn = embed_fn
        self.mask_token_id = int(mask_token_id)
        self.device = torch.device(device)
        self.table = table  # the embedding matrix [V, d] when the model exposes it (fused SPD kernel)
        self._mask_embedding: Tensor | None = None

    @classmethod
    def from_model(cls, model: Any, device: torch.device | str = "cpu") -> TokenEmbedder:
        """Wrap `model.embed` (which takes [b, L] ids) as a Long[n] -> [n, d] function."""
        return cls(lambda ids: model.embed(ids[None])[0], model.mask_token_id, device,
                   getattr(model, "embedding_table", None))

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


class BlockPolicy(ABC):
    """One block-decoding rule. The frame calls `begin_block` once, then `step` once per forward.

    A subclass that sets `name` is registered under it; its `__init__` must take `threshold` first."""

    name: ClassVar[str]

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if "name" in cls.__dict__:
            if next(iter(class_knobs(cls)), None) != SWEPT_KNOB:
                raise TypeError(f"policy {cls.name!r}: __init__ must take `{SWEPT_KNOB}` as its first knob")
            POLICIES.register(cls)

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

    def forward_limit(self, block_length: int) -> int | None:
        """The most forwards this policy takes on a block of `block_length`, if it bounds itself.

        The frame allows at least this many (and never fewer than `block_length`); a policy that returns
        None is stopped by the frame's cap alone."""
        return None

    def config(self) -> dict[str, Any]:
        """The knobs (stored as attributes of the same names), for logging next to the numbers they produced."""
        return {"policy": self.name, **{knob: getattr(self, knob) for knob in POLICIES.knobs(self.name)}}

    @staticmethod
    def _check_block(block_ids: Tensor, active: Tensor, mask_token_id: int) -> None:
        if block_ids.dim() != 1 or active.shape != block_ids.shape or active.dtype != torch.bool:
            raise ValueError("block_ids must be Long[B] and active Bool[B] of the same length")
        if not bool((block_ids[active] == mask_token_id).all()):
            raise ValueError("every active position must hold MASK when the block starts (§4.1)")
