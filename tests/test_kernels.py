"""The fused SPD-step Triton kernel against its PyTorch reference (the oracle), in Triton's interpreter on
CPU (TRITON_INTERPRET=1, set by conftest when there is no GPU) and on a GPU when one is present."""

import pytest
import torch

from dmax_core.kernels import spd_step as kernel
from dmax_core.kernels.spd_step import spd_step, spd_step_reference

pytestmark = pytest.mark.skipif(not kernel.HAVE_TRITON, reason="triton is not installed")
DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])


def _case(rows: int, vocab: int, dim: int, mask_id: int, dtype: torch.dtype, device: str, seed: int = 0):
    gen = torch.Generator().manual_seed(seed)
    logits = (torch.randn(rows, vocab, generator=gen) * 4).to(dtype)
    table = torch.randn(vocab, dim, generator=gen).to(dtype)
    logits[0, mask_id] = 50.0  # the most likely token is MASK: it must not be chosen, but counts in p
    logits[1] = 0.0  # a flat row: every token ties, the first non-MASK id wins
    return logits.to(device), table.to(device)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize(("rows", "vocab", "dim", "dtype"), [
    (8, 50, 32, torch.float32),  # vocabulary and width smaller than one program block
    (5, 1300, 96, torch.float32),  # several vocabulary blocks, a ragged last one
    (4, 300, 40, torch.bfloat16),  # the released model's dtype (cast to fp32 after loading)
])
def test_the_kernel_equals_the_reference(device, rows, vocab, dim, dtype):
    mask_id = vocab - 3
    logits, table = _case(rows, vocab, dim, mask_id, dtype, device)
    mask_embedding = table[mask_id]

    def embed(ids):
        return table[ids]

    tokens, confidence, soft = kernel.spd_step_triton(logits, mask_id, table, mask_embedding, block_v=256,
                                                      block_d=32)
    ref_tokens, ref_confidence, ref_soft = spd_step_reference(logits, mask_id, embed, mask_embedding)
    assert torch.equal(tokens.cpu(), ref_tokens.cpu())
    assert int(tokens[0]) != mask_id and int(tokens[1]) == 0
    torch.testing.assert_close(confidence.cpu(), ref_confidence.cpu(), atol=1e-6, rtol=1e-5)
    # bf16: both compute in fp32 and round once; rounding may differ by one bf16 step (2^-7 relative).
    tolerance = {"atol": 1e-5, "rtol": 1e-4} if dtype == torch.float32 else {"atol": 2e-2, "rtol": 1e-2}
    torch.testing.assert_close(soft.float().cpu(), ref_soft.float().cpu(), **tolerance)
    assert soft.dtype == table.dtype


def test_the_dispatcher_falls_back_to_the_reference_where_triton_cannot_run():
    logits, table = _case(4, 50, 16, 47, torch.float32, "cpu")
    out = spd_step(logits, 47, lambda ids: table[ids], table[47], table)  # CPU tensors: the reference
    ref = spd_step_reference(logits, 47, lambda ids: table[ids], table[47])
    for a, b in zip(out, ref, strict=True):
        assert torch.equal(a, b)
    with pytest.raises(ValueError, match="embedding table"):
        spd_step(logits, 47, lambda ids: table[ids], table[47], None, backend="triton")
