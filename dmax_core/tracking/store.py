"""Where MLflow records go: the tracking URI, the client, the experiment.

`MLFLOW_TRACKING_URI` if set (a server, or a PostgreSQL database), else `sqlite:///<project>/mlruns.db`
with artifacts in `<project>/mlartifacts/`. Experiment `dmax` unless `DMAX_MLFLOW_EXPERIMENT` says
otherwise.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

from mlflow import MlflowClient
from mlflow.exceptions import MlflowException

from dmax_core.env import project_dir

EXPERIMENT_VARIABLE = "DMAX_MLFLOW_EXPERIMENT"
DEFAULT_EXPERIMENT = "dmax"


def tracking_uri() -> str:
    """`MLFLOW_TRACKING_URI` if the user set one, else the project's sqlite store."""
    explicit = os.environ.get("MLFLOW_TRACKING_URI")
    if explicit:
        return explicit
    return f"sqlite:///{project_dir() / 'mlruns.db'}"


def default_artifact_location(uri: str) -> str | None:
    """Artifacts beside a local sqlite store; a server (http) or other database decides its own."""
    if uri.startswith("sqlite:///"):
        database = Path(uri.removeprefix("sqlite:///"))
        return (database.parent / "mlartifacts").resolve().as_uri()
    return None


def tracking_client(uri: str | None = None) -> MlflowClient:
    uri = uri or tracking_uri()
    return MlflowClient(tracking_uri=uri, registry_uri=uri)


def experiment_id(client: MlflowClient, name: str | None = None) -> str:
    """Get or create the experiment (creation races with another process are tolerated)."""
    name = name or os.environ.get(EXPERIMENT_VARIABLE, DEFAULT_EXPERIMENT)
    found = client.get_experiment_by_name(name)
    if found is not None:
        return found.experiment_id
    try:
        return client.create_experiment(name, artifact_location=default_artifact_location(client.tracking_uri))
    except MlflowException:
        found = client.get_experiment_by_name(name)
        if found is None:
            raise
        return found.experiment_id


def safe_name(text: str) -> str:
    """`text` with anything but word characters, `.` and `-` replaced, for registry names."""
    return re.sub(r"[^\w.\-]", "_", text) or "custom"
