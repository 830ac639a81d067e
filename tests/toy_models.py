"""Toy models that implement the dmax model interface (docs/interfaces.md) for decoding tests.

Each toy has a fixed, hand-predictable rule so that tests can check the decoding frame and the
policies against numbers worked out by hand. They record every forward they receive (input kind,
positions, mask, commit length) so tests can also check *what* the frame fed them. They are test
fixtures only: nothing in dmax_core may import them.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from types import SimpleNamespace

import torch
from torch import Tensor, nn

from dmax_core.models.kv_cache import KVCache

VOCAB = 16
MASK_ID = 15
EOS_ID = 14


@dataclass
class Call:
    """One forward as the toy received it."""

    kind: str  # "ids" or "embeds"
    positions: list[int]
    attention_mask: Tensor
    cache_length_before: int | None  # None when no cache was passed
    cache_commit_length: int
    input_ids: Tensor | None
    inputs_embeds: Tensor | None


class ToyModel(nn.Module):
    """Base class: an embedding table, special ids, call recording and the cache bookkeeping."""

    def __init__(self, hidden: int = 8, seed: int = 0) -> None:
        super().__init__()
        gen = torch.Generator().manual_seed(seed)
        self.word_embeddings = nn.Embedding(VOCAB, hidden)
        with torch.no_grad():
            self.word_embeddings.weight.copy_(torch.randn(VOCAB, hidden, generator=gen))
        self.config = SimpleNamespace(num_hidden_layers=1, vocab_size=VOCAB)
        self.calls: list[Call] = []
        self.batched_forwards: list[int] = []  # rows of each forward that got a list of row caches

    @property
    def mask_token_id(self) -> int:
        return MASK_ID

    @property
    def eos_token_id(self) -> int:
        return EOS_ID

    def embed(self, input_ids: Tensor) -> Tensor:
        return self.word_embeddings(input_ids)

    def forward(
        self,
        input_ids: Tensor | None = None,
        inputs_embeds: Tensor | None = None,
        *,
        position_ids: Tensor,
        attention_mask: Tensor,
        kv_cache: KVCache | list[KVCache] | None = None,
        cache_commit_length: int = 0,
    ) -> Tensor:
        assert (input_ids is None) != (inputs_embeds is None), "exactly one of ids / embeds"
        if isinstance(kv_cache, list):  # a batched forward with one cache per row: rows one by one
            self.batched_forwards.append(len(kv_cache))
            rows = []
            for row, cache in enumerate(kv_cache):
                ids = None if input_ids is None else input_ids[row : row + 1]
                embeds = None if inputs_embeds is None else inputs_embeds[row : row + 1]
                row_positions = position_ids if position_ids.dim() == 1 else position_ids[row]
                rows.append(self.forward(ids, embeds, position_ids=row_positions, attention_mask=attention_mask,
                                         kv_cache=cache, cache_commit_length=cache_commit_length))
            return torch.cat(rows)
        positions = position_ids.reshape(-1)
        length = positions.numel()
        assert attention_mask.shape == (length, length)
        self.calls.append(
            Call(
                kind="ids" if input_ids is not None else "embeds",
                positions=positions.tolist(),
                attention_mask=attention_mask.clone(),
                cache_length_before=None if kv_cache is None else kv_cache.length,
                cache_commit_length=cache_commit_length,
                input_ids=None if input_ids is None else input_ids[0].clone(),
                inputs_embeds=None if inputs_embeds is None else inputs_embeds[0].clone(),
            )
        )
        hidden = self.embed(input_ids) if inputs_embeds is None else inputs_embeds
        logits = self.compute_logits(hidden[0], positions, attention_mask, kv_cache)
        if kv_cache is not None and cache_commit_length:
            self.commit(hidden[0], positions, kv_cache, cache_commit_length)
        return logits[None]

    def compute_logits(
        self, hidden: Tensor, positions: Tensor, attention_mask: Tensor, kv_cache: KVCache | None
    ) -> Tensor:
        raise NotImplementedError

    def commit(self, hidden: Tensor, positions: Tensor, kv_cache: KVCache, n: int) -> None:
        """Context-free toys store placeholders so that `kv_cache.length` is right."""
        kv_cache.append(0, torch.zeros(1, 1, n, 1), torch.zeros(1, 1, n, 1))


def target_token(position: int) -> int:
    """The confident toy's answer at an absolute position: never MASK or EOS."""
    return 1 + position % 12


