"""How close decoding came to the hardware: bytes read per forward, peak memory bandwidth, MBU.

Decoding a 32-token block is memory-bound on a GPU: each forward reads the dense weights once and, in
every MoE layer, the union of the experts its tokens were routed to. `RoutingMonitor` counts that union
per forward (forward hooks on the MoE blocks, so nothing changes in the model), `bytes_per_forward` turns
it into bytes, and MBU = bytes per forward x forwards per second / the device's peak bandwidth (a table,
as nanochat keeps one; None where the device is not in it, e.g. CPUs).

Only arithmetic and hooks: it must not decode anything itself, and it must stay importable without
pydantic, MLflow or Prefect (the GPU benchmark imports it on bare machines).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import torch

# Peak DRAM/HBM bandwidth in GB/s (vendor datasheets), matched as substrings of the device name.
PEAK_BANDWIDTH_GBPS: dict[str, float] = {
    "H200": 4800.0,
    "H100 SXM": 3350.0,
    "H100 80GB HBM3": 3350.0,
    "H100 PCIe": 2000.0,
    "H100 NVL": 3900.0,
    "B200": 8000.0,
    "GH200": 4000.0,
    "A100-SXM4-80GB": 2039.0,
    "A100 80GB PCIe": 1935.0,
    "A100-SXM4-40GB": 1555.0,
    "A100-PCIE-40GB": 1555.0,
    "L40S": 864.0,
    "L4": 300.0,
    "A10G": 600.0,
    "RTX 4090": 1008.0,
    "RTX 3090": 936.0,
}


def peak_bandwidth(device: str) -> float | None:
    """Bytes per second for a device name (`env.device_name()` or `torch.cuda.get_device_name()`)."""
    for name in sorted(PEAK_BANDWIDTH_GBPS, key=len, reverse=True):  # the most specific entry wins
        if name in device:
            return PEAK_BANDWIDTH_GBPS[name] * 1e9
    return None


@dataclass
class RoutingMonitor:
    """Per forward of the model: how many distinct experts each MoE layer ran (its `union`)."""

    forwards: list[list[int]] = field(default_factory=list)  # per forward, per MoE layer

    @contextmanager
    def attach(self, model: torch.nn.Module) -> Iterator[RoutingMonitor]:
        from dmax_core.models.moe import LLaDA2MoeSparseMoeBlock, route_tokens

        blocks = [m for m in model.modules() if isinstance(m, LLaDA2MoeSparseMoeBlock)]
        current: list[int] = []

        def record(block: Any, inputs: tuple, _output: Any) -> None:
            cfg = block.config
            flat = inputs[0].reshape(-1, inputs[0].shape[-1])
            idx, _ = route_tokens(block.gate(flat), block.gate.expert_bias, top_k=cfg.num_experts_per_tok,
                                  n_group=cfg.n_group, topk_group=cfg.topk_group,
                                  routed_scaling_factor=cfg.routed_scaling_factor, norm_topk_prob=cfg.norm_topk_prob)
            current.append(int(torch.unique(idx).numel()))
            if len(current) == len(blocks):
                self.forwards.append(list(current))
                current.clear()

        handles = [block.register_forward_hook(record) for block in blocks]
        try:
            yield self
        finally:
            for handle in handles:
                handle.remove()

    def mean_experts(self) -> list[float]:
        """Mean distinct experts per MoE layer over the recorded forwards."""
        if not self.forwards:
            return []
        return [sum(f[i] for f in self.forwards) / len(self.forwards) for i in range(len(self.forwards[0]))]


def bytes_per_forward(model: torch.nn.Module, experts_per_layer: list[float] | None = None,
                      tokens: int = 32) -> float:
    """Weight bytes one forward reads: every parameter outside routed experts (the embedding table only
    for the `tokens` rows looked up), plus, per MoE layer, `experts_per_layer` experts (all of them when
    None). KV-cache reads are left out: at block 32 they are far smaller than the weights."""
    from dmax_core.models.moe import LLaDA2MoeSparseMoeBlock

    total = 0.0
    expert_bytes: list[float] = []
    routed: set[int] = set()
    for module in model.modules():
        if isinstance(module, LLaDA2MoeSparseMoeBlock):
            per_expert = sum(p.numel() * p.element_size() for p in module.experts[0].parameters())
            expert_bytes.append(per_expert)
            routed.update(id(p) for p in module.experts.parameters())
    embedding = model.model.word_embeddings.weight
    for parameter in model.parameters():
        if id(parameter) in routed:
            continue
        if parameter is embedding:
            total += min(tokens, embedding.shape[0]) * embedding.shape[1] * embedding.element_size()
        else:
            total += parameter.numel() * parameter.element_size()
    counts = experts_per_layer if experts_per_layer is not None else [
        float(len(m.experts)) for m in model.modules() if isinstance(m, LLaDA2MoeSparseMoeBlock)]
    return total + sum(n * b for n, b in zip(counts, expert_bytes, strict=True))


def mbu(bytes_read: float, forwards_per_second: float, device: str) -> float | None:
    """Memory-bandwidth utilisation, or None when the device's peak is not in the table."""
    peak = peak_bandwidth(device)
    return None if peak is None else bytes_read * forwards_per_second / peak
