"""What a decoded sample's answer *text* is: the one rule evaluation, distillation, traces and the
lm-eval adapter read answers by.

DMax's rule (spec §5.4 and its evaluation scripts) is the default: every generated id that is not EOS,
decoded with `skip_special_tokens=True`. A diffusion decoder may write ids after an EOS inside its last
block; they are kept (and counted as tokens, §7.12), so the scores and TPF figures stay comparable with
the paper's.

lm-eval compares a model's text with an autoregressive model's, which stops writing at the end of its
turn and is cut at the task's stop strings; so `turn_end_ids` cuts the raw generated ids at the first
turn-ending id (EOS or `<|role_end|>`, `turn_end_ids(tokenizer)`) before decoding, and `until` cuts the
text before the first stop string. Both are parameters of this one function, not a second rule.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from typing import Any

from dmax_core.decoding import DecodeResult
from dmax_core.tokenizer import ROLE_END_TOKEN, special_token_ids

__all__ = ["answer_text", "turn_end_ids"]


def answer_text(tokenizer: Any, result: DecodeResult, *, turn_end_ids: Collection[int] | None = None,
                until: Sequence[str] = ()) -> str:
    """The answer text of `result` (module docstring): DMax's rule unless `turn_end_ids` / `until` are given."""
    if turn_end_ids is None:
        ids = result.generated_ids.tolist()
    else:
        raw = result.raw_ids[result.prompt_length:] if result.raw_ids is not None else result.generated_ids
        ids = raw.tolist()
        ids = ids[: next((i for i, token in enumerate(ids) if token in turn_end_ids), len(ids))]
    text = tokenizer.decode(ids, skip_special_tokens=True)
    cuts = [position for stop in until if stop and (position := text.find(stop)) >= 0]
    return text[: min(cuts)] if cuts else text


def turn_end_ids(tokenizer: Any) -> frozenset[int]:
    """Ids that end the assistant's turn: EOS, and `<|role_end|>` where the vocabulary has it (dmax's and
    LLaDA2's templates close every turn with it)."""
    ids = {special_token_ids(tokenizer)["eos"]}
    role_end = tokenizer.convert_tokens_to_ids(ROLE_END_TOKEN)
    if isinstance(role_end, int) and role_end != tokenizer.unk_token_id:
        ids.add(role_end)
    return frozenset(ids)
