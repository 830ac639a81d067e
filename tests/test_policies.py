"""The decoding policies from the literature: token editing (LLaDA2.1 / diffusers), Fast-dLLM's factor rule and
the EB-sampler's entropy bound.

Token editing is held token for token to a third-party implementation that runs here: diffusers'
`LLaDA2Pipeline` + `BlockRefinementScheduler` in editing mode, over the trained asset. The factor and entropy
rules exist only as papers (and research code that does not run on a dmax model), so they are held to cases
worked by hand from their definitions."""

import math
from pathlib import Path

import pytest
import torch

from dmax_core.bundle import load_bundle
from dmax_core.config import load_config
from dmax_core.decoding import POLICIES, TokenEmbedder, build_policy, generate
from dmax_core.decoding.policies.entropy_bound import entropy_bound_count, entropy_without_mask
from dmax_core.decoding.policies.factor import factor_commit_count
from dmax_core.stages.common import task_of
from dmax_core.tokenizer import encode, render_prompt

ASSET = Path(__file__).resolve().parents[1] / "models" / "ledger-base"
VOCAB, MASK = 50, 2


def rows(*distributions: dict[int, float]) -> torch.Tensor:
    """Logits [B, VOCAB] whose softmax is exactly each given {token: probability} (every other token 0)."""
    logits = torch.full((len(distributions), VOCAB), -torch.inf)
    for i, dist in enumerate(distributions):
        for token, p in dist.items():
            logits[i, token] = math.log(p)
    return logits


def start(policy, block: list[int]):
    ids = torch.tensor(block)
    embedder = TokenEmbedder(lambda x: torch.zeros(len(x), 4), MASK)
    policy.begin_block(ids, ids == MASK, embedder)
    return policy


# ------------------------------------------------------------------------------------ token editing
@pytest.fixture(scope="module")
def asset():
    model, tokenizer = load_bundle(ASSET, dtype=torch.float32)
    problems = task_of(load_config("tiny")).splits()["test"][:20]
    prompts = [torch.tensor(encode(tokenizer, render_prompt(tokenizer, p.question))) for p in problems]
    return model, tokenizer, prompts


def edits_in(trace, mask_id: int) -> int:
    """Committed tokens that a later forward of the same block replaced (read from dmax's step records)."""
    count, previous = 0, None
    for record in trace:
        if record.block_ids is not None and previous is not None and record.step_index > 0:
            count += int(((previous != mask_id) & (record.block_ids != previous)).sum())
        previous = record.block_ids
    return count


def test_token_editing_equals_diffusers_block_refinement_in_editing_mode(asset):
    from dmax_core.integrations.diffusers import pipeline_for

    model, tokenizer, prompts = asset
    pipe = pipeline_for(model, tokenizer)
    eos, edits = tokenizer.eos_token_id, 0
    for threshold, editing_threshold in [(0.9, 0.5), (0.3, 0.1), (0.0, 0.1)]:
        for prompt in prompts:
            ours = generate(model, prompt, build_policy("editing", threshold, {"editing_threshold": editing_threshold}),
                            gen_length=64, block_length=32)
            # eos_early_stop=False: the pipeline would otherwise stop editing a row at its first EOS; dmax's
            # frame finishes the block (spec §3.1). Tokens up to the first EOS are compared.
            theirs = pipe(input_ids=prompt[None], gen_length=64, threshold=threshold,
                          editing_threshold=editing_threshold, max_post_steps=16, eos_early_stop=False,
                          sampling_method="greedy", minimal_topk=1, num_inference_steps=32,
                          output_type="seq").sequences[0].tolist()
            expected = ours.raw_ids[len(prompt) : len(prompt) + 64].tolist()
            assert eos in expected
            assert theirs[: expected.index(eos) + 1] == expected[: expected.index(eos) + 1], (threshold, prompt)
            edits += edits_in(ours.trace, model.mask_token_id)
    assert edits >= 5  # the comparison really covers edits of committed tokens, not only mask commits


def test_editing_commits_masks_then_edits_and_checks_the_finished_block_once_more():
    policy = start(build_policy("editing", 0.9, {"editing_threshold": 0.5, "max_post_steps": 1}), [7, MASK, MASK])
    # Forward 1: position 1 passes 0.9, position 2 does not; the prompt position 0 is never edited.
    out = policy.step(rows({8: 0.99, 9: 0.01}, {10: 0.95, 11: 0.05}, {12: 0.6, 13: 0.4}))
    assert out.block_ids.tolist() == [7, 10, MASK] and not out.done
    # Forward 2: nothing passes 0.9, so the most confident mask commits (top-1 fallback); position 1 is
    # edited 10 -> 11 (p 0.7 > 0.5) in the same forward.
    out = policy.step(rows({8: 1.0}, {11: 0.7, 10: 0.3}, {13: 0.55, 12: 0.45}))
    assert out.block_ids.tolist() == [7, 11, 13] and out.changed.tolist() == [False, True, True] and not out.done
    # Forward 3 (post 1): an edit below the editing threshold is not made; nothing changes -> done.
    out = policy.step(rows({8: 1.0}, {10: 0.45, 11: 0.3, 12: 0.25}, {13: 0.9, 12: 0.1}))
    assert out.block_ids.tolist() == [7, 11, 13] and out.done and out.stop_reason == "no_edit"


