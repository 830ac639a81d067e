"""Training under a distributed launcher on this CPU machine: 2 processes (gloo, through `accelerate launch`),
data-parallel (DDP) or sharded by decoder layer (FSDP2, `train.fsdp=true`), with or without activation
checkpointing and gradient accumulation, give the weights and loss of 1 process with the same global batch;
a 2-process run killed with SIGKILL and restarted ends with the weights of an uninterrupted one; a bf16
mixed-precision FSDP run trains to a finite loss.

Why the first can hold to float rounding: every process draws the whole global batch and its noise from
(seed, step) and takes its own rows (`training.trainer`), the loss is a mean over sequences, and DDP
averages the two halves' gradients (FSDP reduce-scatters them); only the order of the reduction differs.
Tolerance: 1e-6 absolute on every weight after 6 AdamW steps (measured: 7.5e-9 for both).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from safetensors.torch import load_file

from dmax_core.config import load_config
from dmax_core.stages.runner import run_stage

REPO = Path(__file__).resolve().parent.parent
CONFIG = REPO / "accelerate" / "cpu-2proc.yaml"
pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def distilled(tmp_path_factory) -> Path:
    """base/ and trajectories/ of the smoke preset, shared by every run below."""
    root = tmp_path_factory.mktemp("distilled")
    cfg = load_config("smoke", [f"run_dir={root}"])
    run_stage("pretrain", cfg)
    run_stage("distill", cfg)
    return root


def _copy(distilled: Path, run_dir: Path) -> Path:
    for name in ("base", "trajectories"):
        shutil.copytree(distilled / name, run_dir / name)
    return run_dir


def _env() -> dict[str, str]:
    return {**os.environ, "ACCELERATE_USE_CPU": "true", "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}


def _train(run_dir: Path, *overrides: str, processes: int, port: int, wait: bool = True):
    args = ["-m", "dmax_core", "train", "--preset", "smoke", f"run_dir={run_dir}", *overrides]
    if processes == 1:
        command = [sys.executable, *args]
    else:
        command = [sys.executable, "-m", "accelerate.commands.launch", "--config_file", str(CONFIG),
                   "--num_processes", str(processes), "--main_process_port", str(port), *args]
    proc = subprocess.Popen(command, cwd=REPO, env=_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True, start_new_session=True)
    if wait:
        out, _ = proc.communicate(timeout=600)
        assert proc.returncode == 0, out[-3000:]
    return proc


def _weights(run_dir: Path) -> dict:
    return load_file(str(run_dir / "dmax" / "model.safetensors"))


def _max_difference(a: dict, b: dict) -> float:
    assert set(a) == set(b)
    return max(float((a[k].double() - b[k].double()).abs().max()) for k in a)


MODES = {"ddp": [], "fsdp": ["train.fsdp=true"]}
# Activation checkpointing recomputes the same forward and gradient accumulation sums the same per-row
# gradients a micro-batch at a time: the same weights to float rounding.
EQUIVALENT = {**MODES, "ddp+accumulation": ["train.grad_accumulation=2"],
              "fsdp+checkpointing+accumulation": ["train.fsdp=true", "train.activation_checkpointing=true",
                                                  "train.grad_accumulation=2"]}


@pytest.mark.parametrize("mode", EQUIVALENT)
def test_two_processes_train_like_one(distilled, tmp_path, mode):
    one = _copy(distilled, tmp_path / "one")
    two = _copy(distilled, tmp_path / "two")
    _train(one, processes=1, port=0)
    ports = {"ddp": 29541, "fsdp": 29551, "ddp+accumulation": 29571, "fsdp+checkpointing+accumulation": 29581}
    _train(two, *EQUIVALENT[mode], processes=2, port=ports[mode])
    assert _max_difference(_weights(one), _weights(two)) <= 1e-6
    loss = [json.loads((run / "dmax" / "dmax_bundle.json").read_text())["final_loss"] for run in (one, two)]
    assert loss[1] == pytest.approx(loss[0], rel=1e-6)
    # rank 0 alone wrote the checkpoint: one complete bundle, no staging leftovers
    assert not [p for p in two.rglob("*") if p.name.startswith(".")]


@pytest.mark.parametrize("mode", MODES)
def test_a_killed_distributed_run_resumes_to_the_same_weights(distilled, tmp_path, mode):
    steps = ["train.steps=300", "train.checkpoint_every=20", *MODES[mode]]
    port = 29543 if mode == "ddp" else 29553
    whole = _copy(distilled, tmp_path / "whole")
    _train(whole, *steps, processes=2, port=port)
    killed = _copy(distilled, tmp_path / "killed")
    proc = _train(killed, *steps, processes=2, port=port + 2, wait=False)
    checkpoints = killed / "checkpoints" / "train-oput"
    deadline = time.monotonic() + 300
    while not list(checkpoints.glob("step-*")):  # killed right after its first checkpoint
        assert proc.poll() is None, "the run ended before it could be killed"
        assert time.monotonic() < deadline, "no checkpoint within 300 s"
        time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGKILL)  # the launcher and both ranks, mid-run
    proc.wait(timeout=60)
    assert not (killed / "dmax").exists()
    (first,) = [int(p.name.removeprefix("step-")) for p in checkpoints.glob("step-*")]
    assert first < 300
    _train(killed, *steps, processes=2, port=port + 4)
    assert _max_difference(_weights(whole), _weights(killed)) <= 1e-6
    record = json.loads((killed / "dmax" / "dmax_bundle.json").read_text())
    assert record["steps"] == 300 and record["resumed_from"] >= first  # resumed, not restarted


def test_bf16_mixed_precision_fsdp_trains(distilled, tmp_path):
    run = _copy(distilled, tmp_path / "bf16")
    _train(run, "train.fsdp=true", "train.mixed_precision=bf16", processes=2, port=29561)
    weights = _weights(run)
    assert all(t.dtype == next(iter(weights.values())).dtype for t in weights.values())  # fp32 master weights
    loss = json.loads((run / "dmax" / "dmax_bundle.json").read_text())["final_loss"]
    assert loss == loss and loss < 10  # finite (not NaN) and of the order of the fp32 run's 3.06
