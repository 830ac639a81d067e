"""How many CPU threads each kind of stage should use, idle and beside one busy process.

    python benchmarks/threads.py                     # the shipped base, models/ledger-base
    python benchmarks/threads.py --base RUN/base --prompts 200 --steps 25
    GOMP_SPINCOUNT=300000 python benchmarks/threads.py   # libgomp's own waiting, without dmax's OMP_WAIT_POLICY

Decoding: `--prompts` training prompts of the tiny preset's task, base model, threshold 0.9, at batch 1 and
batch 64, with 1 and 2 torch threads. Training: `--steps` pretraining steps of the tiny preset (batch 32,
n = 96) from a fresh model, with 1 and 2 threads. Each measurement runs twice: on an idle machine, and
with one other process spinning on a core (what a browser, a Prefect worker or a second job does to a
2-core machine). Run it alone. Prints one line per measurement and a final JSON line; the choice in
`config.ThreadsConfig` (decode: 1 thread, train: all cores) comes from these figures.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from contextlib import contextmanager
from pathlib import Path

# isort: off
import dmax_core  # noqa: F401 - first: it sets the OpenMP wait policy (dmax_core.env) before torch loads OpenMP
import torch
# isort: on

from dmax_core.bundle import load_bundle
from dmax_core.config import load_config
from dmax_core.decoding import build_policy
from dmax_core.env import device_name
from dmax_core.evaluation.runner import decode_problems
from dmax_core.models import LLaDA2MoeForDiffusionLM
from dmax_core.stages.common import labelled_pads, model_config, task_of, task_tokenizer
from dmax_core.training import encode_conversations, train_model


@contextmanager
def busy_core(enabled: bool):
    """One other process spinning on a core while the body runs."""
    spinner = subprocess.Popen([sys.executable, "-c", "while True: pass"]) if enabled else None
    try:
        time.sleep(0.5 if enabled else 0.0)
        yield
    finally:
        if spinner is not None:
            spinner.kill()
            spinner.wait()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--base", type=Path, default=Path(__file__).resolve().parents[1] / "models" / "ledger-base",
                        help="the base model bundle to decode with (default: the shipped one)")
    parser.add_argument("--prompts", type=int, default=200)
    parser.add_argument("--steps", type=int, default=25)
    args = parser.parse_args()
    cfg = load_config("tiny", [f"pretrain.steps={args.steps}", "pretrain.log_every=5"])
    task = task_of(cfg)
    problems = task.splits()["train"][: args.prompts]
    model, tokenizer = load_bundle(args.base, dtype=torch.float32)
    policy = build_policy("threshold", 0.9)
    train_tokenizer = task_tokenizer(cfg, task)
    data = encode_conversations(train_tokenizer, [(p.question, p.answer) for p in task.splits()["train"][:2000]],
                                cfg.pretrain.max_seq_len, labelled_pads(cfg, cfg.pretrain))
    waiting = {name: os.environ.get(name) for name in ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT")}
    print(f"OpenMP waiting: {waiting}", flush=True)
    results: dict[str, object] = {"device": device_name(), "prompts": args.prompts, "train_steps": args.steps,
                                  "openmp": waiting,
                                  "decode": [], "train": []}
    for busy in (False, True):
        load = "busy" if busy else "idle"
        with busy_core(busy):
            for threads in (1, 2):
                torch.set_num_threads(threads)
                for batch in (1, 64):
                    started = time.perf_counter()
                    decode_problems(model, tokenizer, task, problems, policy, gen_length=48, block_length=32,
                                    batch_size=batch)
                    seconds = time.perf_counter() - started
                    results["decode"].append({"load": load, "threads": threads, "batch": batch, "seconds": seconds})
                    print(f"decode {load}: {threads} thread(s), batch {batch}: {seconds:.2f} s", flush=True)
                torch.manual_seed(0)
                fresh = LLaDA2MoeForDiffusionLM(model_config(cfg, train_tokenizer))
                started = time.perf_counter()
                train_model(fresh, data, cfg.pretrain, block_length=cfg.block_length, mask_id=fresh.mask_token_id,
                            description=f"train {load} {threads}t")
                per_step = (time.perf_counter() - started) / args.steps
                results["train"].append({"load": load, "threads": threads, "seconds_per_step": per_step})
                print(f"train {load}: {threads} thread(s): {per_step * 1000:.0f} ms/step", flush=True)
    print(json.dumps(results))


if __name__ == "__main__":
    main()
