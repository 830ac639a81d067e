"""The platform layer: MLflow tracking against a real sqlite store, the registry and its champion, the
environment switches, and the stage table holding the CLI, Prefect, dvc.yaml and params.yaml to itself.

Stages run for real on the smoke preset where it matters (the control checkpoint registered by
`dmax train train.objective=sft --track`); the full pipeline under real servers is in tests/integration/.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import mlflow.artifacts
import pytest
import yaml
from mlflow.entities import LoggedModelStatus

from dmax_core import cli, env
from dmax_core.config import ExperimentConfig, load_config
from dmax_core.errors import DataError
from dmax_core.evaluation.records import Cell, Evaluation
from dmax_core.evaluation.rules import compute_headline
from dmax_core.files import checksums_digest
from dmax_core.results import DatasetUse, ModelCandidate, StageResult
from dmax_core.stages.dvc import dvc_pipeline
from dmax_core.stages.runner import run_stage
from dmax_core.stages.table import STAGES
from dmax_core.tracking import Tracker, registered_model_name, tracking_client
from dmax_core.tracking.store import default_artifact_location, experiment_id, tracking_uri
from dmax_core.trajectories import read_manifest

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
    assert tracking_uri() == f"sqlite:///{REPO / 'mlruns.db'}"
    assert default_artifact_location(tracking_uri()) == (REPO / "mlartifacts").as_uri()
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://127.0.0.1:5999")
    assert tracking_uri() == "http://127.0.0.1:5999"
    assert default_artifact_location("http://127.0.0.1:5999") is None


def test_the_distribution_name_is_not_the_taken_one():
    """`dmax` on the public index is an unrelated project (toolchain.md); the command stays `dmax`."""
    project = (REPO / "pyproject.toml").read_text()
    assert f'name = "{env.DISTRIBUTION}"' in project and env.DISTRIBUTION != "dmax"
    assert 'dmax = "dmax_core.cli:main"' in project


# --------------------------------------------------------------------------------- real MLflow
@pytest.fixture(scope="module")
def store(tmp_path_factory):
    return f"sqlite:///{tmp_path_factory.mktemp('mlflow') / 'mlruns.db'}"


@pytest.fixture(scope="module")
def tracker(store):
    return Tracker(tracking_client(store))


def _config(tmp_path: Path, preset: str, *overrides: str):
    return load_config("smoke", [f"run_dir={tmp_path / 'run'}", f"preset={preset}", *overrides])


def _checkpoint(directory: Path, content: bytes) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "model.safetensors").write_bytes(content)
    (directory / "config.json").write_text("{}")
    return directory


def _evaluation(accuracy: float, tpf: float) -> Evaluation:
    def cell(model, decoder, threshold, split, acc, speed):
        return Cell(model=model, decoder=decoder, threshold=threshold, split=split, n=100, accuracy=acc,
                    tpf=speed, tps=100.0, nfe=5.0, tokens=20.0, tpf_total=speed, tps_total=90.0)

    cells = [cell("base", "threshold", 1.0, "test", 0.99, 1.0), cell("base", "threshold", 0.5, "test", 0.5, 4.0),
             cell("dmax", "spd", 0.5, "validation", accuracy, tpf), cell("dmax", "spd", 0.5, "test", accuracy, tpf)]
    headline = compute_headline(cells, ExperimentConfig())
    return Evaluation(cells=tuple(cells), headline=headline, headlines={"running_total": headline})


def test_logger_batches_and_mirrors_metrics_to_the_parent(tracker, tmp_path):
    cfg = _config(tmp_path, "logger-test")
    client = tracker.client
    with (
        tracker.pipeline_run(cfg) as parent,
        tracker.stage_run(cfg, "train", ("seed", "block_length", "train"), parent_run_id=parent) as run,
    ):
        for step in range(1, 31):
            run.logger.log_metrics({"train/loss": 1.0 / step, "train/lr": 1e-3}, step=step)
        run.logger.log_params({"extra": {"nested": 1}})
        run.logger.log_params({"extra.nested": 1})  # same value again: skipped, not an error
        stage_id = run.logger.run_id
    stage, parent_run = client.get_run(stage_id), client.get_run(parent)
    history = client.get_metric_history(stage_id, "train/loss")
    assert [m.step for m in history] == list(range(1, 31))
    assert [m.value for m in history] == [1.0 / step for step in range(1, 31)]
    assert len(client.get_metric_history(parent, "train/loss")) == 30
    assert stage.data.tags["mlflow.parentRunId"] == parent and stage.data.tags["dmax.stage"] == "train"
    assert stage.data.params["extra.nested"] == "1" and stage.data.params["train.lr"] == str(cfg.train.lr)
    assert "pretrain.lr" not in stage.data.params  # stage runs carry only the groups they read
    assert parent_run.data.params["model.hidden_size"] == str(cfg.model.hidden_size)
    assert parent_run.data.params["decoding.spd.confidence_stop"] == "0.9"
    assert parent_run.data.tags["dmax.preset"] == "logger-test"
    assert parent_run.data.tags["dmax.version"].startswith(env.DISTRIBUTION)
    assert parent_run.data.tags["dmax.device"] == env.device_name()
    assert stage.info.status == parent_run.info.status == "FINISHED"


def test_registry_moves_champion_only_on_a_real_improvement(tracker, tmp_path):
    """A fake stage offers four checkpoints; each is evaluated and judged by the champion rule."""
    cfg = _config(tmp_path, "registry-test")
    client = tracker.client
    name = registered_model_name("registry-test", "oput")
    versions = []
    for i, (accuracy, tpf) in enumerate([(0.90, 3.0), (0.895, 4.0), (0.88, 5.0), (0.91, 3.5)]):
        directory = _checkpoint(Path(cfg.run_dir) / "dmax", f"weights {i}".encode())
        digest = f"{i:064x}"
        with tracker.stage_run(cfg, "train", ("train",)) as run:
            run.record(StageResult("train", outputs={"dmax": directory},
                                   candidate=ModelCandidate("dmax", "oput", digest)))
        with tracker.stage_run(cfg, "evaluate", ("evaluate",)) as run:
            facts = run.record(StageResult("evaluate", evaluation=_evaluation(accuracy, tpf),
                                           evaluated={"oput": digest}, champion_family="oput"))
        versions.append((facts["model_version"], facts["champion"]))
    assert [promoted for _, promoted in versions] == ["true", "true", "false", "false"]
    assert str(client.get_model_version_by_alias(name, "champion").version) == versions[1][0]
    assert str(client.get_model_version_by_alias(name, "candidate").version) == versions[3][0]
    third = client.get_model_version(name, versions[2][0])
    assert third.tags["dmax.champion_decision"].startswith("accuracy loss 1.50 pp > 1 pp (tpf 5.000 vs champion 4.000")
    assert float(third.tags["eval.tpf"]) == 5.0
    assert third.source.endswith("/dmax")


def test_a_stage_run_records_its_outputs_and_fails_in_words(tracker, tmp_path):
    cfg = _config(tmp_path, "stage-test")
    client = tracker.client
    out = Path(cfg.run_dir) / "report"
    out.mkdir(parents=True)
    (out / "report.md").write_text("# report\n")
    with tracker.stage_run(cfg, "report", ("report",)) as run:
        run.record(StageResult("report", outputs={"report": out}, metrics={"report/rows": 2.0}))
        run_id = run.logger.run_id
    done = client.get_run(run_id)
    assert done.info.status == "FINISHED" and done.data.metrics["report/rows"] == 2.0
    assert [a.path for a in client.list_artifacts(run_id, "report")] == ["report/report.md"]

    with pytest.raises(DataError, match="corrupt"), tracker.pipeline_run(cfg) as parent, \
            tracker.stage_run(cfg, "train", ("train",), parent_run_id=parent):
        raise DataError("trajectory file trajectories.parquet is corrupt or not parquet")
    assert client.get_run(parent).info.status == "FAILED"
    failed = client.search_runs([client.get_run(parent).info.experiment_id], f"tags.`mlflow.parentRunId` = '{parent}'")
    assert [r.info.status for r in failed] == ["FAILED"]
    assert "corrupt" in failed[0].data.tags["dmax.error"]

    with pytest.raises(FileNotFoundError, match="does not exist"), tracker.stage_run(cfg, "eval", ()) as run:
        run.record(StageResult("evaluate", outputs={"eval": Path(cfg.run_dir) / "missing"}))


# ------------------------------------------------------------- what the MLflow runs table shows
def _stage_runs(client, preset: str, stage: str):
    experiment = client.get_experiment_by_name("dmax").experiment_id
    return client.search_runs([experiment], f"tags.`dmax.stage` = '{stage}' and tags.`dmax.preset` = '{preset}'")


def _input_tags(dataset_input) -> dict[str, str]:
    return {tag.key: tag.value for tag in dataset_input.tags}


def test_the_experiment_opens_on_its_runs_as_model_training(tracker, tmp_path):
    client = tracker.client
    made = client.get_experiment(experiment_id(client, "kind-new"))
    assert made.tags["mlflow.experimentKind"] == "custom_model_development"
    older = client.create_experiment("kind-older", artifact_location=tmp_path.as_uri())  # before dmax set it
    chosen = client.create_experiment("kind-chosen", artifact_location=tmp_path.as_uri(),
                                      tags={"mlflow.experimentKind": "genai_development"})
    assert experiment_id(client, "kind-older") == older and experiment_id(client, "kind-chosen") == chosen
    assert client.get_experiment(older).tags["mlflow.experimentKind"] == "custom_model_development"
    assert client.get_experiment(chosen).tags["mlflow.experimentKind"] == "genai_development"  # a UI choice stays


def test_stage_runs_list_the_trajectories_and_their_checkpoints(tracker, tmp_path):
    """Dataset column: the trajectories (written by distill, read by train); Models column: each checkpoint
    as a logged model pointing at the run's artifact, the registered version linked to it."""
    cfg = _config(tmp_path, "lineage-test")
    client = tracker.client
    run_dir = Path(cfg.run_dir)
    base, dmax = _checkpoint(run_dir / "base", b"base weights"), _checkpoint(run_dir / "dmax", b"dmax weights")
    data = run_dir / "trajectories"
    data.mkdir()
    (data / "trajectories.parquet").write_bytes(b"rows")
    digest = "ab" * 32
    with pytest.raises(ValueError, match="names checkpoint 'dmax', which is not one of its outputs"):
        StageResult("pretrain", outputs={"base": base}, checkpoints={"dmax": digest})
    results = (
        StageResult("pretrain", outputs={"base": base}, checkpoints={"base": "1" * 64}),
        StageResult("distill", outputs={"trajectories": data},
                    datasets=(DatasetUse("lineage-trajectories", digest, data, "output"),)),
        StageResult("train", outputs={"dmax": dmax},
                    datasets=(DatasetUse("lineage-trajectories", digest, data, "training"),),
                    candidate=ModelCandidate("dmax", "oput", "2" * 64)),
    )
    runs = {}
    with tracker.pipeline_run(cfg) as parent:
        for result in results:
            with tracker.stage_run(cfg, result.stage, (), parent_run_id=parent) as run:
                run.record(result)
                runs[result.stage] = run.logger.run_id

    assert client.get_experiment_by_name("dmax").tags["mlflow.experimentKind"] == "custom_model_development"
    [read] = client.get_run(runs["train"]).inputs.dataset_inputs
    assert (read.dataset.name, read.dataset.digest, read.dataset.source_type) == (
        "lineage-trajectories", digest[:36], "local")
    assert json.loads(read.dataset.source) == {"uri": data.resolve().as_posix()}  # outside the project: absolute
    assert _input_tags(read) == {"mlflow.data.context": "training", "dmax.dataset_digest": digest}
    [written] = client.get_run(runs["distill"]).inputs.dataset_inputs
    assert _input_tags(written)["mlflow.data.context"] == "output" and written.dataset.digest == digest[:36]
    assert [d.dataset.name for d in client.get_run(parent).inputs.dataset_inputs] == ["lineage-trajectories"]

    models = {}
    for stage, output, weights in (("pretrain", "base", "1" * 64), ("train", "dmax", "2" * 64)):
        [produced] = client.get_run(runs[stage]).outputs.model_outputs
        model = client.get_logged_model(produced.model_id)
        assert (model.name, model.source_run_id, model.status) == (
            f"lineage-test-{output}", runs[stage], LoggedModelStatus.READY)
        assert model.tags["dmax.checkpoint_sha256"] == weights and model.model_type == "dmax-checkpoint"
        pointed = mlflow.artifacts.list_artifacts(model.tags["dmax.checkpoint_uri"], tracking_uri=client.tracking_uri)
        assert "model.safetensors" in {Path(f.path).name for f in pointed}  # the run's one copy of the weights
        models[output] = model.model_id
    assert {m.model_id for m in client.get_run(parent).outputs.model_outputs} == set(models.values())
    name = registered_model_name("lineage-test", "oput")
    version = client.get_model_version_by_alias(name, "candidate")
    assert version.tags["dmax.logged_model_id"] == models["dmax"]
    assert version.source == client.get_logged_model(models["dmax"]).tags["dmax.checkpoint_uri"] == \
        f"runs:/{runs['train']}/dmax"
    assert json.loads(client.get_logged_model(models["dmax"]).tags["mlflow.modelVersions"]) == [
        {"name": name, "version": str(version.version)}]


