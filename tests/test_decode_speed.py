"""The decode-speed benchmark's GPU path, run small on the CPU: it must print every figure with its setting
and the ratios, as its last line one JSON document (what a GPU session runs at full size)."""

import json
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def test_the_gpu_mode_runs_small_on_cpu_and_reports_everything():
    done = subprocess.run(
        [sys.executable, "benchmarks/decode_speed.py", "gpu", "--scale", "tiny", "--device", "cpu", "--batch", "4",
         "--gen", "64", "--prompt", "40", "--no-compile", "--threads", "1"],
        cwd=REPO, capture_output=True, text=True, timeout=600, check=True)
    report = json.loads(done.stdout.strip().splitlines()[-1])
    speed, cache = report["models"]
    for run in speed["runs"] + cache["runs"]:
        assert {"device", "dtype", "batch", "block", "prompt_length", "gen_length", "policy"} <= set(run["setting"])
        assert run["forwards_per_second"] > 0 and run["tokens_per_second_aggregate"] > 0
        assert run["tokens"] == len_tokens(run)  # random weights, EOS never emitted: full-length decodes
    assert all("bytes_per_forward" in run and run["mbu"] is None for run in speed["runs"])  # no CPU peak
    assert speed["batched_vs_batch1_throughput_spd"] > 1.0
    assert speed["spd_vs_threshold_seconds_per_forward"] > 0
    assert {"cache_vs_none_speedup_gen256", "cache_vs_none_speedup_gen1024"} <= set(cache)


def len_tokens(run):
    setting = run["setting"]
    per_prompt = -(-(setting["prompt_length"] + setting["gen_length"]) // setting["block"]) * setting["block"]
    return (per_prompt - setting["prompt_length"]) * setting["prompts"]
