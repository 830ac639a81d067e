"""The team platform on PostgreSQL: a real PostgreSQL server (the Debian package's binaries, started here on
127.0.0.1), the Prefect server and the MLflow server keeping their state in it, a real process worker, and
the smoke deployment run through it. Checked in the databases themselves (psql), not only through the APIs:
the flow run is COMPLETED in Prefect's `flow_run` table, and MLflow's `runs`/`metrics` tables hold the
pipeline's stage runs and the headline metrics; nothing was written to a sqlite file.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import pytest
from platform_helpers import FAST_SMOKE, REPO, flow_run_logs, run_deployment, wait_flow_run

from flows.postgres import LocalPostgres, PostgresError, database_urls, postgres_binary
from flows.servers import LocalPlatform, free_port

pytestmark = [pytest.mark.integration, pytest.mark.timeout(1200)]

try:
    postgres_binary("pg_ctl")
except PostgresError as exc:  # .ci/run installs it; elsewhere say what is missing
    pytestmark.append(pytest.mark.skip(reason=str(exc)))


@pytest.fixture(scope="module")
def postgres():
    # Under /tmp (traversable by every user): as root the server runs as the `postgres` user.
    parent = Path(tempfile.mkdtemp(prefix="dmax-pg-"))
    parent.chmod(0o755)
    root = parent / "server"
    server = LocalPostgres(root, port=free_port())
    server.start()
    try:
        yield server
    finally:
        server.stop()
        assert not server.running()


@pytest.fixture(scope="module")
def platform(postgres, tmp_path_factory):
    state = tmp_path_factory.mktemp("platform-pg")
    local = LocalPlatform(
        project=REPO, prefect_port=free_port(), mlflow_port=free_port(), prefect_home=state / "prefect",
        state_dir=state / "servers", mlflow_db=state / "mlruns.db", mlflow_artifacts=state / "mlartifacts",
        database_url=postgres.url,
    )
    try:
        local.start()
        yield local
    finally:
        local.stop()


def test_database_urls_name_the_drivers_and_databases():
    urls = database_urls("postgresql://team:secret@db.internal:5432")
    assert urls == {"prefect": "postgresql+asyncpg://team:secret@db.internal:5432/prefect",
                    "mlflow": "postgresql+psycopg2://team:secret@db.internal:5432/mlflow"}
    with pytest.raises(PostgresError, match="must look like postgresql://"):
        database_urls("sqlite:///x.db")


def test_smoke_deployment_runs_on_postgres(postgres, platform, tmp_path):
    assert "postgresql" in " ".join(platform.mlflow_server_command())
    flow_run_id = run_deployment(platform, "dmax/full-pipeline", "smoke", [f"run_dir={tmp_path / 'run'}", *FAST_SMOKE])
    flow_run = wait_flow_run(platform, flow_run_id)
    assert flow_run["state"]["type"] == "COMPLETED", flow_run_logs(platform, flow_run_id)
    assert postgres.psql(f"SELECT state_type FROM flow_run WHERE id = '{flow_run_id}'", "prefect") == "COMPLETED"
    run_names = set(postgres.psql("SELECT name FROM runs", "mlflow").splitlines())
    assert {"pretrain", "distill", "train", "evaluate", "report"} <= run_names, run_names
    assert int(postgres.psql("SELECT count(*) FROM metrics WHERE key = 'tpf_ratio' OR key = 'headline_valid'",
                             "mlflow")) >= 1
    assert not (Path(platform.mlflow_db)).exists()  # the sqlite default was not used
