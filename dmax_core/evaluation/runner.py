"""Decode problems with one policy and score them: the one loop distillation and evaluation share.

Each sample is decoded alone (batch 1, as the paper measures TPF/TPS) with the shared decoding frame and
scored by its task; the result is one `Sample` record per problem. This module does not choose headline
cells (`rules.py`) and does not write files (the stages do).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch

from dmax_core.decoding import BlockPolicy, generate
from dmax_core.evaluation.records import Sample
from dmax_core.tasks import Problem, Task
from dmax_core.tokenizer import encode, render_prompt


def decode_problems(
    model: Any,
    tokenizer: Any,
    task: Task,
    problems: Sequence[Problem],
    policy: BlockPolicy,
    *,
    gen_length: int,
    block_length: int,
    max_forwards_per_block: int | None = None,
    on_sample: Callable[[Sample], None] | None = None,
) -> list[Sample]:
    """Decode every problem's prompt with `policy` and score the answer with `task`."""
    samples = []
    for problem in problems:
        prompt = torch.tensor(encode(tokenizer, render_prompt(tokenizer, task.prompt(problem))), dtype=torch.long)
        result = generate(
            model, prompt, policy, gen_length=gen_length, block_length=block_length, record_trace=False,
            max_forwards_per_block=max_forwards_per_block,
        )
        text = tokenizer.decode(result.generated_ids.tolist(), skip_special_tokens=True)
        sample = Sample(
            question=problem.question,
            reference=problem.answer,
            text=text,
            correct=task.is_correct(text, problem),
            tokens=result.tokens,
            nfe=result.nfe,
            seconds=result.seconds,
        )
        samples.append(sample)
        if on_sample is not None:
            on_sample(sample)
    return samples
