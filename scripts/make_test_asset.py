"""Regenerate tests/assets/tiny-base: the trained tiny base model used by fast behaviour tests.

    make asset            # = python scripts/make_test_asset.py  (runs the tiny pretrain, ~12 min)
    python scripts/make_test_asset.py --from runs/tiny/base   # reuse an existing pretrain output

The weights are stored in bf16 (about 2.5 MB) to keep the repository small; tests load them as fp32.
"""

from __future__ import annotations

import argparse
import json
import shutil
from pathlib import Path

import torch

from dmax_core import stages
from dmax_core.config import load_config
from dmax_core.io import load_bundle, save_bundle

ASSET = Path(__file__).resolve().parent.parent / "tests" / "assets" / "tiny-base"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--from", dest="source", type=Path, help="existing base bundle to convert")
    parser.add_argument("overrides", nargs="*", help="config overrides for the pretrain run")
    args = parser.parse_args()
    source = args.source
    if source is None:
        cfg = load_config("tiny", args.overrides)
        source = stages.pretrain(cfg)
    model, tokenizer = load_bundle(source)
    info = json.loads((source / "dmax_bundle.json").read_text()) if (source / "dmax_bundle.json").is_file() else {}
    info.update({"asset_of": str(source), "stored_dtype": "bfloat16",
                 "regenerate": "make asset  (= python scripts/make_test_asset.py)"})
    shutil.rmtree(ASSET, ignore_errors=True)
    save_bundle(model.to(torch.bfloat16), tokenizer, ASSET, info)
    print(f"wrote {ASSET}")


if __name__ == "__main__":
    main()
