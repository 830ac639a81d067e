"""Real behaviour on a trained tiny base model (tests/assets/tiny-base, regenerate with `make asset`).

The asset is the `ledger` preset's base (the 3-seed benchmark's seed 0). It is fixed and decoding is
greedy, so these results are deterministic; the thresholds below are properties any adequately
trained base must have, not numbers tuned to this file.
"""

from pathlib import Path

import pytest
import torch

from dmax_core.config import load_config
from dmax_core.decoding.frame import generate
from dmax_core.decoding.policies import SPDPolicy, ThresholdPolicy
from dmax_core.evaluation.runner import cell_metrics, decode_problems
from dmax_core.io import load_bundle
from dmax_core.stages import task_splits
from dmax_core.tokenizer import encode, render_prompt

ASSET = Path(__file__).parent / "assets" / "tiny-base"


@pytest.fixture(scope="module")
def trained():
    model, tokenizer = load_bundle(ASSET)
    model = model.float()  # stored in bf16 to keep the repository small
    problems = task_splits(load_config("tiny"))["test"][:50]
    return model, tokenizer, problems


def test_one_token_per_forward_accuracy_at_least_90(trained):
    model, tokenizer, problems = trained
    samples = decode_problems(model, tokenizer, problems, ThresholdPolicy(1.0), gen_length=48, block_length=32)
    metrics = cell_metrics(samples)
    assert metrics["accuracy"] >= 0.9, metrics


def test_parallel_threshold_decoding_commits_several_tokens_per_forward(trained):
    model, tokenizer, problems = trained
    metrics = cell_metrics(decode_problems(model, tokenizer, problems[:20], ThresholdPolicy(0.7),
                                           gen_length=48, block_length=32))
    assert metrics["tpf_mean"] > 1.5, metrics


def test_fully_parallel_decoding_is_incoherent(trained):
    """The ledger's answers are multi-modal (a uniform tie of opening words shifts later positions), so
    committing every position of a block in one forward must mix phrasings: this is the error
    accumulation DMax targets, and a base that showed none would make the benchmark meaningless."""
    model, tokenizer, problems = trained
    one = cell_metrics(decode_problems(model, tokenizer, problems[:30], ThresholdPolicy(1.0),
                                       gen_length=48, block_length=32))
    parallel = cell_metrics(decode_problems(model, tokenizer, problems[:30], ThresholdPolicy(0.0),
                                            gen_length=48, block_length=32))
    assert parallel["accuracy"] <= one["accuracy"] - 0.5, (one, parallel)
    assert parallel["tpf_mean"] > 3 * one["tpf_mean"]


@pytest.mark.parametrize("policy", [ThresholdPolicy(0.9), SPDPolicy(0.5)], ids=["threshold", "spd"])
def test_cached_and_uncached_decoding_agree_on_the_trained_model(trained, policy):
    model, tokenizer, problems = trained
    for problem in problems[:4]:
        prompt = torch.tensor(encode(tokenizer, render_prompt(tokenizer, problem.question)))
        cached = generate(model, prompt, policy, gen_length=48, block_length=32)
        uncached = generate(model, prompt, policy, gen_length=48, block_length=32, use_cache=False)
        assert torch.equal(cached.output_ids, uncached.output_ids)
        assert cached.nfe == uncached.nfe and cached.block_stop_reasons == uncached.block_stop_reasons
