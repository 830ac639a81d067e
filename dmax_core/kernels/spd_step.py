"""The per-forward arithmetic of SPD (spec §4.2 steps 2 and 6) as one fused Triton kernel, with the
PyTorch reference as the fallback and the oracle.

For each block position (a row of logits): the fp32 softmax over the vocabulary, the argmax with MASK
excluded (the §7.10 deviation) and the full-softmax probability of that token (its confidence), and the
soft embedding of that token (`soft_embedding`: a confidence-weighted blend with E[MASK], rescaled to the
blended norm). The reference materialises a [rows, vocab] probability tensor and gathers embeddings in
separate kernels; the Triton kernel streams the vocabulary once per row with an online max/sum and writes
only tokens, confidences and the [rows, d] soft embeddings.

`spd_step` picks Triton where it can run (CUDA tensors and an installed Triton), the reference elsewhere;
tests run the kernel on CPU in Triton's interpreter (TRITON_INTERPRET=1, set before this module is
imported) and compare it with the reference. Triton 3.7.1 is the version pinned with torch 2.13 (3.9.0
computes garbage on bf16 in interpreter mode).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

from dmax_core.kernels.soft_embedding import NORM_EPS, soft_embedding

try:  # Triton is optional: the CPU install path has no GPU and torch's CPU wheel does not require it.
    import triton
    import triton.language as tl

    HAVE_TRITON = True
except ImportError:  # pragma: no cover - depends on the environment
    HAVE_TRITON = False


def greedy_tokens(logits: Tensor, mask_token_id: int) -> tuple[Tensor, Tensor]:
    """Greedy argmax and its probability, with MASK excluded (§7.10 deviation): the reference.

    Probabilities come from the full fp32 softmax over the vocabulary (§3.1 step 2); the MASK column is
    then zeroed and the argmax taken over the rest; the confidence is the full-softmax probability of that
    token (not renormalised). Returns (tokens Long[R], confidence fp32[R]) for logits [R, V]."""
    probs = torch.softmax(logits.float(), dim=-1)
    probs[:, mask_token_id] = 0.0
    confidence, tokens = probs.max(dim=-1)
    return tokens, confidence


def spd_step_reference(logits: Tensor, mask_token_id: int, embed: Callable[[Tensor], Tensor],
                       mask_embedding: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """(tokens, confidence, soft embedding of each row's token) in plain PyTorch."""
    tokens, confidence = greedy_tokens(logits, mask_token_id)
    return tokens, confidence, soft_embedding(embed(tokens), mask_embedding, confidence)


def spd_step(logits: Tensor, mask_token_id: int, embed: Callable[[Tensor], Tensor], mask_embedding: Tensor,
             table: Tensor | None = None, backend: str = "auto") -> tuple[Tensor, Tensor, Tensor]:
    """The SPD step's tokens, confidences and soft embeddings for logits [R, V].

    `table` is the embedding matrix [V, d] (needed by the kernel; `embed` serves the reference).
    `backend`: `auto` (Triton for CUDA tensors when installed, else the reference), `triton`, `torch`."""
    use_triton = backend == "triton" or (
        backend == "auto" and HAVE_TRITON and logits.is_cuda and table is not None)
    if not use_triton:
        return spd_step_reference(logits, mask_token_id, embed, mask_embedding)
    if not HAVE_TRITON:
        raise RuntimeError("the Triton SPD kernel needs the `triton` package")
    if table is None:
        raise ValueError("the Triton SPD kernel needs the embedding table")
    return spd_step_triton(logits, mask_token_id, table, mask_embedding)


if HAVE_TRITON:

    @triton.jit
    def _spd_step_kernel(logits_ptr, table_ptr, mask_emb_ptr, tokens_ptr, conf_ptr, out_ptr,
                         vocab, dim, logits_stride, table_stride, out_stride, mask_id,
                         BLOCK_V: tl.constexpr, BLOCK_D: tl.constexpr, NORM_EPS_C: tl.constexpr):
        row = tl.program_id(0)
        row_logits = logits_ptr + row * logits_stride
        # Pass 1 over the vocabulary: online max and sum of the full softmax, argmax without MASK.
        running_max = -float("inf")
        running_sum = 0.0
        best_value = -float("inf")
        best_index = 0
        for start in range(0, vocab, BLOCK_V):
            offsets = start + tl.arange(0, BLOCK_V)
            valid = offsets < vocab
            x = tl.load(row_logits + offsets, mask=valid, other=-float("inf")).to(tl.float32)
            block_max = tl.max(x, axis=0)
            new_max = tl.maximum(running_max, block_max)
            running_sum = running_sum * tl.exp(running_max - new_max) + tl.sum(
                tl.where(valid, tl.exp(x - new_max), 0.0), axis=0)
            running_max = new_max
            candidates = tl.where(valid & (offsets != mask_id), x, -float("inf"))
            block_best = tl.max(candidates, axis=0)
            block_index = tl.argmax(candidates, axis=0) + start
            better = block_best > best_value  # strict: the first maximum wins, as torch's max does
            best_index = tl.where(better, block_index, best_index)
            best_value = tl.where(better, block_best, best_value)
        p = tl.exp(best_value - running_max) / running_sum
        residual = tl.maximum(1.0 - p, 0.0)
        tl.store(tokens_ptr + row, best_index.to(tl.int64))
        tl.store(conf_ptr + row, p)
        # Pass 2 over the embedding dimension: the norms, then the rescaled blend (soft_embedding).
        token_row = table_ptr + best_index.to(tl.int64) * table_stride
        token_sq = 0.0
        mask_sq = 0.0
        blend_sq = 0.0
        for start in range(0, dim, BLOCK_D):
            offsets = start + tl.arange(0, BLOCK_D)
            valid = offsets < dim
            e = tl.load(token_row + offsets, mask=valid, other=0.0).to(tl.float32)
            m = tl.load(mask_emb_ptr + offsets, mask=valid, other=0.0).to(tl.float32)
            blend = p * e + residual * m
            token_sq += tl.sum(e * e, axis=0)
            mask_sq += tl.sum(m * m, axis=0)
            blend_sq += tl.sum(blend * blend, axis=0)
        target = p * tl.sqrt(token_sq) + residual * tl.sqrt(mask_sq)
        scale = target / (tl.sqrt(blend_sq) + NORM_EPS_C)
        for start in range(0, dim, BLOCK_D):
            offsets = start + tl.arange(0, BLOCK_D)
            valid = offsets < dim
            e = tl.load(token_row + offsets, mask=valid, other=0.0).to(tl.float32)
            m = tl.load(mask_emb_ptr + offsets, mask=valid, other=0.0).to(tl.float32)
            blend = (p * e + residual * m) * scale
            tl.store(out_ptr + row * out_stride + offsets, blend.to(out_ptr.dtype.element_ty), mask=valid)


def spd_step_triton(logits: Tensor, mask_token_id: int, table: Tensor, mask_embedding: Tensor,
                    block_v: int = 1024, block_d: int = 256) -> tuple[Tensor, Tensor, Tensor]:
    """The fused kernel (module docstring); logits [R, V], table [V, d], mask_embedding [d]."""
    if logits.dim() != 2 or table.dim() != 2 or logits.shape[1] != table.shape[0]:
        raise ValueError(f"logits [R, V] and table [V, d] expected, got {tuple(logits.shape)}, {tuple(table.shape)}")
    logits = logits.contiguous()
    table = table.contiguous()
    mask_embedding = mask_embedding.contiguous()
    rows, vocab = logits.shape
    dim = table.shape[1]
    tokens = torch.empty(rows, dtype=torch.long, device=logits.device)
    confidence = torch.empty(rows, dtype=torch.float32, device=logits.device)
    out = torch.empty(rows, dim, dtype=table.dtype, device=logits.device)
    block_v = min(block_v, triton.next_power_of_2(vocab))
    block_d = min(block_d, triton.next_power_of_2(dim))
    _spd_step_kernel[(rows,)](logits, table, mask_embedding, tokens, confidence, out, vocab, dim,
                              logits.stride(0), table.stride(0), out.stride(0), mask_token_id,
                              BLOCK_V=block_v, BLOCK_D=block_d, NORM_EPS_C=NORM_EPS)
    return tokens, confidence, out