class ConfidentModel(ToyModel):
    """Always confident (p ~ 1 - 4e-8): position j predicts `target_token(j)` regardless of input.

    `eos_from`: every absolute position >= eos_from predicts EOS. `eos_at`: only these positions
    predict EOS (to put non-EOS tokens after an EOS inside one block).
    """

    def __init__(self, eos_from: int | None = None, eos_at: tuple[int, ...] = ()) -> None:
        super().__init__()
        self.eos_from = eos_from
        self.eos_at = set(eos_at)

    def compute_logits(self, hidden, positions, attention_mask, kv_cache):
        logits = torch.zeros(positions.numel(), VOCAB)
        for row, pos in enumerate(positions.tolist()):
            eos = pos in self.eos_at or (self.eos_from is not None and pos >= self.eos_from)
            logits[row, EOS_ID if eos else target_token(pos)] = 20.0
        return logits


def logits_for(tokens: list[int], probs: list[float]) -> Tensor:
    """Logits whose softmax gives exactly `probs[j]` to `tokens[j]`, the rest spread evenly."""
    rows = []
    for token, p in zip(tokens, probs, strict=True):
        row = torch.full((VOCAB,), (1.0 - p) / (VOCAB - 1), dtype=torch.float64)
        row[token] = p
        rows.append(row.log())
    return torch.stack(rows).float()


class ScriptedModel(ToyModel):
    """Returns scripted (tokens, probs) for the last B rows of each decoding forward, in order.

    A prefill forward (it commits every position it is fed) gets flat logits and uses no script
    entry. Running out of script is a test failure.
    """

    def __init__(self, block_length: int, script: list[tuple[list[int], list[float]]]) -> None:
        super().__init__()
        self.block_length = block_length
        self.script = list(script)
        self.used = 0

    def compute_logits(self, hidden, positions, attention_mask, kv_cache):
        length = positions.numel()
        logits = torch.zeros(length, VOCAB)
        if self.calls[-1].cache_commit_length == length:
            return logits  # prefill
        assert self.used < len(self.script), "the decoder ran more forwards than scripted"
        tokens, probs = self.script[self.used]
        self.used += 1
        logits[length - self.block_length :] = logits_for(tokens, probs)
        return logits


class AttentionModel(ToyModel):
    """A two-layer, one-head transformer with a real KV cache, for cache-equivalence tests.

    Its logits depend on every position it may attend, and the second layer's cached K/V depend on
    what the first layer attended to, so any mistake in what the frame caches, feeds or masks
    (including the cross-block commit mask) changes the tokens. The mask rule is the interface's:
    cached keys are always visible, `attention_mask` covers new x new.
    """

    def __init__(self, hidden: int = 16, seed: int = 0, scale: float = 4.0, eos_bias: float = -3.0) -> None:
        super().__init__(hidden=hidden, seed=seed)
        self.config = SimpleNamespace(num_hidden_layers=2, vocab_size=VOCAB)
        self.eos_bias = eos_bias  # keeps EOS rare so that decodes span several blocks
        gen = torch.Generator().manual_seed(seed + 1)

        def weight() -> Tensor:
            return torch.randn(hidden, hidden, generator=gen) / hidden**0.5

        self.layers = [(weight(), weight(), weight(), weight()) for _ in range(2)]
        self.position_table = torch.randn(256, hidden, generator=gen)
        self.unembed = torch.randn(hidden, VOCAB, generator=gen) * scale / hidden**0.5

    def _run(
        self, hidden: Tensor, positions: Tensor, attention_mask: Tensor, kv_cache: KVCache | None
    ) -> tuple[Tensor, list[tuple[Tensor, Tensor]]]:
        """Final hidden states and each layer's new K/V."""
        h = hidden.float() + self.position_table[positions]
        new_kv = []
        for layer, (wq, wk, wv, wo) in enumerate(self.layers):
            q, k, v = h @ wq, h @ wk, h @ wv
            new_kv.append((k, v))
            allowed = attention_mask
            cached = None if kv_cache is None else kv_cache.get(layer)
            if cached is not None:
                k = torch.cat([cached[0][0, 0], k])
                v = torch.cat([cached[1][0, 0], v])
                visible = torch.ones(len(q), cached[0].shape[2], dtype=torch.bool)
                allowed = torch.cat([visible, allowed], dim=1)
            scores = (q @ k.T / math.sqrt(q.shape[-1])).masked_fill(~allowed, float("-inf"))
            h = h + (torch.softmax(scores, dim=-1) @ v) @ wo
        return h, new_kv

    def compute_logits(self, hidden, positions, attention_mask, kv_cache):
        h, self._last_kv = self._run(hidden, positions, attention_mask, kv_cache)
        logits = h @ self.unembed
        logits[:, EOS_ID] += self.eos_bias
        return logits

    def commit(self, hidden, positions, kv_cache, n):
        # The K/V of the first n new tokens from the forward that just ran (the base class calls
        # this after `compute_logits`, so the cache was read before it grows).
        for layer, (k, v) in enumerate(self._last_kv):
            kv_cache.append(layer, k[None, None, :n], v[None, None, :n])
