"""The one builder of tiny LLaDA2-MoE models for every test (fixed seeds, in-process, no downloads).

`tiny_model()` is a 3-layer MoE small enough for a forward in milliseconds; `tokenizer=` sizes its
vocabulary and special ids after a real dmax tokenizer (for training and decoding tests);
`random_weights=True` draws every tensor (norms and expert_bias included) at a scale where each weight
changes the output, which forward-equivalence tests need (the default init gives near-uniform logits).
"""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path
from typing import Any

import torch

from dmax_core.models import LLaDA2MoeConfig, LLaDA2MoeForDiffusionLM
from dmax_core.tokenizer import special_token_ids

TINY: dict[str, Any] = dict(
    vocab_size=48, hidden_size=32, intermediate_size=48, moe_intermediate_size=16, num_hidden_layers=3,
    num_attention_heads=4, num_key_value_heads=2, head_dim=8, partial_rotary_factor=0.5, rope_theta=10000.0,
    max_position_embeddings=128, rms_norm_eps=1e-6, first_k_dense_replace=1, num_experts=8,
    num_experts_per_tok=2, num_shared_experts=1, n_group=4, topk_group=2, routed_scaling_factor=2.5,
    pad_token_id=44, mask_token_id=47, eos_token_id=44,
)


def tiny_config(tokenizer: Any = None, **overrides: Any) -> LLaDA2MoeConfig:
    values = dict(TINY)
    if tokenizer is not None:
        ids = special_token_ids(tokenizer)
        values.update(vocab_size=len(tokenizer), pad_token_id=ids["pad"], eos_token_id=ids["eos"],
                      mask_token_id=ids["mask"], max_position_embeddings=512)
    values.update(overrides)
    return LLaDA2MoeConfig(**values)


def randomize(model: LLaDA2MoeForDiffusionLM, seed: int) -> LLaDA2MoeForDiffusionLM:
    """Every tensor random: norms ~ 1 + 0.2 N, expert_bias ~ 0.1 N, embeddings ~ N, others N / sqrt(fan_in)."""
    gen = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():
        for name, tensor in model.state_dict().items():
            noise = torch.randn(tensor.shape, generator=gen)
            if name.endswith("norm.weight"):
                tensor.copy_(1.0 + 0.2 * noise)
            elif name.endswith("expert_bias"):
                tensor.copy_(0.1 * noise)
            elif name.endswith("word_embeddings.weight"):
                tensor.copy_(noise)
            else:
                tensor.copy_(noise / math.sqrt(tensor.shape[-1]))
    return model


def tiny_model(seed: int = 0, *, tokenizer: Any = None, random_weights: bool = False,
               **overrides: Any) -> LLaDA2MoeForDiffusionLM:
    """A fresh fp32 model in eval mode; the same arguments always give the same weights."""
    torch.manual_seed(seed)
    model = LLaDA2MoeForDiffusionLM(tiny_config(tokenizer, **overrides))
    if random_weights:
        randomize(model, seed)
    return model.eval()


# LLaDA2.0-mini's added tokens in their id order (../shared/fixtures/llada2-mini/README.md), ids made small.
LLADA2_SPECIAL_TOKENS: tuple[str, ...] = (
    "<|startoftext|>", "<|endoftext|>", "[CLS]", "[gMASK]", "<|mask|>", "<tool_call>", "</tool_call>",
    "<tool_response>", "</tool_response>", "<|role_end|>",
)
LLADA2_FIXTURE = Path(__file__).parent / "assets" / "llada2-mini"


def llada2_like_tokenizer_dir(directory: Path, corpus: list[str], *, config_overrides: dict | None = None) -> Path:
    """A real-HF-shaped tokenizer directory: a small byte-level BPE trained on `corpus` with LLaDA2.0-mini's
    special tokens, beside the real LLaDA2.0-mini `tokenizer_config.json` (official chat template) and
    `special_tokens_map.json`, unchanged unless `config_overrides` says otherwise."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=400, special_tokens=list(LLADA2_SPECIAL_TOKENS),
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tok.train_from_iterator(corpus, trainer)
    directory.mkdir(parents=True, exist_ok=True)
    tok.save(str(directory / "tokenizer.json"))
    config = json.loads((LLADA2_FIXTURE / "tokenizer_config.json").read_text())
    config.update(config_overrides or {})
    (directory / "tokenizer_config.json").write_text(json.dumps(config))
    shutil.copy(LLADA2_FIXTURE / "special_tokens_map.json", directory / "special_tokens_map.json")
    return directory
