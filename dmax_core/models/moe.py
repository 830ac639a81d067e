"""The feed-forward parts of LLaDA2-MoE (spec §6.2): SwiGLU MLPs, the router and the sparse MoE block.

Routed experts keep the per-expert modules (and so the §6.3 checkpoint names). Two ways to run them,
with the same result to rounding:
- `loop`: each expert on the tokens routed to it, one matmul per expert. The CPU default: a host sync to
  size the groups costs nothing there, and a token's output is exactly independent of the other tokens
  in the forward (batched decoding equals batch 1, see `_loop`).
- `grouped`: no host sync and no per-expert launch. Expert weights are used stacked [E, out, in]
  (`pack_experts` makes the per-expert parameters views of the stack, so no weight is stored twice);
  tokens are sorted by expert and run as one grouped GEMM (`torch._grouped_mm`, CUDA, bf16) or, where
  that is not available, as one batched matmul over a [E, N, d] buffer (every token slot of every
  expert, zero where unrouted: more arithmetic, no synchronisation). The GPU default.
"""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

from .configuration import LLaDA2MoeConfig

# Sum of the chosen weights is divided by (sum + this) in the reference gate (§6.2).
_ROUTER_NORM_EPS = 1e-20
# Expert inputs are padded to a multiple of this many rows (see LLaDA2MoeSparseMoeBlock._loop).
_EXPERT_ROW_MULTIPLE = 16
Dispatch = Literal["auto", "loop", "grouped"]
_PROJECTIONS = ("gate_proj", "up_proj", "down_proj")


