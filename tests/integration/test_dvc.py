"""`dvc repro` of the smoke pipeline in a clean copy of the repository, a no-op second repro, and a
`dvc exp run -S` parameter change that reruns only the stages reading that parameter."""

from __future__ import annotations

import json
import subprocess

import pytest
from platform_helpers import FAST_SMOKE, copy_repository, git_commit, venv_env

from dmax_core.config import load_config

pytestmark = [pytest.mark.integration, pytest.mark.timeout(1200)]


def dvc(checkout, *args: str, timeout: float = 900.0) -> subprocess.CompletedProcess:
    done = subprocess.run(["dvc", *args], cwd=checkout, env=venv_env(), capture_output=True, text=True, timeout=timeout)
    assert done.returncode == 0, f"dvc {' '.join(args)} failed:\n{done.stdout}\n{done.stderr}"
    return done


@pytest.fixture(scope="module")
def checkout(tmp_path_factory):
    """A committed copy of the repo whose params.yaml is the (fast) smoke preset."""
    root = tmp_path_factory.mktemp("dvc") / "dmax"
    copy_repository(root)
    smoke = load_config("smoke", ["run_dir=runs/dvc", *FAST_SMOKE])
    (root / "params.yaml").write_text(smoke.to_yaml())
    git_commit(root, "smoke params")
    return root


def test_dvc_repro_reproduces_and_second_repro_is_a_no_op(checkout):
    first = dvc(checkout, "repro")
    for stage in ("pretrain", "distill", "train", "evaluate", "report"):
        assert f"Running stage '{stage}'" in first.stdout, first.stdout
    run_dir = checkout / "runs" / "dvc"
    for output in ("base/model.safetensors", "base/config.json", "base/tokenizer.json",
                   "trajectories/trajectories.parquet", "trajectories/manifest.json", "dmax/model.safetensors",
                   "eval/metrics.json", "eval/samples.jsonl", "report/report.md", "report/tradeoff.png",
                   "report/tradeoff.json"):  # fmt: skip
        assert (run_dir / output).is_file(), output
    metrics = json.loads((run_dir / "eval" / "metrics.json").read_text())
    assert {(c["model"], c["decoder"]) for c in metrics["cells"] if c["split"] == "test"} == {
        ("base", "threshold"), ("base", "spd"), ("dmax", "threshold"), ("dmax", "spd")
    }  # fmt: skip

    shown = json.loads(dvc(checkout, "metrics", "show", "--json").stdout)
    assert "runs/dvc/eval/metrics.json" in json.dumps(shown)
    plots = json.loads(dvc(checkout, "plots", "show", "--json").stdout)
    assert "runs/dvc/report/tradeoff.json" in plots["data"]

    second = dvc(checkout, "repro")
    assert "Running stage" not in second.stdout, second.stdout
    assert "up to date" in dvc(checkout, "status").stdout


def test_dvc_exp_run_set_param_reruns_only_dependent_stages(checkout):
    if not (checkout / "dvc.lock").is_file():
        dvc(checkout, "repro")
    git_commit(checkout, "dvc.lock of the first repro")

    done = dvc(checkout, "exp", "run", "-S", "evaluate.samples_to_keep=1", "-n", "fewer-samples")
    assert "Running stage 'evaluate'" in done.stdout and "Running stage 'report'" in done.stdout
    for stage in ("pretrain", "distill", "train"):
        assert f"Running stage '{stage}'" not in done.stdout, done.stdout
    experiments = dvc(checkout, "exp", "show", "--json").stdout
    assert "fewer-samples" in experiments and "samples_to_keep" in experiments
