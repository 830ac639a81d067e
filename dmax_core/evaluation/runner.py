"""Decode problems with one policy and score them: the one loop distillation and evaluation share.

Problems are decoded `batch_size` at a time with the batched frame (continuous batching: a finished row's
slot takes the next problem), each row exactly as it would be alone, and scored by its task; the result
is one `Sample` per problem plus the wall time and the number of model forwards of the whole run, from
which throughput and forwards per second follow. `batch_size=1` decodes one problem at a time, which is
how the paper measures TPS. This module does not choose headline cells (`rules.py`) and does not write
files (the stages do).
"""

from __future__ import annotations

import copy
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch

from dmax_core.decoding import BlockPolicy, DecodeResult, ForwardInfo, generate_batch
from dmax_core.evaluation.records import Sample
from dmax_core.tasks import Problem, Task
from dmax_core.tokenizer import encode, render_prompt


@dataclass(frozen=True)
class DecodeRun:
    """Every sample of one decoding run and what the run cost as a whole."""

    samples: list[Sample]
    wall_seconds: float  # the whole run, CUDA synchronised
    forwards: int  # model forwards, each for one or many rows
    batch_size: int

    @property
    def throughput(self) -> float:
        """Generated tokens per wall-clock second of the whole run (aggregate, not per sample)."""
        return sum(s.tokens for s in self.samples) / self.wall_seconds

    @property
    def forwards_per_second(self) -> float:
        return self.forwards / self.wall_seconds


def decode_problems(
    model: Any,
    tokenizer: Any,
    task: Task,
    problems: Sequence[Problem],
    policy: BlockPolicy,
    *,
    gen_length: int,
    block_length: int,
    batch_size: int = 1,
    max_forwards_per_block: int | None = None,
    compiled: bool = False,
    on_sample: Callable[[Sample], None] | None = None,
    on_forward: Callable[[ForwardInfo], None] | None = None,
) -> DecodeRun:
    """Decode every problem's prompt with a copy of `policy` per row and score the answer with `task`."""
    prompts = [torch.tensor(encode(tokenizer, render_prompt(tokenizer, task.prompt(p))), dtype=torch.long)
               for p in problems]
    samples: dict[int, Sample] = {}
    forwards = 0

    def finished(index: int, result: DecodeResult) -> None:
        problem = problems[index]
        text = tokenizer.decode(result.generated_ids.tolist(), skip_special_tokens=True)
        scores = task.score(text, problem)
        primary = task.score_names[0]
        samples[index] = Sample(question=problem.question, reference=problem.answer, text=text,
                                correct=scores[primary], tokens=result.tokens, nfe=result.nfe,
                                seconds=result.seconds, scores={k: v for k, v in scores.items() if k != primary})
        if on_sample is not None:
            on_sample(samples[index])

    def counted(info: ForwardInfo) -> None:
        nonlocal forwards
        forwards += 1
        if on_forward is not None:
            on_forward(info)

    started = time.perf_counter()
    generate_batch(
        model, prompts, [copy.deepcopy(policy) for _ in prompts], gen_length=gen_length, block_length=block_length,
        max_batch=batch_size, max_forwards_per_block=max_forwards_per_block, on_forward=counted, on_finish=finished,
        compiled=compiled,
    )
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    wall = time.perf_counter() - started
    return DecodeRun([samples[i] for i in range(len(problems))], wall, forwards, batch_size)
