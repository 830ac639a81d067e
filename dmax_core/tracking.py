"""MLflow tracking of dmax runs: one parent run per pipeline, one nested run per stage, a model registry.

What gets recorded (issue 3):
- params: the flattened resolved config on the parent run (the YAML as `config/config.yaml`); each stage
  run carries the groups it reads (`STAGE_PARAM_GROUPS`), so stage runs compare on their own knobs;
- tags: git commit, preset, torch/transformers versions, device name, and the trajectory dataset digest
  once `distill` has written it;
- metrics: whatever the stage logs through the `MetricLogger` (training loss per step), and after
  `evaluate` one metric per {split, model, decoder, threshold} cell plus the headline numbers
  (`accuracy`, `tpf`, `tps`, `tps_total`, `nfe`, `baseline/...`, `tpf_ratio`) on the stage and parent run;
- artifacts: checkpoints (safetensors + config + tokenizer), the trajectory manifest and parquet,
  metrics.json, samples.jsonl, the report and trade-off plot;
- registry: the OPUT checkpoint of every tracked `train` becomes a version of `dmax-oput-<preset>` with
  alias `candidate`; after `evaluate` the alias `champion` moves to it only if it beats the current
  champion (`beats_champion`).

Where: `MLFLOW_TRACKING_URI` if set (a server), else `sqlite:///<project>/mlruns.db` with artifacts in
`<project>/mlartifacts/`. Experiment `dmax` unless `DMAX_MLFLOW_EXPERIMENT` says otherwise.

This module never runs stage logic itself: `run_stage` calls the one implementation in
`dmax_core.stages` and only records around it. It does not import Prefect, so the CLI (`--track`), the
Prefect flows and tests share it.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import platform
import re
import subprocess
import time
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import TYPE_CHECKING, Any

from dmax_core.env import configure_environment, device_name, project_dir

configure_environment()  # before mlflow is imported: telemetry off, offline

from mlflow import MlflowClient  # noqa: E402
from mlflow.entities import Metric, Param, RunTag  # noqa: E402
from mlflow.exceptions import MlflowException  # noqa: E402

from dmax_core.config import flatten_mapping  # noqa: E402

if TYPE_CHECKING:
    from dmax_core.config import DmaxConfig

log = logging.getLogger(__name__)

EXPERIMENT_VARIABLE = "DMAX_MLFLOW_EXPERIMENT"
DEFAULT_EXPERIMENT = "dmax"
STAGES = ("pretrain", "distill", "train", "evaluate", "report")
# Config groups each stage reads; the same grouping as params.yaml / dvc.yaml.
STAGE_PARAM_GROUPS: dict[str, tuple[str, ...]] = {
    "pretrain": ("task", "model", "pretrain"),
    "distill": ("task", "distill"),
    "train": ("train",),
    "evaluate": ("task", "evaluate"),
    "report": ("report",),
}
GLOBAL_PARAMS = ("preset", "seed", "block_length", "run_dir", "num_threads")
# Headline cell field -> short metric name on the evaluate and parent runs (what the UI compares).
HEADLINE_FIELDS = {
    "accuracy": "accuracy",
    "tpf_mean": "tpf",
    "tps_mean": "tps",
    "tps_total": "tps_total",
    "nfe_mean": "nfe",
}
CANDIDATE_ALIAS = "candidate"
CHAMPION_ALIAS = "champion"
# MLflow's batch limits (mlflow/utils/validation.py).
_MAX_PARAMS_TAGS_PER_BATCH = 100
_MAX_METRICS_PER_BATCH = 1000
_MAX_PARAM_LENGTH = 6000
_MAX_TAG_LENGTH = 8000
_BAD_NAME_CHARACTERS = re.compile(r"[^/\w.\- :]")


# --------------------------------------------------------------------------------------------- where


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


def registered_model_name(cfg: DmaxConfig) -> str:
    """One registered model per preset: champions are only comparable within one task and scale."""
    return f"dmax-oput-{_safe_name(cfg.preset)}"


# ---------------------------------------------------------------------------------------- the logger


def metric_name(name: str) -> str:
    """MLflow accepts `[/\\w.\\- :]` only; anything else becomes `_`."""
    return _BAD_NAME_CHARACTERS.sub("_", name)


def _as_text(value: Any, limit: int) -> str:
    text = value if isinstance(value, str) else json.dumps(value, default=str)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _chunks(items: Sequence[Any], size: int) -> Iterator[Sequence[Any]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


class MlflowLogger:
    """`dmax_core.metric_logger.MetricLogger` on one MLflow run, through an explicit `MlflowClient`.

    Metrics are buffered and sent with `log_batch` (every `flush_every` points or `flush_seconds`), so a
    training loop logging each step does not pay one HTTP round trip per step against a server.
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
            name, text = metric_name(key), _as_text(value, _MAX_PARAM_LENGTH)
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
        for chunk in _chunks(batch, _MAX_PARAMS_TAGS_PER_BATCH):
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
        batch = [RunTag(metric_name(k), _as_text(v, _MAX_TAG_LENGTH)) for k, v in tags.items() if v is not None]
        for chunk in _chunks(batch, _MAX_PARAMS_TAGS_PER_BATCH):
            self.client.log_batch(self.run_id, tags=list(chunk))

    def flush(self) -> None:
        pending, self._pending = self._pending, []
        for run_id in (self.run_id, self.mirror_run_id):
            if run_id:
                for chunk in _chunks(pending, _MAX_METRICS_PER_BATCH):
                    self.client.log_batch(run_id, metrics=list(chunk))
        self._last_flush = time.monotonic()


