"""The one-command GPU check, run small on the CPU as it would run on the lent machine: with pydantic, MLflow,
Prefect, accelerate, DVC and diffusers made unimportable (tests/bare_machine/sitecustomize.py), every
section must report, the correctness sections must pass against their references, and the JSON document
must hold every figure the README's GPU table quotes."""

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[1]
BARE = Path(__file__).resolve().parent / "bare_machine"
SMALL = ["--device", "cpu", "--scale", "tiny", "--batch", "4", "--prompt", "40", "--gen", "64", "--threads", "1",
         "--train-seq", "128", "--train-steps", "2", "--train-warmup", "1"]


def bare_python(*args: str, timeout: int = 300) -> subprocess.CompletedProcess[str]:
    """Run the interpreter as the lent machine's bare Python: only torch & co. importable, the repo on the path."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(BARE), str(REPO)]), "OMP_NUM_THREADS": "1"}
    return subprocess.run([sys.executable, *args], cwd=REPO, env=env, capture_output=True, text=True,
                          timeout=timeout)


def load_gpu_check():
    spec = importlib.util.spec_from_file_location("gpu_check", REPO / "benchmarks" / "gpu_check.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules["gpu_check"] = module  # its dataclass resolves annotations through sys.modules
    spec.loader.exec_module(module)
    return module


def test_the_bare_machine_really_lacks_the_platform_packages():
    """Otherwise the next test would prove nothing about the lent machine."""
    done = bare_python("-c", "import importlib.util as u; print(u.find_spec('accelerate')); import pydantic")
    assert done.returncode != 0 and "No module named 'pydantic'" in done.stderr
    assert done.stdout.strip() == "None"


def test_the_cpu_path_runs_every_section_on_a_bare_machine(tmp_path):
    out = tmp_path / "gpu_check.json"
    done = bare_python("benchmarks/gpu_check.py", *SMALL, "--no-compile", "--json-out", str(out))
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    lines = done.stdout.strip().splitlines()
    report = json.loads(lines[-1])
    assert json.loads(out.read_text())["sections"] == report["sections"]  # the file holds the same document
    sections = report["sections"]
    assert list(sections) == ["env", "moe", "spd_kernel", "compiled", "batch_invariance", "decode", "train",
                              "train_offload"]
    assert "| check | verdict | seconds | result |" in lines  # the table, one row per section
    assert all(any(line.startswith(f"| {name} | ") for line in lines) for name in sections)
    verdicts = {name: row["verdict"] for name, row in sections.items()}
    assert verdicts == {"env": "measured", "moe": "PASS", "spd_kernel": "PASS", "compiled": "SKIP",
                        "batch_invariance": "measured", "decode": "measured", "train": "PASS",
                        "train_offload": "SKIP"}
    moe = sections["moe"]
    assert moe["relative_error_vs_fp32_loop"]["fp32_grouped"] <= 1e-4  # grouping itself is exact in fp32
    assert 0 < moe["relative_error_vs_fp32_loop"]["low_loop"] < 0.1  # bf16 rounding: visible, small
    kernel = sections["spd_kernel"]
    assert kernel["interpreted"] and kernel["token_agreement"] == 1.0 and kernel["rows"] == 4 * 32
    # On a CPU the loop dispatch makes each row exactly its batch-1 decode (the README's promise).
    assert sections["batch_invariance"]["rows_identical_share"] == 1.0
    assert len(sections["batch_invariance"]["prompt_lengths"]) == 4  # rows of unequal length in one batch
    runs = sections["decode"]["runs"]
    assert set(runs) == {"eager_batch1", "eager_batch4"}
    for figures in runs.values():
        assert figures["forwards_per_second"] > 0 and figures["tokens_per_second_aggregate"] > 0
        assert figures["bytes_per_forward"] > 0 and figures["mbu"] is None  # no peak bandwidth for CPUs
    assert runs["eager_batch4"]["setting"]["batch"] == 4
    train = sections["train"]
    assert train["loss_finite"] and len(train["losses"]) == 3 and train["steps_per_second"] > 0
    assert train["layers"] == 2 and train["predicted_gib"]["total"] > 0


@pytest.mark.slow
def test_the_compiled_block_step_is_checked_against_eager(tmp_path):
    """torch.compile on a CPU takes about a minute here, hence slow."""
    done = bare_python("benchmarks/gpu_check.py", *SMALL, "--only", "compiled", timeout=600)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    compiled = json.loads(done.stdout.strip().splitlines()[-1])["sections"]["compiled"]
    assert compiled["verdict"] == "PASS"
    errors = compiled["first_forward_rel_error"]
    assert errors["compiled_vs_eager"] <= 2 * errors["eager_bf16_vs_fp32"] + 1e-6


def test_a_broken_section_is_reported_and_the_others_still_run(monkeypatch):
    gpu_check = load_gpu_check()
    args = gpu_check.parse_args(SMALL)

    def broken(check):
        raise RuntimeError("no kernel image is available for execution on the device\nsecond line")

    monkeypatch.setitem(gpu_check.SECTIONS, "moe", broken)
    check = gpu_check.Check(args=args, device="cpu", dtype=torch.bfloat16)
    gpu_check.run_sections(check, ["moe", "env"])
    assert check.results["moe"]["verdict"] == "ERROR"
    assert check.results["moe"]["summary"] == "RuntimeError: no kernel image is available for execution on the device"
    assert check.results["env"]["verdict"] == "measured"
    args.budget_s = -1.0  # spent before the first section: everything is reported as skipped, nothing runs
    spent = gpu_check.Check(args=args, device="cpu", dtype=torch.bfloat16)
    gpu_check.run_sections(spent, ["moe", "train"])
    assert {row["verdict"] for row in spent.results.values()} == {"SKIP"}


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_asking_for_cuda_without_one_is_a_one_line_error():
    done = bare_python("benchmarks/gpu_check.py")
    assert done.returncode == 2
    assert done.stderr.strip().count("\n") == 0 and "torch sees no CUDA device" in done.stderr
    done = bare_python("benchmarks/gpu_check.py", "--device", "cpu")
    assert done.returncode == 2 and "use --scale tiny" in done.stderr