def test_a_task_headline_sorts_the_runs_table(tracker, tmp_path):
    """`eval/<task>/headline/...` are plain run metrics on the evaluate run and its pipeline's parent run."""
    cfg = _config(tmp_path, "sort-test")
    client = tracker.client
    for tpf in (3.0, 5.0, 4.0):
        evaluation = _evaluation(0.95, tpf)
        with tracker.pipeline_run(cfg) as parent, \
                tracker.stage_run(cfg, "evaluate", (), parent_run_id=parent) as run:
            run.record(StageResult("evaluate", metrics=evaluation.metrics(), evaluation=evaluation))
    key = "eval/running_total/headline/tpf_ratio"
    experiment = client.get_experiment_by_name("dmax").experiment_id
    for kind in ("stage", "pipeline"):
        ordered = client.search_runs([experiment], f"tags.`dmax.kind` = '{kind}' and tags.`dmax.preset` = 'sort-test'",
                                     order_by=[f"metrics.`{key}` DESC"])
        assert [r.data.metrics[key] for r in ordered] == [5.0, 4.0, 3.0], kind


@pytest.fixture(scope="module")
def smoke_inputs(tmp_path_factory, tracker):
    """A smoke run's base model and trajectories, made by the real stages, tracked."""
    cfg = load_config("smoke", [f"run_dir={tmp_path_factory.mktemp('tracked') / 'run'}", "preset=tracked-smoke"])
    run_stage("pretrain", cfg, tracker=tracker)
    run_stage("distill", cfg, tracker=tracker)
    return cfg


