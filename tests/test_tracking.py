"""Fast tests of the platform layer: MLflow tracking against a real sqlite store, the champion rule,
the environment switches, and the consistency of prefect.yaml / dvc.yaml / params.yaml with the code.

The stage functions are replaced by small fakes here; the real pipeline under real servers is in
tests/integration/.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import yaml

from dmax_core import env, tracking
from dmax_core.config import load_config
from dmax_core.errors import DataError

REPO = Path(__file__).resolve().parents[1]


# ------------------------------------------------------------------------------------------ env
def test_configure_environment_sets_offline_defaults_without_overriding(monkeypatch, tmp_path):
    for name in env.environment_defaults(tmp_path):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HF_HUB_OFFLINE", "0")  # the user's choice wins
    applied = env.configure_environment(tmp_path)
    assert os.environ["HF_HUB_OFFLINE"] == "0" and "HF_HUB_OFFLINE" not in applied
    assert os.environ["DO_NOT_TRACK"] == "true"  # MLflow accepts only the string "true"
    assert os.environ["MLFLOW_DISABLE_TELEMETRY"] == "true"
    assert os.environ["PREFECT_SERVER_ANALYTICS_ENABLED"] == "false"
    assert os.environ["DVC_NO_ANALYTICS"] == "1"
    assert os.environ["PREFECT_HOME"] == str(tmp_path.resolve() / ".prefect")


def test_project_dir_is_the_checkout(monkeypatch):
    monkeypatch.delenv(env.PROJECT_DIR_VARIABLE, raising=False)
    assert env.project_dir() == REPO
    monkeypatch.setenv(env.PROJECT_DIR_VARIABLE, "/somewhere/else")
    assert env.project_dir() == Path("/somewhere/else")


def test_default_tracking_store_is_sqlite_in_the_project(monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.delenv(env.PROJECT_DIR_VARIABLE, raising=False)
    assert tracking.tracking_uri() == f"sqlite:///{REPO / 'mlruns.db'}"
    assert tracking.default_artifact_location(tracking.tracking_uri()) == (REPO / "mlartifacts").as_uri()
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://127.0.0.1:5999")
    assert tracking.tracking_uri() == "http://127.0.0.1:5999"
    assert tracking.default_artifact_location("http://127.0.0.1:5999") is None


# ------------------------------------------------------------------------------ champion rule
@pytest.mark.parametrize(
    ("new", "champion", "promote"),
    [
        ({"accuracy": 0.90, "tpf": 3.0}, None, True),  # first version takes the title
        ({"accuracy": 0.895, "tpf": 4.0}, {"accuracy": 0.90, "tpf": 3.0}, True),  # 0.5 pp loss, more TPF
        ({"accuracy": 0.89, "tpf": 4.0}, {"accuracy": 0.90, "tpf": 3.0}, True),  # exactly 1 pp
        ({"accuracy": 0.885, "tpf": 9.0}, {"accuracy": 0.90, "tpf": 3.0}, False),  # 1.5 pp loss
        ({"accuracy": 0.99, "tpf": 3.0}, {"accuracy": 0.90, "tpf": 3.0}, False),  # no TPF gain
        ({"accuracy": 0.99, "tpf": 3.0}, {}, True),  # champion without metrics cannot be compared
        ({}, None, False),  # no headline cell: nothing to promote
    ],
)
def test_beats_champion(new, champion, promote):
    decision = tracking.beats_champion(new, champion, accuracy_tolerance_pp=1.0)
    assert decision.promote is promote, decision.reason
    assert decision.reason


def _evaluation(accuracy: float, tpf: float) -> dict:
    cell = {"model": "dmax", "decoder": "spd", "threshold": 0.7, "split": "test", "accuracy": accuracy,
            "tpf_mean": tpf, "tps_mean": 100.0, "tps_total": 90.0, "nfe_mean": 5.0, "tokens_mean": 20.0,
            "n": 10}  # fmt: skip
    base = {**cell, "model": "base", "decoder": "threshold", "tpf_mean": tpf / 2}
    headline = {"baseline": base, "dmax": cell, "tpf_ratio": 2.0, "accuracy_delta_pp": 0.0, "valid": True}
    return {"cells": [cell, base], "headline": {**headline, "reason": "ok"}}


def test_headline_metrics_short_names():
    metrics = tracking.headline_metrics(_evaluation(0.9, 4.0))
    assert metrics["accuracy"] == 0.9 and metrics["tpf"] == 4.0
    assert metrics["tps"] == 100.0 and metrics["tps_total"] == 90.0 and metrics["nfe"] == 5.0
    assert metrics["baseline/tpf"] == 2.0 and metrics["tpf_ratio"] == 2.0 and metrics["headline_valid"] == 1.0
    empty = {"dmax": None, "baseline": None, "tpf_ratio": None, "valid": False}
    invalid = tracking.headline_metrics({"cells": [], "headline": empty})
    assert invalid == {"headline_valid": 0.0}


# --------------------------------------------------------------------------------- real MLflow
@pytest.fixture(scope="module")
def client(tmp_path_factory):
    store = tmp_path_factory.mktemp("mlflow")
    return tracking.tracking_client(f"sqlite:///{store / 'mlruns.db'}")


def _config(tmp_path: Path, preset: str):
    return load_config("smoke", [f"run_dir={tmp_path / 'run'}", f"preset={preset}"])


def _fake_checkpoint(directory: Path, content: bytes) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "model.safetensors").write_bytes(content)
    (directory / "config.json").write_text("{}")
    return directory


def test_logger_batches_and_mirrors_metrics_to_the_parent(client, tmp_path):
    cfg = _config(tmp_path, "logger-test")
    with (
        tracking.pipeline_run(cfg, client=client) as parent,
        tracking.stage_run(cfg, "train", parent_run_id=parent, client=client) as logger,
    ):
        for step in range(1, 31):
            logger.log_metrics({"train/loss": 1.0 / step, "train/lr": 1e-3}, step=step)
        logger.log_params({"extra": {"nested": 1}})
        logger.log_params({"extra.nested": 1})  # same value again: skipped, not an error
        logger.set_tags({"dataset_digest": "abc"})
        stage_id = logger.run_id
    stage, parent_run = client.get_run(stage_id), client.get_run(parent)
    history = client.get_metric_history(stage_id, "train/loss")
    assert [m.step for m in history] == list(range(1, 31))
    assert len(client.get_metric_history(parent, "train/loss")) == 30
    assert stage.data.tags["mlflow.parentRunId"] == parent and stage.data.tags["dmax.stage"] == "train"
    assert stage.data.params["extra.nested"] == "1" and stage.data.params["train.lr"] == str(cfg.train.lr)
    assert "pretrain.lr" not in stage.data.params  # stage runs carry only the groups they read
    assert parent_run.data.params["model.hidden_size"] == str(cfg.model.hidden_size)
    for tag in ("mlflow.source.git.commit", "dmax.preset", "dmax.torch_version", "dmax.device"):
        assert parent_run.data.tags[tag]
    assert stage.info.status == parent_run.info.status == "FINISHED"


def test_registry_moves_champion_only_on_a_real_improvement(client, tmp_path):
    cfg = _config(tmp_path, "registry-test")
    name = tracking.registered_model_name(cfg)
    versions = []
    for i, (accuracy, tpf) in enumerate([(0.90, 3.0), (0.895, 4.0), (0.88, 5.0), (0.91, 3.5)]):
        _fake_checkpoint(Path(cfg.run_dir) / "dmax", f"weights {i}".encode())
        with tracking.stage_run(cfg, "train", client=client) as logger:
            logger.log_artifact(Path(cfg.run_dir) / "dmax", "dmax")
            version = tracking.register_candidate(client, cfg, logger.run_id)
        decision = tracking.promote_if_better(client, cfg, version, tracking.headline_metrics(
            _evaluation(accuracy, tpf)))  # fmt: skip
        versions.append((version, decision.promote))
    assert [promoted for _, promoted in versions] == [True, True, False, False]
    assert str(client.get_model_version_by_alias(name, "champion").version) == versions[1][0]
    assert str(client.get_model_version_by_alias(name, "candidate").version) == versions[3][0]
    third = client.get_model_version(name, versions[2][0])
    assert "accuracy loss" in third.tags["dmax.champion_decision"]
    assert float(third.tags["eval.tpf"]) == 5.0


def test_run_stage_records_outputs_and_marks_failures(client, tmp_path, monkeypatch):
    from dmax_core import stages

    cfg = _config(tmp_path, "stage-test")
    run_dir = Path(cfg.run_dir)

    def fake_report(cfg, logger=None):
        out = run_dir / "report"
        out.mkdir(parents=True, exist_ok=True)
        (out / "report.md").write_text("# report\n")
        logger.log_metrics({"report/rows": 2.0})
        return out

    def corrupt_train(cfg, logger=None):
        raise DataError("trajectory file trajectories.parquet is corrupt or not parquet")

    monkeypatch.setattr(stages, "report", fake_report)
    monkeypatch.setattr(stages, "train", corrupt_train)

    assert tracking.run_stage(cfg, "report", client=client) == run_dir / "report"
    report_run = client.search_runs(
        [client.get_experiment_by_name("dmax").experiment_id], "tags.`dmax.stage` = 'report'"
    )[0]
    assert report_run.info.status == "FINISHED" and report_run.data.metrics["report/rows"] == 2.0
    assert [a.path for a in client.list_artifacts(report_run.info.run_id, "report")] == ["report/report.md"]

    with pytest.raises(DataError, match="corrupt"), tracking.pipeline_run(cfg, client=client) as parent:
        tracking.run_stage(cfg, "train", parent_run_id=parent, client=client)
    assert client.get_run(parent).info.status == "FAILED"
    failed = client.search_runs([client.get_run(parent).info.experiment_id], f"tags.`mlflow.parentRunId` = '{parent}'")
    assert [r.info.status for r in failed] == ["FAILED"]
    assert "corrupt" in failed[0].data.tags["dmax.error"]

    with pytest.raises(ValueError, match="unknown stage"):
        tracking.run_stage(cfg, "deploy", client=client)


def test_pipeline_stages_follow_the_preset():
    assert tracking.pipeline_stages(load_config("smoke"))[0] == "pretrain"
    with_base = load_config("smoke", ["model.base_path=/models/llada2-mini"])
    assert tracking.pipeline_stages(with_base) == ("distill", "train", "evaluate", "report")
    assert tracking.pipeline_stages(with_base, pretrain=True)[0] == "pretrain"


# -------------------------------------------------------------------- the three ways to run it
def test_prefect_yaml_declares_the_deployments():
    import flows.pipeline as pipeline_module

    spec = yaml.safe_load((REPO / "prefect.yaml").read_text())
    deployments = {d["name"]: d for d in spec["deployments"]}
    assert {"full-pipeline", "scheduled-retrain", *tracking.STAGES} <= set(deployments)
    for deployment in deployments.values():
        path, attribute = deployment["entrypoint"].split(":")
        assert (REPO / path).is_file()
        assert hasattr(getattr(pipeline_module, attribute), "fn"), f"{attribute} is not a Prefect flow"
        assert deployment["work_pool"]["name"] == "dmax-process"
    assert pipeline_module.full_pipeline.name == "dmax"  # -> `prefect deployment run dmax/full-pipeline`
    schedules = deployments["scheduled-retrain"]["schedules"]
    assert schedules and all(s["cron"] and s["active"] is False for s in schedules)
    assert "schedules" not in deployments["full-pipeline"]


def test_task_retries_skip_user_errors():
    from flows.pipeline import retry_only_transient

    class FailedState:
        def __init__(self, exc: BaseException) -> None:
            self.exc = exc

        def result(self):
            raise self.exc

    assert retry_only_transient(None, None, FailedState(DataError("corrupt parquet"))) is False
    assert retry_only_transient(None, None, FailedState(FileNotFoundError("no base"))) is False
    assert retry_only_transient(None, None, FailedState(ConnectionError("server restarting"))) is True
    assert retry_only_transient(None, None, FailedState(RuntimeError("worker crashed"))) is True


def test_dvc_pipeline_matches_the_stages_and_params():
    spec = yaml.safe_load((REPO / "dvc.yaml").read_text())
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    load_config(REPO / "params.yaml")  # params.yaml is a valid dmax config
    assert list(spec["stages"]) == list(tracking.STAGES)
    for name, stage in spec["stages"].items():
        assert f"dmax_core.cli {name} --preset params.yaml" in stage["cmd"]
        for key in stage["params"]:
            assert key in params, f"dvc.yaml stage {name} tracks unknown param group {key}"
        for dep in stage["deps"]:
            assert "${run_dir}" in dep or (REPO / dep).exists(), f"dvc.yaml dep {dep} does not exist"
    config = (REPO / ".dvc" / "config").read_text()
    assert "analytics = false" in config and "check_update = false" in config
    assert "__pycache__/" in (REPO / ".dvcignore").read_text()


def test_tracking_writes_nothing_when_metrics_json_is_missing(client, tmp_path):
    cfg = _config(tmp_path, "missing-eval")
    with (
        pytest.raises(FileNotFoundError, match=r"metrics\.json"),
        tracking.stage_run(cfg, "evaluate", client=client) as logger,
    ):
        tracking.record_stage_outputs(cfg, "evaluate", logger)
    failed = client.search_runs(
        [client.get_experiment_by_name("dmax").experiment_id], "tags.`dmax.preset` = 'missing-eval'"
    )
    assert [r.info.status for r in failed] == ["FAILED"]
