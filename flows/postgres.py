"""A PostgreSQL server for the team platform: the state store of the Prefect server and the MLflow server.

    python -m flows.servers start --postgres          # this server (in .postgres/) + both servers on it
    python -m flows.servers start --database-url postgresql://USER:PASSWORD@HOST:5432   # an existing server

`LocalPostgres` runs the Debian `postgresql` package's binaries (`initdb`, `pg_ctl`, `psql`; found on PATH
or under /usr/lib/postgresql/*/bin) on 127.0.0.1 only, with its data directory in the project, and creates
the databases the platform uses (`prefect`, `mlflow`, and `mlflow_auth` for MLflow's users and
permissions). Every connection, local socket or TCP, authenticates with a password (scram-sha-256): the
cluster is made by `initdb --auth=scram-sha-256 --pwfile`, so pg_hba.conf has no `trust` rule, and a
cluster that does (one made before this) is refused at start in one line. The password is the platform
secret `DMAX_POSTGRES_PASSWORD` (`flows.credentials`); it reaches `initdb` in a 0600 file that is deleted
afterwards and `psql` in `PGPASSWORD`, never on a command line. PostgreSQL refuses to run as root, so as
root the server runs as the `postgres` system user that the package creates (the data directory is
handed to it).

sqlite stays the zero-setup default (`make servers`); this module is used only when asked for.
"""

from __future__ import annotations

import glob
import os
import shutil
import subprocess
import urllib.parse
from dataclasses import dataclass, field
from pathlib import Path

from flows.credentials import write_private

HOST = "127.0.0.1"
ROLE = "dmax"
DATABASES = ("prefect", "mlflow", "mlflow_auth")  # mlflow_auth: the basic-auth app's user store


class PostgresError(RuntimeError):
    """The PostgreSQL server could not be set up or started (the message says why, with its log tail)."""


