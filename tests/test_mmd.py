"""DMax-MMD post-training (`objectives/mmd.py`, after yandex-research/dlm-mmd `src/mmd.py`).

The reward is held to a double loop over samples and tokens written from its definition (not from the
vectorised code), the leave-one-group-out baseline and the surrogate to hand-worked numbers, and its
gradient to the direction REINFORCE promises (a better sample's log-probability goes up). The objective
runs on the smoke preset as a second `train` run from `dmax/` to `mmd/`, logs its terms and statistics to
MLflow at every step, resumes bit-exactly from a checkpoint (and, slow, after SIGKILL), shows its knobs in
`dmax config` and refuses bad ones by name; under FSDP (slow) it trains like one process.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from dmax_core import cli
from dmax_core.config import load_config
from dmax_core.errors import ConfigError, DataError
from dmax_core.objectives import OBJECTIVES, build_objective
from dmax_core.objectives.mmd import block_mmd_rewards, leave_one_group_out, score_surrogate
from dmax_core.stages.layout import RunLayout
from dmax_core.stages.runner import run_stage
from dmax_core.tracking import tracking_client
from dmax_core.tracking.registry import registered_model_name

REPO = Path(__file__).resolve().parent.parent
# The smoke model's features are ~0.03 in size (a few steps of training), so the paper's sigma = 10 on the
# mean squared distance makes every kernel 1 - 1e-6: a bandwidth of their scale gives a reward that moves.
SMOKE_MMD = ["train.objective.name=mmd", "train.objective.bandwidth=0.02", "train.objective.group_size=4",
             "train.log_every=1"]


# ------------------------------------------------------------------------------ the reward by hand
def _kernel(x: torch.Tensor, y: torch.Tensor, sigma: float) -> float:
    return math.exp(-float((x.double() - y.double()).pow(2).mean()) / (2 * sigma**2))


def _slow_rewards(reference, generated, selected, block, sigma):
    """2 k(samples, reference) - k(samples, samples) and k(reference, reference), one block at a time, in loops."""
    batch, groups, samples, length, _ = generated.shape
    blocks = -(-length // block)
    rewards = torch.zeros(batch, blocks, groups, dtype=torch.float64)
    reference_term = torch.zeros_like(rewards)
    for b in range(batch):
        for k in range(blocks):
            tokens = [i for i in range(k * block, min((k + 1) * block, length)) if selected[b, i]]
            if not tokens:
                continue
            n = len(tokens)
            rr = sum(_kernel(reference[b, i], reference[b, j], sigma) for i in tokens for j in tokens) / n**2
            for g in range(groups):
                to_reference = sum(_kernel(generated[b, g, s, i], reference[b, j], sigma)
                                   for s in range(samples) for i in tokens for j in tokens) / (samples * n**2)
                among = 0.0
                if samples > 1:
                    among = sum(_kernel(generated[b, g, s, i], generated[b, g, t, j], sigma)
                                for s in range(samples) for t in range(samples) if s != t
                                for i in tokens for j in tokens) / (samples * (samples - 1) * n**2)
                rewards[b, k, g] = 2 * to_reference - among
                reference_term[b, k, g] = rr
    return rewards, reference_term


@pytest.mark.parametrize("samples", [1, 3])
def test_block_rewards_equal_a_double_loop_over_samples_and_tokens(samples):
    g = torch.Generator().manual_seed(0)
    batch, groups, length, width, block = 2, 3, 10, 5, 4  # 3 blocks, the last one partial
    reference = torch.randn(batch, length, width, generator=g)
    generated = reference[:, None, None] + 0.7 * torch.randn(batch, groups, samples, length, width, generator=g)
    selected = torch.rand(batch, length, generator=g) < 0.6
    selected[0, 4:8] = False  # a block with nothing selected: reward 0
    rewards, reference_term = block_mmd_rewards(reference, generated, selected, block, 1.5)
    slow, slow_reference = _slow_rewards(reference, generated, selected, block, 1.5)
    assert rewards.shape == (batch, 3, groups)
    torch.testing.assert_close(rewards.double(), slow, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(reference_term.double(), slow_reference, atol=1e-5, rtol=1e-5)
    assert (rewards[0, 1] == 0).all()


def test_samples_equal_to_the_reference_have_mmd_zero():
    """Every sample is the reference: k(s, r) = k(s, s') = k(r, r), so the reward is k(r, r) and the MMD^2 0;
    with one feature vector at every position every kernel is 1, and the reward 2 x 1 - 1 = 1."""
    reference = torch.randn(1, 4, 3)
    generated = reference[:, None, None].expand(1, 2, 2, 4, 3)
    everything = torch.ones(1, 4, dtype=torch.bool)
    rewards, reference_term = block_mmd_rewards(reference, generated, everything, 4, 1.0)
    torch.testing.assert_close(reference_term - rewards, torch.zeros(1, 1, 2))
    assert float(reference_term.max()) < 0.99  # the positions' features differ: not the trivial case
    constant = torch.randn(1, 1, 3).expand(1, 4, 3)
    rewards, _ = block_mmd_rewards(constant, constant[:, None, None].expand(1, 2, 2, 4, 3), everything, 4, 1.0)
    torch.testing.assert_close(rewards, torch.ones(1, 1, 2))


def test_leave_one_group_out_baseline_by_hand():
    rewards = torch.tensor([[1.0, 2.0, 3.0, 6.0]])
    # each group's baseline: the mean of the three others
    torch.testing.assert_close(leave_one_group_out(rewards), torch.tensor([[11 / 3, 10 / 3, 3.0, 2.0]]))
    assert leave_one_group_out(torch.tensor([[5.0]])).item() == 0.0  # one group: no baseline


def test_surrogate_by_hand():
    """One row, 2 blocks of 2, G = 2, B = 2; position 3 unselected, so block 1 scores position 2 only."""
    log_probs = torch.tensor([[[[-1.0, -2.0, -0.5, -9.0], [-1.5, -0.5, -1.0, -9.0]],
                               [[-2.0, -1.0, -0.25, -9.0], [-0.5, -0.5, -2.0, -9.0]]]])
    selected = torch.tensor([[True, True, True, False]])
    advantages = torch.tensor([[[1.0, -1.0], [0.5, 2.0]]])  # [b, block, group]
    # scores (summed over the B samples and the block's selected positions):
    # block 0: group 0 = -3 - 2 = -5, group 1 = -3 - 1 = -4; block 1: group 0 = -0.5 - 1 = -1.5, group 1 = -2.25
    # -(mean over groups of advantage x score), summed over blocks, / 2 active blocks:
    expected = -(((1.0 * -5) + (-1.0 * -4)) / 2 + ((0.5 * -1.5) + (2.0 * -2.25)) / 2) / 2
    assert score_surrogate(log_probs, selected, advantages, 2).item() == pytest.approx(expected)


def test_one_step_on_the_surrogate_raises_the_better_samples_log_prob():
    """A toy policy over 5 tokens at 2 positions; group 0's sample earns more, so after one SGD step on the
    surrogate its log-probability rises and group 1's falls."""
    logits = torch.zeros(2, 5, requires_grad=True)
    tokens = torch.tensor([[1, 3], [4, 0]])  # group -> its token at each position (B = 1)
    rewards = torch.tensor([[[1.0, 0.2]]])  # [b, block, group]: group 0 is better
    selected = torch.ones(1, 2, dtype=torch.bool)

    def log_prob_of(group: int) -> float:
        return float(logits.detach().log_softmax(-1).gather(-1, tokens[group][:, None]).sum())

    before = [log_prob_of(0), log_prob_of(1)]
    taken = logits.log_softmax(-1)[torch.arange(2)[None], tokens][None, :, None]  # [b, G, B, L]
    loss = score_surrogate(taken, selected, rewards - leave_one_group_out(rewards), 2)
    loss.backward()
    with torch.no_grad():
        logits -= 0.5 * logits.grad
    assert log_prob_of(0) > before[0] and log_prob_of(1) < before[1]


# ------------------------------------------------------------------------------ knobs
def test_knobs_are_listed_and_bad_ones_refused_by_name(capsys):
    knobs = OBJECTIVES.knobs("mmd")
    assert knobs == {"group_size": 8, "samples_per_group": 2, "bandwidth": 10.0, "feature_layer": None,
                     "temperature": 1.0}  # dlm-mmd's src/configs/base.yaml; feature_layer None = the middle one
    assert OBJECTIVES.get("mmd").checkpoint == "mmd" and OBJECTIVES.get("mmd").starts_from == "dmax"
    for knob, value in [("group_size", 0), ("samples_per_group", 1.5), ("bandwidth", -1.0), ("temperature", 0),
                        ("feature_layer", -1)]:
        with pytest.raises(ValueError, match=knob):
            build_objective("mmd", {knob: value})
    with pytest.raises(ValueError, match=r"no knob.*sigma"):
        build_objective("mmd", {"sigma": 1.0})
    with pytest.raises(SystemExit) as done:
        cli.main(["config", "--preset", "smoke", "train.objective.name=mmd"])
    assert done.value.code == 0
    out = capsys.readouterr().out
    for line in ("name: mmd", "group_size: 8", "samples_per_group: 2", "bandwidth: 10.0", "feature_layer: null",
                 "temperature: 1.0"):
        assert line in out
    with pytest.raises(SystemExit) as done:
        cli.main(["config", "--preset", "smoke", "train.objective.name=mmd", "train.objective.bandwidth=0"])
    assert done.value.code != 0 and "bandwidth" in capsys.readouterr().err


# ------------------------------------------------------------------------------ on the smoke preset
@pytest.fixture(scope="module")
def smoke_dmax(tmp_path_factory) -> Path:
    """base/, trajectories/ and dmax/ (OPUT) of the smoke preset, made by the real stages."""
    root = tmp_path_factory.mktemp("mmd") / "run"
    cfg = load_config("smoke", [f"run_dir={root}"])
    for stage in ("pretrain", "distill", "train"):
        run_stage(stage, cfg)
    return root


def _copy(source: Path, run_dir: Path) -> Path:
    for name in ("base", "trajectories", "dmax"):
        shutil.copytree(source / name, run_dir / name)
    return run_dir


def test_mmd_needs_the_dmax_checkpoint(tmp_path):
    cfg = load_config("smoke", [f"run_dir={tmp_path}", *SMOKE_MMD])
    assert RunLayout.starting_model("mmd") == "dmax" and RunLayout.starting_model("oput") == "base"
    with pytest.raises(DataError, match=r"starts from the dmax model.*dmax train train.objective=oput"):
        run_stage("train", cfg)


def test_a_too_deep_feature_layer_is_refused_naming_the_knob(smoke_dmax, tmp_path):
    cfg = load_config("smoke", [f"run_dir={_copy(smoke_dmax, tmp_path / 'run')}", *SMOKE_MMD,
                                "train.objective.feature_layer=2"])
    with pytest.raises(ConfigError, match=r"train\.objective\.feature_layer=2 is not a layer of this 2-layer"):
        run_stage("train", cfg)


def test_tracked_mmd_training_logs_its_terms_per_step_and_registers_mmd(smoke_dmax, tmp_path, monkeypatch, capsys):
    """`dmax train train.objective.name=mmd --track` on the smoke run: dmax/ in, mmd/ out, every step's `pg`
    term and reward statistics in MLflow, the checkpoint registered in the `mmd` family."""
    run = _copy(smoke_dmax, tmp_path / "run")
    store = f"sqlite:///{tmp_path / 'mlruns.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", store)
    dmax_before = load_file(str(run / "dmax" / "model.safetensors"))
    with pytest.raises(SystemExit) as done:
        cli.main(["train", "--preset", "smoke", f"run_dir={run}", "preset=mmd-smoke", *SMOKE_MMD, "--track"])
    assert done.value.code == 0, capsys.readouterr().err
    assert f"train: mmd -> {run / 'mmd'}" in capsys.readouterr().out
    record = json.loads((run / "mmd" / "dmax_bundle.json").read_text())
    assert record["objective"] == "mmd" and record["starts_from"] == "dmax" and record["steps"] == 6
    assert math.isfinite(record["final_loss"])
    after = load_file(str(run / "mmd" / "model.safetensors"))
    assert any(not after[name].equal(dmax_before[name]) for name in after)  # it trained
    assert all(load_file(str(run / "dmax" / "model.safetensors"))[n].equal(t) for n, t in dmax_before.items())

    client = tracking_client(store)
    version = client.get_model_version_by_alias(registered_model_name("mmd-smoke", "mmd"), "candidate")
    assert version.source.endswith("/mmd")
    for metric in ("train/loss", "train/loss/pg", "train/mmd/reward", "train/mmd/mmd2", "train/mmd/baseline",
                   "train/mmd/advantage_abs", "train/mmd/selected_tokens", "train/grad_norm"):
        history = client.get_metric_history(version.run_id, metric)
        assert [m.step for m in history] == [1, 2, 3, 4, 5, 6], metric
        assert all(math.isfinite(m.value) for m in history), metric
    loss = client.get_metric_history(version.run_id, "train/loss")
    pg = client.get_metric_history(version.run_id, "train/loss/pg")
    assert [m.value for m in loss] == pytest.approx([m.value for m in pg])  # the loss is its one term
    assert all(m.value > 0 for m in client.get_metric_history(version.run_id, "train/grad_norm"))
    assert all(0 < m.value <= 1 + 1e-6 for m in client.get_metric_history(version.run_id, "train/mmd/reward"))


