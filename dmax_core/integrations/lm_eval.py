"""dmax's block decoders as an lm-evaluation-harness model: `--model dmax` (lm-eval 0.4.13).

    dmax lm-eval --model dmax \\
        --model_args pretrained=CHECKPOINT_DIR,decoder=spd,threshold=0.5 --tasks gsm8k --apply_chat_template

Why a wrapper command: lm-eval 0.4.13 finds a model only in its registry, which holds its own models (a
fixed table in `lm_eval/models/__init__.py`) plus whatever was registered by an import before the run.
It reads no entry-point group and has no include path for models, so `lm_eval --model dmax` cannot find
this class on its own; `dmax lm-eval` (`dmax_core.integrations.lm_eval_cli`) imports this module and then
runs lm-eval's own CLI with the same arguments. In Python, importing this module is enough for
`simple_evaluate(model="dmax")`.

Model args (`--model_args key=value,...`):
    pretrained            a dmax checkpoint directory (`bundle.load_bundle`); required
    decoder               a registered decoding policy (`spd`, `threshold`); default `spd`
    threshold             the policy's confidence threshold; required (no default fits every decoder)
    gen_length            G, positions generated per request (default 256; the frame lays out whole blocks,
                          so up to the block boundary at or after prompt + G); a task's `max_gen_toks` lowers it
    block_length          B (default 32)
    batch_size            rows decoded at once (lm-eval's `--batch_size`; `auto` = `max_batch_size`, else 32)
    device                `cpu` / `cuda[:n]` (default: cuda when available; lm-eval's CLI passes `cuda:0`
                          unless `--device` says otherwise, and without CUDA that falls back to the CPU)
    dtype                 `auto` (the checkpoint's), `float32`, `bfloat16` or `float16`
    threads               torch CPU threads (default: torch's own)
    max_forwards_per_block, compile   as in dmax's `decoding` settings (`compile` needs batch_size=1)
    any other key         a knob of the chosen policy (e.g. `confidence_stop` for spd); unknown -> error
Each value is checked by the field of dmax's config that holds the same setting (`gen_length` and
`batch_size` as in `evaluate`, `block_length`, `dtype` as in `model`, `threads` as `threads.decode`,
`max_forwards_per_block`, `compile` and the policy's knobs as in `decoding`), so a model arg accepts what a
config accepts. Bad values are `ConfigError`s, missing or corrupt checkpoints `DataError`s: one line each
(the wrapper prints it and exits 2), raised before any weights are read where possible.

`generate_until`: every request goes through `decoding.generate_batch` (`batch_size` rows at a time, each
exactly as alone) with its own copy of the policy. The prompt is the context as lm-eval built it: with
`--apply_chat_template` lm-eval renders it through `apply_chat_template` (the checkpoint's LLaDA2 template),
without it the context is sent as is. Text: `evaluation.answers.answer_text` (dmax's one rule) with its
two lm-eval parameters: the generated ids up to the end of the assistant turn (the first `<|role_end|>` or
EOS; a diffusion decoder may fill the rest of its last block after it, which an autoregressive model would
never have written), decoded with `skip_special_tokens=True`, then cut before the first of the request's
`until` strings. A task's `max_gen_toks` caps `gen_length`, rounded up to a whole
block (never above `gen_length`); the text is not cut to `max_gen_toks` tokens. Decoding is greedy, so
sampling settings (`do_sample`, `temperature`) are ignored with a warning. Prompts longer than the model's
`max_position_embeddings` allows beside the generation are cut from the left, as lm-eval's HF model does.

`loglikelihood` / `loglikelihood_rolling`: a diffusion decoder has no left-to-right likelihood, so they
raise `LoglikelihoodUnsupported` (a `NotImplementedError`, and a `DmaxError` for the one-line message).

Speed figures (where they appear, and why there): lm-eval calls `LM.get_model_info()` after the run and
merges its dict into `results["config"]`, which `--output_path` writes into the results JSON beside the
task metrics; it is the one hook 0.4.13 offers a model for run-level information. So the results JSON has
`config.dmax_speed` = {"overall": figures, "tasks": {task: figures}} and `config.dmax_decoding` (the
settings). The figures use dmax's names and §5.4 counting (`evaluation/records.py`): `tpf` (mean over
samples of tokens/NFE, the paper's TPF), `tpf_total` (total tokens / total NFE), `nfe` and `tokens`
(means per sample), `tps` / `tps_total` (latency-based tokens/s, the paper's TPS at batch 1), `seconds`
(mean latency) and, for the whole run, `throughput` (tokens per wall-clock second) and
`forwards_per_second`. The same summary is logged at the end of each `generate_until` call through the
`lm_eval.models.dmax` logger (under `lm_eval`, whose handler lm-eval's CLI sets up), so it shows in the
console right above lm-eval's table; `DmaxLM.records` keeps the per-request numbers for Python callers.
"""

