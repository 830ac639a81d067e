"""Word-level tokenizer with the LLaDA2 (Ling-2.0) special tokens and chat template (spec §6.4).

Why: the real LLaDA2.0-mini tokenizer has a 157k vocabulary; at CPU scale we need a tiny one that still
behaves like the real thing where the algorithm cares -- EOS doubles as PAD, a dedicated MASK token,
``<|role_end|>`` ending each turn, and the exact chat-template string layout, so prompt lengths, the
training layout (§1.1) and token counting (§5.4) are exercised the same way.

Words are split on whitespace only (``WhitespaceSplit``) and decoding joins tokens with single spaces, so
text whose tokens are separated by single spaces (see ``dmax_core.tasks``) round-trips exactly.
Special tokens are matched before pre-tokenization, so ``</role>detailed`` splits into ``</role>`` and
``detailed`` without a space.

This module must not download anything (all loading is from a local directory), must not hold global
state, and must not know about the model or the decoding policies.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable
from pathlib import Path

from tokenizers import Tokenizer
from tokenizers.models import WordLevel
from tokenizers.pre_tokenizers import WhitespaceSplit
from transformers import PreTrainedTokenizerFast

__all__ = [
    "CHAT_TEMPLATE",
    "EOS_TOKEN",
    "MASK_TOKEN",
    "PAD_TOKEN",
    "ROLE_CLOSE",
    "ROLE_END_TOKEN",
    "ROLE_OPEN",
    "SPECIAL_TOKENS",
    "TEMPLATE_WORDS",
    "UNK_TOKEN",
    "build_tokenizer",
    "encode",
    "load_hf_tokenizer",
    "load_tokenizer",
    "render_conversation",
    "render_prompt",
    "save_tokenizer",
    "special_token_ids",
]

UNK_TOKEN = "<unk>"
EOS_TOKEN = "<|endoftext|>"
PAD_TOKEN = EOS_TOKEN  # §6.4: EOS and PAD are the same id.
MASK_TOKEN = "<|mask|>"
ROLE_END_TOKEN = "<|role_end|>"
ROLE_OPEN = "<role>"
ROLE_CLOSE = "</role>"
# Fixed order -> fixed ids 0..5 for a given build (the model config takes mask/eos ids from here).
SPECIAL_TOKENS: tuple[str, ...] = (UNK_TOKEN, EOS_TOKEN, MASK_TOKEN, ROLE_END_TOKEN, ROLE_OPEN, ROLE_CLOSE)
# Plain words the chat template emits; always in the vocabulary.
TEMPLATE_WORDS: tuple[str, ...] = ("SYSTEM", "HUMAN", "ASSISTANT", "detailed", "thinking", "off")

# Ling-2.0 / LLaDA2 layout (§6.4). A first system message puts its content + "\n" before
# "detailed thinking off"; a single-turn prompt renders as
# <role>SYSTEM</role>detailed thinking off<|role_end|><role>HUMAN</role>{q}<|role_end|><role>ASSISTANT</role>
CHAT_TEMPLATE = (
    "{%- if messages and messages[0]['role'] == 'system' -%}"
    "{{- '<role>SYSTEM</role>' + messages[0]['content'] + '\\n' + 'detailed thinking off<|role_end|>' -}}"
    "{%- set loop_messages = messages[1:] -%}"
    "{%- else -%}"
    "{{- '<role>SYSTEM</role>detailed thinking off<|role_end|>' -}}"
    "{%- set loop_messages = messages -%}"
    "{%- endif -%}"
    "{%- for message in loop_messages -%}"
    "{%- if message['role'] == 'user' -%}"
    "{{- '<role>HUMAN</role>' + message['content'] + '<|role_end|>' -}}"
    "{%- elif message['role'] == 'assistant' -%}"
    "{{- '<role>ASSISTANT</role>' + message['content'] + '<|role_end|>' -}}"
    "{%- else -%}"
    "{{- raise_exception('unsupported role ' + message['role'] + ' (system is only allowed first)') -}}"
    "{%- endif -%}"
    "{%- endfor -%}"
    "{%- if add_generation_prompt -%}"
    "{{- '<role>ASSISTANT</role>' -}}"
    "{%- endif -%}"
)


def _wrap(tok: Tokenizer) -> PreTrainedTokenizerFast:
    return PreTrainedTokenizerFast(
        tokenizer_object=tok,
        unk_token=UNK_TOKEN,
        eos_token=EOS_TOKEN,
        pad_token=PAD_TOKEN,
        mask_token=MASK_TOKEN,
        extra_special_tokens=[ROLE_END_TOKEN, ROLE_OPEN, ROLE_CLOSE],
        chat_template=CHAT_TEMPLATE,
        padding_side="right",
        truncation_side="right",
        # The default clean-up would turn "2 ." into "2." and break exact round-trips.
        clean_up_tokenization_spaces=False,
    )


def build_tokenizer(words: Iterable[str]) -> PreTrainedTokenizerFast:
    """Word-level tokenizer over ``words`` (each item is split on whitespace, so whole texts work too)
    plus the special tokens and template words. Ids: specials 0..5 in ``SPECIAL_TOKENS`` order, then the
    words sorted, so the same word set always gives the same ids."""
    vocab_words: set[str] = set(TEMPLATE_WORDS)
    for item in words:
        vocab_words.update(item.split())
    clash = vocab_words & set(SPECIAL_TOKENS)
    if clash:
        raise ValueError(f"words must not contain special tokens: {sorted(clash)}")
    vocab = {t: i for i, t in enumerate(SPECIAL_TOKENS)}
    for w in sorted(vocab_words):
        vocab[w] = len(vocab)
    tok = Tokenizer(WordLevel(vocab=vocab, unk_token=UNK_TOKEN))
    tok.pre_tokenizer = WhitespaceSplit()
    # No decoder on purpose: the tokenizers default joins tokens with single spaces, which is the exact
    # inverse of WhitespaceSplit for single-spaced text.
    tok.add_special_tokens(list(SPECIAL_TOKENS))
    return _wrap(tok)


def save_tokenizer(tokenizer: PreTrainedTokenizerFast, directory: str | os.PathLike[str]) -> Path:
    """``save_pretrained`` into ``directory`` (tokenizer.json + tokenizer_config.json + chat template)."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    tokenizer.save_pretrained(str(directory))
    return directory


