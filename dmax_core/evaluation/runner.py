"""Decode problems with one policy and score them: the one loop distillation and evaluation share.

Problems are decoded `batch_size` at a time with the batched frame (continuous batching: a finished row's
slot takes the next problem), each row exactly as it would be alone. Scoring happens off the decode loop:
a finished row's answer text (`answers.answer_text`) goes to a small pool of scoring threads
(`Task.score_workers` of them) while the frame goes on decoding, so a code benchmark's sandboxed programs
(each a subprocess the thread waits on, up to its time limit) run in parallel with the model instead of
stalling every row of the batch. The result is one `Sample` per problem, in problem order, plus the wall
time of the decode (scores still running when the last row finishes are waited for after the clock
stops: they are not decoding time) and the number of model forwards, from which throughput and forwards
per second follow. `batch_size=1` decodes one problem at a time, which is how the paper measures TPS.

`trace_rows=k` keeps the step-by-step records of the first k problems from this same decode (the frame's
step records, built for those rows only), for the report's pictures: no second decode.

This module does not choose headline cells (`rules.py`) and does not write files (the stages do).
"""

from __future__ import annotations

import copy
import time
from collections.abc import Callable, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from contextlib import nullcontext
from dataclasses import dataclass, field
from typing import Any

import torch

from dmax_core.decoding import BlockPolicy, DecodeResult, ForwardInfo, generate_batch
from dmax_core.evaluation.answers import answer_text
from dmax_core.evaluation.records import Sample
from dmax_core.tasks import Problem, Task
from dmax_core.tokenizer import encode, render_prompt


@dataclass(frozen=True)
class DecodeRun:
    """Every sample of one decoding run and what the run cost as a whole."""

    samples: list[Sample]
    wall_seconds: float  # the decode, CUDA synchronised (scores finishing after it are not counted)
    forwards: int  # model forwards, each for one or many rows
    batch_size: int
    # problem index -> its decode with the frame's step records (`trace_rows`), for the report's traces
    traced: dict[int, DecodeResult] = field(default_factory=dict)
    score_wait_seconds: float = 0.0  # how long scoring ran on after the decode had finished

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
    trace_rows: int = 0,
    score_workers: int | None = None,
) -> DecodeRun:
    """Decode every problem's prompt with a copy of `policy` per row and score the answer with `task`.

    `on_sample` is called in this thread, once per problem, as its score arrives (not in problem order).
    `score_workers` overrides `task.score_workers`; 0 scores each answer inline, in the decode loop (how
    dmax scored before, kept for comparison: `benchmarks/scoring_overlap.py`)."""
    prompts = [torch.tensor(encode(tokenizer, render_prompt(tokenizer, task.prompt(p))), dtype=torch.long)
               for p in problems]
    workers = task.score_workers if score_workers is None else score_workers
    if workers < 0:
        raise ValueError(f"score_workers must be >= 0, got {workers}")
    samples: dict[int, Sample] = {}
    traced: dict[int, DecodeResult] = {}
    pending: dict[Future[dict[str, bool]], tuple[int, str, DecodeResult]] = {}
    forwards = 0
    primary = task.score_names[0]

    def record(index: int, text: str, result: DecodeResult, scores: dict[str, bool]) -> None:
        problem = problems[index]
        samples[index] = Sample(question=problem.question, reference=problem.answer, text=text,
                                correct=scores[primary], tokens=result.tokens, nfe=result.nfe,
                                seconds=result.seconds, scores={k: v for k, v in scores.items() if k != primary})
        if on_sample is not None:
            on_sample(samples[index])

    def collect(futures: Sequence[Future[dict[str, bool]]]) -> None:
        for future in sorted(futures, key=lambda f: pending[f][0]):
            index, text, result = pending.pop(future)
            record(index, text, result, future.result())  # a scorer's exception surfaces here, in words

    # No threads at all when scoring inline (`score_workers=0`).
    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="dmax-score") if workers else nullcontext() as pool:

        def finished(index: int, result: DecodeResult) -> None:
            text = answer_text(tokenizer, result)
            if index < trace_rows:
                traced[index] = result
            if workers == 0:
                record(index, text, result, task.score(text, problems[index]))
                return
            pending[pool.submit(task.score, text, problems[index])] = (index, text, result)
            collect([f for f in pending if f.done()])

        def counted(info: ForwardInfo) -> None:
            nonlocal forwards
            forwards += 1
            if on_forward is not None:
                on_forward(info)

        started = time.perf_counter()
        try:
            generate_batch(
                model, prompts, [copy.deepcopy(policy) for _ in prompts], gen_length=gen_length,
                block_length=block_length, max_batch=batch_size, max_forwards_per_block=max_forwards_per_block,
                on_forward=counted, on_finish=finished, compiled=compiled,
                trace_rows=range(min(trace_rows, len(prompts))) if trace_rows else None,
            )
        except BaseException:
            for future in pending:
                future.cancel()
            raise
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        wall = time.perf_counter() - started
        while pending:
            done, _ = wait(list(pending), return_when=FIRST_COMPLETED)
            collect(list(done))
        score_wait = time.perf_counter() - started - wall
    return DecodeRun([samples[i] for i in range(len(problems))], wall, forwards, batch_size, traced, score_wait)
