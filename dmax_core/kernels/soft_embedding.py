"""Soft embeddings for Soft Parallel Decoding (spec §4.2 step 6), PyTorch reference.

SPD feeds every decoded-but-not-final position back to the model as a confidence-weighted blend of
its current argmax token embedding and the mask embedding, so that unsure tokens stay close to
"mask" and confident ones are almost hard. This module holds only that arithmetic.

This is the reference implementation in plain PyTorch: it is the definition any future fused
(Triton) kernel is tested against, so it favours clarity over speed and computes in fp32. It must
not look up embeddings, pick tokens or know about blocks; callers pass the rows already gathered.
"""

from __future__ import annotations

from torch import Tensor

# §4.2 step 6: the rescaling divides by ||m|| + 1e-6 (not max(||m||, eps)).
NORM_EPS = 1e-6


def soft_embedding(token_embeddings: Tensor, mask_embedding: Tensor, confidence: Tensor) -> Tensor:
    """Blend the top-1 token embedding with E[MASK] by confidence and restore a blended norm.

    With p = confidence and r = clamp(1 - p, min 0) (§4.2 step 6):
        m      = p * E[v] + r * E[MASK]
        target = p * ||E[v]|| + r * ||E[MASK]||
        out    = m * target / (||m|| + 1e-6)
    The rescale matters because the average of two embeddings is shorter than either; without it
    an unsure position would look like a low-norm input the model never saw.

    Args:
        token_embeddings: E[v] for each position, shape [..., d].
        mask_embedding: E[MASK], shape [d].
        confidence: top-1 softmax probability p of each position, shape [...].

    Returns:
        Tensor [..., d] in the dtype of `token_embeddings` (computed in fp32, then cast, as the
        official code does for its bf16 embedding buffer).
    """
    if token_embeddings.shape[:-1] != confidence.shape:
        raise ValueError(
            f"confidence shape {tuple(confidence.shape)} does not match token_embeddings "
            f"{tuple(token_embeddings.shape)} without its last dim"
        )
    out_dtype = token_embeddings.dtype
    e_tok = token_embeddings.float()
    e_mask = mask_embedding.float()
    p = confidence.float().unsqueeze(-1)
    residual = (1.0 - p).clamp(min=0.0)
    blend = p * e_tok + residual * e_mask
    target = p * e_tok.norm(dim=-1, keepdim=True) + residual * e_mask.norm(dim=-1, keepdim=True)
    out = blend * (target / (blend.norm(dim=-1, keepdim=True) + NORM_EPS))
    return out.to(out_dtype)


def soft_embedding_topk(token_embeddings: Tensor, mask_embedding: Tensor, probs: Tensor) -> Tensor:
    """Top-k generalisation of `soft_embedding` (present in the official code, off by default).

    With the top-k probabilities p_i and tokens v_i of a position (§4.2 step 6, last bullet):
        r      = max(0, 1 - sum_i p_i)
        m      = sum_i p_i E[v_i] + r E[MASK]
        target = sum_i p_i ||E[v_i]|| + r ||E[MASK]||
        out    = m * target / (||m|| + 1e-6)
    For k = 1 this is exactly `soft_embedding`. SPD as evaluated in the paper uses k = 1.

    Args:
        token_embeddings: E[v_i], shape [..., k, d].
        mask_embedding: E[MASK], shape [d].
        probs: p_i, shape [..., k].

    Returns:
        Tensor [..., d] in the dtype of `token_embeddings`.
    """
    if token_embeddings.shape[:-1] != probs.shape:
        raise ValueError(
            f"probs shape {tuple(probs.shape)} does not match token_embeddings "
            f"{tuple(token_embeddings.shape)} without its last dim"
        )
    out_dtype = token_embeddings.dtype
    e_tok = token_embeddings.float()
    e_mask = mask_embedding.float()
    p = probs.float().unsqueeze(-1)  # [..., k, 1]
    residual = (1.0 - p.sum(dim=-2)).clamp(min=0.0)  # [..., 1]
    blend = (p * e_tok).sum(dim=-2) + residual * e_mask
    target = (p * e_tok.norm(dim=-1, keepdim=True)).sum(dim=-2) + residual * e_mask.norm(dim=-1, keepdim=True)
    out = blend * (target / (blend.norm(dim=-1, keepdim=True) + NORM_EPS))
    return out.to(out_dtype)
