"""What an export says about its model: `generation_config.json` and the model card (`README.md`).

Both are written from the run's records (`run_records.RunRecords`) and the checkpoint's own files (its
config, its provenance `dmax_bundle.json`), never from numbers typed here: the decoder and threshold are
those an experiment arm settled on for this model, the knobs those the run's resolved config gave that
decoder (`settings.decoding` of metrics.json), the table every cell the run measured for it. Without
records the card says so and the generation config holds only the token ids.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from dmax_core.models import LLaDA2MoeConfig

from .run_records import RunRecords

# The hub's metadata (https://huggingface.co/docs/hub/model-cards): no license, which the run cannot know.
CARD_TAGS = ("dllm", "diffusion", "block-diffusion", "dmax", "llada2", "llada2_moe")
# Provenance keys of `dmax_bundle.json` the card lists, in this order (pretrain and train write them).
PROVENANCE_KEYS = ("stage", "objective", "preset", "steps", "final_loss", "examples", "dataset_digest",
                   "resumed_from")


def generation_config(records: RunRecords, config: LLaDA2MoeConfig) -> dict[str, Any]:
    """HF-style generation settings plus dmax's decoder: `decoder`, `threshold` and `decoder_knobs` of the
    chosen cell, `block_length` / `gen_length` (= `max_new_tokens`) / `max_forwards_per_block` of the run,
    the special ids of the model config; `dmax_records` says where they were read."""
    out: dict[str, Any] = {"mask_token_id": config.mask_token_id, "eos_token_id": config.eos_token_id,
                           "pad_token_id": config.pad_token_id}
    settings = records.settings
    if records.evaluation is None:
        return out
    if "block_length" in settings:
        out["block_length"] = settings["block_length"]
    if "gen_length" in settings:
        out["gen_length"] = out["max_new_tokens"] = settings["gen_length"]
    decoding = settings.get("decoding") or {}
    if decoding.get("max_forwards_per_block") is not None:
        out["max_forwards_per_block"] = decoding["max_forwards_per_block"]
    chosen = records.chosen()
    if chosen is not None:
        out["decoder"] = chosen.cell.decoder
        out["threshold"] = chosen.cell.threshold
        if isinstance(decoding.get(chosen.cell.decoder), Mapping):
            out["decoder_knobs"] = dict(decoding[chosen.cell.decoder])
    out["dmax_records"] = {"metrics": records.location, "model": records.model,
                           **({"task": chosen.task, "choice": chosen.why} if chosen else {})}
    return out


def _text(value: Any) -> str:
    return str(value).replace("|", "\\|").replace("\n", " ")


def _front_matter() -> str:
    tags = "".join(f"- {tag}\n" for tag in CARD_TAGS)
    return f"---\nlibrary_name: dmax\npipeline_tag: text-generation\ntags:\n{tags}---\n"


def measured_table(records: RunRecords) -> list[str]:
    """The card's table: one row per measured cell of this model (accuracy in %, TPF, TPS per sample)."""
    settings = records.settings
    setting = ", ".join(str(settings[k]) for k in ("dtype", "device") if settings.get(k))
    rows = ["| task | split | decoder | threshold | accuracy | TPF | TPS | n | setting |",
            "|---|---|---|---|---|---|---|---|---|"]
    for cell in records.cells():
        rows.append("| " + " | ".join(_text(v) for v in (
            cell.task or "", cell.split, cell.decoder, f"{cell.threshold:g}", f"{100 * cell.accuracy:.1f}%",
            f"{cell.tpf:.2f}", f"{cell.tps:.1f}", cell.n, f"batch {cell.batch_size}, {setting}".rstrip(", "))) + " |")
    return rows


def model_card(title: str, *, provenance: Mapping[str, Any], records: RunRecords, origin: Mapping[str, str],
               facts: Mapping[str, Any]) -> str:
    """The README.md of an export (module docstring); `facts` are the export's own: parameters, dtype, shards."""
    lines = [_front_matter(), f"# {title}", "",
             f"A LLaDA2-MoE block-diffusion language model (`model_type: llada2_moe`, {facts['parameters']:,} "
             f"parameters, {facts['dtype']}), exported by `dmax export` as {facts['shards']} safetensors "
             f"shard(s) with `model.safetensors.index.json`; `SHA256SUMS` holds the shards' SHA-256.", "",
             "## Provenance", ""]
    lines += [f"- {key}: {_text(value)}" for key, value in origin.items()]
    lines += [f"- {key.replace('_', ' ')}: {_text(provenance[key])}" for key in PROVENANCE_KEYS
              if provenance.get(key) is not None]
    lines += ["", "## Decoding", ""]
    chosen = records.chosen()
    if chosen is not None:
        knobs = (records.settings.get("decoding") or {}).get(chosen.cell.decoder) or {}
        knob_text = ", ".join(f"{k}={v}" for k, v in knobs.items()) if isinstance(knobs, Mapping) else ""
        lines.append(f"`generation_config.json` holds the settings the run decoded this model with: decoder "
                     f"`{chosen.cell.decoder}` at threshold {chosen.cell.threshold:g}"
                     + (f" ({knob_text})" if knob_text else "")
                     + f", block length {records.settings.get('block_length')}, {records.settings.get('gen_length')} "
                       f"generated tokens. The threshold is the experiment's choice on {chosen.task}: "
                       f"{_text(chosen.why)}")
    elif records.evaluation is not None:
        lines.append("The run's headline names no decoder for this model, so `generation_config.json` gives the "
                     "run's block and generation length but no decoder or threshold.")
    else:
        lines.append("No run records were found, so `generation_config.json` gives only the special token ids.")
    lines += ["", "## Measured", ""]
    if records.evaluation is None:
        lines.append("No evaluation records were found for this checkpoint (no `eval/metrics.json` of its run), "
                     "so this card reports no measurements.")
    elif not records.cells():
        lines.append(f"The run's records ({records.location}) hold no cell of this checkpoint's model "
                     f"({records.model or 'unknown'}), so this card reports no measurements.")
    else:
        settings = records.settings
        lines.append(f"Every cell the run measured for model `{records.model}` ({records.location}; "
                     f"{_text(settings.get('setting', 'setting not recorded'))}; measured "
                     f"{settings.get('timestamp', 'at an unrecorded time')}, git {settings.get('git_commit', '?')}). "
                     "Accuracy is the task's score, TPF tokens per forward, TPS tokens per second per sample.")
        lines += ["", *measured_table(records)]
    lines += ["", "## Use", "", "```python", "from dmax_core.bundle import load_bundle", "",
              f'model, tokenizer = load_bundle("{title}")  # verifies SHA256SUMS', "```", "",
              "With transformers and diffusers (no remote code; `pip install dmax-platform[hf]`):", "",
              "```python", "import dmax_core.integrations.transformers  # registers llada2_moe",
              "from transformers import AutoModelForCausalLM", "from dmax_core.integrations.diffusers import "
              "load_pipeline", "", f'model = AutoModelForCausalLM.from_pretrained("{title}")',
              f'pipe = load_pipeline("{title}")  # diffusers\' LLaDA2Pipeline with this model\'s block length',
              'text = pipe(prompt="...", gen_length=256, threshold=0.9, editing_threshold=None,',
              '            sampling_method="greedy").texts[0]', "```", ""]
    return "\n".join(lines)
