"""Tests of dmax_core/models (LLaDA2-MoE, spec §6) against independent computations.

Every expected value here is built without the module's own code: tensor names and shapes from
the §6.3 text, routing by hand, the forward by a slow float64 re-implementation with explicit
loops, cache equivalence (spec B.5) against a full no-cache forward with a block-causal mask
written from the rule blk(k) <= blk(q). All models are tiny so the file runs in seconds on CPU.
"""

from __future__ import annotations

import hashlib
import json
import math
from pathlib import Path

import pytest
import torch
from builders import TINY, tiny_config
from builders import tiny_model as build_tiny_model
from safetensors.torch import load_file, save_file

from dmax_core.errors import DataError
from dmax_core.models import KVCache, LLaDA2MoeConfig, LLaDA2MoeForDiffusionLM, route_tokens

# The real LLaDA2.0-mini checkpoint metadata (no weights; attribution in its README.md).
FIXTURES = Path(__file__).parent / "assets" / "llada2-mini"


def tiny_model(seed: int = 0, **overrides) -> LLaDA2MoeForDiffusionLM:
    """Every tensor random (norms and expert_bias included), so a forward exercises every weight."""
    return build_tiny_model(seed, random_weights=True, **overrides)


def block_causal(positions: torch.Tensor, block_length: int) -> torch.Tensor:
    """q may attend k iff blk(k) <= blk(q), blk = pos // B (spec §1.2 / §3.1), written independently."""
    blk = positions // block_length
    return blk[None, :] <= blk[:, None]


# ====================================================================== §6.3 names and shapes
def expected_llada2_mini_tensors() -> dict[str, tuple[int, ...]]:
    """Name -> shape of every tensor of LLaDA2.0-mini, transcribed from spec §6.3."""
    vocab, d = 157184, 2048
    shapes: dict[str, tuple[int, ...]] = {
        "model.word_embeddings.weight": (vocab, d),
        "model.norm.weight": (d,),
        "lm_head.weight": (vocab, d),
    }
    for i in range(20):
        p = f"model.layers.{i}."
        shapes[p + "input_layernorm.weight"] = (d,)
        shapes[p + "post_attention_layernorm.weight"] = (d,)
        shapes[p + "attention.query_key_value.weight"] = (3072, d)
        shapes[p + "attention.query_layernorm.weight"] = (128,)
        shapes[p + "attention.key_layernorm.weight"] = (128,)
        shapes[p + "attention.dense.weight"] = (d, d)
        if i == 0:
            shapes[p + "mlp.gate_proj.weight"] = (5120, d)
            shapes[p + "mlp.up_proj.weight"] = (5120, d)
            shapes[p + "mlp.down_proj.weight"] = (d, 5120)
            continue
        shapes[p + "mlp.gate.weight"] = (256, d)
        shapes[p + "mlp.gate.expert_bias"] = (256,)
        for e in range(256):
            shapes[p + f"mlp.experts.{e}.gate_proj.weight"] = (512, d)
            shapes[p + f"mlp.experts.{e}.up_proj.weight"] = (512, d)
            shapes[p + f"mlp.experts.{e}.down_proj.weight"] = (d, 512)
        shapes[p + "mlp.shared_experts.gate_proj.weight"] = (512, d)
        shapes[p + "mlp.shared_experts.up_proj.weight"] = (512, d)
        shapes[p + "mlp.shared_experts.down_proj.weight"] = (d, 512)
    return shapes


def test_llada2_mini_on_meta_has_exactly_the_spec_tensors():
    config = LLaDA2MoeConfig.llada2_mini()
    with torch.device("meta"):
        model = LLaDA2MoeForDiffusionLM(config)
    got = {name: tuple(t.shape) for name, t in model.state_dict().items()}
    assert got == expected_llada2_mini_tensors()
    # expert_bias is a persistent buffer, not a trainable parameter (§7 item 17).
    assert "model.layers.1.mlp.gate.expert_bias" in dict(model.named_buffers())
    assert "model.layers.1.mlp.gate.expert_bias" not in dict(model.named_parameters())
    n_params = sum(p.numel() for p in model.parameters())
    assert 16.2e9 < n_params < 16.4e9  # "about 16.3B parameters" (§6.1)
    assert n_params == config.num_parameters()
    assert model.model.word_embeddings.padding_idx == 156892
    assert (model.mask_token_id, model.eos_token_id, model.pad_token_id) == (156895, 156892, 156892)


