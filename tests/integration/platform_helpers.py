"""Helpers shared by the integration tests (HTTP JSON, a clean copy of the repository, polling, Prefect
deployment runs)."""

from __future__ import annotations

import base64
import json
import os
import re
import shutil
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from flows.servers import LocalPlatform

REPO = Path(__file__).resolve().parents[2]
# The smoke preset with a two-problem evaluation at one threshold: every stage and every cell type
# runs for real, in CI time on 2 cores. The numbers are meaningless; the plumbing is what is tested.
FAST_SMOKE = ["evaluate.thresholds=[0.5]", "evaluate.n_test=2", "evaluate.n_validation=2"]
# Paths a copy of the repository must not take along (state, caches, outputs, the venv).
COPY_IGNORE = shutil.ignore_patterns(
    ".venv", ".git", "runs", "__pycache__", ".prefect", "mlruns.db", "mlruns", "mlartifacts",
    ".pytest_cache", ".ruff_cache", "*.egg-info", "dvc.lock",
)  # fmt: skip


def http_json(url: str, payload: dict[str, Any] | None = None, timeout: float = 30.0,
              authorization: str | None = None) -> Any:
    """GET (or POST `payload` as JSON) and decode the JSON answer."""
    data = None if payload is None else json.dumps(payload).encode()
    headers = {"Content-Type": "application/json", **({"Authorization": authorization} if authorization else {})}
    request = urllib.request.Request(url, data=data, headers=headers)
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


TERMINAL = {"COMPLETED", "FAILED", "CRASHED", "CANCELLED"}


def prefect_authorization(platform: LocalPlatform) -> str | None:
    """The basic-auth header the platform's Prefect clients send (None without authentication)."""
    auth_string = platform.env().get("PREFECT_API_AUTH_STRING") if platform.auth else None
    return "Basic " + base64.b64encode(auth_string.encode()).decode() if auth_string else None


def run_deployment(platform: LocalPlatform, name: str, preset: str, overrides: list[str], **params: object) -> str:
    """`prefect deployment run NAME --param ...` exactly as a user types it; returns the flow run id."""
    extra = [arg for key, value in params.items() for arg in ("--param", f"{key}={value}")]
    done = platform.prefect(
        "deployment", "run", name, "--param", f"preset={preset}", "--param", f"overrides={json.dumps(overrides)}",
        *extra,
    )
    match = re.search(r"UUID:\s*([0-9a-f-]{36})", done.stdout)
    assert match, f"no flow run id in:\n{done.stdout}\n{done.stderr}"
    return match.group(1)


def wait_flow_run(platform: LocalPlatform, flow_run_id: str, timeout: float = 900.0) -> dict:
    def terminal():
        run = http_json(f"{platform.prefect_api_url}/flow_runs/{flow_run_id}",
                        authorization=prefect_authorization(platform))
        return run if run["state"]["type"] in TERMINAL else None

    return wait_for(terminal, timeout, what=f"flow run {flow_run_id} finished")


def flow_run_logs(platform: LocalPlatform, flow_run_id: str) -> str:
    logs = http_json(
        f"{platform.prefect_api_url}/logs/filter",
        {"logs": {"flow_run_id": {"any_": [flow_run_id]}}, "limit": 200, "sort": "TIMESTAMP_ASC"},
        authorization=prefect_authorization(platform),
    )
    worker = platform.log_file("worker").read_text(errors="replace")[-4000:]
    return "\n".join(entry["message"] for entry in logs) + "\n--- worker log tail ---\n" + worker
