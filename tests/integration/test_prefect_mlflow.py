"""The platform end to end: real Prefect server + real MLflow server + a real process worker.

Deploys prefect.yaml, runs `prefect deployment run dmax/full-pipeline` with the smoke preset, waits for
COMPLETED, then reads the MLflow REST API: parent run, stage runs, metrics, registered version with the
`candidate` alias. A second deployment run on a corrupt trajectory file must fail in words, without
retries and without touching the existing outputs. Servers are stopped in the fixture's teardown
(process groups), also when a test fails.
"""

from __future__ import annotations

import hashlib
import shutil
import urllib.parse
from pathlib import Path

import pytest
from mlflow import MlflowClient
from platform_helpers import FAST_SMOKE, REPO, flow_run_logs, http_json, run_deployment, wait_flow_run

from dmax_core.config import load_config
from dmax_core.stages.runner import run_stage
from flows.servers import LocalPlatform, free_port, stop_process_tree

pytestmark = [pytest.mark.integration, pytest.mark.timeout(1200)]

@pytest.fixture(scope="module")
def platform(tmp_path_factory):
    state = tmp_path_factory.mktemp("platform")
    local = LocalPlatform(
        project=REPO,
        prefect_port=free_port(),
        mlflow_port=free_port(),
        prefect_home=state / "prefect",
        state_dir=state / "servers",
        mlflow_db=state / "mlruns.db",
        mlflow_artifacts=state / "mlartifacts",
    )
    pids: list[int] = []
    try:
        local.start()  # stops what it started if any step fails
        pids = [pid for name in ("prefect-server", "mlflow-server", "worker") if (pid := local.pid(name))]
        yield local
    finally:
        local.stop()
        for pid in pids:  # belt and braces: nothing of ours may outlive the test session
            stop_process_tree(pid, grace_seconds=2)
        assert all(local.pid(name) is None for name in ("prefect-server", "mlflow-server", "worker"))


def mlflow(platform: LocalPlatform, endpoint: str, payload: dict | None = None, **query: str):
    url = f"{platform.mlflow_url}/api/2.0/mlflow/{endpoint}"
    if query:
        url += "?" + urllib.parse.urlencode(query)
    return http_json(url, payload)


def search_runs(platform: LocalPlatform, experiment_id: str, filter_string: str) -> list[dict]:
    answer = mlflow(platform, "runs/search", {"experiment_ids": [experiment_id], "filter": filter_string})
    return answer.get("runs", [])


@pytest.fixture(scope="module")
def pipeline(platform, tmp_path_factory):
    """One full-pipeline deployment run with the smoke preset; returns what the tests inspect."""
    run_dir = tmp_path_factory.mktemp("pipeline") / "run"
    flow_run_id = run_deployment(platform, "dmax/full-pipeline", "smoke", [f"run_dir={run_dir}", *FAST_SMOKE])
    flow_run = wait_flow_run(platform, flow_run_id)
    assert flow_run["state"]["type"] == "COMPLETED", flow_run_logs(platform, flow_run_id)
    return {"flow_run": flow_run, "run_dir": run_dir}


