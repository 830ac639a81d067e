"""Turn (question, answer) pairs into the fixed-length tensors the trainer consumes (spec §1.1, §2.1).

Tokenisation happens once, up front; noise is drawn per step by the trainer, so every epoch sees
fresh masks. This module does not know about models or optimisers.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch

from dmax_core.diffusion import build_example
from dmax_core.tokenizer import encode, render_conversation, render_prompt


@dataclass(frozen=True)
class ConversationTensors:
    """N examples of length n. `flags[i]` = True marks an on-policy (rollout) copy for OPUT."""

    clean_ids: torch.Tensor  # Long[N, n]
    labels: torch.Tensor  # Long[N, n]
    prompt_lengths: torch.Tensor  # Long[N]
    flags: torch.Tensor  # Bool[N]

    def __len__(self) -> int:
        return int(self.clean_ids.shape[0])

    def select(self, index: torch.Tensor) -> ConversationTensors:
        return ConversationTensors(
            self.clean_ids[index], self.labels[index], self.prompt_lengths[index], self.flags[index]
        )


def encode_conversations(
    tokenizer,
    pairs: Sequence[tuple[str, str]],
    max_seq_len: int,
    labelled_pad_tokens: int,
) -> ConversationTensors:
    """Render each pair with the chat template, tokenise without special tokens, pad to n (spec §1.1)."""
    if not pairs:
        raise ValueError("no training conversations")
    pad_id = tokenizer.pad_token_id
    examples = []
    for question, answer in pairs:
        prompt_ids = encode(tokenizer, render_prompt(tokenizer, question))
        full_ids = encode(tokenizer, render_conversation(tokenizer, question, answer))
        examples.append(build_example(prompt_ids, full_ids, max_seq_len, pad_id, labelled_pad_tokens))
    return ConversationTensors(
        clean_ids=torch.stack([e.clean_ids for e in examples]),
        labels=torch.stack([e.labels for e in examples]),
        prompt_lengths=torch.tensor([e.prompt_length for e in examples], dtype=torch.long),
        flags=torch.zeros(len(examples), dtype=torch.bool),
    )


def duplicate_for_oput(data: ConversationTensors) -> ConversationTensors:
    """Two copies of every row, one on-policy (flag=True) and one plain (flag=False) (spec §2.1).

    This is how OPUT gets its exact 50/50 mix; the trainer's per-epoch shuffle separates the copies.
    """
    return ConversationTensors(
        clean_ids=torch.cat([data.clean_ids, data.clean_ids]),
        labels=torch.cat([data.labels, data.labels]),
        prompt_lengths=torch.cat([data.prompt_lengths, data.prompt_lengths]),
        flags=torch.cat([torch.ones(len(data), dtype=torch.bool), torch.zeros(len(data), dtype=torch.bool)]),
    )