# ====================================================================== routing by hand
def _logit(p: float) -> float:
    return math.log(p / (1.0 - p))


ROUTE = dict(top_k=2, n_group=4, topk_group=2, routed_scaling_factor=2.5)
# Sigmoid scores of 8 experts in 4 groups of 2: {0,1} {2,3} {4,5} {6,7}.
SCORES = [0.9, 0.1, 0.6, 0.5, 0.8, 0.7, 0.2, 0.3]


def test_routing_without_bias_drops_the_best_expert_with_its_group():
    logits = torch.tensor([[_logit(s) for s in SCORES]])
    # Group scores (sum of the top-2): 1.0, 1.1, 1.5, 0.5 -> keep groups 2 and 1 -> experts 2..5.
    # Expert 0 has the best score overall but its group is not kept. Top-2 inside: 4 (.8), 5 (.7).
    idx, weight = route_tokens(logits, None, **ROUTE)
    assert idx.tolist() == [[4, 5]]
    torch.testing.assert_close(weight, torch.tensor([[0.8 / 1.5 * 2.5, 0.7 / 1.5 * 2.5]]))


def test_routing_bias_changes_selection_but_not_weights():
    logits = torch.tensor([[_logit(s) for s in SCORES]])
    bias = torch.tensor([0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.65, 0.6])
    # Biased r = [.9 .1 .6 .5 .8 .7 .85 .9]; group scores 1.0, 1.1, 1.5, 1.75 -> keep groups 3 and 2.
    # Top-2 by r inside {4,5,6,7}: 7 (.9), 6 (.85). Weights use the UNBIASED s: .3 and .2.
    idx, weight = route_tokens(logits, bias, **ROUTE)
    assert idx.tolist() == [[7, 6]]
    torch.testing.assert_close(weight, torch.tensor([[0.3 / 0.5 * 2.5, 0.2 / 0.5 * 2.5]]))
    # Without normalisation the weights are s * scale.
    _, raw = route_tokens(logits, bias, **ROUTE, norm_topk_prob=False)
    torch.testing.assert_close(raw, torch.tensor([[0.3 * 2.5, 0.2 * 2.5]]))


def test_routing_negative_biased_scores_stay_inside_kept_groups():
    # A uniform bias of -1 makes every r negative; it must not change anything (excluded experts are
    # -inf, not 0, so they can never win). Two tokens in one batch are routed independently.
    logits = torch.tensor([[_logit(s) for s in SCORES], [_logit(s) for s in reversed(SCORES)]])
    idx, weight = route_tokens(logits, torch.full((8,), -1.0), **ROUTE)
    # Token 2 scores: [.3 .2 .7 .8 .5 .6 .1 .9]; group scores .5, 1.5, 1.1, 1.0 -> groups 1, 2
    # -> experts 3 (.8), 2 (.7).
    assert idx.tolist() == [[4, 5], [3, 2]]
    torch.testing.assert_close(weight[1], torch.tensor([0.8 / 1.5 * 2.5, 0.7 / 1.5 * 2.5]))