def test_full_pipeline_deployment_is_tracked_in_mlflow(platform, pipeline):
    run_dir: Path = pipeline["run_dir"]
    for output in ("base/model.safetensors", "trajectories/trajectories.parquet", "dmax/model.safetensors",
                   "eval/metrics.json", "report/report.md", "report/tradeoff.png"):  # fmt: skip
        assert (run_dir / output).is_file(), output

    experiment = mlflow(platform, "experiments/get-by-name", experiment_name="dmax")["experiment"]
    flow_run_id = pipeline["flow_run"]["id"]
    parents = search_runs(platform, experiment["experiment_id"], f"tags.`prefect.flow_run_id` = '{flow_run_id}'")
    assert len(parents) == 1
    parent = parents[0]
    assert parent["info"]["status"] == "FINISHED"
    assert parent["info"]["run_name"] == pipeline["flow_run"]["name"]
    tags = {t["key"]: t["value"] for t in parent["data"]["tags"]}
    params = {p["key"]: p["value"] for p in parent["data"]["params"]}
    for tag in ("mlflow.source.git.commit", "dmax.preset", "dmax.torch_version", "dmax.transformers_version",
                "dmax.device", "dmax.dataset_digest"):  # fmt: skip
        assert tags.get(tag), tag
    assert tags["dmax.preset"] == "smoke"
    assert params["run_dir"] == str(run_dir) and params["evaluate.n_test"] == "2"

    children = search_runs(
        platform, experiment["experiment_id"], f"tags.`mlflow.parentRunId` = '{parent['info']['run_id']}'"
    )
    stages = {c["info"]["run_name"]: c for c in children}
    assert set(stages) == {"pretrain", "distill", "train", "evaluate", "report"}
    assert all(c["info"]["status"] == "FINISHED" for c in children)

    train_metrics = {m["key"] for m in stages["train"]["data"]["metrics"]}
    assert "train/loss" in train_metrics
    eval_metrics = {m["key"]: m["value"] for m in stages["evaluate"]["data"]["metrics"]}
    for field in ("accuracy", "tpf", "tps", "tps_total", "nfe", "tokens", "tpf_total"):
        cells = [k for k in eval_metrics if k.startswith("eval/ledger/test/") and k.endswith(f"/{field}")]
        assert len(cells) == 4, (field, sorted(eval_metrics))  # {base, dmax} x {threshold, spd}
    parent_metrics = {m["key"] for m in parent["data"]["metrics"]}
    assert "eval/ledger/test/dmax/spd/thr_0.5/accuracy" in parent_metrics  # mirrored for run comparison

    artifacts = mlflow(platform, "artifacts/list", run_id=stages["train"]["info"]["run_id"], path="dmax")
    names = {Path(f["path"]).name for f in artifacts["files"]}
    assert {"model.safetensors", "config.json", "tokenizer.json"} <= names
    eval_files = mlflow(platform, "artifacts/list", run_id=stages["evaluate"]["info"]["run_id"], path="eval")
    assert {"metrics.json", "samples.jsonl"} <= {Path(f["path"]).name for f in eval_files["files"]}

    candidate = mlflow(platform, "registered-models/alias", name="dmax-oput-smoke", alias="candidate")
    version = candidate["model_version"]
    assert version["run_id"] == stages["train"]["info"]["run_id"]
    assert version["source"].endswith("/dmax")
    _assert_lineage(platform, parent["info"]["run_id"], stages, version)


def _assert_lineage(platform: LocalPlatform, parent_id: str, stages: dict[str, dict], version: dict) -> None:
    """Through the server: the experiment opens as model training, train lists the trajectories it read,
    its checkpoint is a logged model (also on the parent) linked to the registered version, and the task
    headline is a plain metric of the evaluate run and the parent."""
    client = MlflowClient(platform.mlflow_url)
    assert client.get_experiment_by_name("dmax").tags["mlflow.experimentKind"] == "custom_model_development"
    train_id = stages["train"]["info"]["run_id"]
    train = client.get_run(train_id)
    [read] = train.inputs.dataset_inputs
    digest = train.data.tags["dmax.dataset_digest"]
    assert (read.dataset.name, read.dataset.digest) == ("smoke-trajectories", digest[:36])
    assert {t.key: t.value for t in read.tags}["mlflow.data.context"] == "training"
    [produced] = train.outputs.model_outputs
    model = client.get_logged_model(produced.model_id)
    assert model.name == "smoke-dmax" and model.tags["dmax.checkpoint_uri"] == f"runs:/{train_id}/dmax"
    assert produced.model_id in {m.model_id for m in client.get_run(parent_id).outputs.model_outputs}
    assert {t["key"]: t["value"] for t in version["tags"]}["dmax.logged_model_id"] == produced.model_id
    for run_id in (stages["evaluate"]["info"]["run_id"], parent_id):
        assert isinstance(client.get_run(run_id).data.metrics["eval/ledger/headline/valid"], float)


