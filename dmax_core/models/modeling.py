"""Native PyTorch LLaDA2-MoE (spec §6): the dLLM that every dmax stage trains and decodes.

One implementation at any size: a tiny CPU model for the embedded pipeline and LLaDA2.0-mini /
DMax-16B on GPUs. `state_dict()` keys are exactly the HF per-expert names of §6.3, so released
checkpoints load by name, and `save_pretrained` / `from_pretrained` read and write the HF layout
(`config.json` + safetensors).

What this module must not do: decide attention rules (the caller passes a boolean mask, built in
`dmax_core/diffusion.py`; attention here is never implicitly causal), own decoding state (the
frame owns the `KVCache` and when to commit to it), unpickle anything (`torch.load` is never
called), or register with / import transformers. It is longer than most modules (about 440 lines) on
purpose: the whole forward, from embeddings through attention, routing and experts to the head, reads
top to bottom against §6.2 in one file; saving and loading live in `serialization.py`.
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from .configuration import LLaDA2MoeConfig
from .kv_cache import KVCache, StaticKVCache
from .moe import LLaDA2MoeGate, LLaDA2MoeMLP, LLaDA2MoeSparseMoeBlock
from .serialization import load_model, save_model

# No cache, one cache for the whole batch, one cache per row, or a fixed-shape cache (LLaDA2MoeAttention).
Caches = KVCache | StaticKVCache | list[KVCache] | None



# ====================================================================== building blocks
class LLaDA2MoeRMSNorm(nn.Module):
    """RMSNorm computed in fp32, cast back, times a learned weight (no bias; §6.2)."""

    def __init__(self, dim: int, eps: float) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(dim))
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        dtype = x.dtype
        x32 = x.float()
        x32 = x32 * torch.rsqrt(x32.pow(2).mean(-1, keepdim=True) + self.eps)
        # Cast back before the weight, as the reference does, so bf16 numerics match it.
        return self.weight * x32.to(dtype)


def rotary_cos_sin(position_ids: torch.Tensor, rotary_dim: int, theta: float,
                   dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
    """cos/sin tables [b, 1, L, rotary_dim] for NeoX rotate-half RoPE (§6.2).

    inv_freq_i = theta^(-2i/rotary_dim), i < rotary_dim/2, computed in fp32 like the HF default
    rope init; the angle table is duplicated (cat(freqs, freqs)) because rotate-half pairs i and
    i + rotary_dim/2. Computed from the positions on every call, so there is no buffer that the
    meta device or `to_empty` could leave uninitialised.
    """
    exponent = torch.arange(0, rotary_dim, 2, dtype=torch.int64, device=position_ids.device).float()
    inv_freq = 1.0 / (theta ** (exponent / rotary_dim))
    freqs = position_ids.float()[..., None] * inv_freq  # [b, L, rotary_dim/2]
    emb = torch.cat([freqs, freqs], dim=-1)[:, None]  # [b, 1, L, rotary_dim]
    return emb.cos().to(dtype), emb.sin().to(dtype)


def _rotate_half(x: torch.Tensor) -> torch.Tensor:
    half = x.shape[-1] // 2
    return torch.cat([-x[..., half:], x[..., :half]], dim=-1)


def apply_partial_rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotate the first cos.shape[-1] dims of each head; pass the rest through (§6.2 step 2)."""
    rotary_dim = cos.shape[-1]
    x_rot, x_pass = x[..., :rotary_dim], x[..., rotary_dim:]
    x_rot = x_rot * cos + _rotate_half(x_rot) * sin
    return torch.cat([x_rot, x_pass], dim=-1)