# ====================================================================== naive reference forward
def naive_forward(model: LLaDA2MoeForDiffusionLM, ids: torch.Tensor, positions: torch.Tensor,
                  mask: torch.Tensor) -> torch.Tensor:
    """Slow float64 forward of §6.2 for one sequence, from the state_dict only (no module code)."""
    cfg = model.config
    sd = {k: v.double() for k, v in model.state_dict().items()}
    n_heads, n_kv, hd = cfg.num_attention_heads, cfg.num_key_value_heads, cfg.head_dim
    rd = int(hd * cfg.partial_rotary_factor)
    length = ids.shape[0]

    def rms(x, w):
        return x / torch.sqrt((x * x).mean(-1, keepdim=True) + cfg.rms_norm_eps) * w

    def swiglu(x, p):
        gate, up, down = sd[p + "gate_proj.weight"], sd[p + "up_proj.weight"], sd[p + "down_proj.weight"]
        g = x @ gate.T
        return (g / (1 + torch.exp(-g)) * (x @ up.T)) @ down.T

    def rope(x):  # x [L, heads, hd]; rotate pairs (i, i + rd/2) of the first rd dims
        out = x.clone()
        for i in range(rd // 2):
            angle = positions.double() * cfg.rope_theta ** (-2.0 * i / rd)
            c, s = torch.cos(angle)[:, None], torch.sin(angle)[:, None]
            a, b = x[:, :, i], x[:, :, i + rd // 2]
            out[:, :, i] = a * c - b * s
            out[:, :, i + rd // 2] = b * c + a * s
        return out

    x = sd["model.word_embeddings.weight"][ids]
    for layer in range(cfg.num_hidden_layers):
        p = f"model.layers.{layer}."
        h = rms(x, sd[p + "input_layernorm.weight"])
        qkv = h @ sd[p + "attention.query_key_value.weight"].T
        q = qkv[:, : n_heads * hd].reshape(length, n_heads, hd)
        k = qkv[:, n_heads * hd: (n_heads + n_kv) * hd].reshape(length, n_kv, hd)
        v = qkv[:, (n_heads + n_kv) * hd:].reshape(length, n_kv, hd)
        q = rope(rms(q, sd[p + "attention.query_layernorm.weight"]))
        k = rope(rms(k, sd[p + "attention.key_layernorm.weight"]))
        heads = []
        for head in range(n_heads):
            g = head // (n_heads // n_kv)
            scores = (q[:, head] @ k[:, g].T) / math.sqrt(hd)
            scores = scores.masked_fill(~mask, float("-inf"))
            heads.append(torch.softmax(scores, dim=-1) @ v[:, g])
        x = x + torch.cat(heads, dim=-1) @ sd[p + "attention.dense.weight"].T
        h = rms(x, sd[p + "post_attention_layernorm.weight"])
        if layer < cfg.first_k_dense_replace or cfg.num_experts == 0:
            x = x + swiglu(h, p + "mlp.")
            continue
        ffn = torch.zeros_like(h)
        size = cfg.num_experts // cfg.n_group
        for t in range(length):
            s = torch.sigmoid(sd[p + "mlp.gate.weight"] @ h[t])
            r = (s + sd[p + "mlp.gate.expert_bias"]).tolist()
            group_score = [sum(sorted(r[g * size:(g + 1) * size], reverse=True)[:2])
                           for g in range(cfg.n_group)]
            kept = sorted(range(cfg.n_group), key=lambda g: -group_score[g])[: cfg.topk_group]
            candidates = [e for g in kept for e in range(g * size, (g + 1) * size)]
            chosen = sorted(candidates, key=lambda e: -r[e])[: cfg.num_experts_per_tok]
            total = sum(s[e] for e in chosen)
            for e in chosen:
                weight = s[e] / (total + 1e-20) * cfg.routed_scaling_factor
                ffn[t] += weight * swiglu(h[t], p + f"mlp.experts.{e}.")
            ffn[t] += swiglu(h[t], p + "mlp.shared_experts.")
        x = x + ffn
    return rms(x, sd["model.norm.weight"]) @ sd["lm_head.weight"].T


def test_forward_matches_naive_reference():
    model = tiny_model(seed=3)
    gen = torch.Generator().manual_seed(7)
    length = 12
    ids = torch.randint(0, 48, (2, length), generator=gen)
    positions = torch.arange(5, 5 + length)  # not starting at 0: RoPE must use the given positions
    mask = block_causal(positions, 4)
    with torch.no_grad():
        logits = model(ids, position_ids=positions, attention_mask=mask)
    assert logits.shape == (2, length, 48) and logits.dtype == torch.float32
    for b in range(2):
        expected = naive_forward(model, ids[b], positions, mask)
        torch.testing.assert_close(logits[b].double(), expected, atol=2e-4, rtol=1e-4)


@pytest.mark.parametrize("packed", [False, True])
def test_grouped_moe_dispatch_matches_the_naive_reference_and_the_loop(packed):
    """No per-expert loop and no host sync (the batched fallback here on CPU): the same logits as the
    float64 reference and, to rounding, as the loop; packing the experts keeps names and values."""
    model = tiny_model(seed=3)
    gen = torch.Generator().manual_seed(7)
    ids = torch.randint(0, 48, (2, 12), generator=gen)
    positions = torch.arange(5, 17)
    mask = block_causal(positions, 4)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    if packed:
        model.pack_experts()
        gate_w = model.model.layers[1].mlp.experts[0].gate_proj.weight
        assert gate_w.untyped_storage().nbytes() == 8 * gate_w.numel() * 4  # one stack for all 8 experts
    assert {k: v.shape for k, v in model.state_dict().items()} == {k: v.shape for k, v in before.items()}
    assert all(torch.equal(model.state_dict()[k], v) for k, v in before.items())
    with torch.no_grad():
        model.set_moe_dispatch("loop")
        loop = model(ids, position_ids=positions, attention_mask=mask)
        model.set_moe_dispatch("grouped")
        grouped = model(ids, position_ids=positions, attention_mask=mask)
    torch.testing.assert_close(grouped, loop, atol=2e-5, rtol=1e-5)
    for b in range(2):
        torch.testing.assert_close(grouped[b].double(), naive_forward(model, ids[b], positions, mask),
                                   atol=2e-4, rtol=1e-4)
    with pytest.raises(ValueError, match="dispatch"):
        model.set_moe_dispatch("einsum")


def test_packed_experts_save_and_load_under_the_per_expert_names(tmp_path):
    model = tiny_model(seed=15)
    model.pack_experts()
    target = model.save_pretrained(tmp_path / "m")
    names = set(load_file(str(target / "model.safetensors")))
    assert "model.layers.1.mlp.experts.7.down_proj.weight" in names
    assert not any(n.endswith(("experts.gate_proj", "experts.down_proj")) for n in names)
    loaded = LLaDA2MoeForDiffusionLM.from_pretrained(target)
    torch.testing.assert_close(_logits(loaded), _logits(model), atol=0, rtol=0)


def test_dense_only_model_matches_naive_reference():
    model = tiny_model(seed=4, num_experts=0, num_hidden_layers=2)
    assert not any(".experts." in name for name in model.state_dict())
    ids = torch.randint(0, 48, (1, 6), generator=torch.Generator().manual_seed(0))
    positions = torch.arange(6)
    mask = torch.ones(6, 6, dtype=torch.bool)
    with torch.no_grad():
        logits = model(ids, position_ids=positions, attention_mask=mask)
    torch.testing.assert_close(logits[0].double(), naive_forward(model, ids[0], positions, mask),
                               atol=2e-4, rtol=1e-4)


def test_inputs_embeds_and_mask_shapes_are_equivalent():
    model = tiny_model(seed=5)
    ids = torch.randint(0, 48, (2, 8), generator=torch.Generator().manual_seed(1))
    positions = torch.arange(8)
    mask = block_causal(positions, 4)
    with torch.no_grad():
        from_ids = model(ids, position_ids=positions, attention_mask=mask)
        from_embeds = model(inputs_embeds=model.embed(ids), position_ids=positions, attention_mask=mask)
        batched = model(ids, position_ids=positions.expand(2, 8),
                        attention_mask=mask.expand(2, 1, 8, 8).clone())
    torch.testing.assert_close(from_embeds, from_ids, atol=0, rtol=0)
    torch.testing.assert_close(batched, from_ids, atol=1e-6, rtol=1e-6)
    with pytest.raises(ValueError, match="exactly one"):
        model(ids, inputs_embeds=model.embed(ids), position_ids=positions, attention_mask=mask)
    with pytest.raises(ValueError, match="boolean"):
        model(ids, position_ids=positions, attention_mask=mask.float())


def test_pad_embedding_row_gets_no_gradient():
    model = tiny_model(seed=6)
    ids = torch.tensor([[1, 44, 2, 44]])
    logits = model(ids, position_ids=torch.arange(4), attention_mask=torch.ones(4, 4, dtype=torch.bool))
    logits.sum().backward()
    grad = model.model.word_embeddings.weight.grad
    assert grad is not None and grad[44].abs().sum() == 0 and grad[1].abs().sum() > 0


def test_init_is_deterministic_and_sensible():
    config = tiny_config()
    torch.manual_seed(0)
    first = LLaDA2MoeForDiffusionLM(config)
    torch.manual_seed(0)
    second = LLaDA2MoeForDiffusionLM(config)
    third = LLaDA2MoeForDiffusionLM(config)
    third.init_weights(seed=5)
    second.init_weights(seed=5)
    for name, tensor in first.state_dict().items():
        assert torch.equal(second.state_dict()[name], third.state_dict()[name]), name
        if name.endswith("norm.weight"):
            assert torch.equal(tensor, torch.ones_like(tensor)), name
        elif name.endswith("expert_bias"):
            assert torch.equal(tensor, torch.zeros_like(tensor)), name
    emb = first.model.word_embeddings.weight
    assert emb[44].abs().sum() == 0  # the PAD row starts at zero (HF convention)
    assert 0.015 < first.lm_head.weight.std().item() < 0.025  # N(0, 0.02)


def test_bfloat16_forward_runs_and_stays_close():
    model = tiny_model(seed=14)
    fp32 = _logits(model)
    bf16 = _logits(model.to(torch.bfloat16))
    assert bf16.dtype == torch.bfloat16
    # Per-position error; a few positions may route differently in bf16 (near-ties flip, spec B.7),
    # so the bound is on the median position, not the worst one.
    per_position = (bf16.float() - fp32).abs().amax(-1)
    assert per_position.median() < 0.03 * fp32.abs().max()


# ====================================================================== KV cache (spec B.5, §3.1)
def test_prefix_cache_matches_full_forward():
    model = tiny_model(seed=8)
    B, prefix, end = 4, 8, 12
    ids = torch.randint(0, 48, (2, end), generator=torch.Generator().manual_seed(2))
    positions = torch.arange(end)
    with torch.no_grad():
        full = model(ids, position_ids=positions, attention_mask=block_causal(positions, B))
        cache = KVCache(model.config.num_hidden_layers)
        prefill = model(ids[:, :prefix], position_ids=positions[:prefix],
                        attention_mask=block_causal(positions[:prefix], B), kv_cache=cache,
                        cache_commit_length=prefix)
        assert cache.length == prefix
        block = model(ids[:, prefix:], position_ids=positions[prefix:],
                      attention_mask=torch.ones(B, B, dtype=torch.bool), kv_cache=cache)
    assert cache.length == prefix  # no commit requested
    torch.testing.assert_close(prefill, full[:, :prefix], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(block, full[:, prefix:], atol=1e-5, rtol=1e-5)
    k0, v0 = cache.get(0)
    assert k0.shape == (2, 2, prefix, 8) and v0.shape == (2, 2, prefix, 8)


def test_cross_block_commit_matches_separate_commit():
    """[finished block, new block] in one forward, committing the finished block (§3.1)."""
    model = tiny_model(seed=9)
    B = 4
    ids = torch.randint(0, 48, (1, 3 * B), generator=torch.Generator().manual_seed(3))
    positions = torch.arange(3 * B)
    with torch.no_grad():
        full = model(ids, position_ids=positions, attention_mask=block_causal(positions, B))
        # Reference: commit blocks 0 and 1 by a prefill, then forward block 2.
        separate = KVCache(model.config.num_hidden_layers)
        model(ids[:, :2 * B], position_ids=positions[:2 * B],
              attention_mask=block_causal(positions[:2 * B], B), kv_cache=separate, cache_commit_length=2 * B)
        # Cross-block: cache holds block 0; forward blocks 1+2, where block 1 cannot see block 2.
        crossed = KVCache(model.config.num_hidden_layers)
        model(ids[:, :B], position_ids=positions[:B], attention_mask=torch.ones(B, B, dtype=torch.bool),
              kv_cache=crossed, cache_commit_length=B)
        both = model(ids[:, B:], position_ids=positions[B:], attention_mask=block_causal(positions[B:], B),
                     kv_cache=crossed, cache_commit_length=B)
        after = model(ids[:, 2 * B:], position_ids=positions[2 * B:],
                      attention_mask=torch.ones(B, B, dtype=torch.bool), kv_cache=crossed)
    torch.testing.assert_close(both[:, B:], full[:, 2 * B:], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(after, full[:, 2 * B:], atol=1e-5, rtol=1e-5)
    assert crossed.length == separate.length == 2 * B
    for layer in range(model.config.num_hidden_layers):
        for got, want in zip(crossed.get(layer), separate.get(layer), strict=True):
            torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)


def test_kv_cache_append_clone_crop():
    cache = KVCache(2)
    assert cache.length == 0 and cache.get(0) is None
    k = torch.randn(1, 2, 3, 4)
    cache.append(0, k, k + 1)
    cache.append(1, k, k + 1)
    cache.append(0, k[:, :, :1], k[:, :, :1])
    cache.append(1, k[:, :, :1], k[:, :, :1])
    assert cache.length == 4
    copy = cache.clone()
    cache.crop(2)
    assert cache.length == 2 and copy.length == 4
    torch.testing.assert_close(copy.get(0)[0][:, :, 3], k[:, :, 0])
    with pytest.raises(ValueError):
        cache.append(0, torch.randn(1, 3, 1, 4), torch.randn(1, 3, 1, 4))


# ====================================================================== config
def released_mini_config() -> dict:
    """A config.json shaped like the released LLaDA2.0-mini one (HF keys we do not model included)."""
    return {
        "architectures": ["LLaDA2MoeModelLM"], "attention_dropout": 0.0,
        "auto_map": {"AutoConfig": "configuration_llada2_moe.LLaDA2MoeConfig"},
        "embedding_dropout": 0.0, "first_k_dense_replace": 1, "head_dim": 128, "hidden_act": "silu",
        "hidden_size": 2048, "initializer_range": 0.02, "intermediate_size": 5120,
        "max_position_embeddings": 16384, "max_window_layers": 20, "model_type": "llada2_moe",
        "moe_intermediate_size": 512, "moe_router_enable_expert_bias": True,
        "moe_shared_expert_intermediate_size": 512, "n_group": 8, "norm_head": False, "norm_topk_prob": True,
        "num_attention_heads": 16, "num_experts": 256, "num_experts_per_tok": 8, "num_hidden_layers": 20,
        "num_key_value_heads": 4, "num_shared_experts": 1, "output_dropout": 0.0, "pad_token_id": 156892,
        "partial_rotary_factor": 0.5, "rms_norm_eps": 1e-06, "rope_scaling": None, "rope_theta": 600000,
        "rotary_dim": 64, "routed_scaling_factor": 2.5, "router_dtype": "fp32", "score_function": "sigmoid",
        "tie_word_embeddings": False, "topk_group": 4, "torch_dtype": "bfloat16",
        "transformers_version": "4.52.3", "use_bias": False, "use_cache": False, "use_qk_norm": True,
        "use_qkv_bias": False, "use_rmsnorm": True, "use_sliding_window": False, "vocab_size": 157184,
    }


def test_released_config_loads_and_round_trips(tmp_path):
    raw = released_mini_config()
    config = LLaDA2MoeConfig.from_dict(raw)
    for key, value in raw.items():
        assert config.to_dict()[key] == value
    mini = LLaDA2MoeConfig.llada2_mini()
    for name in LLaDA2MoeConfig.field_names():
        assert getattr(config, name) == getattr(mini, name), name
    assert config.extra["auto_map"] == raw["auto_map"] and config.rotary_dim == 64
    path = config.save(tmp_path)
    assert LLaDA2MoeConfig.from_json_file(path) == config
    assert json.loads(path.read_text())["torch_dtype"] == "bfloat16"


@pytest.mark.parametrize(("key", "value"), [
    ("n_group", 3),  # 8 experts do not split into 3 groups
    ("topk_group", 5),  # more kept groups than groups
    ("num_experts_per_tok", 5),  # only 2 kept groups x 2 experts = 4 candidates
    ("num_attention_heads", 3),  # not a multiple of 2 kv heads
    ("partial_rotary_factor", 0.375),  # rotary dim 3 is odd
    ("score_function", "softmax"),
    ("hidden_act", "gelu"),
    ("rope_scaling", {"type": "yarn", "factor": 4.0}),
    ("pad_token_id", 48),  # outside the vocabulary
    ("use_qk_norm", False),
    ("attention_dropout", 0.1),
    ("tie_word_embeddings", True),
])
def test_bad_config_values_name_the_key(key, value):
    with pytest.raises(ValueError, match=key):
        LLaDA2MoeConfig.from_dict({**TINY, key: value})


def test_missing_config_file_is_clear(tmp_path):
    with pytest.raises(FileNotFoundError, match="config"):
        LLaDA2MoeConfig.from_json_file(tmp_path / "config.json")


# ====================================================================== save / load
def _logits(model: LLaDA2MoeForDiffusionLM) -> torch.Tensor:
    ids = torch.arange(10)[None] % 48
    positions = torch.arange(10)
    with torch.no_grad():
        return model(ids, position_ids=positions, attention_mask=block_causal(positions, 4))


def test_save_load_round_trip_is_exact_and_atomic(tmp_path, monkeypatch):
    model = tiny_model(seed=10)
    target = tmp_path / "ckpt"
    model.save_pretrained(target)
    (target / "tokenizer.json").write_text("{}")  # a file saved beside the model by another stage
    model.save_pretrained(target)  # overwrite in place
    names = sorted(p.name for p in target.iterdir())
    assert names == ["SHA256SUMS", "config.json", "model.safetensors", "tokenizer.json"]  # other files kept
    assert [p.name for p in tmp_path.iterdir()] == ["ckpt"]  # no temp files left
    # SHA256SUMS is in coreutils' format and lists the weights with their real digest.
    digest = hashlib.sha256((target / "model.safetensors").read_bytes()).hexdigest()
    assert (target / "SHA256SUMS").read_text() == f"{digest}  model.safetensors\n"

    def no_pickle(*args, **kwargs):
        raise AssertionError("from_pretrained must never unpickle")

    monkeypatch.setattr(torch, "load", no_pickle)
    loaded = LLaDA2MoeForDiffusionLM.from_pretrained(target)
    assert loaded.config == model.config
    torch.testing.assert_close(_logits(loaded), _logits(model), atol=0, rtol=0)
    half = LLaDA2MoeForDiffusionLM.from_pretrained(target, dtype=torch.bfloat16)
    assert {t.dtype for t in half.state_dict().values()} == {torch.bfloat16}


def test_load_merged_expert_layout_and_shards(tmp_path):
    model = tiny_model(seed=11)
    state = load_file(str(model.save_pretrained(tmp_path / "src") / "model.safetensors"))
    merged = {}
    for name, tensor in state.items():
        if ".mlp.experts." in name:
            layer_prefix, rest = name.split(".mlp.experts.")
            expert, proj, _ = rest.split(".")
            key = f"{layer_prefix}.mlp.experts.{proj}"
            merged.setdefault(key, [None] * 8)[int(expert)] = tensor
        else:
            merged[name] = tensor
    merged = {k: torch.stack(v) if isinstance(v, list) else v for k, v in merged.items()}
    assert merged["model.layers.1.mlp.experts.down_proj"].shape == (8, 32, 16)  # [E, out, in], no .weight
    out = tmp_path / "merged"
    out.mkdir()
    model.config.save(out)
    names = sorted(merged)
    first, second = names[: len(names) // 2], names[len(names) // 2:]
    save_file({k: merged[k] for k in first}, str(out / "model-00001-of-00002.safetensors"))
    save_file({k: merged[k] for k in second}, str(out / "model-00002-of-00002.safetensors"))
    weight_map = {k: "model-00001-of-00002.safetensors" for k in first}
    weight_map |= {k: "model-00002-of-00002.safetensors" for k in second}
    (out / "model.safetensors.index.json").write_text(json.dumps({"metadata": {}, "weight_map": weight_map}))
    loaded = LLaDA2MoeForDiffusionLM.from_pretrained(out)
    torch.testing.assert_close(_logits(loaded), _logits(model), atol=0, rtol=0)


def test_missing_files_give_clear_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="no model directory"):
        LLaDA2MoeForDiffusionLM.from_pretrained(tmp_path / "absent")
    with pytest.raises(FileNotFoundError, match="config"):
        LLaDA2MoeForDiffusionLM.from_pretrained(tmp_path)
    tiny_config().save(tmp_path)
    with pytest.raises(FileNotFoundError, match=r"model\.safetensors"):
        LLaDA2MoeForDiffusionLM.from_pretrained(tmp_path)


def test_mismatched_tensors_are_named(tmp_path):
    model = tiny_model(seed=12)
    target = model.save_pretrained(tmp_path / "m")
    state = load_file(str(target / "model.safetensors"))
    state.pop("model.layers.2.mlp.experts.3.up_proj.weight")
    state["model.layers.0.extra.weight"] = torch.zeros(2)
    state["lm_head.weight"] = torch.zeros(47, 32)
    save_file(state, str(target / "model.safetensors"))
    (target / "SHA256SUMS").unlink()  # as a checkpoint from elsewhere: names and shapes are the check
    with pytest.raises(ValueError) as err:
        LLaDA2MoeForDiffusionLM.from_pretrained(target)
    message = str(err.value)
    assert "model.layers.2.mlp.experts.3.up_proj.weight" in message
    assert "model.layers.0.extra.weight" in message
    assert "lm_head.weight" in message and "(47, 32)" in message


def test_truncated_or_corrupt_weights_give_clear_errors(tmp_path):
    target = tiny_model(seed=13).save_pretrained(tmp_path / "m")
    weights = target / "model.safetensors"
    data = weights.read_bytes()
    weights.write_bytes(data[: len(data) // 2])
    with pytest.raises(DataError, match=r"model\.safetensors does not match its SHA-256"):
        LLaDA2MoeForDiffusionLM.from_pretrained(target)
    (target / "SHA256SUMS").unlink()  # without the record, safetensors itself notices the truncation
    with pytest.raises(ValueError, match="truncated or corrupt"):
        LLaDA2MoeForDiffusionLM.from_pretrained(target)
    weights.write_bytes(b"not a safetensors file at all")
    with pytest.raises(ValueError, match="truncated or corrupt"):
        LLaDA2MoeForDiffusionLM.from_pretrained(target)


def test_flipped_payload_bytes_are_refused_by_the_checksum(tmp_path):
    """safetensors has no checksum: a flipped byte inside a tensor loads silently unless SHA256SUMS
    catches it. Checked first that the corruption really is silent without the record."""
    model = tiny_model(seed=14)
    target = model.save_pretrained(tmp_path / "m")
    weights = target / "model.safetensors"
    data = bytearray(weights.read_bytes())
    data[-100] ^= 0xFF  # inside the last tensor's payload; the JSON header is untouched
    weights.write_bytes(bytes(data))
    with pytest.raises(DataError, match=r"model\.safetensors does not match"):
        LLaDA2MoeForDiffusionLM.from_pretrained(target)
    sums = (target / "SHA256SUMS").read_text()
    (target / "SHA256SUMS").unlink()
    silently_wrong = LLaDA2MoeForDiffusionLM.from_pretrained(target)
    differs = [n for n, t in silently_wrong.state_dict().items() if not torch.equal(t, model.state_dict()[n])]
    assert len(differs) == 1
    (target / "SHA256SUMS").write_text(sums.replace(sums[:8], "0" * 8))  # a record that lies is refused too
    with pytest.raises(DataError, match="does not match"):
        LLaDA2MoeForDiffusionLM.from_pretrained(target)


def test_released_dropout_and_cache_values_are_written(tmp_path):
    """The official LLaDA2 config class defaults dropouts to 0.1 and use_cache to true: a dmax config.json
    must say 0.0 / false explicitly, as the released checkpoint does."""
    saved = json.loads(tiny_config().save(tmp_path).read_text())
    released = json.loads((FIXTURES / "config.json").read_text())
    for key in ("attention_dropout", "embedding_dropout", "output_dropout", "use_cache"):
        assert saved[key] == released[key] and saved[key] is not None, key
