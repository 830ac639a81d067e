"""Speed accounting: the peak-bandwidth table, bytes read per forward and the routing monitor, checked
against hand counts on a tiny model."""

import pytest
import torch
from builders import tiny_model

from dmax_core.diffusion import block_causal_mask
from dmax_core.evaluation.speed import RoutingMonitor, bytes_per_forward, mbu, peak_bandwidth


def test_peak_bandwidth_is_looked_up_by_device_name():
    assert peak_bandwidth("cuda: NVIDIA H200 x1") == 4800e9
    assert peak_bandwidth("cuda: NVIDIA H100 80GB HBM3 x8") == 3350e9
    assert peak_bandwidth("cuda: NVIDIA A100-SXM4-80GB x1") == 2039e9
    assert peak_bandwidth("cpu: AMD EPYC (2 cores)") is None
    assert mbu(1e9, 100.0, "cpu: AMD EPYC") is None
    assert mbu(24e9, 100.0, "cuda: NVIDIA H200") == pytest.approx(0.5)


def test_bytes_per_forward_counts_dense_weights_embedding_rows_and_routed_experts():
    model = tiny_model(0)  # 3 layers, the last two MoE with 8 experts; fp32
    cfg = model.config
    d, inter, vocab = cfg.hidden_size, cfg.moe_intermediate_size, cfg.vocab_size
    expert = 3 * d * inter * 4  # gate, up, down projections in fp32
    everything = sum(p.numel() for p in model.parameters()) * 4
    routed = 2 * cfg.num_experts * expert
    embedding_rows = 10 * d * 4
    expected = everything - routed - vocab * d * 4 + embedding_rows + (3 + 5) * expert
    assert bytes_per_forward(model, [3.0, 5.0], tokens=10) == expected
    assert bytes_per_forward(model, None, tokens=vocab) == everything  # all experts, the whole table


def test_the_routing_monitor_counts_the_union_of_experts_per_forward():
    model = tiny_model(0, random_weights=True)
    monitor = RoutingMonitor()
    positions = torch.arange(32)
    with torch.inference_mode(), monitor.attach(model):
        one = torch.ones(1, 1, dtype=torch.bool)
        model(torch.randint(0, 40, (1, 1)), position_ids=positions[:1], attention_mask=one)
        model(torch.randint(0, 40, (2, 32)), position_ids=positions, attention_mask=block_causal_mask(positions, 8))
    single, many = monitor.forwards
    assert len(single) == len(many) == 2  # one entry per MoE layer
    assert all(n == model.config.num_experts_per_tok for n in single)  # one token: exactly its top-k
    assert all(model.config.num_experts_per_tok < n <= model.config.num_experts for n in many)
    assert monitor.mean_experts() == [(a + b) / 2 for a, b in zip(single, many, strict=True)]
    assert not model._forward_hooks and not any(m._forward_hooks for m in model.modules())  # detached