def test_tracked_sft_training_registers_the_control_checkpoint(smoke_inputs, store, monkeypatch, capsys):
    """`dmax train train.objective=sft --track` logs and registers `control/`, the directory it wrote."""
    cfg = smoke_inputs
    monkeypatch.setenv("MLFLOW_TRACKING_URI", store)
    with pytest.raises(SystemExit) as done:
        cli.main(["train", "--preset", "smoke", f"run_dir={cfg.run_dir}", "preset=tracked-smoke",
                  "train.objective=sft", "--track"])
    assert done.value.code == 0, capsys.readouterr().err
    assert f"train: control -> {cfg.run_dir / 'control'}" in capsys.readouterr().out
    client = tracking_client(store)
    name = registered_model_name("tracked-smoke", "sft")
    version = client.get_model_version_by_alias(name, "candidate")
    assert version.source.endswith("/control")
    artifacts = {Path(a.path).name for a in client.list_artifacts(version.run_id, "control")}
    assert {"model.safetensors", "SHA256SUMS", "tokenizer.json"} <= artifacts
    assert not client.list_artifacts(version.run_id, "dmax")  # nothing logged under a path it did not write
    assert not (cfg.run_dir / "dmax").exists()
    assert client.search_registered_models(f"name = '{registered_model_name('tracked-smoke', 'oput')}'") == []
    assert version.tags["dmax.checkpoint_sha256"] == checksums_digest(cfg.run_dir / "control")
    model = client.get_logged_model(version.tags["dmax.logged_model_id"])
    assert model.name == "tracked-smoke-control"
    assert model.tags["dmax.checkpoint_uri"] == f"runs:/{version.run_id}/control"
    [read] = client.get_run(version.run_id).inputs.dataset_inputs
    digest = read_manifest(cfg.run_dir / "trajectories")["digest"]
    assert (read.dataset.name, read.dataset.digest) == ("tracked-smoke-trajectories", digest[:36])
    assert _input_tags(read) == {"mlflow.data.context": "training", "dmax.dataset_digest": digest}


