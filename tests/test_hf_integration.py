"""dmax models in the Hugging Face ecosystem: transformers' Auto classes without remote code, and diffusers'
LLaDA2Pipeline decoding the trained asset with the tokens of dmax's own threshold decoder.

The references are independent of the code under test: dmax's decoder for the pipeline's tokens, the dmax
model called with a mask built position by position from the block rule for the facade's logits, and the
released LLaDA2.0-mini config (tests/assets/llada2-mini) for what a real checkpoint directory holds."""

import json
import shutil
from pathlib import Path

import pytest
import torch
from builders import LLADA2_FIXTURE, llada2_like_tokenizer_dir, tiny_model
from transformers import AutoConfig, AutoModel, AutoModelForCausalLM, AutoModelForMaskedLM

from dmax_core.bundle import load_bundle
from dmax_core.config import load_config
from dmax_core.decoding import ThresholdPolicy, generate
from dmax_core.errors import DataError
from dmax_core.integrations.diffusers import LLaDA2PipelineModel, load_pipeline
from dmax_core.integrations.transformers import LLaDA2MoeHFConfig, LLaDA2MoeModelLM
from dmax_core.stages.common import task_of
from dmax_core.tokenizer import encode, load_tokenizer, render_prompt

ASSET = Path(__file__).resolve().parents[1] / "models" / "ledger-base"


@pytest.fixture(scope="module")
def asset():
    model, tokenizer = load_bundle(ASSET, dtype=torch.float32)
    problems = task_of(load_config("tiny")).splits()["test"][:10]
    return model, tokenizer, problems


