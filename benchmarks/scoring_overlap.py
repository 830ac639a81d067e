"""How long a HumanEval-shaped evaluation takes when its answers' programs are slow: scored inline in the
decode loop (how dmax scored before) against scored beside the decode (`evaluation.runner`, now).

    python benchmarks/scoring_overlap.py [--problems 24] [--batch 8] [--sleep 1.0] [--workers 2] [--rounds 2]

The trained asset (models/ledger-base) decodes ledger test problems; each answer is then "tested" as
a code benchmark tests one: a program run in dmax's sandbox (`run_program`, the same limits and process
isolation HumanEval gets) that sleeps `--sleep` seconds -- a test suite's running time -- and checks the
answer. Both settings decode the same problems with the same policy, so their samples must be equal (the
script checks it); what differs is whether the frame waits for each program. Rounds alternate
inline/overlapped so that machine drift hits both. Prints one line per run and a JSON summary with the
ratio. Run it alone: another CPU-heavy job distorts both timings.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import torch

from dmax_core.bundle import load_bundle
from dmax_core.config import load_config
from dmax_core.decoding import ThresholdPolicy
from dmax_core.env import environment_info
from dmax_core.evaluation.runner import decode_problems
from dmax_core.sandbox import Limits, run_program
from dmax_core.stages.common import task_of
from dmax_core.tasks import Problem, Task

ASSET = Path(__file__).resolve().parents[1] / "models" / "ledger-base"


class SlowProgramTask(Task):
    """The ledger's prompts, scored by a sandboxed program that runs `seconds` and checks the answer."""

    def __init__(self, inner: Task, seconds: float, workers: int) -> None:
        self.name = "slow-programs"  # an instance name: not a registered task
        self.inner, self.seconds, self.score_workers = inner, seconds, workers
        self.limits = Limits(cpu_seconds=10.0, wall_seconds=seconds + 15.0, memory_bytes=512 << 20)

    def splits(self) -> dict[str, list[Problem]]:
        return self.inner.splits()

    def prompt(self, problem: Problem) -> str:
        return self.inner.prompt(problem)

    def is_correct(self, text: str, problem: Problem) -> bool:
        program = (f"import time\ntime.sleep({self.seconds})\n"
                   f"assert {self.inner.is_correct(text, problem)!r}, 'wrong answer'\n")
        return run_program(program, self.limits).status == "passed"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--problems", type=int, default=24)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--sleep", type=float, default=1.0)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    model, tokenizer = load_bundle(ASSET)
    model = model.float()
    ledger = task_of(load_config("tiny"))
    problems = ledger.splits()["test"][: args.problems]
    task = SlowProgramTask(ledger, args.sleep, args.workers)
    frame = {"gen_length": 48, "block_length": 32, "batch_size": args.batch}
    times: dict[str, list[float]] = {"inline": [], "overlapped": []}
    samples = {}
    for round_index in range(args.rounds):
        for label, workers in (("inline", 0), ("overlapped", args.workers)):
            started = time.perf_counter()
            run = decode_problems(model, tokenizer, task, problems, ThresholdPolicy(0.9), score_workers=workers,
                                  **frame)
            seconds = time.perf_counter() - started
            times[label].append(seconds)
            samples[label] = [(s.text, s.correct, s.tokens, s.nfe) for s in run.samples]
            print(f"round {round_index + 1} {label:>10}: {seconds:6.2f} s  (decode clock {run.wall_seconds:.2f} s, "
                  f"scores after it {run.score_wait_seconds:.2f} s, accuracy "
                  f"{sum(s.correct for s in run.samples) / len(run.samples):.3f})", flush=True)
    if samples["inline"] != samples["overlapped"]:
        raise SystemExit("the two settings scored different samples: scoring off the loop changed a result")
    inline, overlapped = statistics.median(times["inline"]), statistics.median(times["overlapped"])
    env = environment_info()
    print(json.dumps({
        "setting": {"problems": args.problems, "batch_size": args.batch, "program_seconds": args.sleep,
                    "score_workers": args.workers, "torch_threads": args.threads, "rounds": args.rounds,
                    "device": env.get("device"), "host": env.get("host")},
        "median_seconds": {"inline": round(inline, 2), "overlapped": round(overlapped, 2)},
        "speedup": round(inline / overlapped, 2),
        "serial_program_seconds": args.problems * args.sleep,
        "samples_equal": True,
    }))


if __name__ == "__main__":
    main()
