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

import torch
import torch.nn.functional as F
from torch import nn

from .configuration import LLaDA2MoeConfig
from .kv_cache import KVCache
from .serialization import load_model, save_model

# No cache, one cache for the whole batch, or one cache per row (see LLaDA2MoeAttention.forward).
Caches = KVCache | list[KVCache] | None

# Sum of the chosen weights is divided by (sum + this) in the reference gate (§6.2).
_ROUTER_NORM_EPS = 1e-20
# Expert inputs are padded to a multiple of this many rows (see LLaDA2MoeSparseMoeBlock._dispatch).
_EXPERT_ROW_MULTIPLE = 16


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
        # GQA by explicit repeat: every SDPA backend then accepts the boolean mask (enable_gqa is
        # not supported by all of them with an arbitrary mask).
        groups = self.num_heads // self.num_kv_heads
        if groups > 1:
            keys = keys.repeat_interleave(groups, dim=1)
            values = values.repeat_interleave(groups, dim=1)
        return F.scaled_dot_product_attention(q, keys, values, attn_mask=mask, scale=1.0 / math.sqrt(self.head_dim))


class LLaDA2MoeMLP(nn.Module):
    """SwiGLU FFN: down(silu(gate(x)) * up(x)). Dense layers, routed and shared experts (§6.2)."""

    def __init__(self, hidden_size: int, intermediate_size: int) -> None:
        super().__init__()
        self.gate_proj = nn.Linear(hidden_size, intermediate_size, bias=False)
        self.up_proj = nn.Linear(hidden_size, intermediate_size, bias=False)
        self.down_proj = nn.Linear(intermediate_size, hidden_size, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.down_proj(F.silu(self.gate_proj(x)) * self.up_proj(x))


def route_tokens(router_logits: torch.Tensor, expert_bias: torch.Tensor | None, *, top_k: int,
                 n_group: int, topk_group: int, routed_scaling_factor: float,
                 norm_topk_prob: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
    """Group-limited sigmoid top-k routing of LLaDA2-MoE (§6.2). All in fp32.

    router_logits: [N, E]; expert_bias: [E] or None. Returns (topk_idx Long[N, top_k],
    topk_weight fp32[N, top_k]), experts sorted by descending biased score.

    1. s = sigmoid(logits); r = s + expert_bias. The bias only steers *selection*.
    2. Groups of E / n_group consecutive experts; group score = sum of the top-2 r in the group;
       keep the `topk_group` best groups.
    3. Pick the `top_k` experts with the largest r inside the kept groups (others get -inf, so a
       negative biased score can never lose to an excluded expert).
    4. weight = s (unbiased) of the chosen experts, divided by (their sum + 1e-20) when
       `norm_topk_prob` and top_k > 1, times `routed_scaling_factor`. The reference gate
       normalises whenever top_k > 1 and ignores `norm_topk_prob` (true in every released config),
       so the two agree on LLaDA2.0-mini.
    """
    logits = router_logits.float()
    n_tokens, n_experts = logits.shape
    scores = torch.sigmoid(logits)
    biased = scores if expert_bias is None else scores + expert_bias.float()
    group_scores = biased.view(n_tokens, n_group, n_experts // n_group).topk(2, dim=-1).values.sum(-1)
    kept_groups = group_scores.topk(topk_group, dim=-1).indices
    group_keep = torch.zeros_like(group_scores, dtype=torch.bool).scatter_(1, kept_groups, True)
    expert_keep = group_keep.repeat_interleave(n_experts // n_group, dim=1)
    topk_idx = biased.masked_fill(~expert_keep, float("-inf")).topk(top_k, dim=-1).indices
    topk_weight = scores.gather(1, topk_idx)
    if norm_topk_prob and top_k > 1:
        topk_weight = topk_weight / (topk_weight.sum(dim=-1, keepdim=True) + _ROUTER_NORM_EPS)
    return topk_idx, topk_weight * routed_scaling_factor


class LLaDA2MoeGate(nn.Module):
    """Router: weight [E, d] and the selection-only `expert_bias` [E] (a persistent buffer: it is in
    the checkpoint, but never trained by gradient, §7 item 17)."""

    def __init__(self, config: LLaDA2MoeConfig) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.empty(config.num_experts, config.hidden_size))
        bias = torch.zeros(config.num_experts) if config.moe_router_enable_expert_bias else None
        self.register_buffer("expert_bias", bias, persistent=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Router logits [N, E] in fp32 (router_dtype fp32, §6.2)."""
        return F.linear(x.float(), self.weight.float())


class LLaDA2MoeSparseMoeBlock(nn.Module):
    """Routed experts + one shared expert (§6.2). Sub-module names give the §6.3 per-expert keys."""

    def __init__(self, config: LLaDA2MoeConfig) -> None:
        super().__init__()
        self.config = config
        self.gate = LLaDA2MoeGate(config)
        self.experts = nn.ModuleList(
            LLaDA2MoeMLP(config.hidden_size, config.moe_intermediate_size) for _ in range(config.num_experts))
        self.shared_experts = (
            LLaDA2MoeMLP(config.hidden_size, config.moe_intermediate_size * config.num_shared_experts)
            if config.num_shared_experts > 0 else None)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shape = x.shape
        flat = x.reshape(-1, shape[-1])
        cfg = self.config
        topk_idx, topk_weight = route_tokens(
            self.gate(flat), self.gate.expert_bias, top_k=cfg.num_experts_per_tok, n_group=cfg.n_group,
            topk_group=cfg.topk_group, routed_scaling_factor=cfg.routed_scaling_factor,
            norm_topk_prob=cfg.norm_topk_prob)
        out = self._dispatch(flat, topk_idx, topk_weight).view(shape)
        if self.shared_experts is not None:
            out = out + self.shared_experts(x)
        return out

    def _dispatch(self, flat: torch.Tensor, topk_idx: torch.Tensor,
                  topk_weight: torch.Tensor) -> torch.Tensor:
        """Run each expert once on the tokens routed to it; weighted sum accumulated in fp32.

        A plain loop over the experts that received tokens: simple and exact, fine at tiny sizes.
        Each expert's rows are padded with zeros to a multiple of `_EXPERT_ROW_MULTIPLE`, because a token's
        output must not depend on how many other tokens (other rows of a batch) chose the same expert, and
        on CPU it would: BLAS picks other kernels or thread splits for a few rows (measured with MKL: 1-3
        rows with one thread, up to 11 with two), and vectorised elementwise ops (SiLU) round the tail of
        a tensor whose size is not a multiple of their vector width differently. The matmuls and
        activations of a block forward elsewhere have B = 32 rows per sequence. Only under
        `torch.inference_mode` (decoding): training, where rows are never compared, keeps unpadded math.
        """
        top_k = topk_idx.shape[1]
        batch_invariant = torch.is_inference_mode_enabled()  # decoding; training keeps its exact numerics
        flat_expert = topk_idx.reshape(-1)
        order = torch.argsort(flat_expert, stable=True)
        token_of = order // top_k  # slot j of the flattened [N, k] belongs to token j // k
        weight_of = topk_weight.reshape(-1)[order]
        counts = torch.bincount(flat_expert, minlength=len(self.experts)).tolist()
        out = torch.zeros(flat.shape, dtype=torch.float32, device=flat.device)
        start = 0
        for expert_idx, count in enumerate(counts):
            if count == 0:
                continue
            tokens = token_of[start:start + count]
            rows = flat.index_select(0, tokens)
            padding = -count % _EXPERT_ROW_MULTIPLE if batch_invariant else 0
            if padding:
                rows = torch.cat([rows, rows.new_zeros(padding, rows.shape[1])])
            y = self.experts[expert_idx](rows)[:count]
            out.index_add_(0, tokens, y.float() * weight_of[start:start + count, None])
            start += count
        return out.to(flat.dtype)


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
    def embed(self, input_ids: torch.Tensor) -> torch.Tensor:
        """E[ids] with no scaling (§6.2): Long[b, L] -> [b, L, d]."""
        return self.model.word_embeddings(input_ids)

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
        per_row = kv_cache is not None and not isinstance(kv_cache, KVCache)
        caches: list[KVCache] = [] if kv_cache is None else list(kv_cache) if per_row else [kv_cache]
        if per_row and len(caches) != batch:
            raise ValueError(f"forward: {len(caches)} row caches for a batch of {batch}")
        for cache in caches:
            if cache.num_layers != self._config.num_hidden_layers:
                raise ValueError(f"forward: kv_cache has {cache.num_layers} layers, "
                                 f"the model {self._config.num_hidden_layers}")
            expected = 1 if per_row else batch
            if cache.length and cache.keys[0].shape[0] != expected:  # type: ignore[union-attr]
                raise ValueError(f"forward: kv_cache batch {cache.keys[0].shape[0]} != {expected}")  # type: ignore[union-attr]

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
                        device: str | torch.device = "cpu") -> LLaDA2MoeForDiffusionLM:
        """Load an HF-layout checkpoint (single or sharded safetensors; per-expert or dFactory's merged
        experts, §6.3), verifying `SHA256SUMS` where dmax wrote one. Never unpickles.

        dtype=None keeps the checkpoint's dtype (that of `model.word_embeddings.weight`); every floating
        tensor is cast to one dtype so the forward never mixes precisions."""
        return load_model(cls, directory, dtype=dtype, device=device)
