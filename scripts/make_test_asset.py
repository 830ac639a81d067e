"""Regenerate models/ledger-base: the shipped ledger base (the `tiny` preset starts from it; fast tests use it).

    make asset            # = python scripts/make_test_asset.py pretrain.seed=1000  (ledger pretrain, ~12 min)
    python scripts/make_test_asset.py --from runs/benchmark-ledger/seed-0/base   # the committed asset

The committed asset is the 3-seed benchmark's seed-0 base (`ledger` preset, pretrain.seed=1000): the
full 3000-step pretraining, not the shorter `tiny` one, so the tests see a base well past the accuracy
phase change.

The weights are stored in bf16 (about 2.5 MB) to keep the repository small; tests load them as fp32.
"""

from __future__ import annotations

import argparse
import shutil
from pathlib import Path

import torch

from dmax_core.bundle import load_bundle, read_provenance, save_bundle
from dmax_core.config import load_config
from dmax_core.stages.runner import run_stage

ASSET = Path(__file__).resolve().parent.parent / "models" / "ledger-base"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--from", dest="source", type=Path, help="existing base bundle to convert")
    parser.add_argument("--preset", default="ledger", help="preset of the pretrain run (default: ledger)")
    parser.add_argument("overrides", nargs="*", help="config overrides for the pretrain run")
    args = parser.parse_args()
    source = args.source
    if source is None:
        cfg = load_config(args.preset, args.overrides)
        source = run_stage("pretrain", cfg).outputs["base"]
    model, tokenizer = load_bundle(source)
    info = read_provenance(source)
    info.update({"asset_of": str(source), "stored_dtype": "bfloat16",
                 "regenerate": "make asset  (= python scripts/make_test_asset.py pretrain.seed=1000)"})
    shutil.rmtree(ASSET, ignore_errors=True)
    save_bundle(model.to(torch.bfloat16), tokenizer, ASSET, info)
    print(f"wrote {ASSET}")


if __name__ == "__main__":
    main()
