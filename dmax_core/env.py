"""Process-wide switches the package sets before Prefect, MLflow, DVC or the HF libraries are imported.

dmax runs offline by default and phones home to nobody: every telemetry channel of the tools it uses
is switched off, the Hugging Face libraries never try the hub, and Prefect keeps its state (database,
profiles, logs) inside the project instead of `~/.prefect`. Values are only *defaults*
(`os.environ.setdefault`): anything the user exported wins, so pointing `PREFECT_HOME`,
`HF_HUB_OFFLINE` or `MLFLOW_TRACKING_URI` elsewhere keeps working.

This module must stay import-light (stdlib only) because `dmax_core/__init__.py` calls it first.
It must not import prefect, mlflow or torch, and it does not create directories.
"""

from __future__ import annotations

import os
import platform
import subprocess
from importlib import metadata
from pathlib import Path
from typing import Any

PROJECT_DIR_VARIABLE = "DMAX_PROJECT_DIR"
# The name this project is published under (the `dmax` name on the public index belongs to another
# project); the command stays `dmax` and the import name `dmax_core`.
DISTRIBUTION = "dmax-platform"


def project_dir() -> Path:
    """The directory that holds the project's state (.prefect/, mlruns.db, mlartifacts/, runs/).

    `DMAX_PROJECT_DIR` if set; else the checkout this package was imported from (editable install or
    `python -m` from the repository); else the current directory (a wheel install used from a
    project folder).
    """
    explicit = os.environ.get(PROJECT_DIR_VARIABLE)
    if explicit:
        return Path(explicit).expanduser().resolve()
    checkout = Path(__file__).resolve().parent.parent
    if (checkout / "pyproject.toml").is_file() and (checkout / "dmax_core").is_dir():
        return checkout
    return Path.cwd().resolve()


def environment_defaults(project: Path) -> dict[str, str]:
    """The variables `configure_environment` sets when they are not already set (see toolchain.md)."""
    return {
        # Telemetry off. MLflow accepts only the literal string "true" for DO_NOT_TRACK.
        "DO_NOT_TRACK": "true",
        "MLFLOW_DISABLE_TELEMETRY": "true",
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "HF_HUB_DISABLE_TELEMETRY": "1",
        "DVC_NO_ANALYTICS": "1",
        # Offline: nothing downloads at run time unless the user points at a hub id and unsets these.
        "HF_HUB_OFFLINE": "1",
        "HF_DATASETS_OFFLINE": "1",
        "TRANSFORMERS_OFFLINE": "1",
        # Prefect state inside the project; the default 20 s ephemeral-server start is too tight on 2 cores.
        "PREFECT_HOME": str(project / ".prefect"),
        "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS": "120",
        # A local MLflow server must not spawn its job-execution workers (slow boot, nothing uses them).
        "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false",
    }


def device_name() -> str:
    """The device the stages run on: CUDA device name(s), else the CPU model and core count.

    One implementation for metrics.json settings and MLflow tags; torch is imported lazily so this
    module stays import-light.
    """
    import torch

    if torch.cuda.is_available():
        return f"cuda: {torch.cuda.get_device_name(0)} x{torch.cuda.device_count()}"
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"cpu: {cpu} ({os.cpu_count()} cores)"


def package_version(name: str) -> str:
    """Installed version of a distribution, or `not installed`."""
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return "not installed"


def git_state(directory: Path | None = None) -> dict[str, str]:
    """Commit and dirtiness of the checkout (`unknown` outside git or before the first commit)."""
    directory = directory or project_dir()

    def git(*args: str) -> str | None:
        try:
            done = subprocess.run(["git", *args], cwd=directory, capture_output=True, text=True, timeout=10,
                                  check=True)
        except (OSError, subprocess.SubprocessError):
            return None
        return done.stdout.strip()

    commit = git("rev-parse", "HEAD")
    if not commit:
        return {"commit": "unknown", "dirty": "unknown"}
    dirty = git("status", "--porcelain", "--untracked-files=no")
    return {"commit": commit, "dirty": "unknown" if dirty is None else str(bool(dirty)).lower()}


def environment_info() -> dict[str, Any]:
    """The one fingerprint of where a run happened: versions, device, threads, host and git state.

    Written into metrics.json settings and, as `dmax.*` tags, onto every MLflow run, so a number can
    always be traced to the code and machine that produced it."""
    import torch

    git = git_state()
    return {
        "dmax": package_version(DISTRIBUTION),
        "torch": torch.__version__,
        "transformers": package_version("transformers"),
        "python": platform.python_version(),
        "device": device_name(),
        "threads": torch.get_num_threads(),
        "host": platform.node(),
        "git_commit": git["commit"],
        "git_dirty": git["dirty"],
    }


def configure_environment(project: str | Path | None = None) -> dict[str, str]:
    """Set the offline/telemetry/state defaults in `os.environ`; return the ones actually set here."""
    root = Path(project).resolve() if project is not None else project_dir()
    applied: dict[str, str] = {}
    for name, value in environment_defaults(root).items():
        if name not in os.environ:
            os.environ[name] = value
            applied[name] = value
    return applied