def hand_mask(positions: list[int], valid: list[bool], block: int) -> torch.Tensor:
    """The block rule written out one pair at a time: q sees k iff k's block <= q's block and k is a real
    token (or q itself); trailing padding counts as real (the last block's tail past gen_length)."""
    last = max(i for i, v in enumerate(valid) if v)
    keys = [v or i > last for i, v in enumerate(valid)]
    n = len(positions)
    return torch.tensor([[(positions[k] // block <= positions[q] // block and keys[k]) or q == k
                          for k in range(n)] for q in range(n)])


# ------------------------------------------------------------------------------------ transformers
def test_auto_classes_load_a_dmax_checkpoint_offline_without_remote_code(asset):
    model, _, _ = asset
    config = AutoConfig.from_pretrained(ASSET)
    assert isinstance(config, LLaDA2MoeHFConfig) and config.block_length == 32
    for auto in (AutoModelForCausalLM, AutoModelForMaskedLM, AutoModel):
        hf = auto.from_pretrained(ASSET, trust_remote_code=False, dtype=torch.float32)
        assert isinstance(hf, LLaDA2MoeModelLM) and hf.dtype == torch.float32
    assert set(hf.state_dict()) == set(model.state_dict())  # the official names, nothing registered twice
    assert all(torch.equal(hf.state_dict()[k], v) for k, v in model.state_dict().items())

    ids = torch.randint(3, 50, (2, 70), generator=torch.Generator().manual_seed(0))
    ids[:, 50:] = model.mask_token_id
    padding = torch.ones_like(ids)
    padding[0, 20:23] = 0  # a padded prompt in row 0
    padding[:, 66:] = 0  # the tail of the last block, past gen_length
    out = hf(ids, attention_mask=padding, output_hidden_states=True)
    positions = list(range(70))
    for row in range(2):
        mask = hand_mask(positions, padding[row].bool().tolist(), 32)
        expected = model(ids[row : row + 1], position_ids=torch.arange(70), attention_mask=mask)
        torch.testing.assert_close(out.logits[row : row + 1], expected, rtol=0, atol=1e-5)
    assert len(out.hidden_states) == model.config.num_hidden_layers + 1
    torch.testing.assert_close(model.lm_head(out.hidden_states[-1]), out.logits, rtol=0, atol=1e-5)
    assert hf(ids, attention_mask=padding, return_dict=False)[0].shape == out.logits.shape


def released_checkpoint(directory: Path) -> Path:
    """A directory shaped like a downloaded LLaDA2.0-mini: its real config.json keys (model_type, the remote
    code's auto_map, architectures) with tiny sizes, an HF tokenizer with its special tokens and the
    official chat template, safetensors weights, no dmax records (no SHA256SUMS, no block length)."""
    llada2_like_tokenizer_dir(directory, ["Tom has 3 apples and buys 2 more."] * 20)
    tokenizer = load_tokenizer(directory)
    tiny = tiny_model(seed=5, tokenizer=tokenizer, random_weights=True)
    tiny.save_pretrained(directory)
    (directory / "SHA256SUMS").unlink()
    config = json.loads((LLADA2_FIXTURE / "config.json").read_text())
    shapes = {k: v for k, v in tiny.config.to_dict().items()
              if k in config and k not in ("rotary_dim", "pad_token_id")}
    config.update(shapes, rotary_dim=tiny.config.rotary_dim, pad_token_id=tiny.config.pad_token_id,
                  model_type="llada2_moe", auto_map={
                      "AutoConfig": "configuration_llada2_moe.LLaDA2MoeConfig",
                      "AutoModel": "modeling_llada2_moe.LLaDA2MoeModel",
                      "AutoModelForCausalLM": "modeling_llada2_moe.LLaDA2MoeModelLM"})
    (directory / "config.json").write_text(json.dumps(config))
    return directory


def test_a_released_checkpoint_needs_no_remote_code_but_its_block_length(tmp_path):
    directory = released_checkpoint(tmp_path / "LLaDA2.0-mini")
    dmax_model, tokenizer = load_bundle(directory)
    model = AutoModelForCausalLM.from_pretrained(directory, trust_remote_code=False)
    assert model.config.architectures == ["LLaDA2MoeModelLM"] and model.block_length is None
    ids = torch.tensor([encode(tokenizer, "Tom has 3 apples")])
    with pytest.raises(ValueError, match=r"does not record its block length.*block_length="):
        model(ids, attention_mask=torch.ones_like(ids))
    model = AutoModelForCausalLM.from_pretrained(directory, trust_remote_code=False, block_length=4)
    mask = hand_mask(list(range(ids.shape[1])), [True] * ids.shape[1], 4)
    expected = dmax_model(ids, position_ids=torch.arange(ids.shape[1]), attention_mask=mask)
    torch.testing.assert_close(model(ids).logits, expected, rtol=0, atol=1e-5)
    with pytest.raises(ValueError, match=r"block_length=8 disagrees with the checkpoint's block_length=32"):
        LLaDA2MoeModelLM.from_pretrained(ASSET, block_length=8)


def test_save_pretrained_writes_a_checkpoint_dmax_verifies(tmp_path, asset):
    hf = LLaDA2MoeModelLM.from_pretrained(ASSET, dtype="float32")
    hf.save_pretrained(tmp_path / "out")
    shutil.copy(ASSET / "tokenizer.json", tmp_path / "out")
    shutil.copy(ASSET / "tokenizer_config.json", tmp_path / "out")
    again, _ = load_bundle(tmp_path / "out")  # SHA256SUMS written and verified
    assert again.config.block_length == 32
    assert all(torch.equal(again.state_dict()[k], v) for k, v in asset[0].state_dict().items())


def test_a_missing_checkpoint_is_one_clear_error(tmp_path):
    with pytest.raises(DataError, match="checkpoint directory not found"):
        LLaDA2MoeModelLM.from_pretrained(tmp_path / "nowhere")
    with pytest.raises(ValueError, match="device_map: pass one device"):
        LLaDA2MoeModelLM.from_pretrained(ASSET, device_map={"": 0})


# ------------------------------------------------------------------------------------ diffusers
def pipeline_tokens(pipe, prompt_ids: torch.Tensor, threshold: float) -> tuple[list[int], int]:
    calls = [0]
    handle = pipe.model.register_forward_hook(lambda *_: calls.__setitem__(0, calls[0] + 1))
    try:
        out = pipe(input_ids=prompt_ids[None], gen_length=48, threshold=threshold, editing_threshold=None,
                   sampling_method="greedy", minimal_topk=1, num_inference_steps=32, output_type="seq")
    finally:
        handle.remove()
    return out.sequences[0].tolist(), calls[0]


def until_eos(ids: list[int], eos: int) -> list[int]:
    return ids[: ids.index(eos) + 1] if eos in ids else ids


@pytest.mark.parametrize("threshold", [0.9, 0.7, 0.5])
def test_llada2_pipeline_decodes_the_trained_asset_with_dmax_threshold_tokens(asset, threshold):
    from diffusers import BlockRefinementScheduler, LLaDA2Pipeline

    model, tokenizer, problems = asset
    # The construction diffusers documents, with dmax's model class in place of remote code.
    pipe = LLaDA2Pipeline(model=LLaDA2PipelineModel.from_pretrained(ASSET, dtype="float32"),
                          scheduler=BlockRefinementScheduler(), tokenizer=load_tokenizer(ASSET))
    pipe.set_progress_bar_config(disable=True)
    extra = 0
    for problem in problems:
        prompt = torch.tensor(encode(tokenizer, render_prompt(tokenizer, problem.question)))
        ours = generate(model, prompt, ThresholdPolicy(threshold), gen_length=48, block_length=32)
        theirs, forwards = pipeline_tokens(pipe, prompt, threshold)
        expected = ours.raw_ids[len(prompt) : len(prompt) + 48].tolist()
        assert until_eos(theirs, tokenizer.eos_token_id) == until_eos(expected, tokenizer.eos_token_id)
        # No prefill and no KV cache; at most one forward more per block (after its last commit).
        assert ours.nfe - 1 <= forwards <= ours.nfe + len(ours.block_stop_reasons)
        extra += forwards - ours.nfe
    assert extra >= 0


def test_load_pipeline_reads_the_prompt_through_the_chat_template(asset):
    model, tokenizer, problems = asset
    pipe = load_pipeline(ASSET, dtype="float32")
    assert pipe.scheduler.config.block_length == 32
    out = pipe(prompt=problems[0].question, gen_length=48, threshold=0.9, editing_threshold=None,
               sampling_method="greedy")
    prompt = torch.tensor(encode(tokenizer, render_prompt(tokenizer, problems[0].question)))
    ours = generate(model, prompt, ThresholdPolicy(0.9), gen_length=48, block_length=32)
    assert out.texts[0] == tokenizer.decode(ours.generated_ids, skip_special_tokens=True)


@pytest.mark.parametrize(("block", "why"), [(16, "not on a block boundary"), (64, "lie before the last block"),
                                            (48, "not on a block boundary")])
def test_a_pipeline_block_that_is_not_the_models_is_refused(asset, block, why):
    _, tokenizer, problems = asset
    pipe = load_pipeline(ASSET, dtype="float32")
    prompt = torch.tensor(encode(tokenizer, render_prompt(tokenizer, problems[0].question)))
    with pytest.raises(ValueError, match=why + r".*block_length=32"):
        pipe(input_ids=prompt[None], gen_length=96, block_length=block, threshold=0.9, editing_threshold=None,
             sampling_method="greedy", output_type="seq")