class LLaDA2MoeAttention(nn.Module):
    """Fused-QKV GQA attention with per-head q/k RMSNorm before partial RoPE (§6.2)."""

    def __init__(self, config: LLaDA2MoeConfig) -> None:
        super().__init__()
        self.num_heads = config.num_attention_heads
        self.num_kv_heads = config.num_key_value_heads
        self.head_dim = config.head_dim
        # Rows of the fused weight are ordered Q (heads*hd), K (kv*hd), V (kv*hd) (§6.2).
        self.query_key_value = nn.Linear(
            config.hidden_size, (self.num_heads + 2 * self.num_kv_heads) * self.head_dim,
            bias=config.use_qkv_bias)
        self.query_layernorm = LLaDA2MoeRMSNorm(self.head_dim, config.rms_norm_eps)
        self.key_layernorm = LLaDA2MoeRMSNorm(self.head_dim, config.rms_norm_eps)
        self.dense = nn.Linear(self.num_heads * self.head_dim, config.hidden_size, bias=config.use_bias)

    def forward(self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, mask: torch.Tensor,
                caches: Caches, layer_idx: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Returns (output [b, L, d], post-RoPE K [b, kv, L, hd], V [b, kv, L, hd]) of the new tokens.

        `caches` is None (no cache), one `KVCache` holding the whole batch, or one cache per row (rows
        whose cached lengths differ). Each new query attends every cached key and the new keys `mask`
        allows ([L, L] or [b, 1, L, L], new x new). With one cache per row, rows of equal cached length
        share one attention call, whose per-row result equals that of a batch of one."""
        b, length, _ = x.shape
        qkv = self.query_key_value(x).view(b, length, self.num_heads + 2 * self.num_kv_heads, self.head_dim)
        q, k, v = qkv.split([self.num_heads, self.num_kv_heads, self.num_kv_heads], dim=2)
        q, k, v = q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2)
        q = apply_partial_rope(self.query_layernorm(q), cos, sin)
        k = apply_partial_rope(self.key_layernorm(k), cos, sin)
        if isinstance(caches, list):
            rows = [cache.extend(layer_idx, k[i:i + 1], v[i:i + 1]) for i, cache in enumerate(caches)]
            by_length: dict[int, list[int]] = {}
            for i, (keys, _) in enumerate(rows):
                by_length.setdefault(keys.shape[2], []).append(i)
            out = q.new_empty(q.shape)
            for same in by_length.values():
                index = torch.tensor(same, device=q.device)
                out[index] = self._attend(q[index], torch.cat([rows[i][0] for i in same]),
                                          torch.cat([rows[i][1] for i in same]),
                                          mask[index] if mask.shape[0] > 1 else mask)
        elif isinstance(caches, StaticKVCache):  # fixed shapes: the whole buffer, masked (torch.compile)
            keys, values = caches.extend(layer_idx, k, v)
            out = self._sdpa(q, keys, values, caches.attention_mask(mask))
        else:
            keys, values = (k, v) if caches is None else caches.extend(layer_idx, k, v)
            out = self._attend(q, keys, values, mask)
        out = out.transpose(1, 2).reshape(b, length, self.num_heads * self.head_dim)
        return self.dense(out), k, v

    def _attend(self, q: torch.Tensor, keys: torch.Tensor, values: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """Exact attention of the new queries over [cached keys, new keys]; `mask` covers new x new."""
        past = keys.shape[2] - q.shape[2]
        if past:
            visible = torch.ones(*mask.shape[:-1], past, dtype=torch.bool, device=mask.device)
            mask = torch.cat([visible, mask], dim=-1)
        return self._sdpa(q, keys, values, mask)

    def _sdpa(self, q: torch.Tensor, keys: torch.Tensor, values: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        # GQA by explicit repeat: every SDPA backend then accepts the boolean mask (enable_gqa is
        # not supported by all of them with an arbitrary mask).
        groups = self.num_heads // self.num_kv_heads
        if groups > 1:
            keys = keys.repeat_interleave(groups, dim=1)
            values = values.repeat_interleave(groups, dim=1)
        return F.scaled_dot_product_attention(q, keys, values, attn_mask=mask, scale=1.0 / math.sqrt(self.head_dim))


class LLaDA2MoeDecoderLayer(nn.Module):
    """Pre-norm block: h += Attn(norm(h)); h += FFN(norm(h)) (§6.2)."""

    def __init__(self, config: LLaDA2MoeConfig, layer_idx: int) -> None:
        super().__init__()
        self.input_layernorm = LLaDA2MoeRMSNorm(config.hidden_size, config.rms_norm_eps)
        self.attention = LLaDA2MoeAttention(config)
        self.post_attention_layernorm = LLaDA2MoeRMSNorm(config.hidden_size, config.rms_norm_eps)
        self.mlp: nn.Module = (LLaDA2MoeSparseMoeBlock(config) if config.is_moe_layer(layer_idx)
                               else LLaDA2MoeMLP(config.hidden_size, config.intermediate_size))

    def forward(self, h: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, mask: torch.Tensor,
                caches: Caches, layer_idx: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        attn, k, v = self.attention(self.input_layernorm(h), cos, sin, mask, caches, layer_idx)
        h = h + attn
        h = h + self.mlp(self.post_attention_layernorm(h))
        return h, k, v


class LLaDA2MoeModel(nn.Module):
    """Embeddings + decoder layers + final norm (the `model.` prefix of §6.3)."""

    def __init__(self, config: LLaDA2MoeConfig) -> None:
        super().__init__()
        # padding_idx freezes the PAD/EOS row's gradient (§7 item 17).
        self.word_embeddings = nn.Embedding(config.vocab_size, config.hidden_size,
                                            padding_idx=config.pad_token_id)
        self.layers = nn.ModuleList(LLaDA2MoeDecoderLayer(config, i) for i in range(config.num_hidden_layers))
        self.norm = LLaDA2MoeRMSNorm(config.hidden_size, config.rms_norm_eps)


# ====================================================================== the model
class LLaDA2MoeForDiffusionLM(nn.Module):
    """LLaDA2-MoE with an untied LM head: logits at every position (same-position prediction)."""

    def __init__(self, config: LLaDA2MoeConfig) -> None:
        super().__init__()
        config.validate()
        self._config = config
        self.model = LLaDA2MoeModel(config)
        self.lm_head = nn.Linear(config.hidden_size, config.vocab_size, bias=False)
        self.init_weights()

    # ------------------------------------------------------------------ properties
    @property
    def config(self) -> LLaDA2MoeConfig:
        return self._config

    @property
    def mask_token_id(self) -> int:
        return self._config.mask_token_id

    @property
    def eos_token_id(self) -> int:
        return self._config.eos_token_id

    @property
    def pad_token_id(self) -> int:
        return self._config.pad_token_id

    @property
    def dtype(self) -> torch.dtype:
        return self.lm_head.weight.dtype

    @property
    def device(self) -> torch.device:
        return self.lm_head.weight.device

    # ------------------------------------------------------------------ init
    @torch.no_grad()
    def init_weights(self, seed: int | None = None) -> None:
        """Fresh weights: linear / embedding / router ~ N(0, initializer_range), biases and
        expert_bias 0, norms 1, the PAD embedding row 0 (HF convention).

        Uses the global torch RNG (deterministic under `torch.manual_seed`) unless `seed` is given.
        A no-op on the meta device, so construction there stays cheap.
        """
        if self.device.type == "meta":
            return
        generator = None
        if seed is not None:
            generator = torch.Generator(device=self.device).manual_seed(seed)
        std = self._config.initializer_range
        for module in self.modules():
            if isinstance(module, nn.Linear):
                module.weight.normal_(0.0, std, generator=generator)
                if module.bias is not None:
                    module.bias.zero_()
            elif isinstance(module, nn.Embedding):
                module.weight.normal_(0.0, std, generator=generator)
                if module.padding_idx is not None:
                    module.weight[module.padding_idx].zero_()
            elif isinstance(module, LLaDA2MoeGate):
                module.weight.normal_(0.0, std, generator=generator)
                if module.expert_bias is not None:
                    module.expert_bias.zero_()
            elif isinstance(module, LLaDA2MoeRMSNorm):
                module.weight.fill_(1.0)

    # ------------------------------------------------------------------ forward
    @property
    def embedding_table(self) -> torch.Tensor:
        """The input embedding matrix [vocab, d] (what fused kernels read instead of calling `embed`)."""
        return self.model.word_embeddings.weight

    def embed(self, input_ids: torch.Tensor) -> torch.Tensor:
        """E[ids] with no scaling (§6.2): Long[b, L] -> [b, L, d]."""
        return self.model.word_embeddings(input_ids)

    def pack_experts(self) -> None:
        """Store every MoE layer's experts stacked, for `grouped` dispatch without copies (see `moe.py`)."""
        for module in self.modules():
            if isinstance(module, LLaDA2MoeSparseMoeBlock):
                module.pack_experts()

    def set_moe_dispatch(self, dispatch: str) -> None:
        """`auto` (grouped on CUDA, loop elsewhere), `loop` or `grouped` for every MoE layer."""
        if dispatch not in ("auto", "loop", "grouped"):
            raise ValueError(f"moe dispatch must be auto, loop or grouped, got {dispatch!r}")
        for module in self.modules():
            if isinstance(module, LLaDA2MoeSparseMoeBlock):
                module.dispatch = dispatch

    def new_kv_cache(self) -> KVCache:
        return KVCache(self._config.num_hidden_layers)

    def forward(self, input_ids: torch.Tensor | None = None, inputs_embeds: torch.Tensor | None = None, *,
                position_ids: torch.Tensor, attention_mask: torch.Tensor,
                kv_cache: KVCache | Sequence[KVCache] | None = None, cache_commit_length: int = 0) -> torch.Tensor:
        """Logits [b, L, vocab] (model dtype) for L new tokens.

        attention_mask: Bool, True = may attend, [L, L] (shared by the batch) or [b, 1, L, L],
        covering new x new tokens only. With `kv_cache`, every new query also attends to every
        cached position (a committed prefix, §3.1). A query row with nothing to attend is NaN:
        the mask builder must never produce one.
        kv_cache: one `KVCache` holding the whole batch (every row the same cached length), or a
        sequence of b single-row caches whose lengths may differ (batched decoding of prompts of different
        lengths). With a sequence, attention runs row by row and every other op on the whole batch, so each
        row's logits are exactly those of a batch of one (every op but attention treats rows independently).
        cache_commit_length = n appends the K/V of the first n new tokens of every layer to
        the cache(s) after the forward (prefill: n = L; cross-block commit: n = B).
        """
        if (input_ids is None) == (inputs_embeds is None):
            raise ValueError("forward: pass exactly one of input_ids and inputs_embeds")
        if input_ids is not None:
            if input_ids.dim() != 2:
                raise ValueError(f"forward: input_ids must be [b, L], got {tuple(input_ids.shape)}")
            hidden = self.embed(input_ids)
        else:
            assert inputs_embeds is not None
            if inputs_embeds.dim() != 3 or inputs_embeds.shape[-1] != self._config.hidden_size:
                raise ValueError(f"forward: inputs_embeds must be [b, L, {self._config.hidden_size}], "
                                 f"got {tuple(inputs_embeds.shape)}")
            hidden = inputs_embeds.to(self.dtype)
        batch, length, _ = hidden.shape
        if not 0 <= cache_commit_length <= length:
            raise ValueError(f"forward: cache_commit_length must be in [0, {length}], "
                             f"got {cache_commit_length}")
        if cache_commit_length and kv_cache is None:
            raise ValueError("forward: cache_commit_length > 0 needs a kv_cache")
        per_row = kv_cache is not None and not isinstance(kv_cache, (KVCache, StaticKVCache))
        caches: list[KVCache] = [] if kv_cache is None else list(kv_cache) if per_row else [kv_cache]
        if per_row and len(caches) != batch:
            raise ValueError(f"forward: {len(caches)} row caches for a batch of {batch}")
        for cache in caches:
            if cache.num_layers != self._config.num_hidden_layers:
                raise ValueError(f"forward: kv_cache has {cache.num_layers} layers, "
                                 f"the model {self._config.num_hidden_layers}")
            expected = 1 if per_row else batch
            if isinstance(cache, KVCache) and cache.length and cache.keys[0].shape[0] != expected:
                raise ValueError(f"forward: kv_cache batch {cache.keys[0].shape[0]} != {expected}")

        positions = self._check_positions(position_ids, batch, length, hidden.device)
        mask = self._new_token_mask(attention_mask, batch, length, hidden.device)
        cos, sin = rotary_cos_sin(positions, self._config.rotary_dim, self._config.rope_theta, hidden.dtype)

        layer_caches: Caches = caches if per_row else (caches[0] if caches else None)
        written: list[tuple[torch.Tensor, torch.Tensor]] = []
        for layer_idx, layer in enumerate(self.model.layers):
            hidden, k, v = layer(hidden, cos, sin, mask, layer_caches, layer_idx)
            written.append((k, v))
        # Commit only after every layer ran, so a failing forward leaves the committed prefix untouched.
        if cache_commit_length:
            for row, cache in enumerate(caches):
                rows = slice(row, row + 1) if per_row else slice(None)
                cache.commit(cache_commit_length, [(k[rows], v[rows]) for k, v in written])
        return self.lm_head(self.model.norm(hidden))

    @staticmethod
    def _check_positions(position_ids: torch.Tensor, batch: int, length: int,
                         device: torch.device) -> torch.Tensor:
        if position_ids.dim() == 1:
            position_ids = position_ids[None]
        if position_ids.dim() != 2 or tuple(position_ids.shape) not in ((1, length), (batch, length)):
            raise ValueError(f"forward: position_ids must be [{length}] or [{batch}, {length}], "
                             f"got {tuple(position_ids.shape)}")
        if position_ids.is_floating_point():
            raise ValueError("forward: position_ids must be integers")
        return position_ids.to(device)

    @staticmethod
    def _new_token_mask(attention_mask: torch.Tensor, batch: int, length: int, device: torch.device) -> torch.Tensor:
        """[b|1, 1, L, L] boolean mask over the new tokens (attention adds the cached columns, all open)."""
        if attention_mask.dtype != torch.bool:
            raise ValueError(f"forward: attention_mask must be boolean (True = attend), "
                             f"got {attention_mask.dtype}")
        if attention_mask.dim() == 2:
            attention_mask = attention_mask[None, None]
        if attention_mask.dim() != 4 or tuple(attention_mask.shape) not in (
                (1, 1, length, length), (batch, 1, length, length)):
            raise ValueError(f"forward: attention_mask must be [{length}, {length}] or "
                             f"[{batch}, 1, {length}, {length}], got {tuple(attention_mask.shape)}")
        return attention_mask.to(device)

    # ------------------------------------------------------------------ save / load
    def save_pretrained(self, directory: str | os.PathLike[str]) -> Path:
        """Write `config.json`, `model.safetensors` and their `SHA256SUMS` into `directory` (HF layout).

        Each file is replaced atomically and the checksums go last, so an interrupted save is detected
        at the next load; callers that need the whole directory to appear at once (every stage) write
        into `dmax_core.files.atomic_directory`. Other files in `directory` (a tokenizer) are kept."""
        return save_model(self, directory)

    @classmethod
    def from_pretrained(cls, directory: str | os.PathLike[str], dtype: torch.dtype | None = None,
                        device: str | torch.device = "cpu",
                        config_defaults: dict[str, Any] | None = None) -> LLaDA2MoeForDiffusionLM:
        """Load an HF-layout checkpoint (single or sharded safetensors; per-expert or dFactory's merged
        experts, §6.3), verifying `SHA256SUMS` where dmax wrote one. Never unpickles.

        dtype=None keeps the checkpoint's dtype (that of `model.word_embeddings.weight`); every floating
        tensor is cast to one dtype so the forward never mixes precisions."""
        return load_model(cls, directory, dtype=dtype, device=device, config_defaults=config_defaults)