def test_the_real_stages_record_the_base_model_and_the_trajectories_they_wrote(smoke_inputs, tracker):
    cfg = smoke_inputs
    client = tracker.client
    [pretrain] = _stage_runs(client, "tracked-smoke", "pretrain")
    [distill] = _stage_runs(client, "tracked-smoke", "distill")
    [produced] = pretrain.outputs.model_outputs
    base = client.get_logged_model(produced.model_id)
    assert base.name == "tracked-smoke-base"
    assert base.tags["dmax.checkpoint_sha256"] == checksums_digest(cfg.run_dir / "base")
    [written] = distill.inputs.dataset_inputs
    assert written.dataset.name == "tracked-smoke-trajectories"
    assert _input_tags(written)["mlflow.data.context"] == "output"
    assert _input_tags(written)["dmax.dataset_digest"] == distill.data.tags["dmax.dataset_digest"]


def test_a_tracked_evaluation_logs_what_the_stage_measured_and_judges_the_version(smoke_inputs, store, tmp_path):
    """The real stages, tracked: train registers `dmax/`, evaluate logs every figure of its Evaluation
    under the one naming scheme, finds that version by its weights digest and records the decision."""
    for name in ("base", "trajectories"):  # its own run, independent of the other tests' outputs
        shutil.copytree(smoke_inputs.run_dir / name, tmp_path / "run" / name)
    cfg = load_config("smoke", [f"run_dir={tmp_path / 'run'}", "preset=tracked-eval"])
    tracker = Tracker(tracking_client(store))
    trained = run_stage("train", cfg, tracker=tracker)
    result = run_stage("evaluate", cfg, tracker=tracker)
    client = tracker.client
    runs = client.search_runs([client.get_experiment_by_name("dmax").experiment_id],
                              "tags.`dmax.stage` = 'evaluate' and tags.`dmax.preset` = 'tracked-eval'")
    logged = runs[0].data.metrics
    assert logged == pytest.approx(result.evaluation.metrics())  # every cell figure and the headline
    name = registered_model_name("tracked-eval", "oput")
    version = client.get_model_version_by_alias(name, "candidate")
    assert version.tags["dmax.checkpoint_sha256"] == trained.candidate.digest == checksums_digest(cfg.run_dir / "dmax")
    assert runs[0].data.tags["dmax.model_version"] == str(version.version)
    # the smoke model is untrained, so the headline is refused and the version cannot become champion
    assert version.tags["dmax.champion_decision"].startswith("no headline method cell")
    with pytest.raises(Exception, match="champion"):
        client.get_model_version_by_alias(name, "champion")


