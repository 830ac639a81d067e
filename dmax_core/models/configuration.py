"""LLaDA2-MoE configuration: the `config.json` keys of spec §6.1, validated.

This module is the one place that knows which config values the native implementation in
`modeling.py` can run faithfully. It reads and writes the Hugging Face `config.json` format
(same key names and meaning), keeps keys it does not model in `extra` so that a released
LLaDA2.0-mini / DMax config round-trips unchanged, and rejects values it cannot honour with a
`ValueError` that names the key.

It must not import transformers or register anything with it (no `trust_remote_code`), and it
must not build tensors: it is plain data.
"""

from __future__ import annotations

import dataclasses
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from dmax_core.files import atomic_write_text

CONFIG_NAME = "config.json"
# The block length B the model was trained with (spec §1). Released LLaDA2 configs do not name it; dmax
# writes it into config.json (an `extra` key, so the official code ignores it) so that a caller that only
# holds the checkpoint, such as diffusers' LLaDA2Pipeline through `dmax_core.integrations`, builds the
# same block-causal mask instead of guessing one.
BLOCK_LENGTH_KEY = "block_length"

# Values of keys we keep in `extra` but whose non-default setting would change the forward in a
# way `modeling.py` does not implement. Checking them here turns a silent mismatch into an error.
_EXTRA_MUST_BE_FALSE = ("use_sliding_window", "norm_head")
_DROPOUTS = ("attention_dropout", "embedding_dropout", "output_dropout")
_SUPPORTED_ROUTER_DTYPES = ("fp32", "float32")


