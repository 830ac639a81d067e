"""A checkpoint's own HF tokenizer (LLaDA2.0-mini's chat template and special tokens) loads and renders the
official prompt; dmax's word-level tokenizer keeps its own path."""

from __future__ import annotations

import json

import pytest
from builders import LLADA2_SPECIAL_TOKENS, llada2_like_tokenizer_dir

from dmax_core.tokenizer import encode, load_tokenizer, render_prompt, special_token_ids

CORPUS = ["Question: Natalia sold clips to 48 of her friends in April.\nLet's think step by step\nAnswer:",
          "def add(a, b):\n    return a + b\n", "The answer is \\boxed{42}."] * 20


@pytest.fixture(scope="module")
def llada2_dir(tmp_path_factory):
    return llada2_like_tokenizer_dir(tmp_path_factory.mktemp("llada2-tok"), CORPUS)


def test_official_template_renders_the_official_prompt(llada2_dir):
    tok = load_tokenizer(llada2_dir)
    user = "Question: What is 2 + 3?\nLet's think step by step\nAnswer:"
    # The string the issue and the fixture README give for one user turn with the generation prompt.
    expected = ("<role>SYSTEM</role>detailed thinking off<|role_end|><role>HUMAN</role>" + user
                + "<|role_end|><role>ASSISTANT</role>")
    assert render_prompt(tok, user) == expected


def test_special_ids_come_from_the_tokenizer(llada2_dir):
    tok = load_tokenizer(llada2_dir)
    vocab = json.loads((llada2_dir / "tokenizer.json").read_text())["model"]["vocab"]
    ids = special_token_ids(tok)
    assert ids == {"mask": vocab["<|mask|>"], "eos": vocab["<|endoftext|>"], "pad": vocab["<|endoftext|>"]}
    assert ids["mask"] == LLADA2_SPECIAL_TOKENS.index("<|mask|>")
    # special tokens stay single ids inside a rendered prompt, and text round-trips through byte-level BPE
    prompt = render_prompt(tok, "def f(x):\n    return x")
    assert tok.convert_tokens_to_ids("<|role_end|>") in encode(tok, prompt)
    assert tok.decode(encode(tok, prompt)) == prompt


def test_tokenizer_without_mask_token_is_refused_in_words(tmp_path):
    directory = llada2_like_tokenizer_dir(tmp_path / "nomask", CORPUS, config_overrides={"mask_token": None})
    (directory / "special_tokens_map.json").write_text(json.dumps({"eos_token": "<|endoftext|>"}))
    with pytest.raises(ValueError, match="no mask token"):
        load_tokenizer(directory)


def test_tokenizer_without_chat_template_is_refused_in_words(tmp_path):
    directory = llada2_like_tokenizer_dir(tmp_path / "notemplate", CORPUS, config_overrides={"chat_template": None})
    with pytest.raises(ValueError, match="no chat template"):
        load_tokenizer(directory)