def test_editing_stops_after_max_post_steps_plus_one_post_forwards():
    policy = start(build_policy("editing", 0.5, {"editing_threshold": 0.5, "max_post_steps": 1}), [MASK])
    assert not policy.step(rows({10: 0.9, 11: 0.1})).done  # the last mask commits
    assert not policy.step(rows({11: 0.9, 10: 0.1})).done  # post 1 edits 10 -> 11
    out = policy.step(rows({10: 0.9, 11: 0.1}))  # post 2 edits back: 2 > max_post_steps
    assert out.done and out.stop_reason == "max_post_steps" and out.block_ids.tolist() == [10]
    assert policy.forward_limit(32) == 32 + 1 + 1


# ------------------------------------------------------------------------------------ factor (Fast-dLLM)
@pytest.mark.parametrize(("confidences", "factor", "n"), [
    ([0.99, 0.8, 0.7, 0.5], 1.0, 2),  # bounds -1, 2/3, 3/4, 4/5: 0.7 < 3/4 stops the run
    ([0.99, 0.8, 0.7, 0.5], 2.0, 3),  # bounds -1, 1/3, 1/2, 3/5
    ([0.99, 0.8, 0.7, 0.5], 0.0, 1),  # every bound but the first is 1
    ([0.99, 0.9, 0.1], 1.0, 2),  # only the last fails: the rule stops there (the reference commits all 3)
    ([0.2], 1.0, 1),  # the most confident always commits
    ([0.999, 0.999, 0.999, 0.999], 1.0, 4),  # (i+1)(1-c) = 0.005 i... <= 1 for every i
])
def test_factor_rule_by_hand(confidences, factor, n):
    assert factor_commit_count(torch.tensor(confidences), factor) == n


def test_factor_policy_commits_the_most_confident_run_and_maps_threshold_to_the_factor():
    policy = start(build_policy("factor", 0.5), [MASK, MASK, MASK, MASK])  # f = 2 (1 - 0.5) = 1
    assert policy.factor == 1.0
    out = policy.step(rows({20: 0.7, 21: 0.3}, {22: 0.99, 23: 0.01}, {24: 0.5, 25: 0.5}, {26: 0.8, 27: 0.2}))
    # sorted: 0.99 (pos 1), 0.8 (pos 3), 0.7 (pos 0) < 3/4 -> n = 2
    assert out.block_ids.tolist() == [MASK, 22, MASK, 26] and not out.done
    out = policy.step(rows({20: 0.7, 21: 0.3}, {22: 1.0}, {24: 0.6, 25: 0.4}, {26: 1.0}))
    assert out.block_ids.tolist() == [20, 22, MASK, 26]  # 0.7, then 0.6 < 2/3
    assert build_policy("factor", 1.0).factor == 0.0 and build_policy("factor", 0.0).factor == 2.0


# ------------------------------------------------------------------------------------ entropy bound (EB)
def test_entropy_without_mask_by_hand():
    logits = rows({3: 1.0}, {3: 0.5, 4: 0.5}, {3: 0.25, 4: 0.25, 5: 0.25, 6: 0.25})
    logits[:, MASK] = 5.0  # the MASK column is removed before the softmax
    torch.testing.assert_close(entropy_without_mask(logits, MASK), torch.tensor([0.0, math.log(2), math.log(4)]))


@pytest.mark.parametrize(("entropies", "gamma", "n"), [
    ([0.0, math.log(2), math.log(4)], 0.5, 2),  # sums - max: 0, 0, ln 2 = 0.69 > 0.5
    ([0.0, math.log(2), math.log(4)], 0.7, 3),
    ([0.0, math.log(2), math.log(4)], 0.0, 2),  # gamma 0: the zero-entropy mask and one more
    ([1.0, 1.0, 1.0], 0.0, 1),
    ([1.0, 1.0, 1.0], 1.0, 2),
    ([1.0, 1.0, 1.0], math.inf, 3),
])
def test_entropy_bound_by_hand(entropies, gamma, n):
    assert entropy_bound_count(torch.tensor(entropies), gamma) == n


def test_entropy_bound_policy_commits_low_entropy_masks_first():
    policy = start(build_policy("eb", math.exp(-0.5)), [MASK, MASK, MASK])  # gamma = 0.5 nats
    assert policy.gamma == pytest.approx(0.5)
    out = policy.step(rows({3: 0.25, 4: 0.25, 5: 0.25, 6: 0.25}, {7: 0.5, 8: 0.5}, {9: 1.0}))
    assert out.block_ids.tolist() == [MASK, 7, 9] and not out.done  # entropies ln 4, ln 2, 0
    assert build_policy("eb", 0.0).gamma == math.inf and build_policy("eb", 1.0).gamma == 0.0


# ------------------------------------------------------------------------------------ registry and config
def test_the_new_policies_are_configured_like_the_others():
    from dmax_core.config import DecodingConfig

    assert {"editing", "factor", "eb"} <= set(POLICIES.names())
    assert list(POLICIES.knobs("editing")) == ["threshold", "editing_threshold", "max_post_steps"]
    assert {"editing.editing_threshold", "editing.max_post_steps", "factor", "eb"} <= set(
        DecodingConfig.dynamic_keys())
    cfg = load_config("tiny", ["decoding.editing.editing_threshold=0.3", "evaluate.decoders=[threshold, editing]"])
    assert cfg.decoding.knobs("editing") == {"editing_threshold": 0.3, "max_post_steps": 16}
    with pytest.raises(ValueError, match="editing_threshold"):
        build_policy("editing", 0.5, {"editing_threshold": 1.5})
    with pytest.raises(ValueError, match="max_post_steps"):
        build_policy("editing", 0.5, {"max_post_steps": -1})