def test_tracked_pretrain_with_a_given_base_records_nothing(tmp_path, monkeypatch, capsys):
    store = f"sqlite:///{tmp_path / 'mlruns.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", store)
    (tmp_path / "downloaded").mkdir()
    with pytest.raises(SystemExit) as done:
        cli.main(["pretrain", "--preset", "smoke", f"model.base_path={tmp_path / 'downloaded'}",
                  f"run_dir={tmp_path / 'run'}", "--track"])
    assert done.value.code == 0
    assert "pretrain: skipped (model.base_path is set" in capsys.readouterr().out
    client = tracking_client(store)
    experiments = client.search_experiments()
    assert not [r for e in experiments for r in client.search_runs([e.experiment_id])]
    assert not (tmp_path / "run" / "base").exists()


# -------------------------------------------------------------------- the three ways to run it
def test_the_cli_offers_one_command_per_stage():
    parser = cli._parser()
    commands = next(a for a in parser._actions if a.dest == "command").choices
    assert list(commands) == [s.name for s in STAGES] + list(cli.COMMANDS) + list(cli.TOOLS)
    for stage in STAGES:
        assert commands[stage.name].description == stage.help


def test_prefect_flows_and_deployments_follow_the_stage_table():
    import flows.pipeline as pipeline_module

    assert list(pipeline_module.STAGE_TASKS) == [s.name for s in STAGES]
    assert [t.name for t in pipeline_module.STAGE_TASKS.values()] == [s.name for s in STAGES]
    spec = yaml.safe_load((REPO / "prefect.yaml").read_text())
    from flows.deployments import deployments as generated

    assert spec == generated()  # prefect.yaml is generated from the table (`make platform-files`)
    deployments = {d["name"]: d for d in spec["deployments"]}
    stage_deployments = [d for d in spec["deployments"] if d["entrypoint"].endswith(":stage_flow")]
    assert [d["name"] for d in stage_deployments] == [s.name for s in STAGES]
    assert all(d["parameters"]["stage"] == d["name"] for d in stage_deployments)
    for deployment in deployments.values():
        path, attribute = deployment["entrypoint"].split(":")
        assert (REPO / path).is_file()
        assert hasattr(getattr(pipeline_module, attribute), "fn"), f"{attribute} is not a Prefect flow"
        assert deployment["work_pool"]["name"] == "dmax-process"
    assert pipeline_module.full_pipeline.name == "dmax"  # -> `prefect deployment run dmax/full-pipeline`
    assert pipeline_module.stage_flow.name == "dmax-stage"  # -> `prefect deployment run dmax-stage/train`
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


