"""dmax checkpoints in diffusers' `LLaDA2Pipeline` (diffusers 0.42: `pip install -e .[hf]`).

    from diffusers import BlockRefinementScheduler, LLaDA2Pipeline
    from dmax_core.integrations.diffusers import LLaDA2PipelineModel, load_pipeline

    pipe = load_pipeline("runs/tiny/dmax")                   # model, tokenizer and scheduler in one call
    # or by hand, as diffusers' docs do with remote code:
    model = LLaDA2PipelineModel.from_pretrained("runs/tiny/dmax")
    pipe = LLaDA2Pipeline(model=model, scheduler=BlockRefinementScheduler(), tokenizer=load_tokenizer(dir))
    out = pipe(prompt="...", gen_length=64, threshold=0.9, editing_threshold=None, sampling_method="greedy")

The pipeline calls `model(window, attention_mask=<2-D key padding>, position_ids=...)` on windows
[0, (k + 1) * B) and reads `.logits`: `LLaDA2PipelineModel` is transformers' facade of the dmax model
(`dmax_core.integrations.transformers`), which builds the block-causal mask from the positions and the
checkpoint's own block length. The pipeline never passes its block length to the model, so a pipeline
(or scheduler) whose block differs from the model's would silently decode with another mask; this class
refuses such a window in words instead (`check_block_layout`). `load_pipeline` builds the scheduler with
the model's block length, so it cannot happen there.

With greedy sampling, `minimal_topk=1`, `editing_threshold=None` and `num_inference_steps` >= the block
length, the pipeline's commit rule is dmax's threshold decoder (`ThresholdPolicy`): same tokens (tested in
tests/test_hf_integration.py). It runs without a KV cache (each forward recomputes the window) and one
more forward per block after its last commit; `benchmarks/hf_pipeline_speed.py` measures the cost.
"""

from __future__ import annotations

import os
from typing import Any

import torch
from diffusers import BlockRefinementScheduler, LLaDA2Pipeline
from torch import Tensor

from dmax_core.integrations.transformers import LLaDA2MoeHFConfig, LLaDA2MoeModelLM, local_checkpoint_directory
from dmax_core.models import LLaDA2MoeForDiffusionLM
from dmax_core.tokenizer import load_tokenizer


class LLaDA2PipelineModel(LLaDA2MoeModelLM):
    """The dmax model as `LLaDA2Pipeline` calls it: transformers' facade plus a block-layout check on every
    forward that receives token ids (module docstring)."""

    def block_mask(self, position_ids: Tensor, padding: Tensor | None, input_ids: Tensor | None,
                   batch: int, length: int) -> Tensor:
        mask = super().block_mask(position_ids, padding, input_ids, batch, length)
        if input_ids is not None:
            positions = position_ids if position_ids.dim() == 2 else position_ids[None]
            check_block_layout(input_ids, positions.expand(batch, length), self.block_length or 0,
                               self.dlm.mask_token_id, self.dlm.eos_token_id)
        return mask


def check_block_layout(input_ids: Tensor, positions: Tensor, block_length: int, mask_token_id: int,
                       eos_token_id: int) -> None:
    """Refuse a pipeline window whose blocks are not the model's.

    The pipeline's windows end on its own block boundaries, so a window that does not end on one of the
    model's means a block length that is not a multiple of the model's. A larger multiple is seen by its
    MASK tokens: while a row is still decoding (no EOS yet), dmax's layout has masks only in the last
    block; a pipeline block of 2B puts them in two."""
    last = positions[:, -1]
    if bool(((last + 1) % block_length != 0).any()):
        raise ValueError(f"the pipeline's window ends at position {int(last.max()) + 1}, not on a block boundary "
                         f"of the model's block length {block_length}: use the model's block length "
                         f"(pipe(..., block_length={block_length}) or BlockRefinementScheduler(block_length="
                         f"{block_length}))")
    masked = input_ids == mask_token_id
    early = masked & (positions // block_length < (last // block_length)[:, None])
    decoding = ~(input_ids == eos_token_id).any(dim=1)
    if bool((early.any(dim=1) & decoding).any()):
        raise ValueError(f"MASK tokens lie before the last block of {block_length} positions: the pipeline's "
                         f"block length is larger than the model's ({block_length}); use pipe(..., "
                         f"block_length={block_length}) or BlockRefinementScheduler(block_length={block_length})")


def load_pipeline(checkpoint: str | os.PathLike[str], *, block_length: int | None = None, dtype: Any = None,
                  device: str | torch.device | None = None) -> LLaDA2Pipeline:
    """`LLaDA2Pipeline` for a checkpoint directory: the model, its own tokenizer (mask and EOS ids, chat
    template) and a `BlockRefinementScheduler` with the model's block length. `block_length` is needed only
    for a checkpoint that does not record it (see `LLaDA2MoeModelLM.from_pretrained`)."""
    directory = local_checkpoint_directory(checkpoint, {})
    model = LLaDA2PipelineModel.from_pretrained(directory, block_length=block_length, dtype=dtype,
                                                device_map=device)
    return _pipeline(model, load_tokenizer(directory))


def pipeline_for(model: LLaDA2MoeForDiffusionLM, tokenizer: Any) -> LLaDA2Pipeline:
    """`LLaDA2Pipeline` over a dmax model already in memory (its weights shared, not copied), e.g. to compare
    the pipeline with dmax's decoders on one set of weights. The model's config must record its block length."""
    if model.config.block_length is None:
        raise ValueError("pipeline_for: the model's config records no block_length (config.extra['block_length'])")
    return _pipeline(LLaDA2PipelineModel(LLaDA2MoeHFConfig.from_dmax(model.config), dlm=model).eval(), tokenizer)


def _pipeline(model: LLaDA2PipelineModel, tokenizer: Any) -> LLaDA2Pipeline:
    block = model.block_length
    scheduler = BlockRefinementScheduler(block_length=block, num_inference_steps=block)
    pipe = LLaDA2Pipeline(model=model, scheduler=scheduler, tokenizer=tokenizer)
    pipe.set_progress_bar_config(disable=True)
    return pipe
