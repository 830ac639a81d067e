"""Spec appendix B.1-B.2 and the noise/loss rules of §1, each against a slow hand-written reference."""

import torch

from dmax_core.diffusion import (
    IGNORE_INDEX,
    add_noise,
    block_causal_mask,
    build_example,
    per_sequence_token_mean_ce,
    sample_mask_ratios,
    training_attention_mask,
    training_position_ids,
)


def reference_training_mask(n: int, block: int) -> torch.Tensor:
    """The three-term rule of §1.2 written literally, one (q, k) pair at a time."""
    mask = torch.zeros(2 * n, 2 * n, dtype=torch.bool)
    for q in range(2 * n):
        for k in range(2 * n):
            half_q, half_k = ("noisy" if q < n else "clean"), ("noisy" if k < n else "clean")
            blk_q, blk_k = (q % n) // block, (k % n) // block
            mask[q, k] = (
                (half_q == half_k and blk_q == blk_k)
                or (half_q == "noisy" and half_k == "clean" and blk_k < blk_q)
                or (half_q == "clean" and half_k == "clean" and blk_k <= blk_q)
            )
    return mask


def test_training_mask_matches_three_term_rule_b1():
    n, block = 64, 32
    mask = training_attention_mask(n, block)
    assert torch.equal(mask, reference_training_mask(n, block))
    # Clean rows are block lower-triangular and never see noisy keys.
    assert not mask[n:, :n].any()
    # A noisy row block sees its own noisy block plus strictly earlier clean blocks only.
    assert mask[32:64, 32:64].all() and not mask[32:64, :32].any()
    assert mask[32:64, n : n + 32].all() and not mask[32:64, n + 32 :].any()


def test_training_mask_with_partial_last_block():
    assert torch.equal(training_attention_mask(40, 16), reference_training_mask(40, 16))


def test_positions_shared_by_both_copies():
    assert training_position_ids(5).tolist() == [0, 1, 2, 3, 4, 0, 1, 2, 3, 4]


def test_block_causal_mask_absolute_blocks():
    positions = torch.arange(30, 38)  # straddles the 32 boundary with B = 4
    mask = block_causal_mask(positions, 4)
    for i, q in enumerate(positions.tolist()):
        for j, k in enumerate(positions.tolist()):
            assert mask[i, j] == (k // 4 <= q // 4)


def test_label_builder_counts_b2():
    prompt_len, answer_len, n, pad = 10, 7, 2048, 0
    prompt = list(range(100, 100 + prompt_len))
    full = prompt + list(range(200, 200 + answer_len))
    ex = build_example(prompt, full, n, pad_id=pad, labelled_pad_tokens=32)
    labelled = (ex.labels != IGNORE_INDEX).sum().item()
    assert labelled == min(answer_len + 32, n - prompt_len)
    assert (ex.labels[:prompt_len] == IGNORE_INDEX).all()
    # same-position labels: the clean id at the same index, including the 32 pads (target = PAD)
    assert ex.labels[prompt_len : prompt_len + answer_len].tolist() == list(range(200, 200 + answer_len))
    assert ex.labels[prompt_len + answer_len : prompt_len + answer_len + 32].tolist() == [pad] * 32
    assert ex.clean_ids.shape == (n,)


def test_label_builder_near_end_and_truncation():
    prompt = [5] * 6
    # Fewer than 32 pads fit: every pad to the end is labelled.
    ex = build_example(prompt, prompt + [7] * 4, 16, pad_id=0, labelled_pad_tokens=32)
    assert (ex.labels != IGNORE_INDEX).sum().item() == 10
    # Truncated (no trailing pads): all response positions labelled.
    ex = build_example(prompt, prompt + [7] * 40, 16, pad_id=0, labelled_pad_tokens=32)
    assert (ex.labels != IGNORE_INDEX).sum().item() == 10


def test_noise_touches_only_response_and_matches_ratio():
    g = torch.Generator().manual_seed(0)
    clean = torch.randint(3, 50, (64, 2048))
    prompts = torch.full((64,), 100)
    ratios = sample_mask_ratios(64, 0.75, 0.75, g)
    assert torch.allclose(ratios, torch.full((64,), 0.75))
    noisy = add_noise(clean, prompts, ratios, mask_id=1, generator=g)
    assert torch.equal(noisy[:, :100], clean[:, :100])
    frac = (noisy[:, 100:] == 1).float().mean().item()
    assert abs(frac - 0.75) < 0.01  # masked count ~ 0.75 (n - P), spec B.2
    kept = noisy[:, 100:] != 1
    assert torch.equal(noisy[:, 100:][kept], clean[:, 100:][kept])


def test_loss_is_mean_of_per_sequence_token_means():
    torch.manual_seed(0)
    logits = torch.randn(2, 5, 7)
    labels = torch.tensor([[1, 2, IGNORE_INDEX, IGNORE_INDEX, IGNORE_INDEX], [3, 4, 5, 6, 0]])
    logp = torch.log_softmax(logits, -1)
    seq0 = -(logp[0, 0, 1] + logp[0, 1, 2]) / 2
    seq1 = -(logp[1, 0, 3] + logp[1, 1, 4] + logp[1, 2, 5] + logp[1, 3, 6] + logp[1, 4, 0]) / 5
    expected = (seq0 + seq1) / 2
    assert torch.allclose(per_sequence_token_mean_ce(logits, labels), expected, atol=1e-6)
