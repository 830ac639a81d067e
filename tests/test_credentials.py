"""The team platform's secrets without servers: where a secret comes from (variable, `*_FILE`, a generated
0600 file reused later), what is refused (a file others may read, a short password, an auth string with no
colon), the basic-auth ini as MLflow's own reader parses it, and a PostgreSQL cluster with a `trust` rule."""

from __future__ import annotations

import configparser
import stat

import pytest

from flows.credentials import POSTGRES_PASSWORD, PREFECT_AUTH_STRING, SecretError, SecretStore, write_private
from flows.mlflow_auth import write_auth_config
from flows.postgres import LocalPostgres, PostgresError
from flows.servers import LocalPlatform


@pytest.fixture()
def clean(monkeypatch):
    for secret in (POSTGRES_PASSWORD, PREFECT_AUTH_STRING):
        monkeypatch.delenv(secret.variable, raising=False)
        monkeypatch.delenv(f"{secret.variable}_FILE", raising=False)
    return monkeypatch


def test_generated_once_private_and_reused(tmp_path, clean):
    store = SecretStore(tmp_path / ".secrets")
    first = store.get(POSTGRES_PASSWORD)
    path = store.path(POSTGRES_PASSWORD)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600 and stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    assert store.get(POSTGRES_PASSWORD) == first and len(first) >= 32
    auth = store.get(PREFECT_AUTH_STRING)
    assert auth.startswith("dmax:") and len(auth.partition(":")[2]) >= 32


def test_variable_then_file_variable_win(tmp_path, clean):
    store = SecretStore(tmp_path / ".secrets")
    clean.setenv("DMAX_POSTGRES_PASSWORD", "from-the-environment")
    assert store.get(POSTGRES_PASSWORD) == "from-the-environment"
    clean.delenv("DMAX_POSTGRES_PASSWORD")
    mounted = write_private(tmp_path / "run-secrets" / "pg", "from-a-mounted-file\n")
    clean.setenv("DMAX_POSTGRES_PASSWORD_FILE", str(mounted))
    assert store.get(POSTGRES_PASSWORD) == "from-a-mounted-file"
    assert not store.path(POSTGRES_PASSWORD).exists()  # nothing generated when one is given


def test_refused_exposed_short_or_malformed(tmp_path, clean):
    store = SecretStore(tmp_path / ".secrets")
    exposed = write_private(store.path(POSTGRES_PASSWORD), "long-enough-password\n")
    exposed.chmod(0o644)
    with pytest.raises(SecretError, match="readable by other users: chmod 600") as caught:
        store.get(POSTGRES_PASSWORD)
    assert "long-enough-password" not in str(caught.value)
    clean.setenv("DMAX_POSTGRES_PASSWORD", "short")
    with pytest.raises(SecretError, match="shorter than 12"):
        store.get(POSTGRES_PASSWORD)
    clean.setenv("DMAX_PREFECT_AUTH_STRING", "no-colon-in-this-string")
    with pytest.raises(SecretError, match="USER:PASSWORD"):
        store.get(PREFECT_AUTH_STRING)


def test_basic_auth_ini_reads_back_through_configparser(tmp_path):
    uri = "postgresql+psycopg2://dmax:p%40ss%25word@127.0.0.1:5433/mlflow_auth"
    path = write_auth_config(tmp_path / "auth.ini", database_uri=uri, admin_password="100%-admin-secret")
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    config = configparser.ConfigParser()  # what mlflow.server.auth.config.read_auth_config uses
    config.read(path)
    assert config["mlflow"]["database_uri"] == uri
    assert config["mlflow"]["admin_password"] == "100%-admin-secret"
    assert config["mlflow"]["default_permission"] == "READ"


def test_auth_follows_the_setup_and_urls_stay_out_of_arguments(tmp_path):
    assert not LocalPlatform(project=tmp_path).auth  # sqlite: as before
    team = LocalPlatform(project=tmp_path, database_url="postgresql://dmax:pw-in-url@127.0.0.1:1",
                         secrets_dir=tmp_path / "s")
    assert team.auth and "--app-name" in team.mlflow_server_command()
    assert "pw-in-url" not in " ".join(team.mlflow_server_command()) and "pw-in-url" not in repr(team)
    assert team.server_env("mlflow-server")["MLFLOW_BACKEND_STORE_URI"].endswith("@127.0.0.1:1/mlflow")


def test_a_cluster_with_trust_is_refused(tmp_path):
    server = LocalPostgres(tmp_path / "pg", password="a-long-password")
    server.data_dir.mkdir(parents=True)
    (server.data_dir / "pg_hba.conf").write_text("# TYPE DATABASE USER ADDRESS METHOD\nhost all all ::1/128 trust\n")
    with pytest.raises(PostgresError, match="has a `trust` rule"):
        server.check_authentication()
    assert "a-long-password" not in repr(server)
