"""A PostgreSQL server for the team platform: the state store of the Prefect server and the MLflow server.

    python -m flows.servers start --postgres          # this server (in .postgres/) + both servers on it
    python -m flows.servers start --database-url postgresql://USER:PASSWORD@HOST:5432   # an existing server

`LocalPostgres` runs the Debian `postgresql` package's binaries (`initdb`, `pg_ctl`, `psql`; found on PATH
or under /usr/lib/postgresql/*/bin) on 127.0.0.1 only, with its data directory in the project, and creates
the two databases the platform uses (`prefect`, `mlflow`). Authentication is `trust` for loopback
connections of the local role: good for one machine; a team server (managed PostgreSQL, or this one bound
elsewhere) takes a password in `--database-url`. PostgreSQL refuses to run as root, so as root the server
runs as the `postgres` system user that the package creates (the data directory is handed to it).

sqlite stays the zero-setup default (`make servers`); this module is used only when asked for.
"""

from __future__ import annotations

import glob
import os
import shutil
import subprocess
import urllib.parse
from dataclasses import dataclass
from pathlib import Path

HOST = "127.0.0.1"
ROLE = "dmax"
DATABASES = ("prefect", "mlflow")


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
    return {"prefect": f"postgresql+asyncpg://{server}/prefect", "mlflow": f"postgresql+psycopg2://{server}/mlflow"}


@dataclass
class LocalPostgres:
    """One PostgreSQL server on 127.0.0.1:`port`; `root` holds its data, socket and log (module docstring)."""

    root: Path
    port: int = 5433

    def __post_init__(self) -> None:
        self.root = Path(self.root).resolve()
        self.data_dir = self.root / "data"
        self.socket_dir = self.root / "socket"
        self.log_file = self.root / "server.log"

    @property
    def url(self) -> str:
        """The server URL `LocalPlatform` takes (`database_urls` adds the database names)."""
        return f"postgresql://{ROLE}@{HOST}:{self.port}"

    def _as_server_user(self, command: list[str]) -> list[str]:
        """Commands that touch the data directory run as `postgres` when we are root (initdb/pg_ctl refuse root)."""
        if os.geteuid() != 0:
            return command
        return ["runuser", "-u", "postgres", "--", *command]

    def _run(self, command: list[str], what: str) -> subprocess.CompletedProcess[str]:
        done = subprocess.run(command, capture_output=True, text=True, timeout=120, check=False)
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
        """Create the cluster once (role `dmax`, trust on loopback only); later calls keep the data."""
        if (self.data_dir / "PG_VERSION").is_file():
            return
        self._prepare_root()
        self._run(self._as_server_user([postgres_binary("initdb"), "-D", str(self.data_dir), "-U", ROLE,
                                        "--auth-local=trust", "--auth-host=trust", "-E", "UTF8",
                                        "--no-instructions"]),
                  "initdb")

    def running(self) -> bool:
        done = subprocess.run(self._as_server_user([postgres_binary("pg_ctl"), "status", "-D", str(self.data_dir)]),
                              capture_output=True, text=True, check=False)
        return done.returncode == 0

    def start(self) -> None:
        """Init if needed, start on 127.0.0.1 only, create the platform's databases."""
        self.init()
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
