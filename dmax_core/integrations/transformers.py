"""dmax's LLaDA2-MoE behind transformers' Auto classes, without remote code.

    import dmax_core.integrations.transformers  # registers `llada2_moe`
    from transformers import AutoModelForCausalLM
    model = AutoModelForCausalLM.from_pretrained("path/to/LLaDA2.0-mini-or-a-dmax-checkpoint")
    out = model(input_ids, attention_mask=mask, position_ids=positions)   # out.logits [b, L, vocab]

transformers has no `llada2_moe` model: a released LLaDA2.0-mini / DMax checkpoint names its own modeling file
in `auto_map`, so every caller needs `trust_remote_code=True`. Importing this module registers dmax's native
implementation for the model type instead (`AutoConfig`, `AutoModel`, `AutoModelForCausalLM`,
`AutoModelForMaskedLM`: the head is a same-position LM head, which is what LLaDA2's remote code registers
as a causal LM), so `from_pretrained(dir)` works offline with `trust_remote_code=False`.

What the HF model is: a `PreTrainedModel` facade sharing the modules (and so the parameters) of a
`LLaDA2MoeForDiffusionLM`. Its state-dict names are the official ones (`model.layers.0...`, `lm_head`), and
its forward delegates to the dmax model, so there is one implementation of the network. dmax's decoders
keep calling the dmax model directly; nothing here is on their path.

Loading goes through dmax's own checkpoint reader (`dmax_core.bundle`): safetensors only, `SHA256SUMS`
verified where dmax wrote one, per-expert or merged-expert layouts, the mask/EOS ids from the checkpoint's
tokenizer. transformers' generic loader is not used, because it knows none of those rules.

The attention mask. A dLLM's attention is block-causal (spec §3.1): a position sees its own block and every
earlier one, blocks at absolute multiples of the block length B. An HF caller passes a 2-D key-padding mask
(1 = real token), as diffusers' `LLaDA2Pipeline` does; read as token-causal, the same logits are useless.
So the block structure comes from the model: B is the checkpoint's (`config.block_length`, written by dmax's
stages; for a released checkpoint pass `block_length=` to `from_pretrained`), the mask is built from the
`position_ids`, and the 2-D mask only removes padded keys. Zeros after a row's last 1 are not applied: that
is the tail of the last block past `gen_length`, which dmax's decoders (and the official DMax `generate`)
decode as part of their block, so the tokens equal dmax's own. (diffusers' pipeline gets a subclass that
also refuses windows whose blocks are not the model's: `dmax_core.integrations.diffusers`.)
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch
from torch import Tensor
from transformers import (
    AutoConfig,
    AutoModel,
    AutoModelForCausalLM,
    AutoModelForMaskedLM,
    PreTrainedConfig,
    PreTrainedModel,
)
from transformers.modeling_outputs import MaskedLMOutput

from dmax_core.bundle import load_bundle
from dmax_core.diffusion import block_causal_mask
from dmax_core.errors import DataError
from dmax_core.models import LLaDA2MoeForDiffusionLM
from dmax_core.models.configuration import BLOCK_LENGTH_KEY, LLaDA2MoeConfig
from dmax_core.models.serialization import save_model

MODEL_TYPE = "llada2_moe"
# The config keys every transformers config has: not part of the LLaDA2 architecture.
_HF_BASE_KEYS = frozenset(f.name for f in dataclasses.fields(PreTrainedConfig)) | {
    "transformers_version", "architectures", "auto_map", "_name_or_path", "name_or_path", "dtype", "torch_dtype",
    "model_type", "output_attentions", "output_hidden_states", "return_dict", "use_return_dict"}


class LLaDA2MoeHFConfig(PreTrainedConfig):
    """transformers' view of a LLaDA2-MoE `config.json`: every key is an attribute, as in the file.

    It holds no rules of its own: `to_dmax()` hands the keys to `LLaDA2MoeConfig`, which validates them (and
    refuses values dmax cannot run faithfully, naming the key)."""

    model_type = MODEL_TYPE
    # The training block length, when the checkpoint records it (see the module docstring).
    block_length: int | None = None

    @classmethod
    def from_dmax(cls, config: LLaDA2MoeConfig) -> LLaDA2MoeHFConfig:
        data = config.to_dict()
        data.pop("model_type", None)
        return cls(**data)

    def to_dmax(self) -> LLaDA2MoeConfig:
        data = {key: value for key, value in self.to_dict().items() if key not in _HF_BASE_KEYS}
        if data.get(BLOCK_LENGTH_KEY) is None:
            data.pop(BLOCK_LENGTH_KEY, None)
        for name in LLaDA2MoeConfig.field_names():  # the few that transformers keeps as its own fields
            if name in self.__dict__ or hasattr(type(self), name):
                data.setdefault(name, getattr(self, name))
        data.pop("model_type", None)
        return LLaDA2MoeConfig.from_dict(data)


class LLaDA2MoeModelLM(PreTrainedModel):
    """LLaDA2-MoE with its same-position LM head, for transformers callers (module docstring). The name is
    the released checkpoints' `architectures` entry.

    `forward` returns a `MaskedLMOutput`: `.logits` [b, L, vocab] and, with `output_hidden_states=True`, the
    embedding output and each layer's output (the last one after the final norm, as transformers does)."""

    config_class = LLaDA2MoeHFConfig
    base_model_prefix = "model"
    main_input_name = "input_ids"
    _no_split_modules = ("LLaDA2MoeDecoderLayer",)
    _supports_sdpa = True

    def __init__(self, config: LLaDA2MoeHFConfig, dlm: LLaDA2MoeForDiffusionLM | None = None) -> None:
        super().__init__(config)
        dlm = dlm if dlm is not None else LLaDA2MoeForDiffusionLM(config.to_dmax())
        # The same module objects: parameters are shared, state-dict names are the official ones, and
        # `.to()` / `.eval()` on either model move both.
        self.model = dlm.model
        self.lm_head = dlm.lm_head
        self.__dict__["dlm"] = dlm  # a plain attribute, so its modules are not registered twice
        self.post_init()

    def _init_weights(self, module: torch.nn.Module) -> None:
        """No-op: the dmax model initialised (or loaded) every weight already (`init_weights`)."""

    @property
    def block_length(self) -> int | None:
        return self.config.block_length

    # ------------------------------------------------------------------ loading and saving
    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path: str | os.PathLike[str], *model_args: Any,
                        block_length: int | None = None, dtype: Any = None, torch_dtype: Any = None,
                        device_map: Any = None, **kwargs: Any) -> LLaDA2MoeModelLM:
        """A checkpoint directory (or a hub repo id already in the local cache) through dmax's reader.

        block_length: the model's block length B, required when config.json does not record it (a released
        LLaDA2.0-mini's; LLaDA2 and DMax use 32) and refused when it disagrees with a recorded one.
        dtype / torch_dtype: a torch dtype, its name, or "auto"/None (the checkpoint's). device_map: None,
        a device ("cpu", "cuda", "cuda:1") or "auto" (the first GPU when there is one); a per-module map is
        refused, since the model is placed whole. Other keyword arguments transformers passes
        (`trust_remote_code`, `config`, hub options) are ignored: no remote code is ever run, and the config
        is read from the directory itself."""
        if model_args:
            raise TypeError("LLaDA2MoeModelLM.from_pretrained takes no extra positional arguments")
        directory = local_checkpoint_directory(pretrained_model_name_or_path, kwargs)
        if block_length is None:  # the Auto classes hand a block_length keyword to the config they load first
            block_length = getattr(kwargs.get("config"), "block_length", None)
        model, _ = load_bundle(directory, device=_device_of(device_map), dtype=_dtype_of(dtype or torch_dtype))
        recorded = model.config.block_length
        if block_length is not None and recorded is not None and block_length != recorded:
            raise ValueError(f"{directory}: block_length={block_length} disagrees with the checkpoint's "
                             f"{BLOCK_LENGTH_KEY}={recorded} (config.json): the model was trained with blocks "
                             f"of {recorded}")
        if block_length is not None:
            model.config.extra[BLOCK_LENGTH_KEY] = block_length
            model.config.validate()
        config = LLaDA2MoeHFConfig.from_dmax(model.config)
        config.name_or_path = str(pretrained_model_name_or_path)
        return cls(config, dlm=model).eval()

    def save_pretrained(self, save_directory: str | os.PathLike[str], **_: Any) -> None:  # type: ignore[override]
        """dmax's own writer (config.json, model.safetensors, SHA256SUMS): the same files dmax's stages
        write, which every loader here (and the official modeling code) reads. `dmax export` writes the
        hub folder (shards, tokenizer, generation config, model card)."""
        save_model(self.dlm, save_directory)

    # ------------------------------------------------------------------ forward
    def forward(self, input_ids: Tensor | None = None, attention_mask: Tensor | None = None,
                position_ids: Tensor | None = None, inputs_embeds: Tensor | None = None,
                output_hidden_states: bool | None = None, return_dict: bool | None = None,
                **_: Any) -> MaskedLMOutput | tuple[Tensor, ...]:
        """Logits for every position of `input_ids` (or `inputs_embeds`) under the block-causal mask.

        attention_mask: None, a 2-D key-padding mask [b, L] (1/True = real token), or a 4-D boolean mask
        [b, 1, L, L] (True = may attend), used as given. position_ids: [L] or [b, L], default
        0..L-1; blocks are `position // block_length`."""
        ids_or_embeds = input_ids if input_ids is not None else inputs_embeds
        if ids_or_embeds is None:
            raise ValueError("forward: pass input_ids or inputs_embeds")
        batch, length = ids_or_embeds.shape[:2]
        device = ids_or_embeds.device
        if position_ids is None:
            position_ids = torch.arange(length, device=device)
        if attention_mask is not None and attention_mask.dim() == 4:
            mask = attention_mask  # dmax's own boolean [b, 1, L, L] mask, used as given
        elif attention_mask is None or tuple(attention_mask.shape) == (batch, length):
            mask = self.block_mask(position_ids, attention_mask, input_ids, batch, length)
        else:
            raise ValueError(f"forward: attention_mask must be a key-padding mask [{batch}, {length}] or a "
                             f"boolean [{batch}, 1, {length}, {length}], got {tuple(attention_mask.shape)}")
        want_hidden = bool(output_hidden_states if output_hidden_states is not None
                           else self.config.output_hidden_states)
        with self._hidden_states(want_hidden) as hidden:
            logits = self.dlm(input_ids=input_ids, inputs_embeds=inputs_embeds, position_ids=position_ids,
                              attention_mask=mask)
        states = tuple(hidden) if want_hidden else None
        if return_dict is False:
            return (logits,) if states is None else (logits, states)
        return MaskedLMOutput(logits=logits, hidden_states=states)

    def block_mask(self, position_ids: Tensor, padding: Tensor | None, input_ids: Tensor | None,
                   batch: int, length: int) -> Tensor:
        """[b, 1, L, L] boolean: block-causal over `position_ids`, minus padded keys (module docstring)."""
        block = self.block_length
        if block is None:
            raise ValueError(
                "this checkpoint does not record its block length, so the block-causal attention mask cannot "
                "be built: load it with from_pretrained(..., block_length=B) (LLaDA2 and DMax use 32)")
        positions = position_ids.expand(batch, length) if position_ids.dim() == 2 else position_ids[None].expand(
            batch, length)
        mask = block_causal_mask(positions, block)
        if padding is not None:
            valid = padding.to(torch.bool)
            # Trailing zeros (the last block's tail past gen_length) stay visible; earlier zeros are padding.
            last_valid = torch.where(valid, torch.arange(length, device=valid.device), -1).amax(dim=1, keepdim=True)
            keys = valid | (torch.arange(length, device=valid.device)[None] > last_valid)
            mask = mask & keys[:, None, :]
        # Every query sees itself: a padded query row is never empty (an empty row would be NaN).
        mask = mask | torch.eye(length, dtype=torch.bool, device=mask.device)
        return mask[:, None]

    @contextmanager
    def _hidden_states(self, enabled: bool) -> Iterator[list[Tensor]]:
        """Collect the embedding output and each layer's output with forward hooks (only when asked)."""
        states: list[Tensor] = []
        if not enabled:
            yield states
            return
        handles = [self.model.word_embeddings.register_forward_hook(lambda _m, _i, out: states.append(out))]
        handles += [layer.register_forward_hook(lambda _m, _i, out: states.append(out[0]))
                    for layer in self.model.layers]
        handles.append(self.model.norm.register_forward_hook(lambda _m, _i, out: states.__setitem__(-1, out)))
        try:
            yield states
        finally:
            for handle in handles:
                handle.remove()


