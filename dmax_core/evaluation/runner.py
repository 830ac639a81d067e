"""Run the {model} x {decoder} x {threshold} grid on held-out problems and collect per-cell metrics.

Each sample is decoded alone (batch 1, as the paper measures TPF/TPS) with the shared decoding frame;
accuracy, TPF, TPS and NFE come from `evaluation.metrics`. This module does not choose headline
cells (see `headline.py`) and does not write files (the `evaluate` stage does).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch

from dmax_core.data import Problem
from dmax_core.decoding.frame import generate
from dmax_core.decoding.policies import BlockPolicy, SPDPolicy, ThresholdPolicy
from dmax_core.evaluation.metrics import SampleMetrics, aggregate
from dmax_core.evaluation.scoring import is_correct
from dmax_core.tokenizer import encode, render_prompt

DECODERS: dict[str, Callable[[float], BlockPolicy]] = {
    "threshold": lambda threshold: ThresholdPolicy(threshold),
    "spd": lambda threshold: SPDPolicy(threshold),
}


def build_policy(decoder: str, threshold: float) -> BlockPolicy:
    """The per-block policy for a decoder name (`threshold`: spec §3.1 baseline; `spd`: spec §4)."""
    try:
        return DECODERS[decoder](threshold)
    except KeyError:
        raise ValueError(f"unknown decoder {decoder!r}; known: {', '.join(DECODERS)}") from None


@dataclass
class DecodedSample:
    question: str
    reference: str
    generated_text: str
    correct: bool
    tokens: int
    nfe: int
    seconds: float


def decode_problems(
    model: Any,
    tokenizer: Any,
    problems: Sequence[Problem],
    policy: BlockPolicy,
    *,
    gen_length: int,
    block_length: int,
    on_sample: Callable[[DecodedSample], None] | None = None,
) -> list[DecodedSample]:
    """Decode every problem with `policy` and score it with the task's exact-match scorer."""
    samples = []
    for problem in problems:
        prompt = torch.tensor(encode(tokenizer, render_prompt(tokenizer, problem.question)), dtype=torch.long)
        result = generate(
            model, prompt, policy, gen_length=gen_length, block_length=block_length, record_trace=False
        )
        text = tokenizer.decode(result.generated_ids.tolist(), skip_special_tokens=True)
        sample = DecodedSample(
            question=problem.question,
            reference=problem.answer,
            generated_text=text,
            correct=is_correct(text, problem),
            tokens=result.tokens,
            nfe=result.nfe,
            seconds=result.seconds,
        )
        samples.append(sample)
        if on_sample is not None:
            on_sample(sample)
    return samples


def cell_metrics(samples: Sequence[DecodedSample]) -> dict[str, float]:
    """Aggregate accuracy / TPF / TPS / NFE for one cell (means of per-sample ratios, spec §5.4)."""
    return aggregate(
        [SampleMetrics(tokens=s.tokens, nfe=s.nfe, seconds=s.seconds, correct=s.correct) for s in samples]
    )