from __future__ import annotations

import copy
import logging
import math
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Annotated, Any

# lm-eval fills its registry with its own models only when the registry is empty at the first lookup
# (`registry.get_model`); importing the table first keeps `hf`, `vllm`, ... available beside `dmax`.
import lm_eval.models  # noqa: F401
import torch
from lm_eval.api.model import LM
from lm_eval.api.registry import register_model
from pydantic import BaseModel, TypeAdapter, ValidationError
from tqdm.auto import tqdm

from dmax_core.bundle import load_bundle
from dmax_core.config import DecodingConfig, DmaxConfig, EvaluateConfig, ModelConfig, ThreadsConfig
from dmax_core.decoding import POLICIES, SWEPT_KNOB, DecodeResult, ForwardInfo, build_policy, generate_batch
from dmax_core.errors import ConfigError, DmaxError
from dmax_core.evaluation.answers import answer_text, turn_end_ids
from dmax_core.evaluation.records import summarize
from dmax_core.registry import check_int
from dmax_core.tokenizer import encode

__all__ = ["MODEL_NAME", "DmaxLM", "LoglikelihoodUnsupported", "speed_figures"]

MODEL_NAME = "dmax"
# A child of lm-eval's logger, so its CLI's handler prints these lines beside its own.
logger = logging.getLogger("lm_eval.models.dmax")

DTYPES: dict[str, torch.dtype | None] = {
    "auto": None, "float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16,
}
AUTO_BATCH_SIZE = 32  # `batch_size=auto` without `max_batch_size`: rows cost cache memory, so not unbounded
# What lm-eval's generation kwargs may say that a greedy block decoder can honour or safely ignore.
_GREEDY_DEFAULTS = {"do_sample": (False, None), "temperature": (0, 0.0, None)}


class LoglikelihoodUnsupported(NotImplementedError, DmaxError):
    """A log-likelihood request sent to a diffusion decoder."""


LOGLIKELIHOOD_MESSAGE = (
    "the dmax model is a diffusion decoder with no left-to-right log-likelihood, so it cannot score "
    "loglikelihood or loglikelihood_rolling requests: evaluate it on generate_until tasks"
)