def local_checkpoint_directory(name_or_path: str | os.PathLike[str], kwargs: dict[str, Any]) -> Path:
    path = Path(name_or_path)
    if path.is_dir():
        return path
    try:  # a hub id: only what is already in the local cache (dmax never downloads at load time)
        from huggingface_hub import snapshot_download

        return Path(snapshot_download(str(name_or_path), revision=kwargs.get("revision"), local_files_only=True))
    except Exception as exc:  # huggingface_hub raises several types for "not there"
        raise DataError(f"checkpoint directory not found: {name_or_path} (and not in the local hub cache: "
                        f"{type(exc).__name__})") from exc


def _dtype_of(dtype: Any) -> torch.dtype | None:
    if dtype is None or dtype == "auto":
        return None
    if isinstance(dtype, torch.dtype):
        return dtype
    value = getattr(torch, str(dtype), None)
    if not isinstance(value, torch.dtype):
        raise ValueError(f"unknown dtype {dtype!r}")
    return value


def _device_of(device_map: Any) -> str | torch.device:
    if device_map is None:
        return "cpu"
    if device_map == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if isinstance(device_map, (str, torch.device)):
        return device_map
    raise ValueError("device_map: pass one device ('cpu', 'cuda', 'cuda:1') or 'auto'; dmax places the "
                     "model whole, not per module")


def register() -> None:
    """Register `llada2_moe` with transformers' Auto classes (idempotent; done on import)."""
    AutoConfig.register(MODEL_TYPE, LLaDA2MoeHFConfig, exist_ok=True)
    for auto in (AutoModel, AutoModelForCausalLM, AutoModelForMaskedLM):
        auto.register(LLaDA2MoeHFConfig, LLaDA2MoeModelLM, exist_ok=True)


register()
