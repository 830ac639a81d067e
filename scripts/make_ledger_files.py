"""Write the ledger problems of the `tiny-files` preset as files (tests/assets/ledger-files/).

    python scripts/make_ledger_files.py        # prompts.jsonl (distillation) and test.jsonl (evaluation)

The `tiny-files` preset is shaped like the real-model presets: a base read from a directory, distillation
prompts from a file and the evaluated task from a file. These files hold problems the embedded base model
can solve: the `ledger` preset's task (its seed and difficulty), the first 1000 training questions as
prompts and its first 300 test problems (with answers, scored as `ledger`), so the two never overlap.
"""

from __future__ import annotations

import json
from pathlib import Path

from dmax_core.config import load_config
from dmax_core.files import atomic_write_text
from dmax_core.stages.common import task_of, task_splits
from dmax_core.tasks.base import save_problems

OUT = Path(__file__).resolve().parent.parent / "tests" / "assets" / "ledger-files"
PROMPTS, TEST = 1000, 300


def main() -> None:
    cfg = load_config("ledger")
    splits = task_splits(cfg, task_of(cfg))
    OUT.mkdir(parents=True, exist_ok=True)
    atomic_write_text(OUT / "prompts.jsonl",
                      "".join(json.dumps({"prompt": p.question}) + "\n" for p in splits["train"][:PROMPTS]))
    save_problems(splits["test"][:TEST], OUT / "test.jsonl")
    print(f"wrote {PROMPTS} prompts and {TEST} test problems to {OUT}")


if __name__ == "__main__":
    main()