def _mmd_weights(run_dir: Path) -> dict:
    return load_file(str(run_dir / "mmd" / "model.safetensors"))


def test_a_resumed_mmd_run_ends_with_the_uninterrupted_weights_bit_for_bit(smoke_dmax, tmp_path):
    """A run that lost its last checkpoint resumes from step 3 and ends where the straight run ends, exactly:
    the frozen features come from dmax/ (not the resumed weights) and the draws from (seed, step, row)."""
    straight = _copy(smoke_dmax, tmp_path / "straight")
    run_stage("train", load_config("smoke", [f"run_dir={straight}", *SMOKE_MMD]))
    resumed = _copy(smoke_dmax, tmp_path / "resumed")
    cfg = load_config("smoke", [f"run_dir={resumed}", *SMOKE_MMD, "train.checkpoint_every=3"])
    run_stage("train", cfg)
    checkpoints = resumed / "checkpoints" / "train-mmd"
    shutil.rmtree(checkpoints / "step-0000006")
    shutil.rmtree(resumed / "mmd")
    run_stage("train", cfg)
    assert json.loads((resumed / "mmd" / "dmax_bundle.json").read_text())["resumed_from"] == 3
    a, b = _mmd_weights(straight), _mmd_weights(resumed)
    assert set(a) == set(b) and all(a[name].equal(b[name]) for name in a)


