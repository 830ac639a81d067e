"""Real behaviour on a trained tiny base model (models/ledger-base, regenerate with `make asset`).

The asset is the `ledger` preset's base (the 3-seed benchmark's seed 0). It is fixed and decoding is
greedy, so these results are deterministic; the thresholds below are properties any adequately
trained base must have, not numbers tuned to this file.
"""

from pathlib import Path

import pytest
import torch

from dmax_core.bundle import load_bundle
from dmax_core.config import load_config
from dmax_core.decoding import SPDPolicy, ThresholdPolicy, generate
from dmax_core.evaluation.records import Cell
from dmax_core.evaluation.runner import decode_problems
from dmax_core.files import read_checksums
from dmax_core.stages.common import task_of
from dmax_core.tokenizer import encode, render_prompt

ASSET = Path(__file__).resolve().parents[1] / "models" / "ledger-base"


@pytest.fixture(scope="module")
def trained():
    assert read_checksums(ASSET) is not None  # the asset is a dmax checkpoint: loading verifies its weights
    model, tokenizer = load_bundle(ASSET)
    model = model.float()  # stored in bf16 to keep the repository small
    task = task_of(load_config("tiny"))
    return model, tokenizer, task, task.splits()["test"][:50]


def cell(trained, policy, count: int) -> Cell:
    model, tokenizer, task, problems = trained
    run = decode_problems(model, tokenizer, task, problems[:count], policy, gen_length=48, block_length=32,
                          batch_size=8)
    return Cell.from_samples("base", policy.name, policy.threshold, "test", run.samples)


def test_one_token_per_forward_accuracy_at_least_90(trained):
    one = cell(trained, ThresholdPolicy(1.0), 50)
    assert one.accuracy >= 0.9, one


def test_parallel_threshold_decoding_commits_several_tokens_per_forward(trained):
    parallel = cell(trained, ThresholdPolicy(0.7), 20)
    assert parallel.tpf > 1.5, parallel


def test_fully_parallel_decoding_is_incoherent(trained):
    """The ledger's answers are multi-modal (a uniform tie of opening words shifts later positions), so
    committing every position of a block in one forward must mix phrasings: this is the error
    accumulation DMax targets, and a base that showed none would make the benchmark meaningless."""
    one, parallel = cell(trained, ThresholdPolicy(1.0), 30), cell(trained, ThresholdPolicy(0.0), 30)
    assert parallel.accuracy <= one.accuracy - 0.5, (one, parallel)
    assert parallel.tpf > 3 * one.tpf


@pytest.mark.parametrize("policy", [ThresholdPolicy(0.9), SPDPolicy(0.5)], ids=["threshold", "spd"])
def test_cached_and_uncached_decoding_agree_on_the_trained_model(trained, policy):
    model, tokenizer, _, problems = trained
    for problem in problems[:4]:
        prompt = torch.tensor(encode(tokenizer, render_prompt(tokenizer, problem.question)))
        cached = generate(model, prompt, policy, gen_length=48, block_length=32)
        uncached = generate(model, prompt, policy, gen_length=48, block_length=32, use_cache=False)
        assert torch.equal(cached.output_ids, uncached.output_ids)
        assert cached.nfe == uncached.nfe and cached.block_stop_reasons == uncached.block_stop_reasons