@register_model(MODEL_NAME)
class DmaxLM(LM):
    """A dmax checkpoint decoded by one registered block policy, answering lm-eval's generate_until requests.

    The checkpoint is loaded once; each request is decoded with a fresh copy of the policy (a policy holds
    the state of its block). Per-request NFE, tokens and latency are kept in `records` (module docstring).
    """

    def __init__(
        self,
        pretrained: str | None = None,
        decoder: str = "spd",
        threshold: float | None = None,
        gen_length: int = 256,
        block_length: int = 32,
        batch_size: int | str = 1,
        max_batch_size: int | None = None,
        device: str | None = None,
        dtype: str = "auto",
        threads: int | None = None,
        max_forwards_per_block: int | None = None,
        compile: bool = False,  # dmax's own name for the setting (decoding.compile)
        trust_remote_code: bool | None = None,  # lm-eval's CLI adds it; nothing remote is ever run here
        **knobs: Any,
    ) -> None:
        super().__init__()
        # Every argument is checked before the (possibly large) weights are read.
        if pretrained is None or str(pretrained).strip() == "":
            raise ConfigError("the dmax model needs pretrained=<checkpoint directory> in --model_args")
        self.pretrained = Path(str(pretrained)).expanduser()
        self.decoder = _policy_name(decoder)
        self.policy = _policy(self.decoder, threshold, knobs)
        # Each setting is checked by the config field it is in a dmax config (`_setting`), so a model arg
        # accepts exactly what `dmax evaluate` accepts for the same setting.
        self.gen_length = _setting(EvaluateConfig, "gen_length", gen_length)
        self.block_length = _setting(DmaxConfig, "block_length", block_length)
        self.batch_size = _batch_size(batch_size, max_batch_size)
        self.max_forwards_per_block = _setting(DecodingConfig, "max_forwards_per_block", max_forwards_per_block)
        self.compile = _setting(DecodingConfig, "compile", compile)
        if self.compile and self.batch_size != 1:
            raise ConfigError("dmax model_args: compile=true decodes one row at a time: set batch_size=1")
        self._device = _device(device)
        dtype = _setting(ModelConfig, "dtype", dtype)
        if threads is not None:
            torch.set_num_threads(_setting(ThreadsConfig, "decode", threads, "threads"))

        self.model, self.tokenizer = load_bundle(self.pretrained, device=str(self._device), dtype=DTYPES[dtype])
        self._turn_end = turn_end_ids(self.tokenizer)
        self.max_positions = int(getattr(self.model.config, "max_position_embeddings", 0) or 0)
        self.records: list[dict[str, Any]] = []  # one per request: task, doc_id, tokens, nfe, seconds, tpf
        self._wall_seconds = 0.0
        self._forwards = 0
        self._warned: set[str] = set()
        logger.info("dmax: %s on %s (%s), decoder %s, gen_length %d, block_length %d, batch_size %d",
                    self.pretrained, self._device, str(self.model.dtype).removeprefix("torch."),
                    self.policy.config(), self.gen_length, self.block_length, self.batch_size)

    # ------------------------------------------------------------------------------------- requests
    def loglikelihood(self, requests: list[Any], disable_tqdm: bool = False) -> list[tuple[float, bool]]:
        raise LoglikelihoodUnsupported(LOGLIKELIHOOD_MESSAGE)

    def loglikelihood_rolling(self, requests: list[Any], disable_tqdm: bool = False) -> list[float]:
        raise LoglikelihoodUnsupported(LOGLIKELIHOOD_MESSAGE)

    def generate_until(self, requests: list[Any], disable_tqdm: bool = False) -> list[str]:
        """Decode every request with dmax's frame (batched by generation length) and return the texts."""
        if not requests:
            return []
        plans = [self._plan(request) for request in requests]
        truncated = sum(plan["truncated"] for plan in plans)
        if truncated:
            logger.warning("dmax: %d prompt(s) were cut from the left to fit max_position_embeddings=%d",
                           truncated, self.max_positions)
        groups: dict[int, list[int]] = {}
        for index, plan in enumerate(plans):
            groups.setdefault(plan["gen_length"], []).append(index)
        texts: list[str | None] = [None] * len(requests)
        bar = tqdm(total=len(requests), desc="dmax generate_until", disable=disable_tqdm or self.rank != 0)
        first_record = len(self.records)
        for gen_length, indices in groups.items():
            self._decode_group(requests, plans, indices, gen_length, texts, bar)
        bar.close()
        self._log_summary(self.records[first_record:])
        return [text if text is not None else "" for text in texts]

    def _plan(self, request: Any) -> dict[str, Any]:
        """Prompt ids, stop strings and generation length of one request (its `args` are context, kwargs)."""
        context, gen_kwargs = request.args[0], dict(request.args[1] or {})
        until = gen_kwargs.pop("until", None)
        until = [until] if isinstance(until, str) else [s for s in (until or []) if isinstance(s, str) and s]
        gen_length = self.gen_length
        max_gen_toks = gen_kwargs.pop("max_gen_toks", None)
        if max_gen_toks is not None:
            try:
                wanted = check_int("max_gen_toks", max_gen_toks, 1)
            except ValueError as exc:
                raise ConfigError(f"generation_kwargs of task {getattr(request, 'task_name', None)}: {exc}") from None
            cap = math.ceil(wanted / self.block_length) * self.block_length
            gen_length = min(gen_length, cap)
        self._warn_ignored(gen_kwargs)
        ids = encode(self.tokenizer, context)
        truncated = False
        if self.max_positions:
            # The frame lays out ceil((P + G) / B) * B positions; keep that within the model's positions.
            room = (self.max_positions // self.block_length) * self.block_length - gen_length
            if room < 1:
                raise ConfigError(f"dmax model_args: gen_length {gen_length} leaves no room for a prompt within "
                                  f"max_position_embeddings={self.max_positions} (block_length {self.block_length})")
            if len(ids) > room:
                ids, truncated = ids[-room:], True
        return {"ids": torch.tensor(ids, dtype=torch.long), "until": until, "gen_length": gen_length,
                "truncated": truncated}

    def _decode_group(self, requests: Sequence[Any], plans: Sequence[dict[str, Any]], indices: list[int],
                      gen_length: int, texts: list[str | None], bar: Any) -> None:
        """One `generate_batch` call over the requests that share a generation length."""

        def finished(row: int, result: DecodeResult) -> None:
            index = indices[row]
            request = requests[index]
            text = answer_text(self.tokenizer, result, turn_end_ids=self._turn_end, until=plans[index]["until"])
            texts[index] = text
            self.records.append({
                "task": getattr(request, "task_name", None), "doc_id": getattr(request, "doc_id", None),
                "tokens": result.tokens, "nfe": result.nfe, "seconds": result.seconds,
                "tpf": result.tokens_per_forward,
            })
            self.cache_hook.add_partial("generate_until", request.args, text)
            bar.update(1)

        def counted(info: ForwardInfo) -> None:
            self._forwards += 1

        started = time.perf_counter()
        generate_batch(
            self.model, [plans[i]["ids"] for i in indices], [copy.deepcopy(self.policy) for _ in indices],
            gen_length=gen_length, block_length=self.block_length, max_batch=self.batch_size,
            max_forwards_per_block=self.max_forwards_per_block, on_forward=counted, on_finish=finished,
            compiled=self.compile,
        )
        if self._device.type == "cuda":
            torch.cuda.synchronize(self._device)
        self._wall_seconds += time.perf_counter() - started

    def _warn_ignored(self, gen_kwargs: dict[str, Any]) -> None:
        """Warn once per setting a greedy block decoder does not apply (sampling, beam search, ...)."""
        ignored = sorted(k for k, v in gen_kwargs.items() if v not in _GREEDY_DEFAULTS.get(k, ()))
        new = [k for k in ignored if k not in self._warned]
        if new:
            self._warned.update(new)
            logger.warning("dmax: ignoring generation setting(s) %s: dmax's decoders are greedy block decoders "
                           "(only until and max_gen_toks apply)", ", ".join(new))

    # ----------------------------------------------------------------------------- chat templates
    @property
    def tokenizer_name(self) -> str:
        """Fingerprint of the tokenizer (lm-eval keys its request cache on it)."""
        return str(self.pretrained.resolve()).replace("/", "__")

    def chat_template(self, chat_template: bool | str = False) -> str | None:
        """The checkpoint's one chat template (dmax tokenizers carry exactly one, the LLaDA2 layout)."""
        if isinstance(chat_template, str) and chat_template and "chat_template" not in self._warned:
            self._warned.add("chat_template")
            logger.warning("dmax: the checkpoint has a single chat template; ignoring the name %r", chat_template)
        return self.tokenizer.chat_template

    def apply_chat_template(self, chat_history: list[dict[str, str]], add_generation_prompt: bool = True) -> str:
        """Render lm-eval's chat history with the checkpoint's template; without the generation prompt the
        last (assistant) message is left open, so lm-eval's answer prefix is continued, not closed."""
        return self.tokenizer.apply_chat_template(
            chat_history, tokenize=False, add_generation_prompt=add_generation_prompt,
            continue_final_message=not add_generation_prompt,
        )

    # ------------------------------------------------------------------------------ speed figures
    def speed_summary(self) -> dict[str, Any]:
        """Speed figures of every request decoded so far: overall (with wall-clock throughput) and per task."""
        overall = speed_figures(self.records)
        if self.records and self._wall_seconds > 0:
            overall["throughput"] = sum(r["tokens"] for r in self.records) / self._wall_seconds
            overall["forwards_per_second"] = self._forwards / self._wall_seconds
            overall["wall_seconds"] = self._wall_seconds
        tasks: dict[str, list[dict[str, Any]]] = {}
        for record in self.records:
            tasks.setdefault(str(record["task"]), []).append(record)
        return {"overall": overall, "tasks": {name: speed_figures(rows) for name, rows in tasks.items()}}

    def get_model_info(self) -> dict[str, Any]:
        """What lm-eval merges into `results["config"]` (module docstring): settings and speed figures."""
        return {
            "model_num_parameters": sum(p.numel() for p in self.model.parameters()),
            "model_dtype": str(self.model.dtype).removeprefix("torch."),
            "dmax_decoding": {
                "pretrained": str(self.pretrained), **self.policy.config(), "gen_length": self.gen_length,
                "block_length": self.block_length, "batch_size": self.batch_size, "device": str(self._device),
                "max_forwards_per_block": self.max_forwards_per_block, "compile": self.compile,
                "threads": torch.get_num_threads(),
            },
            "dmax_speed": self.speed_summary(),
        }

    def _log_summary(self, records: list[dict[str, Any]]) -> None:
        figures = speed_figures(records)
        if figures:
            logger.info("dmax speed over %d request(s), %s@%g: TPF %.3f (pooled %.3f), NFE %.2f/sample, "
                        "%.2f tokens/sample, %.1f tokens/s per sample; in the results JSON under config.dmax_speed",
                        figures["n"], self.decoder, getattr(self.policy, SWEPT_KNOB), figures["tpf"],
                        figures["tpf_total"], figures["nfe"], figures["tokens"], figures["tps"])


def speed_figures(records: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """dmax's per-sample figures (`evaluation.records.summarize`: the names and §5.4 counting of every
    evaluation cell) over request records."""
    if not records:
        return {}
    return summarize([r["tokens"] for r in records], [r["nfe"] for r in records], [r["seconds"] for r in records])


# ------------------------------------------------------------------------------------ model args
def _policy_name(decoder: Any) -> str:
    try:
        POLICIES.get(decoder)
    except ValueError as exc:
        raise ConfigError(f"dmax model_args: decoder={decoder}: {exc}") from None
    return str(decoder)


def _policy(decoder: str, threshold: Any, knobs: dict[str, Any]) -> Any:
    """The policy with its threshold and knobs; a key that is neither a model arg nor a knob is named, and
    the knobs' values are checked as `decoding.<decoder>.<knob>` is in a dmax config (`DecodingConfig`)."""
    if threshold is None:
        raise ConfigError(f"dmax model_args: threshold=<number> is required (the {decoder} decoder's threshold)")
    if isinstance(threshold, bool):
        raise ConfigError(f"dmax model_args: threshold must be a number, got {threshold!r}")
    try:
        threshold = float(threshold)
    except (TypeError, ValueError):
        raise ConfigError(f"dmax model_args: threshold must be a number, got {threshold!r}") from None
    known = [k for k in POLICIES.knobs(decoder) if k != SWEPT_KNOB]
    unknown = sorted(set(knobs) - set(known))
    if unknown:
        raise ConfigError(
            f"dmax model_args: unknown argument(s) {', '.join(unknown)}: not a dmax model argument "
            f"({', '.join(_MODEL_ARGS)}) nor a knob of the {decoder} decoder ({', '.join(known) or 'none'})")
    try:
        resolved = DecodingConfig.model_validate({decoder: knobs}).knobs(decoder)
        return build_policy(decoder, threshold, resolved)
    except ValidationError as exc:
        raise ConfigError(f"dmax model_args: {_first_error(exc)}") from None
    except ValueError as exc:
        raise ConfigError(f"dmax model_args: {exc}") from None


def _setting(model: type[BaseModel], field: str, value: Any, arg: str | None = None) -> Any:
    """`value` checked and coerced (lm-eval passes model args as strings) by the field `model.field` of
    dmax's config, so one set of rules says what a setting may be wherever it is given."""
    info = model.model_fields[field]
    try:
        kind = Annotated[(info.annotation, *info.metadata)] if info.metadata else info.annotation
        return TypeAdapter(kind).validate_python(value)
    except ValidationError as exc:
        raise ConfigError(f"dmax model_args: {arg or field}={value}: {_first_error(exc)}") from None


def _first_error(exc: ValidationError) -> str:
    return exc.errors()[0]["msg"].removeprefix("Value error, ")


def _batch_size(batch_size: Any, max_batch_size: Any) -> int:
    """lm-eval's `--batch_size` (an int, a numeric string, `auto` or `auto:N`) as rows decoded at once."""
    if isinstance(batch_size, str) and batch_size.startswith("auto"):
        if max_batch_size is None:
            return AUTO_BATCH_SIZE
        return _setting(EvaluateConfig, "batch_size", max_batch_size, "max_batch_size")
    return _setting(EvaluateConfig, "batch_size", batch_size)


def _device(device: Any) -> torch.device:
    if device is None:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        chosen = torch.device(str(device))
    except RuntimeError:
        raise ConfigError(f"dmax model_args: device must be cpu or cuda[:index], got {device!r}") from None
    if chosen.type not in ("cpu", "cuda"):
        raise ConfigError(f"dmax model_args: device must be cpu or cuda[:index], got {device!r}")
    if chosen.type == "cuda" and not torch.cuda.is_available():
        # lm-eval's CLI passes device=cuda:0 unless told otherwise; its HF model falls back the same way.
        logger.warning("dmax: device %s asked for, but no CUDA device is available: decoding on the CPU", device)
        return torch.device("cpu")
    if chosen.type == "cuda" and chosen.index is not None and chosen.index >= torch.cuda.device_count():
        raise ConfigError(f"dmax model_args: device={device}, but only {torch.cuda.device_count()} CUDA device(s)")
    return chosen


_MODEL_ARGS: tuple[str, ...] = ("pretrained", "decoder", "threshold", "gen_length", "block_length", "batch_size",
                                "max_batch_size", "device", "dtype", "threads", "max_forwards_per_block", "compile")
