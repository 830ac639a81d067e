"""MLflow runs around dmax stages: one parent run per pipeline, one nested run per stage, and the record
of what a stage returned.

What gets recorded:
- params: the flattened resolved config on the parent run (and the YAML as `config/config.yaml`); each
  nested stage run carries the keys the stage table names for it (`Stage.logged_params`), so stage runs
  compare on their own knobs; a stage run on its own carries the full config;
- tags: git commit, preset, versions, device, host (`env.environment_info`), plus the facts a stage
  returns (e.g. the trajectory dataset digest), also copied to the parent run;
- metrics: whatever the stage logs while it runs (loss per step, each evaluation cell) and its end-of-
  stage figures (the headline after `evaluate`), mirrored onto the parent so one row is one pipeline;
- artifacts: every output the stage returned, under its output name;
- datasets: what the stage read or wrote (the trajectories) as dataset inputs, also on the parent run;
- logged models: each checkpoint the stage wrote (pretrain `base/`, train `dmax/` or `control/`), pointing
  at its artifact and listed as an output of the run and its parent (`tracking.lineage`);
- registry: the checkpoint a stage offers as a candidate, linked to its logged model, and the champion
  decision after `evaluate` (`tracking.registry`).

Nothing here runs a stage or decides what a stage wrote: `StageRun.record` logs the `StageResult`.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from mlflow import MlflowClient

from dmax_core.config import DmaxConfig
from dmax_core.env import DISTRIBUTION, environment_info
from dmax_core.results import StageResult
from dmax_core.tracking.lineage import log_checkpoints, log_datasets
from dmax_core.tracking.logger import MAX_TAG_LENGTH, MlflowLogger, as_text
from dmax_core.tracking.registry import (
    find_version,
    promote_if_better,
    register_candidate,
    registered_model_name,
)
from dmax_core.tracking.store import experiment_id, tracking_client

log = logging.getLogger(__name__)


def environment_tags(cfg: DmaxConfig) -> dict[str, str]:
    info = environment_info()
    return {
        "mlflow.source.git.commit": info["git_commit"],
        "dmax.git_commit": info["git_commit"],
        "dmax.git_dirty": info["git_dirty"],
        "dmax.preset": cfg.preset,
        "dmax.version": f"{DISTRIBUTION} {info['dmax']}",
        "dmax.torch_version": info["torch"],
        "dmax.transformers_version": info["transformers"],
        "dmax.python_version": info["python"],
        "dmax.device": info["device"],
        "dmax.threads": str(info["threads"]),
        "dmax.host": info["host"],
    }


def config_params(cfg: DmaxConfig, keys: Iterable[str] | None = None) -> dict[str, Any]:
    """Flattened config; with `keys` (top-level scalars or groups), only those."""
    flat = cfg.to_flat_dict()
    if keys is None:
        return flat
    keys = tuple(keys)
    prefixes = tuple(f"{k}." for k in keys)
    return {k: v for k, v in flat.items() if k in keys or k.startswith(prefixes)}


def _finish(client: MlflowClient, run_id: str, exc: BaseException | None) -> None:
    if exc is None:
        client.set_terminated(run_id, "FINISHED")
        return
    status = "KILLED" if isinstance(exc, KeyboardInterrupt) else "FAILED"
    try:
        client.set_tag(run_id, "dmax.error", as_text(f"{type(exc).__name__}: {exc}", MAX_TAG_LENGTH))
    finally:
        client.set_terminated(run_id, status)


@dataclass
class StageRun:
    """The MLflow run of one stage: the logger the stage writes through, and `record` for its result."""

    client: MlflowClient
    cfg: DmaxConfig
    logger: MlflowLogger
    parent_run_id: str | None = None
    facts: dict[str, str] = field(default_factory=dict)

    def _tag(self, tags: Mapping[str, str]) -> None:
        """Tags on this run and on the pipeline's parent run."""
        self.logger.set_tags(dict(tags))
        if self.parent_run_id:
            for key, value in tags.items():
                self.client.set_tag(self.parent_run_id, key, value)

    def record(self, result: StageResult) -> dict[str, str]:
        """Log outputs, figures and facts of `result`; register and judge models. Returns what it decided."""
        logger = self.logger
        logger.flush()
        for name, path in result.outputs.items():
            if not path.exists():
                raise FileNotFoundError(f"stage {result.stage} returned output {name} = {path}, which does not exist")
            logger.log_artifact(path, name if path.is_dir() else None)
        logger.log_metrics(dict(result.metrics))
        logger.flush()
        self._tag(result.tags)
        log_datasets(self.client, (logger.run_id, self.parent_run_id), result.datasets)
        models = log_checkpoints(self.client, logger.run_id, result.model_checkpoints(), preset=self.cfg.preset,
                                 tags={"dmax.preset": self.cfg.preset, "dmax.stage": result.stage},
                                 mirror_run_id=self.parent_run_id)
        if result.candidate is not None:
            name, version = register_candidate(
                self.client, self.cfg.preset, logger.run_id, result.candidate,
                tags={"dmax.preset": self.cfg.preset, "dmax.pipeline_run_id": self.parent_run_id or "",
                      **{k: v for k, v in result.tags.items() if k.startswith("dmax.")}},
                model_id=models.get(result.candidate.output),
            )
            self.facts.update(model_name=name, model_version=version)
            self._tag({"dmax.model_name": name, "dmax.model_version": version})
        family = result.champion_family
        digest = result.evaluated.get(family) if family else None
        if result.evaluation is not None and digest:
            name = registered_model_name(self.cfg.preset, family)
            version = find_version(self.client, name, digest)
            if version is not None:
                decision = promote_if_better(self.client, name, version, result.evaluation.headline,
                                             self.cfg.experiment.tolerance_pp)
                self.facts.update(model_version=version, champion=str(decision.promote).lower(),
                                  reason=decision.reason)
                logger.set_tags({"dmax.model_version": version, "dmax.champion_decision": decision.reason})
        for key, value in self.facts.items():
            log.info("%s: %s = %s", result.stage, key, value)
        return dict(self.facts)


