"""Trainer and OPUT: rollout substitution (spec B.3), schedule, resume, and that both objectives learn."""

import math

import torch
from builders import tiny_model

from dmax_core.config import TrainConfig
from dmax_core.diffusion import (
    IGNORE_INDEX,
    add_noise,
    labelled_block_span,
    sample_mask_ratios,
    training_layout,
)
from dmax_core.objectives import forward_noisy_half, on_policy_rollout, training_loss
from dmax_core.training import duplicate_for_oput, encode_conversations, train_model
from dmax_core.training.schedule import learning_rate_at


def _batch(tokenizer, problems, model, n=96):
    data = encode_conversations(tokenizer, [(p.question, p.answer) for p in problems], n, 32)
    g = torch.Generator().manual_seed(0)
    noisy = add_noise(data.clean_ids, data.prompt_lengths, sample_mask_ratios(len(data), 0.75, 0.75, g),
                      model.mask_token_id, g)
    return data, noisy, training_layout(n, 32)


def test_rollout_substitution_b3(tokenizer, problems):
    model = tiny_model(tokenizer=tokenizer)
    data, noisy, layout = _batch(tokenizer, problems[:4], model)
    flags = torch.tensor([True, False, True, False])
    rolled = on_policy_rollout(model, noisy, data.clean_ids, flags, model.mask_token_id, layout)
    # independent recomputation of the argmax for flagged rows
    with torch.no_grad():
        argmax = forward_noisy_half(model, noisy, data.clean_ids, layout).argmax(-1)
    mask_id = model.mask_token_id
    for row in range(4):
        was_mask = noisy[row] == mask_id
        if flags[row]:
            assert torch.equal(rolled[row][was_mask], argmax[row][was_mask])
            assert torch.equal(rolled[row][~was_mask], noisy[row][~was_mask])
            P = int(data.prompt_lengths[row])
            leftover = (rolled[row, P:] == mask_id) & (argmax[row, P:] != mask_id)
            assert not leftover.any()
        else:
            assert torch.equal(rolled[row], noisy[row])
    assert torch.equal(rolled[:, : int(data.prompt_lengths.min())], noisy[:, : int(data.prompt_lengths.min())])


def test_trimmed_layout_gives_the_full_layouts_loss_gradients_and_rollout(tokenizer, problems):
    """Dropping the label-free noisy blocks and the unread clean blocks is exact: the reference is the
    untrimmed 2n-token layout of spec §1.2."""
    model = tiny_model(tokenizer=tokenizer)
    n = 160  # 5 blocks: block 0 is prompt only, block 4 unlabelled pad
    data, noisy, full = _batch(tokenizer, problems[:4], model, n=n)
    labels = data.labels
    span = labelled_block_span(labels, 32)
    assert span is not None and span[0] >= 1 and span[1] < 4  # the test needs something to trim
    trimmed = training_layout(n, 32, span)
    assert trimmed.attention_mask.shape[0] < full.attention_mask.shape[0]

    def loss_and_grads(layout):
        model.zero_grad(set_to_none=True)
        loss = training_loss(model, noisy, data.clean_ids, labels, layout)
        loss.backward()
        return loss.detach(), [p.grad.clone() for p in model.parameters() if p.grad is not None]

    loss_full, grads_full = loss_and_grads(full)
    loss_trim, grads_trim = loss_and_grads(trimmed)
    model.zero_grad(set_to_none=True)
    assert torch.allclose(loss_full, loss_trim, rtol=1e-5, atol=1e-6)
    assert len(grads_full) == len(grads_trim)
    for g_full, g_trim in zip(grads_full, grads_trim, strict=True):
        assert torch.allclose(g_full, g_trim, rtol=1e-4, atol=1e-6)

    flags = torch.ones(4, dtype=torch.bool)
    mask_id = model.mask_token_id
    rolled_full = on_policy_rollout(model, noisy, data.clean_ids, flags, mask_id, full)
    rolled_trim = on_policy_rollout(model, noisy, data.clean_ids, flags, mask_id, trimmed)
    labelled = labels != IGNORE_INDEX
    assert torch.equal(rolled_full[labelled], rolled_trim[labelled])


def test_labelled_block_span_by_hand():
    labels = torch.full((2, 100), IGNORE_INDEX)
    assert labelled_block_span(labels, 32) is None
    labels[0, 40] = 5
    labels[1, 70] = 6
    assert labelled_block_span(labels, 32) == (1, 2)


def test_duplicate_for_oput_is_half_on_policy(tokenizer, problems):
    data = encode_conversations(tokenizer, [(p.question, p.answer) for p in problems], 96, 32)
    dup = duplicate_for_oput(data)
    assert len(dup) == 2 * len(data) and dup.flags.sum().item() == len(data)
    assert torch.equal(dup.clean_ids[: len(data)], dup.clean_ids[len(data) :])