# ---------------------------------------------------------------------------------- fingerprints


def git_state(directory: Path | None = None) -> dict[str, str]:
    """Commit and dirtiness of the checkout (`unknown` outside git or before the first commit)."""
    directory = directory or project_dir()

    def git(*args: str) -> str | None:
        try:
            done = subprocess.run(["git", *args], cwd=directory, capture_output=True, text=True, timeout=10, check=True)
        except (OSError, subprocess.SubprocessError):
            return None
        return done.stdout.strip()

    commit = git("rev-parse", "HEAD")
    if not commit:
        return {"commit": "unknown", "dirty": "unknown"}
    dirty = git("status", "--porcelain", "--untracked-files=no")
    return {"commit": commit, "dirty": "unknown" if dirty is None else str(bool(dirty)).lower()}


def _package_version(name: str) -> str:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return "not installed"


def environment_tags(cfg: DmaxConfig) -> dict[str, str]:
    git = git_state()
    return {
        "mlflow.source.git.commit": git["commit"],
        "dmax.git_commit": git["commit"],
        "dmax.git_dirty": git["dirty"],
        "dmax.preset": cfg.preset,
        "dmax.version": _package_version("dmax"),
        "dmax.torch_version": _package_version("torch"),
        "dmax.transformers_version": _package_version("transformers"),
        "dmax.python_version": platform.python_version(),
        "dmax.device": device_name(),
        "dmax.host": platform.node(),
    }


def dataset_digest(cfg: DmaxConfig) -> str | None:
    """The sha256 digest `distill` wrote into the trajectory manifest, if there is one."""
    manifest = Path(cfg.run_dir) / "trajectories" / "manifest.json"
    try:
        return json.loads(manifest.read_text()).get("digest")
    except (OSError, ValueError, AttributeError):
        return None


