"""The small interface through which stages report params, metrics and artifacts.

Stages never import MLflow: they talk to a `MetricLogger` (torchtune's pattern), so the same stage
runs untracked from the CLI, tracked under MLflow from Prefect, or under DVC.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Protocol, runtime_checkable


@runtime_checkable
class MetricLogger(Protocol):
    def log_params(self, params: dict[str, Any]) -> None: ...

    def log_metrics(self, metrics: dict[str, float], step: int | None = None) -> None: ...

    def log_artifact(self, path: str | Path, artifact_path: str | None = None) -> None: ...

    def set_tags(self, tags: dict[str, Any]) -> None: ...


class NullLogger:
    """Discards everything; the default when a stage runs untracked."""

    def log_params(self, params: dict[str, Any]) -> None:
        return None

    def log_metrics(self, metrics: dict[str, float], step: int | None = None) -> None:
        return None

    def log_artifact(self, path: str | Path, artifact_path: str | None = None) -> None:
        return None

    def set_tags(self, tags: dict[str, Any]) -> None:
        return None