def test_schedule_warmup_then_cosine_by_hand():
    total, lr, min_lr = 100, 1e-3, 1e-5
    assert math.isclose(learning_rate_at(0, total, lr, min_lr, 0.03), lr / 3)
    assert math.isclose(learning_rate_at(2, total, lr, min_lr, 0.03), lr)
    mid = 3 + (total - 3) // 2
    expected = min_lr + 0.5 * (lr - min_lr) * (1 + math.cos(math.pi * (mid - 3) / 97))
    assert math.isclose(learning_rate_at(mid, total, lr, min_lr, 0.03), expected)
    assert math.isclose(learning_rate_at(total, total, lr, min_lr, 0.03), min_lr)


def _cfg(**kw):
    base = dict(objective="oput", steps=6, batch_size=4, lr=3e-3, max_seq_len=96, log_every=1, seed=5)
    base.update(kw)
    return TrainConfig(**base)


def test_resume_reproduces_uninterrupted_run(tokenizer, problems, tmp_path):
    data = duplicate_for_oput(encode_conversations(tokenizer, [(p.question, p.answer) for p in problems], 96, 32))
    straight = tiny_model(tokenizer=tokenizer)
    train_model(straight, data, _cfg(), block_length=32, mask_id=straight.mask_token_id)

    first = tiny_model(tokenizer=tokenizer)
    train_model(first, data, _cfg(steps=6, checkpoint_every=3), block_length=32, mask_id=first.mask_token_id,
                checkpoint_dir=tmp_path / "ck")
    # Simulate a crash after step 3: drop the step-6 checkpoint, resume into a fresh model.
    import shutil

    shutil.rmtree(tmp_path / "ck" / "step-0000006")
    resumed = tiny_model(tokenizer=tokenizer)  # a fresh process re-creates the same initial weights
    result = train_model(resumed, data, _cfg(checkpoint_every=3), block_length=32,
                         mask_id=resumed.mask_token_id, checkpoint_dir=tmp_path / "ck")
    assert result.resumed_from == 3
    # A rerun with other settings must not resume from this run's checkpoints.
    other = tiny_model(tokenizer=tokenizer)
    result = train_model(other, data, _cfg(lr=1e-3, checkpoint_every=3), block_length=32,
                         mask_id=other.mask_token_id, checkpoint_dir=tmp_path / "ck")
    assert result.resumed_from == 0
    for (name, a), (_, b) in zip(straight.state_dict().items(), resumed.state_dict().items(), strict=True):
        assert torch.allclose(a, b, atol=1e-6), name


def test_both_objectives_reduce_loss_and_pad_row_stays_frozen(tokenizer, problems):
    data = duplicate_for_oput(encode_conversations(tokenizer, [(p.question, p.answer) for p in problems], 96, 32))
    for objective in ("sft", "oput"):
        model = tiny_model(tokenizer=tokenizer)
        pad_row = model.model.word_embeddings.weight[model.pad_token_id].clone()
        result = train_model(model, data, _cfg(objective=objective, steps=30, lr=1e-2), block_length=32,
                             mask_id=model.mask_token_id)
        first, last = result.loss_history[0][1], result.loss_history[-1][1]
        assert last < 0.7 * first, (objective, first, last)
        # spec §2.3: the PAD/EOS input-embedding row gets no gradient (padding_idx); AdamW's decoupled
        # weight decay still multiplies it by (1 - lr_t * wd) every step, and nothing else moves it.
        cfg = _cfg(objective=objective, steps=30, lr=1e-2)
        factor = 1.0
        for step in range(cfg.steps):
            factor *= 1 - learning_rate_at(step, cfg.steps, cfg.lr, cfg.min_lr, cfg.warmup_ratio) * cfg.weight_decay
        assert torch.allclose(model.model.word_embeddings.weight[model.pad_token_id], pad_row * factor, atol=1e-6)


def test_masked_only_loss_positions(tokenizer, problems):
    """`loss_positions=masked` labels only noised positions: no noise -> nothing to learn (loss 0);
    full noise -> identical to labelling every position."""
    data = encode_conversations(tokenizer, [(p.question, p.answer) for p in problems[:4]], 96, 32)
    model = tiny_model(tokenizer=tokenizer)
    none = train_model(model, data, _cfg(objective="sft", steps=1, noise_low=0.0, noise_high=0.0,
                                         loss_positions="masked"), block_length=32, mask_id=model.mask_token_id)
    assert none.final_loss == 0.0
    losses = []
    for positions in ("masked", "all"):
        model = tiny_model(tokenizer=tokenizer)
        result = train_model(model, data, _cfg(objective="sft", steps=1, noise_low=1.0, noise_high=1.0,
                                               loss_positions=positions), block_length=32,
                             mask_id=model.mask_token_id)
        losses.append(result.final_loss)
    assert losses[0] == losses[1]
