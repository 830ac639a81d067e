"""`MetricLogger` on one MLflow run (torchtune's logger interface), through an explicit `MlflowClient`.

Metrics are buffered and sent with `log_batch`, so a training loop logging every step does not pay one
HTTP round trip per step against a server; names are sanitised to what MLflow accepts and long values
clipped to its limits.
"""

from __future__ import annotations

import json
import logging
import re
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from mlflow import MlflowClient
from mlflow.entities import Metric, Param, RunTag

from dmax_core.config import flatten_mapping

log = logging.getLogger(__name__)

# MLflow's batch limits (mlflow/utils/validation.py).
MAX_PARAMS_TAGS_PER_BATCH = 100
MAX_METRICS_PER_BATCH = 1000
MAX_PARAM_LENGTH = 6000
MAX_TAG_LENGTH = 8000
_BAD_NAME_CHARACTERS = re.compile(r"[^/\w.\- :]")


def metric_name(name: str) -> str:
    """MLflow accepts `[/\\w.\\- :]` only; anything else becomes `_`."""
    return _BAD_NAME_CHARACTERS.sub("_", name)


def as_text(value: Any, limit: int) -> str:
    text = value if isinstance(value, str) else json.dumps(value, default=str)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _chunks(items: Sequence[Any], size: int) -> Iterator[Sequence[Any]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


class MlflowLogger:
    """`dmax_core.metric_logger.MetricLogger` on one MLflow run.

    Metrics are buffered and sent with `log_batch` every `flush_every` points or `flush_seconds`.
    Params are immutable in MLflow: re-logging a key with the same value is skipped, a different value
    is logged under `<key>.<n>` with a warning instead of failing the stage.
    """

    def __init__(
        self,
        client: MlflowClient,
        run_id: str,
        *,
        mirror_run_id: str | None = None,
        flush_every: int = 500,
        flush_seconds: float = 5.0,
    ) -> None:
        self.client = client
        self.run_id = run_id
        # Metrics also go to the pipeline's parent run, so runs compare in the UI on one row each.
        self.mirror_run_id = mirror_run_id
        self.flush_every = flush_every
        self.flush_seconds = flush_seconds
        self._pending: list[Metric] = []
        self._last_flush = time.monotonic()
        self._params: dict[str, str] = {}

    def log_params(self, params: dict[str, Any]) -> None:
        batch: list[Param] = []
        for key, value in flatten_mapping(params).items():
            name, text = metric_name(key), as_text(value, MAX_PARAM_LENGTH)
            if self._params.get(name) == text:
                continue
            if name in self._params:
                n = 1
                while f"{name}.{n}" in self._params:
                    n += 1
                log.warning(
                    "param %s already logged as %r; logging %r as %s.%d",
                    name,
                    self._params[name],
                    text,
                    name,
                    n,
                )
                name = f"{name}.{n}"
            self._params[name] = text
            batch.append(Param(name, text))
        for chunk in _chunks(batch, MAX_PARAMS_TAGS_PER_BATCH):
            self.client.log_batch(self.run_id, params=list(chunk))

    def log_metrics(self, metrics: dict[str, float], step: int | None = None) -> None:
        timestamp = int(time.time() * 1000)
        for key, value in metrics.items():
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                try:
                    value = float(value)  # numpy / torch scalars
                except (TypeError, ValueError):
                    log.warning("metric %s is not a number (%r); skipped", key, value)
                    continue
            self._pending.append(Metric(metric_name(key), float(value), timestamp, int(step or 0)))
        if len(self._pending) >= self.flush_every or time.monotonic() - self._last_flush >= self.flush_seconds:
            self.flush()

    def log_artifact(self, path: str | Path, artifact_path: str | None = None) -> None:
        path = Path(path)
        if path.is_dir():
            self.client.log_artifacts(self.run_id, str(path), artifact_path or path.name)
        elif path.is_file():
            self.client.log_artifact(self.run_id, str(path), artifact_path)
        else:
            raise FileNotFoundError(f"cannot log artifact {path}: no such file or directory")

    def log_text(self, text: str, artifact_file: str) -> None:
        self.client.log_text(self.run_id, text, artifact_file)

    def set_tags(self, tags: dict[str, Any]) -> None:
        batch = [RunTag(metric_name(k), as_text(v, MAX_TAG_LENGTH)) for k, v in tags.items() if v is not None]
        for chunk in _chunks(batch, MAX_PARAMS_TAGS_PER_BATCH):
            self.client.log_batch(self.run_id, tags=list(chunk))

    def flush(self) -> None:
        pending, self._pending = self._pending, []
        for run_id in (self.run_id, self.mirror_run_id):
            if run_id:
                for chunk in _chunks(pending, MAX_METRICS_PER_BATCH):
                    self.client.log_batch(run_id, metrics=list(chunk))
        self._last_flush = time.monotonic()
