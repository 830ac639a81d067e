"""`dmax export SOURCE OUT`: its own small parser; a problem is one line on stderr and exit status 2."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path

from dmax_core.errors import DmaxError

from .folder import DEFAULT_MAX_SHARD_SIZE, GENERATION_CONFIG, MODEL_CARD, export_checkpoint


def main(argv: Sequence[str] | None = None) -> int:
    """`dmax export SOURCE OUT [--max-shard-size 2GB] [--run-dir DIR] [--model NAME] [--force]`; prints what it
    wrote, returns 0, or 2 after one line naming the problem."""
    parser = argparse.ArgumentParser(
        prog="dmax export", description="A hub-ready folder (sharded safetensors, config, tokenizer, "
        "generation_config.json, model card) from a checkpoint directory or a registered MLflow model version.")
    parser.add_argument("source", help="checkpoint directory (runs/<run>/dmax, an HF LLaDA2 directory) or "
                                       "models:/<name>/<version> or models:/<name>@<alias>")
    parser.add_argument("out", type=Path, help="the folder to write (must be empty or absent)")
    parser.add_argument("--max-shard-size", default=DEFAULT_MAX_SHARD_SIZE, metavar="SIZE",
                        help=f"largest shard: bytes or 200KB / 500MB / 2GB, decimal units (default: "
                             f"{DEFAULT_MAX_SHARD_SIZE})")
    parser.add_argument("--run-dir", type=Path, default=None, metavar="DIR",
                        help="the run whose eval/metrics.json the card and generation config come from "
                             "(default: the run directory the checkpoint lies in; a registered version's "
                             "evaluate run)")
    parser.add_argument("--model", default=None, metavar="NAME",
                        help="the checkpoint's model name in those records (base, dmax, control; default: "
                             "its directory name or provenance)")
    parser.add_argument("--force", action="store_true", help="replace a non-empty OUT")
    args = parser.parse_args(argv)
    try:
        out = export_checkpoint(args.source, args.out, max_shard_size=args.max_shard_size, run_dir=args.run_dir,
                                model=args.model, force=args.force)
    except DmaxError as exc:
        print(f"dmax export: error: {exc}", file=sys.stderr)
        return 2
    settings = json.loads((out / GENERATION_CONFIG).read_text(encoding="utf-8"))
    records = (settings.get("dmax_records") or {}).get("metrics")
    print(f"export: {out}\nmodel card: {out / MODEL_CARD} (records: {records or 'none found'})")
    return 0
