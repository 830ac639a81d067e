"""How SPD decoded a few samples, step by step: kept from the measured decode by `evaluate`, drawn by `report`.

A trace keeps, for the first blocks of a sample, every forward's block after the policy step: the token at
each position, its confidence, and which positions changed in that step. Drawn as one heat map per block
(rows = steps, columns = positions, colour = confidence, the token written in each cell, changed cells
outlined, the prompt's tail in the first block grey), it shows self-revision happen: a position that SPD
committed and later rewrote is outlined twice.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from dmax_core.decoding import DecodeResult, StepRecord
from dmax_core.tasks import Problem

__all__ = ["plot_trace", "trace_record"]


def trace_record(tokenizer: Any, problem: Problem, result: DecodeResult, text: str, *, block_length: int,
                 max_blocks: int = 2) -> dict[str, Any]:
    """The first `max_blocks` blocks of one decode with its step records (`decode_problems(trace_rows=...)`,
    the measured decode itself) as a JSON-ready record; `text` is the sample's answer text."""
    blocks: dict[int, list[StepRecord]] = {}
    for record in result.trace:
        if record.block_ids is not None:
            blocks.setdefault(record.block_index, []).append(record)
    kept = sorted(blocks)[:max_blocks]
    return {
        "question": problem.question,
        "text": text,
        "blocks": [{
            "block_index": index,
            # the first block may hold the prompt's tail: fixed, not decoded (drawn grey)
            "prompt_positions": max(0, min(block_length, result.prompt_length - index * block_length)),
            "steps": [{
                "tokens": tokenizer.convert_ids_to_tokens(r.block_ids.tolist()),
                "confidence": [round(float(c), 4) for c in r.confidence.tolist()],
                "changed": list(r.changed_positions),
            } for r in blocks[index]],
        } for index in kept],
    }


def plot_trace(trace: dict[str, Any], path: Path, title: str) -> Path:
    """One heat map per recorded block (module docstring), as a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.patches import Rectangle

    from dmax_core.evaluation.report import save_png  # matplotlib only when a picture is drawn

    blocks = trace["blocks"]
    heights = [max(1, len(b["steps"])) for b in blocks] or [1]
    width = max((len(b["steps"][0]["tokens"]) for b in blocks if b["steps"]), default=1)
    fig, axes = plt.subplots(len(heights), 1, figsize=(min(0.55 * width + 2, 24), 0.45 * sum(heights) + 1.5),
                             squeeze=False, gridspec_kw={"height_ratios": heights})
    for ax, block in zip(axes[:, 0], blocks, strict=False):
        steps = block["steps"]
        fixed = block.get("prompt_positions", 0)
        confidence = [[float("nan")] * fixed + s["confidence"][fixed:] for s in steps]
        cmap = matplotlib.colormaps["viridis"].copy()
        cmap.set_bad("lightgrey")  # prompt positions: not decoded
        image = ax.imshow(confidence, aspect="auto", cmap=cmap, vmin=0.0, vmax=1.0)
        for row, step in enumerate(steps):
            for col, token in enumerate(step["tokens"]):
                shown = token.replace("Ġ", "·").replace("Ċ", "⏎")[:6]
                color = "dimgrey" if col < fixed else "white" if step["confidence"][col] < 0.6 else "black"
                ax.text(col, row, shown, ha="center", va="center", fontsize=5, color=color)
            for col in step["changed"]:
                ax.add_patch(Rectangle((col - 0.5, row - 0.5), 1, 1, fill=False, edgecolor="red", linewidth=0.8))
        ax.set_ylabel(f"block {block['block_index']}\nstep")
        ax.set_yticks(range(len(steps)))
        ax.set_xticks([])
        fig.colorbar(image, ax=ax, fraction=0.02, pad=0.01, label="confidence")
    axes[0, 0].set_title(title + "  (red: changed in this step)", fontsize=9)
    return save_png(fig, path, dpi=110)
