"""The compiled block step (torch.compile over a fixed-shape cache) decodes exactly what eager decoding does
on the trained asset: every token, every NFE, every stop reason, for both policies. Slow: compiling on a
CPU takes tens of seconds."""

import copy
from pathlib import Path

import pytest
import torch

from dmax_core.bundle import load_bundle
from dmax_core.config import load_config
from dmax_core.decoding import POLICIES, build_policy, generate_batch
from dmax_core.diffusion import block_causal_mask
from dmax_core.errors import ConfigError
from dmax_core.models import KVCache
from dmax_core.models.kv_cache import StaticKVCache
from dmax_core.stages.common import task_of
from dmax_core.tokenizer import encode, render_prompt

ASSET = Path(__file__).resolve().parents[1] / "models" / "ledger-base"


def test_the_static_cache_attends_like_the_exact_cache():
    """Eager, no compiler: the fixed-shape cache (whole buffer, masked) against the exact one."""
    model, _ = load_bundle(ASSET)
    model = model.float()
    cfg = model.config
    ids = torch.randint(6, 50, (1, 96), generator=torch.Generator().manual_seed(0))
    positions = torch.arange(96)
    exact = KVCache(cfg.num_hidden_layers, capacity=96)
    static = StaticKVCache(cfg.num_hidden_layers, 128, cfg.num_key_value_heads, cfg.head_dim)
    with torch.inference_mode():
        for cache in (exact, static):
            model(ids[:, :32], position_ids=positions[:32], attention_mask=block_causal_mask(positions[:32], 32),
                  kv_cache=cache, cache_commit_length=32)
        mask = block_causal_mask(positions[32:96], 32)
        a = model(ids[:, 32:96], position_ids=positions[32:96], attention_mask=mask, kv_cache=exact,
                  cache_commit_length=32)
        b = model(ids[:, 32:96], position_ids=positions[32:96], attention_mask=mask, kv_cache=static,
                  cache_commit_length=32)
    assert exact.length == static.length == 64
    torch.testing.assert_close(b, a, atol=1e-5, rtol=1e-5)


@pytest.mark.slow
def test_compiled_decoding_equals_eager_decoding():
    model, tokenizer = load_bundle(ASSET)
    model = model.float()
    problems = task_of(load_config("tiny")).splits()["test"][:6]
    prompts = [torch.tensor(encode(tokenizer, render_prompt(tokenizer, p.question))) for p in problems]
    for name in POLICIES.names():
        policy = build_policy(name, 0.7)
        eager = generate_batch(model, prompts, [copy.deepcopy(policy) for _ in prompts], gen_length=48,
                               block_length=32, max_batch=1)
        compiled = generate_batch(model, prompts, [copy.deepcopy(policy) for _ in prompts], gen_length=48,
                                  block_length=32, max_batch=1, compiled=True)
        for a, b in zip(eager, compiled, strict=True):
            assert torch.equal(a.raw_ids, b.raw_ids)
            assert a.nfe == b.nfe and a.block_stop_reasons == b.block_stop_reasons


def test_compiled_decoding_is_refused_with_batches():
    model, _ = load_bundle(ASSET)
    with pytest.raises(ValueError, match="max_batch=1"):
        generate_batch(model, [torch.tensor([5, 6])] * 2, [build_policy("spd", 0.5), build_policy("spd", 0.5)],
                       gen_length=8, block_length=32, compiled=True)
    with pytest.raises(ConfigError, match=r"decoding\.compile decodes one row at a time"):
        load_config("smoke", ["decoding.compile=true"])
    assert load_config("smoke", ["decoding.compile=true", "distill.batch_size=1",
                                 "evaluate.batch_size=1"]).decoding.compile