@dataclass
class LLaDA2MoeConfig:
    """Hyper-parameters of an LLaDA2-MoE model (HF `config.json` names, spec §6.1).

    Defaults are the LLaDA2.0-mini (16B) values, so `LLaDA2MoeConfig()` equals `llada2_mini()`.
    Tiny CPU models override the sizes (and the special token ids, which must fit in `vocab_size`).
    Layers `0 .. first_k_dense_replace - 1` are dense SwiGLU; the others are MoE. `num_experts = 0`
    (or `first_k_dense_replace >= num_hidden_layers`) makes every layer dense.
    """

    vocab_size: int = 157184
    hidden_size: int = 2048
    intermediate_size: int = 5120
    moe_intermediate_size: int = 512
    num_hidden_layers: int = 20
    num_attention_heads: int = 16
    num_key_value_heads: int = 4
    head_dim: int = 128
    partial_rotary_factor: float = 0.5
    rope_theta: float = 600000.0
    max_position_embeddings: int = 16384
    rms_norm_eps: float = 1e-6
    hidden_act: str = "silu"
    first_k_dense_replace: int = 1
    num_experts: int = 256
    num_experts_per_tok: int = 8
    num_shared_experts: int = 1
    n_group: int = 8
    topk_group: int = 4
    routed_scaling_factor: float = 2.5
    score_function: str = "sigmoid"
    moe_router_enable_expert_bias: bool = True
    router_dtype: str = "fp32"
    norm_topk_prob: bool = True
    use_qkv_bias: bool = False
    use_bias: bool = False
    tie_word_embeddings: bool = False
    pad_token_id: int = 156892
    initializer_range: float = 0.02
    model_type: str = "llada2_moe"
    # The official LLaDA2 config class defaults these to 0.1 / 0.1 / 0.1 / true, the released checkpoint
    # sets 0.0 / 0.0 / 0.0 / false. They are fields (always written) so that the official training code
    # fine-tunes a dmax checkpoint without dropout, as it does LLaDA2.0-mini. Dropout is not implemented.
    attention_dropout: float = 0.0
    embedding_dropout: float = 0.0
    output_dropout: float = 0.0
    use_cache: bool = False
    # Not in the released config.json but part of the model contract (spec §0, §6.4).
    mask_token_id: int = 156895
    eos_token_id: int = 156892
    # Every other config.json key (auto_map, architectures, torch_dtype, rope_scaling, ...), kept
    # verbatim so that `to_dict()` round-trips a released config.
    extra: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.validate()

    # ------------------------------------------------------------------ derived sizes
    @property
    def rotary_dim(self) -> int:
        """Width of the rotated slice of each head (§6.2: 128 * 0.5 = 64)."""
        return int(self.head_dim * self.partial_rotary_factor)

    @property
    def all_dense(self) -> bool:
        return self.num_experts == 0 or self.first_k_dense_replace >= self.num_hidden_layers

    @property
    def block_length(self) -> int | None:
        """The training block length recorded in config.json (`BLOCK_LENGTH_KEY`), None when not recorded."""
        return self.extra.get(BLOCK_LENGTH_KEY)

    def is_moe_layer(self, layer_idx: int) -> bool:
        """Layer `layer_idx` uses the MoE FFN (§6.2: layers >= first_k_dense_replace)."""
        return not self.all_dense and layer_idx >= self.first_k_dense_replace

    # ------------------------------------------------------------------ validation
    def validate(self) -> None:
        """Raise `ValueError` naming the first key whose value the model cannot run."""

        def bad(key: str, why: str) -> ValueError:
            value = getattr(self, key, self.extra.get(key))
            return ValueError(f"LLaDA2MoeConfig: invalid {key}={value!r}: {why}")

        for key in ("vocab_size", "hidden_size", "num_hidden_layers", "num_attention_heads",
                    "num_key_value_heads", "head_dim", "max_position_embeddings", "intermediate_size"):
            value = getattr(self, key)
            if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
                raise bad(key, "must be a positive integer")
        for key in ("num_experts", "num_shared_experts", "first_k_dense_replace", "moe_intermediate_size",
                    "num_experts_per_tok", "n_group", "topk_group"):
            value = getattr(self, key)
            if not isinstance(value, int) or isinstance(value, bool) or value < 0:
                raise bad(key, "must be a non-negative integer")
        for key in ("pad_token_id", "mask_token_id", "eos_token_id"):
            value = getattr(self, key)
            if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value < self.vocab_size:
                raise bad(key, f"must be a token id in [0, vocab_size={self.vocab_size})")
        if self.model_type not in ("llada2_moe", "llada2_moe_veomni"):
            raise bad("model_type", "expected 'llada2_moe' (dFactory: 'llada2_moe_veomni')")
        if self.num_attention_heads % self.num_key_value_heads != 0:
            raise bad("num_attention_heads",
                      f"must be a multiple of num_key_value_heads={self.num_key_value_heads}")
        if not 0.0 < self.partial_rotary_factor <= 1.0:
            raise bad("partial_rotary_factor", "must be in (0, 1]")
        if self.rotary_dim <= 0 or self.rotary_dim % 2 != 0:
            raise bad("partial_rotary_factor",
                      f"rotary dim head_dim*partial_rotary_factor={self.rotary_dim} must be even and > 0")
        if not (isinstance(self.rope_theta, (int, float)) and self.rope_theta > 0):
            raise bad("rope_theta", "must be > 0")
        if not (isinstance(self.rms_norm_eps, (int, float)) and self.rms_norm_eps > 0):
            raise bad("rms_norm_eps", "must be > 0")
        if self.hidden_act != "silu":
            raise bad("hidden_act", "only 'silu' (SwiGLU, §6.2) is implemented")
        for key in _DROPOUTS:
            if getattr(self, key) not in (0, 0.0, None):
                raise bad(key, "dropout is not implemented (all dropouts are 0 in LLaDA2.0-mini, §6.1)")
        if self.tie_word_embeddings:
            raise bad("tie_word_embeddings", "LLaDA2 has an untied lm_head (§6.1); tying is not implemented")
        if not (isinstance(self.initializer_range, (int, float)) and self.initializer_range > 0):
            raise bad("initializer_range", "must be > 0")
        if not self.all_dense:
            self._validate_moe(bad)
        self._validate_extra()

    def _validate_moe(self, bad: Any) -> None:
        if self.score_function != "sigmoid":
            raise bad("score_function", "only 'sigmoid' routing (§6.2) is implemented")
        if self.router_dtype not in _SUPPORTED_ROUTER_DTYPES:
            raise bad("router_dtype", "only fp32 routing (§6.2) is implemented")
        if self.moe_intermediate_size <= 0:
            raise bad("moe_intermediate_size", "must be > 0 when the model has MoE layers")
        if self.n_group <= 0 or self.num_experts % self.n_group != 0:
            raise bad("n_group", f"must be > 0 and divide num_experts={self.num_experts}")
        if self.num_experts // self.n_group < 2:
            # The group score is the sum of the top-2 scores inside a group (§6.2).
            raise bad("n_group", "each group needs >= 2 experts (group score = sum of its top-2 scores)")
        if not 1 <= self.topk_group <= self.n_group:
            raise bad("topk_group", f"must be in [1, n_group={self.n_group}]")
        kept = self.topk_group * (self.num_experts // self.n_group)
        if not 1 <= self.num_experts_per_tok <= kept:
            raise bad("num_experts_per_tok",
                      f"must be in [1, {kept}] (experts inside the topk_group={self.topk_group} kept groups)")
        if not (isinstance(self.routed_scaling_factor, (int, float)) and self.routed_scaling_factor > 0):
            raise bad("routed_scaling_factor", "must be > 0")

    def _validate_extra(self) -> None:
        def bad(key: str, why: str) -> ValueError:
            return ValueError(f"LLaDA2MoeConfig: invalid {key}={self.extra[key]!r}: {why}")

        block = self.extra.get(BLOCK_LENGTH_KEY)
        if block is not None and (isinstance(block, bool) or not isinstance(block, int) or block < 1):
            raise bad(BLOCK_LENGTH_KEY, "must be a positive integer (the training block length)")
        if self.extra.get("rope_scaling") is not None:
            raise bad("rope_scaling", "only plain RoPE (rope_scaling null, §6.1) is implemented")
        if self.extra.get("use_qk_norm", True) is not True:
            raise bad("use_qk_norm", "per-head q/k RMSNorm is part of the architecture (§6.2)")
        for key in _EXTRA_MUST_BE_FALSE:
            if self.extra.get(key, False):
                raise bad(key, "not implemented; must be false")
        if self.extra.get("rotary_dim") is not None and self.extra["rotary_dim"] != self.rotary_dim:
            raise bad("rotary_dim", f"disagrees with head_dim*partial_rotary_factor={self.rotary_dim}")
        shared = self.extra.get("moe_shared_expert_intermediate_size")
        if shared is not None and not self.all_dense and self.num_shared_experts > 0 and \
                shared != self.moe_intermediate_size * self.num_shared_experts:
            raise bad("moe_shared_expert_intermediate_size",
                      "the shared expert width must be moe_intermediate_size * num_shared_experts")

    # ------------------------------------------------------------------ (de)serialisation
    @classmethod
    def field_names(cls) -> tuple[str, ...]:
        return tuple(f.name for f in dataclasses.fields(cls) if f.name != "extra")

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> LLaDA2MoeConfig:
        """Build from a config.json mapping; unknown keys go to `extra` (kept for round-trips)."""
        if not isinstance(data, dict):
            raise ValueError(f"LLaDA2MoeConfig.from_dict expects a dict, got {type(data).__name__}")
        names = set(cls.field_names())
        known = {k: v for k, v in data.items() if k in names}
        extra = {k: v for k, v in data.items() if k not in names and k != "extra"}
        extra.update(data.get("extra") or {})
        if known.get("head_dim", 0) is None:
            # HF configs may leave head_dim null, meaning hidden_size // num_attention_heads.
            known["head_dim"] = known.get("hidden_size", cls.hidden_size) // known.get(
                "num_attention_heads", cls.num_attention_heads)
        for key in ("num_experts", "num_shared_experts"):
            if key in known and known[key] is None:
                known[key] = 0  # HF uses None for "no experts" / "no shared expert".
        for key in _DROPOUTS:
            if key in known and known[key] is None:
                known[key] = 0.0
        for key in ("partial_rotary_factor", "rope_theta", "rms_norm_eps", "routed_scaling_factor",
                    "initializer_range"):
            if isinstance(known.get(key), int) and not isinstance(known[key], bool):
                known[key] = float(known[key])
        return cls(**known, extra=extra)

    def to_dict(self) -> dict[str, Any]:
        """config.json mapping: every field plus the `extra` keys at top level."""
        out: dict[str, Any] = {name: getattr(self, name) for name in self.field_names()}
        for key, value in self.extra.items():
            out.setdefault(key, value)
        return out

    @classmethod
    def from_json_file(cls, path: str | os.PathLike[str],
                       defaults: dict[str, Any] | None = None) -> LLaDA2MoeConfig:
        """Read config.json; `defaults` fill keys the file does not name (a released config.json names no
        mask id: the tokenizer's is the right default, not LLaDA2.0-mini's)."""
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"LLaDA2MoeConfig: no config file at {path}")
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (json.JSONDecodeError, UnicodeDecodeError) as err:
            raise ValueError(f"LLaDA2MoeConfig: {path} is not valid JSON: {err}") from err
        try:
            return cls.from_dict({**(defaults or {}), **data} if isinstance(data, dict) else data)
        except (TypeError, ValueError) as err:  # a value of the wrong type fails inside the checks
            raise ValueError(f"{path}: {err}") from err

    def to_json_string(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=True) + "\n"

    def save(self, directory: str | os.PathLike[str]) -> Path:
        """Write `directory/config.json` atomically. Returns its path."""
        return atomic_write_text(Path(directory) / CONFIG_NAME, self.to_json_string())

    # ------------------------------------------------------------------ presets
    @classmethod
    def llada2_mini(cls) -> LLaDA2MoeConfig:
        """LLaDA2.0-mini / DMax-16B (spec §6.1): 20 layers, 256 experts, ~16.3B parameters."""
        return cls(
            vocab_size=157184, hidden_size=2048, intermediate_size=5120, moe_intermediate_size=512,
            num_hidden_layers=20, num_attention_heads=16, num_key_value_heads=4, head_dim=128,
            partial_rotary_factor=0.5, rope_theta=600000.0, max_position_embeddings=16384,
            rms_norm_eps=1e-6, hidden_act="silu", first_k_dense_replace=1, num_experts=256,
            num_experts_per_tok=8, num_shared_experts=1, n_group=8, topk_group=4,
            routed_scaling_factor=2.5, score_function="sigmoid", moe_router_enable_expert_bias=True,
            router_dtype="fp32", norm_topk_prob=True, use_qkv_bias=False, use_bias=False,
            tie_word_embeddings=False, pad_token_id=156892, mask_token_id=156895, eos_token_id=156892,
        )

    def num_parameters(self) -> int:
        """Trainable parameter count implied by the config (expert_bias buffers excluded)."""
        d, h, kv, hd = self.hidden_size, self.num_attention_heads, self.num_key_value_heads, self.head_dim
        attn = d * (h + 2 * kv) * hd + h * hd * d + 2 * hd
        if self.use_qkv_bias:
            attn += (h + 2 * kv) * hd
        if self.use_bias:
            attn += d
        dense_ffn = 3 * d * self.intermediate_size
        moe_ffn = (self.num_experts * d + 3 * d * self.moe_intermediate_size * self.num_experts
                   + 3 * d * self.moe_intermediate_size * self.num_shared_experts)
        total = 2 * self.vocab_size * d + d
        for i in range(self.num_hidden_layers):
            total += attn + 2 * d + (moe_ffn if self.is_moe_layer(i) else dense_ffn)
        return total