def test_dvc_yaml_is_the_stage_table():
    """dvc.yaml is generated from the table (`make platform-files`); any drift fails here."""
    committed = yaml.safe_load((REPO / "dvc.yaml").read_text())
    assert committed == dvc_pipeline()
    for stage in committed["stages"].values():
        for dep in stage["deps"]:
            assert "${run_dir}" in dep or (REPO / dep).exists(), f"dvc.yaml dep {dep} does not exist"
    config = (REPO / ".dvc" / "config").read_text()
    assert "analytics = false" in config and "check_update = false" in config
    assert "__pycache__/" in (REPO / ".dvcignore").read_text()


def test_params_yaml_is_the_resolved_tiny_preset_and_has_every_group_the_table_names():
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    assert params == load_config("tiny", ["run_dir=runs/dvc"]).model_dump(mode="json")
    for stage in STAGES:
        for group in stage.param_groups:
            assert group in params, f"stage {stage.name} reads {group}, which params.yaml lacks"


def test_every_stage_run_carries_its_declared_param_groups(tracker, tmp_path):
    cfg = _config(tmp_path, "groups-test")
    for stage in STAGES:
        with tracker.pipeline_run(cfg) as parent, \
                tracker.stage_run(cfg, stage.name, stage.logged_params, parent_run_id=parent) as run:
            run_id = run.logger.run_id
        params = tracker.client.get_run(run_id).data.params
        assert {key.split(".")[0] for key in params} == set(stage.logged_params), stage.name
        assert set(stage.param_groups) < set(stage.logged_params)


def test_evaluation_metrics_reach_mlflow_under_one_name(tracker, tmp_path):
    cfg = _config(tmp_path, "names-test")
    evaluation = _evaluation(0.95, 4.0)
    with tracker.stage_run(cfg, "evaluate", ("evaluate",)) as run:
        run.record(StageResult("evaluate", metrics=evaluation.headline.metrics(), evaluation=evaluation))
        run_id = run.logger.run_id
    logged = tracker.client.get_run(run_id).data.metrics
    assert logged["tpf"] == 4.0 and logged["baseline/tpf"] == 1.0 and logged["tpf_ratio"] == 4.0
    assert set(logged) == set(evaluation.headline.metrics())
    assert evaluation.cells[0].metrics()["eval/test/base/threshold/thr_1/tpf"] == 1.0