def postgres_binary(name: str) -> str:
    """`initdb`, `pg_ctl` or `psql`: from PATH, else from the Debian package's versioned directory."""
    found = shutil.which(name) or next(iter(sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"), reverse=True)),
                                       None)
    if not found:
        raise PostgresError(f"`{name}` not found: install the PostgreSQL server (Debian: apt-get install postgresql)")
    return found


def database_urls(base_url: str) -> dict[str, str]:
    """The Prefect (async driver) and MLflow connection URLs on a server given as `postgresql://[user[:pw]@]host:port`."""
    parsed = urllib.parse.urlsplit(base_url)
    if parsed.scheme not in ("postgresql", "postgres") or not parsed.hostname:
        raise PostgresError(f"--database-url must look like postgresql://USER[:PASSWORD]@HOST:PORT, got {base_url!r}")
    server = parsed.netloc
    # explicit drivers: SQLAlchemy 2.1 would pick psycopg 3 for a bare postgresql:// URL
    return {"prefect": f"postgresql+asyncpg://{server}/prefect", "mlflow": f"postgresql+psycopg2://{server}/mlflow",
            "mlflow_auth": f"postgresql+psycopg2://{server}/mlflow_auth"}


@dataclass
class LocalPostgres:
    """One PostgreSQL server on 127.0.0.1:`port`; `root` holds its data, socket and log (module docstring)."""

    root: Path
    port: int = 5433
    password: str = field(default="", repr=False)  # the `dmax` role's; required (module docstring)

    def __post_init__(self) -> None:
        self.root = Path(self.root).resolve()
        self.data_dir = self.root / "data"
        self.socket_dir = self.root / "socket"
        self.log_file = self.root / "server.log"

    @property
    def url(self) -> str:
        """The server URL `LocalPlatform` takes (`database_urls` adds the database names); it holds the password,
        so it goes into environment variables and 0600 files only."""
        return f"postgresql://{ROLE}:{urllib.parse.quote(self.password, safe='')}@{HOST}:{self.port}"

    def _as_server_user(self, command: list[str]) -> list[str]:
        """Commands that touch the data directory run as `postgres` when we are root (initdb/pg_ctl refuse root)."""
        if os.geteuid() != 0:
            return command
        return ["runuser", "-u", "postgres", "--", *command]

    def _run(self, command: list[str], what: str) -> subprocess.CompletedProcess[str]:
        env = {**os.environ, "PGPASSWORD": self.password}
        done = subprocess.run(command, capture_output=True, text=True, timeout=120, check=False, env=env)
        if done.returncode != 0:
            raise PostgresError(f"{what} failed: {(done.stderr or done.stdout).strip()[-1500:]}\n{self.log_tail()}")
        return done

    def log_tail(self, lines: int = 20) -> str:
        try:
            return "\n".join(self.log_file.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    def _prepare_root(self) -> None:
        """Create `root` for the server user (root: hand it to `postgres`, which must be able to reach it)."""
        for path in (self.root, self.socket_dir):
            path.mkdir(parents=True, exist_ok=True)
        if os.geteuid() != 0:
            return
        reachable = subprocess.run(["runuser", "-u", "postgres", "--", "test", "-x", str(self.root.parent)],
                                   capture_output=True, check=False)
        if reachable.returncode != 0:
            raise PostgresError(f"the postgres user cannot reach {self.root.parent}; put the server's directory "
                                "under a path every user may traverse")
        for path in (self.root, self.socket_dir):
            shutil.chown(path, "postgres", "postgres")
        os.chmod(self.root, 0o700)

    def init(self) -> None:
        """Create the cluster once (role `dmax` with the password, scram-sha-256 for every connection);
        later calls keep the data."""
        if not self.password:
            raise PostgresError("the PostgreSQL server needs a password (DMAX_POSTGRES_PASSWORD or .secrets/)")
        if (self.data_dir / "PG_VERSION").is_file():
            return
        self._prepare_root()
        pwfile = write_private(self.root / "initdb-password", self.password + "\n")
        try:
            if os.geteuid() == 0:
                shutil.chown(pwfile, "postgres", "postgres")
            self._run(self._as_server_user([postgres_binary("initdb"), "-D", str(self.data_dir), "-U", ROLE,
                                            "--auth=scram-sha-256", f"--pwfile={pwfile}", "-E", "UTF8",
                                            "--no-instructions"]),
                      "initdb")
        finally:
            pwfile.unlink(missing_ok=True)

    def check_authentication(self) -> None:
        """Refuse a cluster whose pg_hba.conf lets anyone in without a password (a `trust` rule)."""
        hba = self.data_dir / "pg_hba.conf"
        rules = [line.split() for line in hba.read_text().splitlines() if not line.lstrip().startswith("#")]
        if any("trust" in rule for rule in rules):
            raise PostgresError(f"{hba} has a `trust` rule (a cluster made before password authentication): "
                                f"stop it and remove {self.root}, or replace `trust` with scram-sha-256")

    def running(self) -> bool:
        done = subprocess.run(self._as_server_user([postgres_binary("pg_ctl"), "status", "-D", str(self.data_dir)]),
                              capture_output=True, text=True, check=False)
        return done.returncode == 0

    def start(self) -> None:
        """Init if needed, start on 127.0.0.1 only, create the platform's databases."""
        self.init()
        self.check_authentication()
        if not self.running():
            options = f"-c listen_addresses={HOST} -p {self.port} -k {self.socket_dir}"
            self._run(self._as_server_user([postgres_binary("pg_ctl"), "start", "-w", "-t", "60", "-D",
                                            str(self.data_dir), "-l", str(self.log_file), "-o", options]),
                      f"starting PostgreSQL on {HOST}:{self.port}")
        for name in DATABASES:
            self.create_database(name)

    def psql(self, sql: str, database: str = "postgres") -> str:
        done = self._run([postgres_binary("psql"), "-h", HOST, "-p", str(self.port), "-U", ROLE, "-d", database,
                          "-tAc", sql], f"psql {sql!r}")
        return done.stdout.strip()

    def create_database(self, name: str) -> None:
        if self.psql(f"SELECT 1 FROM pg_database WHERE datname = '{name}'") != "1":
            self.psql(f'CREATE DATABASE "{name}"')

    def stop(self) -> bool:
        """Stop the server if it runs; True when it was running."""
        if not (self.data_dir / "PG_VERSION").is_file() or not self.running():
            return False
        self._run(self._as_server_user([postgres_binary("pg_ctl"), "stop", "-m", "fast", "-w", "-D",
                                        str(self.data_dir)]), "stopping PostgreSQL")
        return True
