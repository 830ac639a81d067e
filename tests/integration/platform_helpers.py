"""Helpers shared by the integration tests (HTTP JSON, a clean copy of the repository, polling)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]
# The smoke preset with a two-problem evaluation at one threshold: every stage and every cell type
# runs for real, in CI time on 2 cores. The numbers are meaningless; the plumbing is what is tested.
FAST_SMOKE = ["evaluate.thresholds=[0.5]", "evaluate.n_test=2", "evaluate.n_validation=2"]
# Paths a copy of the repository must not take along (state, caches, outputs, the venv).
COPY_IGNORE = shutil.ignore_patterns(
    ".venv", ".git", "runs", "__pycache__", ".prefect", "mlruns.db", "mlruns", "mlartifacts",
    ".pytest_cache", ".ruff_cache", "*.egg-info", "dvc.lock",
)  # fmt: skip


def http_json(url: str, payload: dict[str, Any] | None = None, timeout: float = 30.0) -> Any:
    """GET (or POST `payload` as JSON) and decode the JSON answer."""
    data = None if payload is None else json.dumps(payload).encode()
    request = urllib.request.Request(url, data=data, headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=timeout) as response:
        return json.loads(response.read() or b"null")


def copy_repository(destination: Path) -> Path:
    """A clean copy of the working tree (no outputs, no state), committed in a fresh git repo."""
    shutil.copytree(REPO, destination, ignore=COPY_IGNORE)
    for cache in ("cache", "tmp"):
        shutil.rmtree(destination / ".dvc" / cache, ignore_errors=True)
    # A local identity: CI machines may have no global git config, and DVC commits experiments.
    subprocess.run(["git", "init", "-q"], cwd=destination, check=True)
    for key, value in (("user.name", "dmax-test"), ("user.email", "test@localhost"), ("commit.gpgsign", "false")):
        subprocess.run(["git", "config", key, value], cwd=destination, check=True)
    git_commit(destination, "copy")
    return destination


def git_commit(checkout: Path, message: str) -> None:
    subprocess.run(["git", "add", "-A"], cwd=checkout, check=True)
    subprocess.run(["git", "commit", "-q", "--allow-empty", "-m", message], cwd=checkout, check=True)


def venv_env(**extra: str) -> dict[str, str]:
    """Environment whose `python` is this interpreter (DVC stage commands call `python -m ...`)."""
    env = {k: v for k, v in os.environ.items() if k not in {"DMAX_PROJECT_DIR", "PYTHONPATH"}}
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    env.update(extra)
    return env


def wait_for(predicate, timeout: float, interval: float = 2.0, what: str = "condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise TimeoutError(f"{what} not reached within {timeout:.0f} s")
