"""The container files, validated statically: no container engine runs on this machine (a docker client
without a daemon, no compose plugin, no registry for base images), so nothing here was built or started.
What can be checked without building is: the compose file's services, health checks, start order, volumes
and 127.0.0.1-only ports; the database URLs use the drivers the platform uses (`flows.postgres`); the worker
serves the work pool the deployments name; every file a Dockerfile copies exists; the platform image's
package selection finds its pins in the lock file."""

from __future__ import annotations

import re
from pathlib import Path

import yaml

from flows.credentials import (
    MLFLOW_ADMIN_PASSWORD,
    MLFLOW_SECRET_KEY,
    MLFLOW_WORKER_PASSWORD,
    POSTGRES_PASSWORD,
    PREFECT_AUTH_STRING,
)
from flows.postgres import database_urls
from flows.servers import WORK_POOL

REPO = Path(__file__).resolve().parent.parent
DOCKER = REPO / "docker"


def _compose() -> dict:
    return yaml.safe_load((DOCKER / "compose.yaml").read_text())


def test_compose_wires_postgres_both_servers_and_a_gpu_worker():
    services = _compose()["services"]
    assert {"postgres", "prefect", "mlflow", "worker"} <= set(services)
    for name in ("postgres", "prefect", "mlflow", "worker"):
        assert services[name]["healthcheck"]["test"], name
    assert services["prefect"]["depends_on"]["postgres"]["condition"] == "service_healthy"
    assert services["mlflow"]["depends_on"]["postgres"]["condition"] == "service_healthy"
    assert {k: v["condition"] for k, v in services["worker"]["depends_on"].items()} == {
        "prefect": "service_healthy", "mlflow": "service_healthy"}
    devices = services["worker"]["deploy"]["resources"]["reservations"]["devices"]
    assert devices == [{"driver": "nvidia", "count": 1, "capabilities": ["gpu"]}]
    for service in services.values():
        for port in service.get("ports", []):
            assert port.startswith("127.0.0.1:"), port
    assert set(_compose()["volumes"]) == {"postgres-data", "mlflow-artifacts", "runs"}


def test_database_urls_and_work_pool_match_the_platform():
    services = _compose()["services"]
    drivers = {name: url.split("://")[0] for name, url in database_urls("postgresql://u@h:1").items()}
    prefect_url = services["prefect"]["environment"]["PREFECT_API_DATABASE_CONNECTION_URL"]
    mlflow_url = services["mlflow"]["command"][services["mlflow"]["command"].index("--backend-store-uri") + 1]
    assert prefect_url.startswith(drivers["prefect"] + "://") and prefect_url.endswith("/prefect")
    assert mlflow_url.startswith(drivers["mlflow"] + "://") and mlflow_url.endswith("/mlflow")
    assert "CREATE DATABASE mlflow" in (DOCKER / "postgres-init.sql").read_text()
    entrypoint = re.search(r"^ENTRYPOINT (.*)$", (DOCKER / "worker.Dockerfile").read_text(), re.M).group(1)
    assert f'"--pool", "{WORK_POOL}"' in entrypoint
    deployments = yaml.safe_load((REPO / "prefect.yaml").read_text())["deployments"]
    assert {d["work_pool"]["name"] for d in deployments} == {WORK_POOL}


def test_dockerfiles_copy_files_that_exist_and_pin_what_they_install():
    for dockerfile in DOCKER.glob("*.Dockerfile"):
        for line in dockerfile.read_text().splitlines():
            if line.startswith("COPY "):
                for source in line.split()[1:-1]:
                    assert (REPO / source).exists(), f"{dockerfile.name}: COPY {source} does not exist"
    for service in _compose()["services"].values():
        build = service.get("build")
        if build:
            assert (DOCKER / build["context"] / build["dockerfile"]).is_file()
    lock = (REPO / "requirements" / "lock.txt").read_text().splitlines()
    pattern = re.search(r"grep -E '(\^\([^']+\))'", (DOCKER / "platform.Dockerfile").read_text()).group(1)
    selected = [line for line in lock if re.match(pattern, line)]
    assert {re.split(r"[=<>]", line)[0] for line in selected} == {"prefect", "fastapi", "mlflow", "psycopg2-binary",
                                                                   "flask-wtf"}  # flask-wtf: the basic-auth app


def test_compose_has_the_team_platforms_authentication():
    """Secrets are compose secrets named like flows.credentials' files; no URL carries a password; the
    servers run their own auth (basic-auth app, PostgreSQL scram-sha-256, the auth string via the entry
    script); the mlflow_auth database exists."""
    compose = _compose()
    services = compose["services"]
    assert {name: spec["file"] for name, spec in compose["secrets"].items()} == {
        s.name: f"../.secrets/{s.name}" for s in (POSTGRES_PASSWORD, PREFECT_AUTH_STRING, MLFLOW_ADMIN_PASSWORD,
                                                  MLFLOW_WORKER_PASSWORD, MLFLOW_SECRET_KEY)}
    text = (DOCKER / "compose.yaml").read_text()
    assert not re.search(r"://[^/@\s]+:[^/@\s]+@", text), "a URL with a password"
    assert "POSTGRES_PASSWORD:" not in text
    postgres = services["postgres"]["environment"]
    assert postgres["POSTGRES_HOST_AUTH_METHOD"] == "scram-sha-256" and "trust" not in postgres["POSTGRES_INITDB_ARGS"]
    command = services["mlflow"]["command"]
    assert command[command.index("--app-name") + 1] == "basic-auth"
    script = (DOCKER / "with-secrets.sh").read_text()
    for variable in ("PGPASSWORD", "PREFECT_SERVER_API_AUTH_STRING", "MLFLOW_TRACKING_PASSWORD",
                     "MLFLOW_AUTH_CONFIG_PATH"):
        assert variable in script
    for name in ("prefect", "mlflow", "worker", "worker-deploy"):
        assert "with-secrets" in str(services[name]["entrypoint"]), name
        assert set(services[name]["secrets"]) <= set(compose["secrets"]), name
    assert "CREATE DATABASE mlflow_auth" in (DOCKER / "postgres-init.sql").read_text()