def _tree_digest(directory: Path) -> str:
    digest = hashlib.sha256()
    for path in sorted(directory.rglob("*")):
        digest.update(str(path.relative_to(directory)).encode())
        if path.is_file():
            digest.update(path.read_bytes())
    return digest.hexdigest()


def test_corrupt_trajectories_fail_the_flow_run_in_words(platform, pipeline):
    run_dir: Path = pipeline["run_dir"]
    (run_dir / "trajectories" / "trajectories.parquet").write_bytes(b"this is not a parquet file")
    before = _tree_digest(run_dir / "dmax")

    flow_run_id = run_deployment(platform, "dmax-stage/train", "smoke", [f"run_dir={run_dir}", *FAST_SMOKE])
    flow_run = wait_flow_run(platform, flow_run_id)

    state = flow_run["state"]
    assert state["type"] == "FAILED", flow_run_logs(platform, flow_run_id)
    assert "corrupt" in state["message"] and "trajectories.parquet" in state["message"], state["message"]
    task_runs = http_json(
        f"{platform.prefect_api_url}/task_runs/filter", {"flow_runs": {"id": {"any_": [flow_run_id]}}}
    )
    assert [t["run_count"] for t in task_runs] == [1]  # a user error is not retried
    assert _tree_digest(run_dir / "dmax") == before  # the previous checkpoint is untouched
    assert not [p.name for p in run_dir.iterdir() if p.name.startswith(".")]  # no staging leftovers

    experiment = mlflow(platform, "experiments/get-by-name", experiment_name="dmax")["experiment"]
    failed = search_runs(platform, experiment["experiment_id"], "attributes.status = 'FAILED'")
    errors = [t["value"] for r in failed for t in r["data"]["tags"] if t["key"] == "dmax.error"]
    assert any("corrupt" in e for e in errors), errors


def test_sharded_distillation_fans_out_over_the_pool_and_merges(platform, tmp_path):
    """`dmax-distill/sharded` with 2 shards: two `dmax-stage/distill` flow runs taken by the worker, then the
    merge; the merged dataset is byte for byte the unsharded one. A rerun decodes nothing; with one shard
    removed (a failed shard), a rerun decodes only that one."""
    base = ["model.base_path=" + str(REPO / "models" / "ledger-base"), "distill.gen_length=48",
            "distill.n_prompts=12", "distill.batch_size=4"]
    run_dir = tmp_path / "sharded"
    overrides = [*base, f"run_dir={run_dir}"]

    def run_sharded() -> str:
        flow_run_id = run_deployment(platform, "dmax-distill/sharded", "smoke", overrides, shards=2)
        flow_run = wait_flow_run(platform, flow_run_id)
        assert flow_run["state"]["type"] == "COMPLETED", flow_run_logs(platform, flow_run_id)
        return flow_run_logs(platform, flow_run_id)

    logs = run_sharded()
    assert "2 of 2 shards to decode: [0, 1]" in logs
    shards = sorted((run_dir / "trajectory-shards").iterdir())
    assert [s.name for s in shards] == ["shard-000-of-002", "shard-001-of-002"]
    plain = load_config("smoke", [*base, f"run_dir={tmp_path / 'plain'}"])
    run_stage("distill", plain)
    merged = (run_dir / "trajectories" / "trajectories.parquet").read_bytes()
    assert merged == (plain.run_dir / "trajectories" / "trajectories.parquet").read_bytes()

    stamps = {s.name: (s / "manifest.json").stat().st_mtime_ns for s in shards}
    assert "0 of 2 shards to decode" in run_sharded()
    assert {s.name: (s / "manifest.json").stat().st_mtime_ns for s in shards} == stamps
    shutil.rmtree(shards[1])  # as if that shard's worker had failed
    assert "1 of 2 shards to decode: [1]" in run_sharded()
    assert (shards[0] / "manifest.json").stat().st_mtime_ns == stamps["shard-000-of-002"]
    assert (run_dir / "trajectories" / "trajectories.parquet").read_bytes() == merged
