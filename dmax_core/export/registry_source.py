"""A registered MLflow model version as an export source: `models:/<name>/<version>` or `models:/<name>@<alias>`.

dmax registers a version per tracked `train` (`tracking.registry`): its source is the run's artifact of the
checkpoint (`runs:/<train run>/<output>`), its tags carry the weights digest (`DIGEST_TAG`). The checkpoint
is downloaded with MLflow's artifact API and checked against that digest; the records are the
`eval/metrics.json` artifact of an `evaluate` run that measured it: one of the same pipeline (the train
run's parent; a run tagged with this version first, then the newest), else one tagged with this version
and preset (a standalone `dmax evaluate --track` that found it by digest). Nothing is written to the store.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

import mlflow.artifacts
from mlflow import MlflowClient
from mlflow.entities import Run
from mlflow.exceptions import MlflowException

from dmax_core.errors import DataError
from dmax_core.files import checksums_digest
from dmax_core.stages.layout import METRICS
from dmax_core.tracking.registry import DIGEST_TAG
from dmax_core.tracking.store import tracking_client

_URI = re.compile(r"models:/(?P<name>[^/@]+)(?:/(?P<version>\d+)|@(?P<alias>[^/@]+))")


@dataclass(frozen=True)
class FetchedVersion:
    """A downloaded, verified version: the checkpoint directory, its model name (the registered output),
    the records file if one was found (and the `runs:/` URI it came from) and what the card says of it."""

    checkpoint: Path
    model: str
    metrics: Path | None
    location: str | None
    origin: dict[str, str] = field(default_factory=dict)


def _first_line(exc: Exception) -> str:
    text = getattr(exc, "message", None) or str(exc)
    return text.strip().splitlines()[0] if text.strip() else type(exc).__name__


def _evaluate_runs(client: MlflowClient, train: Run, version: str, preset: str | None) -> list[Run]:
    """Finished `evaluate` runs that may hold this version's records, the likeliest first (module docstring)."""
    experiment = train.info.experiment_id
    evaluate = "tags.`dmax.stage` = 'evaluate' and attributes.status = 'FINISHED'"
    newest = ["attributes.start_time DESC"]
    found: list[Run] = []
    parent = train.data.tags.get("mlflow.parentRunId")
    if parent:
        siblings = client.search_runs([experiment], f"{evaluate} and tags.`mlflow.parentRunId` = '{parent}'",
                                      order_by=newest)
        found += sorted(siblings, key=lambda run: run.data.tags.get("dmax.model_version") != version)
    if preset:
        found += client.search_runs(
            [experiment], f"{evaluate} and tags.`dmax.model_version` = '{version}' and tags.`dmax.preset` = '{preset}'",
            order_by=newest)
    return list({run.info.run_id: run for run in found}.values())


def fetch_version(uri: str, scratch: Path, client: MlflowClient | None = None) -> FetchedVersion:
    """Download the checkpoint of `uri` into `scratch` (and its run's records, where found); `DataError` for
    a malformed URI, an unknown model, version or alias, a failed download or a digest mismatch."""
    match = _URI.fullmatch(uri)
    if match is None:
        raise DataError(f"{uri} is not a registered model version (expected models:/<name>/<version> or "
                        "models:/<name>@<alias>)")
    client = client or tracking_client()
    name, alias = match["name"], match["alias"]
    try:
        found = (client.get_model_version_by_alias(name, alias) if alias
                 else client.get_model_version(name, match["version"]))
    except MlflowException as exc:
        raise DataError(f"{uri}: not in the model registry at {client.tracking_uri}: {_first_line(exc)}") from exc
    version = str(found.version)
    output = found.source.rstrip("/").rsplit("/", 1)[-1]
    try:
        local = Path(mlflow.artifacts.download_artifacts(
            artifact_uri=found.source, dst_path=str(scratch / "checkpoint"), tracking_uri=client.tracking_uri))
    except (MlflowException, OSError) as exc:
        raise DataError(f"{uri}: cannot download its checkpoint {found.source}: {_first_line(exc)}") from exc
    expected = found.tags.get(DIGEST_TAG)
    if expected and checksums_digest(local) != expected:
        raise DataError(f"{uri}: the downloaded checkpoint's SHA256SUMS digest {checksums_digest(local)} is not the "
                        f"registered {DIGEST_TAG} {expected} (changed after registration?)")
    origin = {"registered model": f"{name} version {version}" + (f" (alias {alias})" if alias else ""),
              "tracking store": client.tracking_uri, "train run": found.run_id or "unknown"}
    metrics = location = None
    if found.run_id:
        train = client.get_run(found.run_id)
        for run in _evaluate_runs(client, train, version, found.tags.get("dmax.preset")):
            try:
                metrics = Path(mlflow.artifacts.download_artifacts(
                    run_id=run.info.run_id, artifact_path=METRICS, dst_path=str(scratch / run.info.run_id),
                    tracking_uri=client.tracking_uri))
            except (MlflowException, OSError):
                continue  # an evaluate run that failed to log its records: try the next
            location = f"runs:/{run.info.run_id}/{METRICS}"
            origin["evaluate run"] = run.info.run_id
            break
    return FetchedVersion(local, output, metrics, location, origin)
