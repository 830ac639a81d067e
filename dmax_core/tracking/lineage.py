"""What a stage run read and produced, in MLflow's own terms, so the runs table fills its Dataset and
Models columns: the trajectory dataset as a dataset input, each checkpoint as a logged model.

Nothing is loaded or copied: a dataset is recorded by name, digest and where it lies (`MetaDataset`, a
local source), and a logged model is a record pointing at the checkpoint the run already holds as an
artifact (`runs:/<run_id>/<output>`), so the weights are stored once.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path

from mlflow import MlflowClient
from mlflow.data.meta_dataset import MetaDataset
from mlflow.data.sources import LocalArtifactDatasetSource
from mlflow.entities import DatasetInput, InputTag, LoggedModelOutput, LoggedModelStatus

from dmax_core.env import project_dir
from dmax_core.results import DatasetUse
from dmax_core.tracking.registry import DIGEST_TAG
from dmax_core.tracking.store import safe_name

# mlflow/utils/validation.py: a dataset digest is at most 36 characters; dmax's are SHA-256 (64 hex), so
# MLflow gets the prefix and the full digest rides along as the input tag DATASET_DIGEST_TAG.
MAX_DATASET_DIGEST_LENGTH = 36
DATASET_CONTEXT_TAG = "mlflow.data.context"
DATASET_DIGEST_TAG = "dmax.dataset_digest"
CHECKPOINT_MODEL_TYPE = "dmax-checkpoint"
CHECKPOINT_URI_TAG = "dmax.checkpoint_uri"


def dataset_source(path: Path) -> str:
    """Where a dataset lies, as DVC names it: relative to the project when inside it (`runs/dvc/...`), else
    the absolute path."""
    path = Path(path).resolve()
    try:
        return path.relative_to(project_dir()).as_posix()
    except ValueError:
        return path.as_posix()


def dataset_input(dataset: DatasetUse) -> DatasetInput:
    """One `DatasetUse` as MLflow's dataset input entity (a metadata-only dataset: nothing is read)."""
    meta = MetaDataset(LocalArtifactDatasetSource(dataset_source(dataset.path)), name=dataset.name,
                       digest=dataset.digest[:MAX_DATASET_DIGEST_LENGTH])
    return DatasetInput(meta._to_mlflow_entity(), tags=[InputTag(DATASET_CONTEXT_TAG, dataset.context),
                                                        InputTag(DATASET_DIGEST_TAG, dataset.digest)])


def log_datasets(client: MlflowClient, run_ids: Iterable[str | None], datasets: Sequence[DatasetUse]) -> None:
    """Log `datasets` as inputs of each run (MLflow keeps one entry per dataset and run: a pipeline's parent
    run lists the trajectories once, with the context of the stage that logged them first)."""
    if not datasets:
        return
    inputs = [dataset_input(d) for d in datasets]
    for run_id in run_ids:
        if run_id:
            client.log_inputs(run_id, datasets=inputs)


def checkpoint_model_name(preset: str, output: str) -> str:
    """The logged model's name, `<preset>-<output>` (`tiny-dmax`): never the bare output name, because
    MLflow resolves `runs:/<run_id>/<name>` through a logged model of that run with that name too, and that
    lookup fails outright when the caller's tracking URI is not the global one (`list_artifacts` with a
    `tracking_uri`)."""
    return f"{safe_name(preset)}-{output}"


def log_checkpoints(client: MlflowClient, run_id: str, checkpoints: Mapping[str, str], *, preset: str,
                    tags: Mapping[str, str], mirror_run_id: str | None = None) -> dict[str, str]:
    """One READY logged model per checkpoint (output name -> weights digest), linked to the run (and its
    pipeline's parent run) as an output; returns output name -> model id."""
    if not checkpoints:
        return {}
    experiment = client.get_run(run_id).info.experiment_id
    models: dict[str, str] = {}
    for output, digest in checkpoints.items():
        model = client.create_logged_model(
            experiment, name=checkpoint_model_name(preset, output), source_run_id=run_id,
            model_type=CHECKPOINT_MODEL_TYPE,
            tags={**tags, CHECKPOINT_URI_TAG: f"runs:/{run_id}/{output}", DIGEST_TAG: digest},
        )
        client.finalize_logged_model(model.model_id, LoggedModelStatus.READY)
        models[output] = model.model_id
    outputs = [LoggedModelOutput(model_id, step=0) for model_id in models.values()]
    for target in (run_id, mirror_run_id):
        if target:
            client.log_outputs(target, outputs)
    return models