class Tracker:
    """Opens MLflow runs for pipelines and stages in one tracking store."""

    def __init__(self, client: MlflowClient | None = None) -> None:
        self.client = client or tracking_client()

    @property
    def uri(self) -> str:
        return self.client.tracking_uri

    @contextmanager
    def pipeline_run(self, cfg: DmaxConfig, *, run_name: str | None = None,
                     tags: Mapping[str, Any] | None = None) -> Iterator[str]:
        """The parent run of a pipeline (full config, config YAML, environment tags); yields its id and
        marks it FAILED (with the error as a tag) if the body raises."""
        client = self.client
        run = client.create_run(experiment_id(client), run_name=run_name or f"{cfg.preset}-pipeline",
                                tags={"dmax.kind": "pipeline"})
        run_id = run.info.run_id
        try:
            logger = MlflowLogger(client, run_id)
            logger.set_tags({**environment_tags(cfg), **(tags or {})})
            logger.log_params(config_params(cfg))
            logger.log_text(cfg.to_yaml(), "config/config.yaml")
            yield run_id
        except BaseException as exc:
            _finish(client, run_id, exc)
            raise
        _finish(client, run_id, None)

    @contextmanager
    def stage_run(self, cfg: DmaxConfig, stage: str, params: Iterable[str], *,
                  parent_run_id: str | None = None) -> Iterator[StageRun]:
        """The run of one stage, nested under `parent_run_id` when given, with the config `params` (keys
        or groups) the stage table names. A stage run on its own gets the full config instead, so a single
        `dmax train --track` is as reproducible as a pipeline. Metrics are flushed and the run marked
        FAILED if the body raises."""
        client = self.client
        experiment = client.get_run(parent_run_id).info.experiment_id if parent_run_id else experiment_id(client)
        tags = {"dmax.kind": "stage", "dmax.stage": stage}
        if parent_run_id:
            tags["mlflow.parentRunId"] = parent_run_id
        run = client.create_run(experiment, run_name=stage, tags=tags)
        logger = MlflowLogger(client, run.info.run_id, mirror_run_id=parent_run_id)
        try:
            logger.set_tags(environment_tags(cfg))
            if parent_run_id:
                logger.log_params(config_params(cfg, params))
            else:
                logger.log_params(config_params(cfg))
                logger.log_text(cfg.to_yaml(), "config/config.yaml")
            yield StageRun(client, cfg, logger, parent_run_id)
            logger.flush()
        except BaseException as exc:
            try:
                logger.flush()
            except Exception:  # the stage's own error is the one to report
                log.warning("could not flush metrics of failed run %s", run.info.run_id, exc_info=True)
            _finish(client, run.info.run_id, exc)
            raise
        _finish(client, run.info.run_id, None)
