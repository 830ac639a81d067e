"""Shared fixtures: tiny models and tokenizers built in-process (no downloads, fixed seeds)."""

from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")

import pytest
import torch

from dmax_core.config import load_config
from dmax_core.data import generate_problems, vocabulary
from dmax_core.models import LLaDA2MoeConfig, LLaDA2MoeForDiffusionLM
from dmax_core.tokenizer import build_tokenizer, special_token_ids

# One thread: the test models are tiny, and two OpenMP threads per process thrash badly whenever
# another process (a server, a DVC stage) wants a core too.
torch.set_num_threads(1)


@pytest.fixture(scope="session")
def tokenizer():
    return build_tokenizer(vocabulary())


@pytest.fixture()
def smoke_config(tmp_path):
    return load_config("smoke", [f"run_dir={tmp_path / 'run'}"])


def make_tiny_model(tokenizer, seed: int = 0, **overrides) -> LLaDA2MoeForDiffusionLM:
    ids = special_token_ids(tokenizer)
    cfg = dict(
        vocab_size=len(tokenizer), hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
        num_key_value_heads=1, head_dim=16, intermediate_size=64, moe_intermediate_size=16,
        first_k_dense_replace=1, num_experts=4, num_experts_per_tok=2, n_group=2, topk_group=1,
        num_shared_experts=1, max_position_embeddings=512, pad_token_id=ids["pad"], eos_token_id=ids["eos"],
        mask_token_id=ids["mask"],
    )
    cfg.update(overrides)
    torch.manual_seed(seed)
    return LLaDA2MoeForDiffusionLM(LLaDA2MoeConfig.from_dict(cfg))


@pytest.fixture()
def tiny_model(tokenizer):
    return make_tiny_model(tokenizer)


@pytest.fixture(scope="session")
def problems():
    return generate_problems(16, seed=3)
