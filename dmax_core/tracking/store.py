"""Where MLflow records go: the tracking URI, the client, the experiment.

`MLFLOW_TRACKING_URI` if set (a server, checked before use; or a PostgreSQL database), else `sqlite:///<project>/mlruns.db`
with artifacts in `<project>/mlartifacts/`. Experiment `dmax` unless `DMAX_MLFLOW_EXPERIMENT` says
otherwise, marked as a model-training experiment (`EXPERIMENT_KIND_TAG`).
"""

from __future__ import annotations

import os
import re
from pathlib import Path

from mlflow import MlflowClient
from mlflow.exceptions import MlflowException

from dmax_core.env import project_dir
from dmax_core.preflight import check_mlflow

EXPERIMENT_VARIABLE = "DMAX_MLFLOW_EXPERIMENT"
DEFAULT_EXPERIMENT = "dmax"
# The experiment tag MLflow 3's UI reads and its experiment-kind selector writes: "custom_model_development"
# is the kind shown as "Model training" (runs table), not "GenAI apps & agents" (traces, overview).
EXPERIMENT_KIND_TAG = "mlflow.experimentKind"
MODEL_TRAINING_KIND = "custom_model_development"


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
    """A client for `uri` (default `tracking_uri()`). A server URI is checked first (`preflight`): a server
    that is down or refuses the credentials is a one-line `ServerError` now, not minutes of retries and
    a traceback after the stage has started."""
    uri = uri or tracking_uri()
    check_mlflow(uri)
    return MlflowClient(tracking_uri=uri, registry_uri=uri)


def experiment_id(client: MlflowClient, name: str | None = None) -> str:
    """Get or create the experiment, marked as model training (creation races with another process are
    tolerated). An experiment made before dmax set the kind gets it now; a kind someone chose in the UI
    is left alone."""
    name = name or os.environ.get(EXPERIMENT_VARIABLE, DEFAULT_EXPERIMENT)
    found = client.get_experiment_by_name(name)
    if found is None:
        try:
            return client.create_experiment(name, artifact_location=default_artifact_location(client.tracking_uri),
                                            tags={EXPERIMENT_KIND_TAG: MODEL_TRAINING_KIND})
        except MlflowException:
            found = client.get_experiment_by_name(name)
            if found is None:
                raise
    if EXPERIMENT_KIND_TAG not in found.tags:
        client.set_experiment_tag(found.experiment_id, EXPERIMENT_KIND_TAG, MODEL_TRAINING_KIND)
    return found.experiment_id


def safe_name(text: str) -> str:
    """`text` with anything but word characters, `.` and `-` replaced, for registry names."""
    return re.sub(r"[^\w.\-]", "_", text) or "custom"