def checkpoint_fingerprint(directory: Path) -> str:
    """sha256 over the weight and config files of a checkpoint dir: links a registry version to the
    directory `evaluate` reads, also when `train` and `evaluate` ran as separate tracked commands."""
    digest = hashlib.sha256()
    files = sorted(p for p in directory.iterdir() if p.suffix in {".safetensors", ".json"} and p.is_file())
    if not files:
        raise FileNotFoundError(f"no checkpoint files (*.safetensors, *.json) in {directory}")
    for path in files:
        digest.update(path.name.encode())
        with path.open("rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                digest.update(block)
    return digest.hexdigest()


# ------------------------------------------------------------------------------------------ runs


def config_params(cfg: DmaxConfig, groups: Iterable[str] | None = None) -> dict[str, Any]:
    """Flattened config; with `groups`, only those groups plus the global scalars."""
    flat = cfg.to_flat_dict()
    if groups is None:
        return flat
    prefixes = tuple(f"{g}." for g in groups)
    return {k: v for k, v in flat.items() if k in GLOBAL_PARAMS or k.startswith(prefixes)}


def _finish(client: MlflowClient, run_id: str, exc: BaseException | None) -> None:
    if exc is None:
        client.set_terminated(run_id, "FINISHED")
        return
    status = "KILLED" if isinstance(exc, KeyboardInterrupt) else "FAILED"
    try:
        client.set_tag(run_id, "dmax.error", _as_text(f"{type(exc).__name__}: {exc}", _MAX_TAG_LENGTH))
    finally:
        client.set_terminated(run_id, status)


def start_pipeline_run(
    cfg: DmaxConfig,
    *,
    run_name: str | None = None,
    tags: Mapping[str, Any] | None = None,
    client: MlflowClient | None = None,
) -> str:
    """Open the parent run of a pipeline: full config params, config YAML, environment tags."""
    client = client or tracking_client()
    run = client.create_run(
        experiment_id(client),
        run_name=run_name or f"{cfg.preset}-pipeline",
        tags={"dmax.kind": "pipeline"},
    )
    logger = MlflowLogger(client, run.info.run_id)
    logger.set_tags({**environment_tags(cfg), **(tags or {})})
    logger.log_params(config_params(cfg))
    logger.log_text(cfg.to_yaml(), "config/config.yaml")
    return run.info.run_id


def finish_pipeline_run(run_id: str, exc: BaseException | None = None, client: MlflowClient | None = None) -> None:
    _finish(client or tracking_client(), run_id, exc)


@contextmanager
def pipeline_run(
    cfg: DmaxConfig,
    *,
    run_name: str | None = None,
    tags: Mapping[str, Any] | None = None,
    client: MlflowClient | None = None,
) -> Iterator[str]:
    """Parent run around a whole pipeline; yields its run id, marks it FAILED if the body raises."""
    client = client or tracking_client()
    run_id = start_pipeline_run(cfg, run_name=run_name, tags=tags, client=client)
    try:
        yield run_id
    except BaseException as exc:
        _finish(client, run_id, exc)
        raise
    _finish(client, run_id, None)


@contextmanager
def stage_run(
    cfg: DmaxConfig,
    stage: str,
    *,
    parent_run_id: str | None = None,
    client: MlflowClient | None = None,
) -> Iterator[MlflowLogger]:
    """A run for one stage, nested under `parent_run_id` when given; yields its `MlflowLogger`.

    A stage run on its own (no parent) also gets the full config and environment tags, so a single
    tracked `dmax train --track` is as reproducible as a pipeline.
    """
    client = client or tracking_client()
    experiment = client.get_run(parent_run_id).info.experiment_id if parent_run_id else experiment_id(client)
    tags = {"dmax.kind": "stage", "dmax.stage": stage}
    if parent_run_id:
        tags["mlflow.parentRunId"] = parent_run_id
    run = client.create_run(experiment, run_name=stage, tags=tags)
    logger = MlflowLogger(client, run.info.run_id, mirror_run_id=parent_run_id)
    try:
        logger.set_tags(environment_tags(cfg))
        if parent_run_id:
            logger.log_params(config_params(cfg, STAGE_PARAM_GROUPS.get(stage)))
        else:
            logger.log_params(config_params(cfg))
            logger.log_text(cfg.to_yaml(), "config/config.yaml")
        yield logger
        logger.flush()
    except BaseException as exc:
        try:
            logger.flush()
        except Exception:  # the stage's own error is the one to report
            log.warning("could not flush metrics of failed run %s", run.info.run_id, exc_info=True)
        _finish(client, run.info.run_id, exc)
        raise
    _finish(client, run.info.run_id, None)


# ------------------------------------------------------------------------------------ evaluation


def _finite(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return float(value) if math.isfinite(float(value)) else None


def headline_metrics(evaluation: Mapping[str, Any]) -> dict[str, float]:
    """`accuracy`, `tpf`, `tps`, `tps_total`, `nfe` of the headline DMax cell, `baseline/...` of the
    baseline cell, `tpf_ratio` and `headline_valid` (1/0)."""
    headline = evaluation.get("headline") or {}
    metrics: dict[str, float] = {}
    for role, prefix in (("dmax", ""), ("baseline", "baseline/")):
        cell = headline.get(role) or {}
        for field, short in HEADLINE_FIELDS.items():
            value = _finite(cell.get(field))
            if value is not None:
                metrics[f"{prefix}{short}"] = value
    for key in ("tpf_ratio", "accuracy_delta_pp"):
        value = _finite(headline.get(key))
        if value is not None:
            metrics[key] = value
    if "valid" in headline:
        metrics["headline_valid"] = 1.0 if headline["valid"] else 0.0
    return metrics


@dataclass(frozen=True)
class Decision:
    promote: bool
    reason: str


def beats_champion(
    new: Mapping[str, float] | None, champion: Mapping[str, float] | None, accuracy_tolerance_pp: float = 1.0
) -> Decision:
    """The champion rule: more TPF at no more than `accuracy_tolerance_pp` points accuracy loss.

    `new` / `champion` carry `accuracy` (a fraction in [0, 1]) and `tpf` of the headline DMax cell on the
    held-out split. No champion yet: the first evaluated version takes the title. A champion without
    recorded metrics is replaced (it cannot be compared).
    """
    if not new or new.get("tpf") is None or new.get("accuracy") is None:
        return Decision(False, "no headline dmax cell in metrics.json: nothing to compare")
    if champion is None:
        return Decision(True, "no champion yet")
    if champion.get("tpf") is None or champion.get("accuracy") is None:
        return Decision(True, "current champion has no recorded metrics")
    tolerance = accuracy_tolerance_pp / 100.0
    accuracy_drop = champion["accuracy"] - new["accuracy"]
    summary = (
        f"tpf {new['tpf']:.3f} vs champion {champion['tpf']:.3f}, "
        f"accuracy {new['accuracy']:.4f} vs champion {champion['accuracy']:.4f}"
    )
    if new["tpf"] <= champion["tpf"]:
        return Decision(False, f"no TPF gain ({summary})")
    if accuracy_drop > tolerance + 1e-12:
        return Decision(False, f"accuracy loss {accuracy_drop * 100:.2f} pp > {accuracy_tolerance_pp:g} pp ({summary})")
    return Decision(True, f"more TPF within {accuracy_tolerance_pp:g} pp accuracy ({summary})")


# -------------------------------------------------------------------------------------- registry


def register_candidate(
    client: MlflowClient,
    cfg: DmaxConfig,
    run_id: str,
    *,
    artifact_path: str = "dmax",
    parent_run_id: str | None = None,
) -> str:
    """Register the checkpoint logged at `runs:/<run_id>/<artifact_path>` and point `candidate` at it.

    The version is the plain HF-layout checkpoint directory (no MLflow flavour): download it with
    `mlflow.artifacts.download_artifacts("models:/dmax-oput-tiny@champion")` and load it with
    `from_pretrained` like any other dmax checkpoint.
    """
    name = registered_model_name(cfg)
    try:
        client.create_registered_model(
            name, description=f"OPUT-trained DMax checkpoints of the `{cfg.preset}` preset (dmax train)."
        )
    except MlflowException as exc:
        if exc.error_code != "RESOURCE_ALREADY_EXISTS":
            raise
    tags = {
        "dmax.preset": cfg.preset,
        "dmax.train_run_id": run_id,
        "dmax.checkpoint_sha256": checkpoint_fingerprint(Path(cfg.run_dir) / "dmax"),
        "dmax.dataset_digest": dataset_digest(cfg) or "unknown",
        "dmax.git_commit": git_state()["commit"],
    }
    if parent_run_id:
        tags["dmax.pipeline_run_id"] = parent_run_id
    version = client.create_model_version(
        name, source=f"runs:/{run_id}/{artifact_path}", run_id=run_id, tags=tags
    ).version
    client.set_registered_model_alias(name, CANDIDATE_ALIAS, version)
    return str(version)


def _find_version_for_checkpoint(client: MlflowClient, name: str, fingerprint: str) -> str | None:
    try:
        versions = client.search_model_versions(f"name = '{name}'")
    except MlflowException:
        return None
    matching = [v for v in versions if v.tags.get("dmax.checkpoint_sha256") == fingerprint]
    if not matching:
        return None
    return str(max(int(v.version) for v in matching))


def _version_metrics(tags: Mapping[str, str]) -> dict[str, float] | None:
    try:
        return {"accuracy": float(tags["eval.accuracy"]), "tpf": float(tags["eval.tpf"])}
    except (KeyError, ValueError):
        return None


def promote_if_better(client: MlflowClient, cfg: DmaxConfig, version: str, headline: Mapping[str, float]) -> Decision:
    """Tag `version` with its held-out metrics and move `champion` to it if `beats_champion` says so."""
    name = registered_model_name(cfg)
    for key in ("accuracy", "tpf", "tps", "tps_total", "nfe", "tpf_ratio"):
        if key in headline:
            client.set_model_version_tag(name, version, f"eval.{key}", f"{headline[key]:.6g}")
    try:
        current = client.get_model_version_by_alias(name, CHAMPION_ALIAS)
    except MlflowException:
        current = None
    if current is not None and str(current.version) == str(version):
        decision = Decision(True, "already champion")
    else:
        decision = beats_champion(
            {k: headline[k] for k in ("accuracy", "tpf") if k in headline},
            None if current is None else _version_metrics(current.tags),
            cfg.report.accuracy_tolerance_pp,
        )
        if decision.promote:
            client.set_registered_model_alias(name, CHAMPION_ALIAS, version)
    client.set_model_version_tag(name, version, "dmax.champion_decision", decision.reason)
    return decision


# ------------------------------------------------------------------------ what each stage records


def _log_dir(logger: MlflowLogger, directory: Path, artifact_path: str) -> None:
    if not directory.is_dir():
        raise FileNotFoundError(f"stage output {directory} is missing")
    logger.log_artifact(directory, artifact_path)


def _tag_dataset(cfg: DmaxConfig, logger: MlflowLogger, parent_run_id: str | None) -> None:
    digest = dataset_digest(cfg)
    if digest:
        logger.set_tags({"dmax.dataset_digest": digest})
        if parent_run_id:
            logger.client.set_tag(parent_run_id, "dmax.dataset_digest", digest)


def record_stage_outputs(
    cfg: DmaxConfig, stage: str, logger: MlflowLogger, *, parent_run_id: str | None = None
) -> dict[str, str]:
    """Log what `stage` wrote under `cfg.run_dir` to the stage run (and headline numbers to the parent).

    Returns facts worth passing on (registered model version, champion decision) for callers to print.
    """
    run_dir = Path(cfg.run_dir)
    client = logger.client
    facts: dict[str, str] = {}
    if stage == "pretrain":
        _log_dir(logger, run_dir / "base", "base")
    elif stage == "distill":
        _log_dir(logger, run_dir / "trajectories", "trajectories")
        _tag_dataset(cfg, logger, parent_run_id)
    elif stage == "train":
        _tag_dataset(cfg, logger, parent_run_id)
        _log_dir(logger, run_dir / "dmax", "dmax")
        version = register_candidate(client, cfg, logger.run_id, parent_run_id=parent_run_id)
        logger.set_tags({"dmax.model_name": registered_model_name(cfg), "dmax.model_version": version})
        if parent_run_id:
            client.set_tag(parent_run_id, "dmax.model_version", version)
        facts["model_version"] = version
    elif stage == "evaluate":
        eval_dir = run_dir / "eval"
        metrics_path = eval_dir / "metrics.json"
        try:
            evaluation = json.loads(metrics_path.read_text())
        except (OSError, ValueError) as exc:
            raise FileNotFoundError(f"evaluate wrote no readable {metrics_path}: {exc}") from exc
        _log_dir(logger, eval_dir, "eval")
        # Per-cell metrics are logged by the stage itself; here only the headline short names.
        headline = headline_metrics(evaluation)
        logger.log_metrics(headline)
        logger.flush()
        version = _model_version_for(client, cfg, parent_run_id)
        if version is not None:
            decision = promote_if_better(client, cfg, version, headline)
            logger.set_tags({"dmax.model_version": version, "dmax.champion_decision": decision.reason})
            facts.update(model_version=version, champion=str(decision.promote).lower(), reason=decision.reason)
    elif stage == "report":
        _log_dir(logger, run_dir / "report", "report")
    return facts


def _model_version_for(client: MlflowClient, cfg: DmaxConfig, parent_run_id: str | None) -> str | None:
    """The registry version of the checkpoint `evaluate` just measured (same pipeline, else same bytes)."""
    if parent_run_id:
        version = client.get_run(parent_run_id).data.tags.get("dmax.model_version")
        if version:
            return version
    checkpoint = Path(cfg.run_dir) / "dmax"
    if not checkpoint.is_dir():
        return None
    try:
        fingerprint = checkpoint_fingerprint(checkpoint)
    except FileNotFoundError:
        return None
    return _find_version_for_checkpoint(client, registered_model_name(cfg), fingerprint)


# --------------------------------------------------------------------------------- entry points


def pipeline_stages(cfg: DmaxConfig, pretrain: bool | None = None) -> tuple[str, ...]:
    """Stage order; `pretrain` runs when the preset trains its own base model (no `model.base_path`)."""
    if pretrain is None:
        pretrain = cfg.model.base_path is None
    return STAGES if pretrain else STAGES[1:]


def run_stage(
    cfg: DmaxConfig,
    stage: str,
    *,
    parent_run_id: str | None = None,
    client: MlflowClient | None = None,
) -> Path:
    """Run one stage of `dmax_core.stages` inside its MLflow run and record its outputs.

    The hook for `dmax <stage> --track` and for every Prefect task: one implementation, tracked.
    """
    if stage not in STAGES:
        raise ValueError(f"unknown stage {stage!r}; expected one of {', '.join(STAGES)}")
    from dmax_core import stages as stage_functions  # heavy (torch); only when a stage really runs

    function = getattr(stage_functions, stage)
    with stage_run(cfg, stage, parent_run_id=parent_run_id, client=client) as logger:
        output = function(cfg, logger=logger)
        logger.flush()
        facts = record_stage_outputs(cfg, stage, logger, parent_run_id=parent_run_id)
        for key, value in facts.items():
            log.info("%s: %s = %s", stage, key, value)
    return Path(output)


def tracked_pipeline(
    cfg: DmaxConfig,
    *,
    stages: Sequence[str] | None = None,
    run_name: str | None = None,
    client: MlflowClient | None = None,
) -> dict[str, Path]:
    """All stages under one parent run (what `dmax pipeline --track` calls)."""
    client = client or tracking_client()
    outputs: dict[str, Path] = {}
    with pipeline_run(cfg, run_name=run_name, client=client) as parent:
        for stage in stages or pipeline_stages(cfg):
            outputs[stage] = run_stage(cfg, stage, parent_run_id=parent, client=client)
    return outputs


def run_tracked(cfg: DmaxConfig, command: str) -> dict[str, Path] | Path:
    """`dmax <command> --track`: `pipeline` -> `tracked_pipeline`, a stage name -> `run_stage`."""
    if command == "pipeline":
        return tracked_pipeline(cfg)
    return run_stage(cfg, command)


def _safe_name(text: str) -> str:
    return re.sub(r"[^\w.\-]", "_", text) or "custom"


__all__ = [
    "CANDIDATE_ALIAS",
    "CHAMPION_ALIAS",
    "STAGES",
    "Decision",
    "MlflowLogger",
    "beats_champion",
    "headline_metrics",
    "pipeline_run",
    "pipeline_stages",
    "promote_if_better",
    "register_candidate",
    "run_stage",
    "run_tracked",
    "stage_run",
    "tracked_pipeline",
    "tracking_client",
    "tracking_uri",
]