def load_tokenizer(directory: str | os.PathLike[str]) -> PreTrainedTokenizerFast:
    """The tokenizer of a checkpoint directory, offline (local files only, never remote code).

    A dmax word-level tokenizer (all of `SPECIAL_TOKENS`, dmax's template or none saved) is rebuilt from
    ``tokenizer.json`` with our fixed special-token roles and template rather than through
    ``AutoTokenizer``, so the result does not depend on which keys a transformers version chose to put in
    ``tokenizer_config.json``. Any other tokenizer (a downloaded LLaDA2.0-mini's) is loaded as the
    checkpoint describes it (`load_hf_tokenizer`): its own special tokens and chat template, unchanged.
    """
    directory = Path(directory)
    path = directory / "tokenizer.json"
    if not path.is_file():
        raise FileNotFoundError(f"no tokenizer.json in {directory}")
    try:
        tok = Tokenizer.from_file(str(path))
    except Exception as exc:  # the tokenizers library raises a bare Exception for malformed files
        raise ValueError(f"{path} is not a valid tokenizer file: {exc}") from exc
    saved_template = _saved_chat_template(directory)
    is_dmax = all(tok.token_to_id(t) is not None for t in SPECIAL_TOKENS)
    if not is_dmax or (saved_template is not None and saved_template != CHAT_TEMPLATE):
        return load_hf_tokenizer(directory)
    return _wrap(tok)


def load_hf_tokenizer(directory: str | os.PathLike[str]) -> PreTrainedTokenizerFast:
    """A checkpoint's own tokenizer through transformers, from local files only and without remote code.

    dmax needs three things from it, each refused in words when missing: a mask token (the diffusion
    MASK; LLaDA2's is `<|mask|>`), an EOS token, and a chat template (the prompt the model was tuned on).
    PAD falls back to EOS, as in LLaDA2 (§6.4)."""
    directory = Path(directory)
    try:
        tokenizer = PreTrainedTokenizerFast.from_pretrained(str(directory), local_files_only=True,
                                                            trust_remote_code=False)
    except (OSError, ValueError, TypeError) as exc:
        raise ValueError(f"cannot load the tokenizer in {directory}: {exc}") from exc
    if tokenizer.mask_token is None or tokenizer.mask_token_id is None:
        raise ValueError(f"the tokenizer in {directory} has no mask token; a diffusion LM needs one "
                         "(set mask_token in tokenizer_config.json)")
    if tokenizer.eos_token_id is None:
        raise ValueError(f"the tokenizer in {directory} has no EOS token (set eos_token in tokenizer_config.json)")
    if not tokenizer.chat_template:
        raise ValueError(f"the tokenizer in {directory} has no chat template (tokenizer_config.json "
                         "chat_template or chat_template.jinja)")
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def _saved_chat_template(directory: Path) -> str | None:
    """The chat template saved beside the tokenizer (`chat_template.jinja` wins over the config's).

    `tokenizer_config.json` is parsed whenever it exists, so a damaged one is refused in words here
    rather than by whatever tool reads the checkpoint next."""
    template = None
    config = directory / "tokenizer_config.json"
    if config.is_file():
        try:
            data = json.loads(config.read_text(encoding="utf-8"))
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise ValueError(f"{config} is not valid JSON: {exc}") from exc
        if not isinstance(data, dict):
            raise ValueError(f"{config} must hold a JSON object")
        value = data.get("chat_template")
        template = value if isinstance(value, str) else None
    jinja = directory / "chat_template.jinja"
    if jinja.is_file():
        template = jinja.read_text(encoding="utf-8")
    return template


def render_prompt(tokenizer: PreTrainedTokenizerFast, question: str) -> str:
    """Single user turn plus the generation prompt ``<role>ASSISTANT</role>`` (what decoding starts from)."""
    return tokenizer.apply_chat_template(
        [{"role": "user", "content": question}], add_generation_prompt=True, tokenize=False
    )


def render_conversation(tokenizer: PreTrainedTokenizerFast, question: str, answer: str) -> str:
    """User + assistant turn, no generation prompt: the training string of §1.1, whose first
    ``len(encode(render_prompt(...)))`` tokens are exactly the prompt."""
    return tokenizer.apply_chat_template(
        [{"role": "user", "content": question}, {"role": "assistant", "content": answer}],
        add_generation_prompt=False,
        tokenize=False,
    )


def encode(tokenizer: PreTrainedTokenizerFast, text: str) -> list[int]:
    """Token ids of ``text`` with ``add_special_tokens=False`` (the template already carries them)."""
    return list(tokenizer.encode(text, add_special_tokens=False))


def special_token_ids(tokenizer: PreTrainedTokenizerFast) -> dict[str, int]:
    """Ids the model and decoders need: ``mask``, ``eos`` and ``pad`` (== eos in LLaDA2)."""
    ids = {"mask": tokenizer.mask_token_id, "eos": tokenizer.eos_token_id, "pad": tokenizer.pad_token_id}
    unk = tokenizer.unk_token_id
    for key, value in ids.items():
        if not isinstance(value, int) or value == unk:
            raise ValueError(f"tokenizer has no {key} token")
    return ids