@pytest.mark.slow
def test_a_killed_mmd_run_resumes_to_the_same_weights(smoke_dmax, tmp_path):
    """`dmax train train.objective.name=mmd` killed with SIGKILL right after its first checkpoint and started
    again ends with the weights of an uninterrupted run, bit for bit (the OPUT version: test_distributed.py)."""
    steps = [*SMOKE_MMD, "train.steps=200", "train.checkpoint_every=20", "train.log_every=50"]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}

    def start(run_dir: Path) -> subprocess.Popen:
        return subprocess.Popen([sys.executable, "-m", "dmax_core", "train", "--preset", "smoke",
                                 f"run_dir={run_dir}", *steps], cwd=REPO, env=env, stdout=subprocess.PIPE,
                                stderr=subprocess.STDOUT, text=True, start_new_session=True)

    def finish(proc: subprocess.Popen) -> None:
        out, _ = proc.communicate(timeout=600)
        assert proc.returncode == 0, out[-3000:]

    whole = _copy(smoke_dmax, tmp_path / "whole")
    finish(start(whole))
    killed = _copy(smoke_dmax, tmp_path / "killed")
    proc = start(killed)
    checkpoints = killed / "checkpoints" / "train-mmd"
    deadline = time.monotonic() + 300
    while not list(checkpoints.glob("step-*")):
        assert proc.poll() is None, "the run ended before it could be killed"
        assert time.monotonic() < deadline, "no checkpoint within 300 s"
        time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait(timeout=60)
    assert not (killed / "mmd").exists()
    first = min(int(p.name.removeprefix("step-")) for p in checkpoints.glob("step-*"))
    assert first < 200
    finish(start(killed))
    record = json.loads((killed / "mmd" / "dmax_bundle.json").read_text())
    assert record["steps"] == 200 and record["resumed_from"] >= first  # resumed, not restarted
    a, b = _mmd_weights(whole), _mmd_weights(killed)
    assert set(a) == set(b) and all(a[name].equal(b[name]) for name in a)