class LLaDA2MoeMLP(nn.Module):
    """SwiGLU FFN: down(silu(gate(x)) * up(x)). Dense layers, routed and shared experts (§6.2)."""

    def __init__(self, hidden_size: int, intermediate_size: int) -> None:
        super().__init__()
        self.gate_proj = nn.Linear(hidden_size, intermediate_size, bias=False)
        self.up_proj = nn.Linear(hidden_size, intermediate_size, bias=False)
        self.down_proj = nn.Linear(intermediate_size, hidden_size, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.down_proj(F.silu(self.gate_proj(x)) * self.up_proj(x))


def route_tokens(router_logits: torch.Tensor, expert_bias: torch.Tensor | None, *, top_k: int,
                 n_group: int, topk_group: int, routed_scaling_factor: float,
                 norm_topk_prob: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
    """Group-limited sigmoid top-k routing of LLaDA2-MoE (§6.2). All in fp32.

    router_logits: [N, E]; expert_bias: [E] or None. Returns (topk_idx Long[N, top_k],
    topk_weight fp32[N, top_k]), experts sorted by descending biased score.

    1. s = sigmoid(logits); r = s + expert_bias. The bias only steers *selection*.
    2. Groups of E / n_group consecutive experts; group score = sum of the top-2 r in the group;
       keep the `topk_group` best groups.
    3. Pick the `top_k` experts with the largest r inside the kept groups (others get -inf, so a
       negative biased score can never lose to an excluded expert).
    4. weight = s (unbiased) of the chosen experts, divided by (their sum + 1e-20) when
       `norm_topk_prob` and top_k > 1, times `routed_scaling_factor`. The reference gate
       normalises whenever top_k > 1 and ignores `norm_topk_prob` (true in every released config),
       so the two agree on LLaDA2.0-mini.
    """
    logits = router_logits.float()
    n_tokens, n_experts = logits.shape
    scores = torch.sigmoid(logits)
    biased = scores if expert_bias is None else scores + expert_bias.float()
    group_scores = biased.view(n_tokens, n_group, n_experts // n_group).topk(2, dim=-1).values.sum(-1)
    kept_groups = group_scores.topk(topk_group, dim=-1).indices
    group_keep = torch.zeros_like(group_scores, dtype=torch.bool).scatter_(1, kept_groups, True)
    expert_keep = group_keep.repeat_interleave(n_experts // n_group, dim=1)
    topk_idx = biased.masked_fill(~expert_keep, float("-inf")).topk(top_k, dim=-1).indices
    topk_weight = scores.gather(1, topk_idx)
    if norm_topk_prob and top_k > 1:
        topk_weight = topk_weight / (topk_weight.sum(dim=-1, keepdim=True) + _ROUTER_NORM_EPS)
    return topk_idx, topk_weight * routed_scaling_factor


class LLaDA2MoeGate(nn.Module):
    """Router: weight [E, d] and the selection-only `expert_bias` [E] (a persistent buffer: it is in
    the checkpoint, but never trained by gradient, §7 item 17)."""

    def __init__(self, config: LLaDA2MoeConfig) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.empty(config.num_experts, config.hidden_size))
        bias = torch.zeros(config.num_experts) if config.moe_router_enable_expert_bias else None
        self.register_buffer("expert_bias", bias, persistent=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Router logits [N, E] in fp32 (router_dtype fp32, §6.2)."""
        return F.linear(x.float(), self.weight.float())


class LLaDA2MoeSparseMoeBlock(nn.Module):
    """Routed experts + one shared expert (§6.2). Sub-module names give the §6.3 per-expert keys.

    `dispatch` picks how routed experts run (module docstring): `auto` = `grouped` on CUDA and under
    `torch.compile` (it has no data-dependent control flow), `loop` elsewhere."""

    def __init__(self, config: LLaDA2MoeConfig) -> None:
        super().__init__()
        self.config = config
        self.dispatch: Dispatch = "auto"
        # Sharded training (FSDP) needs a gradient for every expert on every process, or the processes
        # reduce gradients of different sizes: then an expert no token chose runs on zero rows (a zero
        # gradient). Off otherwise, because AdamW treats a zero gradient and no gradient differently.
        self.every_expert_in_graph = False
        self.gate = LLaDA2MoeGate(config)
        self.experts = nn.ModuleList(
            LLaDA2MoeMLP(config.hidden_size, config.moe_intermediate_size) for _ in range(config.num_experts))
        self.shared_experts = (
            LLaDA2MoeMLP(config.hidden_size, config.moe_intermediate_size * config.num_shared_experts)
            if config.num_shared_experts > 0 else None)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shape = x.shape
        flat = x.reshape(-1, shape[-1])
        cfg = self.config
        topk_idx, topk_weight = route_tokens(
            self.gate(flat), self.gate.expert_bias, top_k=cfg.num_experts_per_tok, n_group=cfg.n_group,
            topk_group=cfg.topk_group, routed_scaling_factor=cfg.routed_scaling_factor,
            norm_topk_prob=cfg.norm_topk_prob)
        grouped = self.dispatch == "grouped" or (
            self.dispatch == "auto" and (flat.is_cuda or torch.compiler.is_compiling()))
        out = (self._grouped(flat, topk_idx, topk_weight) if grouped else self._loop(flat, topk_idx, topk_weight))
        out = out.view(shape)
        if self.shared_experts is not None:
            out = out + self.shared_experts(x)
        return out

    def _loop(self, flat: torch.Tensor, topk_idx: torch.Tensor, topk_weight: torch.Tensor) -> torch.Tensor:
        """Run each expert once on the tokens routed to it; weighted sum accumulated in fp32.

        A plain loop over the experts that received tokens (`loop` dispatch).
        Each expert's rows are padded with zeros to a multiple of `_EXPERT_ROW_MULTIPLE`, because a token's
        output must not depend on how many other tokens (other rows of a batch) chose the same expert, and
        on CPU it would: BLAS picks other kernels or thread splits for a few rows (measured with MKL: 1-3
        rows with one thread, up to 11 with two), and vectorised elementwise ops (SiLU) round the tail of
        a tensor whose size is not a multiple of their vector width differently. The matmuls and
        activations of a block forward elsewhere have B = 32 rows per sequence. Only under
        `torch.inference_mode` (decoding): training, where rows are never compared, keeps unpadded math.
        """
        top_k = topk_idx.shape[1]
        batch_invariant = torch.is_inference_mode_enabled()  # decoding; training keeps its exact numerics
        flat_expert = topk_idx.reshape(-1)
        order = torch.argsort(flat_expert, stable=True)
        token_of = order // top_k  # slot j of the flattened [N, k] belongs to token j // k
        weight_of = topk_weight.reshape(-1)[order]
        counts = torch.bincount(flat_expert, minlength=len(self.experts)).tolist()
        out = torch.zeros(flat.shape, dtype=torch.float32, device=flat.device)
        start = 0
        every_expert = self.every_expert_in_graph and torch.is_grad_enabled()
        for expert_idx, count in enumerate(counts):
            if count == 0:
                if every_expert:
                    out = out + self.experts[expert_idx](flat[:0]).sum() * 0.0
                continue
            tokens = token_of[start:start + count]
            rows = flat.index_select(0, tokens)
            padding = -count % _EXPERT_ROW_MULTIPLE if batch_invariant else 0
            if padding:
                rows = torch.cat([rows, rows.new_zeros(padding, rows.shape[1])])
            y = self.experts[expert_idx](rows)[:count]
            out.index_add_(0, tokens, y.float() * weight_of[start:start + count, None])
            start += count
        return out.to(flat.dtype)

    # ------------------------------------------------------------------------------ grouped
    def stacked_weights(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(gate [E, I, d], up [E, I, d], down [E, d, I]): views of one stack when `pack_experts` ran and
        the parameters still live there (no copy), else freshly stacked copies."""
        out = []
        for name in _PROJECTIONS:
            weights = [getattr(expert, name).weight for expert in self.experts]
            base = weights[0]
            stride = base.numel()
            packed = base.storage_offset() == 0 and all(
                w.untyped_storage().data_ptr() == base.untyped_storage().data_ptr()
                and w.storage_offset() == e * stride and w.is_contiguous() for e, w in enumerate(weights))
            if packed and base.untyped_storage().nbytes() >= len(weights) * stride * base.element_size():
                out.append(base.as_strided((len(weights), *base.shape), (stride, *base.stride())))
            else:
                out.append(torch.stack([w.detach() for w in weights]))
        return out[0], out[1], out[2]

    @torch.no_grad()
    def pack_experts(self) -> None:
        """Store each projection of all experts in one [E, out, in] tensor and make every expert's weight a
        view of it (same values, same parameters, no second copy): what `grouped` dispatch reads."""
        for name in _PROJECTIONS:
            stacked = torch.stack([getattr(expert, name).weight.detach() for expert in self.experts])
            for e, expert in enumerate(self.experts):
                getattr(expert, name).weight.data = stacked[e]

    def _grouped(self, flat: torch.Tensor, topk_idx: torch.Tensor, topk_weight: torch.Tensor) -> torch.Tensor:
        """All experts at once, without host synchronisation (module docstring)."""
        n_tokens, top_k = topk_idx.shape
        n_experts = len(self.experts)
        gate_w, up_w, down_w = self.stacked_weights()
        expert_of = topk_idx.reshape(-1)
        order = torch.argsort(expert_of, stable=True)
        sorted_expert = expert_of[order]
        token_of = order // top_k
        x = flat.index_select(0, token_of)  # [N * k, d], grouped by expert
        counts = torch.bincount(expert_of, minlength=n_experts)
        if _has_grouped_mm(x):
            offsets = torch.cumsum(counts, 0).to(torch.int32)
            hidden = F.silu(torch._grouped_mm(x, gate_w.transpose(-2, -1), offs=offsets)) * torch._grouped_mm(
                x, up_w.transpose(-2, -1), offs=offsets)
            y = torch._grouped_mm(hidden, down_w.transpose(-2, -1), offs=offsets)
        else:
            # Slot j of expert e holds its j-th token; capacity N (a token meets an expert at most once).
            position = torch.arange(len(order), device=x.device) - (torch.cumsum(counts, 0) - counts)[sorted_expert]
            buffer = x.new_zeros(n_experts, n_tokens, x.shape[1])
            buffer[sorted_expert, position] = x
            hidden = F.silu(torch.bmm(buffer, gate_w.transpose(1, 2))) * torch.bmm(buffer, up_w.transpose(1, 2))
            y = torch.bmm(hidden, down_w.transpose(1, 2))[sorted_expert, position]
        weight = topk_weight.reshape(-1)[order]
        out = torch.zeros(flat.shape, dtype=torch.float32, device=flat.device)
        out.index_add_(0, token_of, y.float() * weight[:, None])
        return out.to(flat.dtype)


def _has_grouped_mm(x: torch.Tensor) -> bool:
    """torch's grouped GEMM: CUDA, bf16, a recent enough torch (and GPU; it raises where unsupported)."""
    return x.is_cuda and x.dtype == torch.bfloat16 and hasattr(torch, "_grouped_mm")