@pytest.mark.slow
def test_fsdp_on_two_processes_trains_like_one(smoke_dmax, tmp_path):
    """Under `train.fsdp=true` with 2 processes (gloo on CPU) the feature model is sharded like the trained one
    (`Objective.shard`) and the draws are per global row, so the weights are a 1-process run's to float
    rounding (measured 9e-8; training moves them by 1e-3)."""
    env = {**os.environ, "ACCELERATE_USE_CPU": "true", "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    runs = {}
    for name, launch in [("one", [sys.executable]),
                         ("two", [sys.executable, "-m", "accelerate.commands.launch", "--config_file",
                                  str(REPO / "accelerate" / "cpu-2proc.yaml"), "--num_processes", "2",
                                  "--main_process_port", "29617"])]:
        run = _copy(smoke_dmax, tmp_path / name)
        extra = ["train.fsdp=true"] if name == "two" else []
        done = subprocess.run([*launch, "-m", "dmax_core", "train", "--preset", "smoke", f"run_dir={run}",
                               *SMOKE_MMD, *extra], cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
        assert done.returncode == 0, (done.stdout + done.stderr)[-3000:]
        runs[name] = _mmd_weights(run)
    one, two = runs["one"], runs["two"]
    assert max(float((one[k].double() - two[k].double()).abs().max()) for k in one) <= 1e-6
