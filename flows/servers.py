"""Start and stop the local platform: Prefect server, MLflow server, a process worker, the deployments.

    python -m flows.servers start            # servers + work pool + `prefect deploy --all` + worker
    python -m flows.servers stop             # every process started here, by process group
    python -m flows.servers status
    python -m flows.servers prefect|mlflow|worker   # one of them in the foreground (Ctrl-C stops it)
    python -m flows.servers add-user NAME --role reader|trainer --postgres   # an MLflow user (team platform)

Everything binds to 127.0.0.1. State stays in the project: Prefect's database in `.prefect/`, MLflow's
in `mlruns.db` with artifacts in `mlartifacts/`, pid files and logs in `.prefect/servers/`. The same
`LocalPlatform` class is what the integration tests start (on free ports, in a temporary state dir),
so `make servers` and CI exercise one code path.

The team platform (`--postgres` / `--database-url`) has authentication on by default, with the servers'
own mechanisms: Prefect's `PREFECT_SERVER_API_AUTH_STRING` (clients send `PREFECT_API_AUTH_STRING`),
MLflow's basic-auth app (`flows.mlflow_auth`: users and roles in the `mlflow_auth` database, an admin
from a secret), PostgreSQL passwords (`flows.postgres`). Secrets come from `flows.credentials`
(environment, `*_FILE`, or generated once into `.secrets/`, mode 0600); they reach processes through
their environment or 0600 files, never a command line or a log. The worker logs its runs as the MLflow
user `dmax-worker` (role trainer) and is started only after a preflight check of both servers.

This module starts processes; it never imports dmax stages, torch or mlflow. It is one command-line tool
for the four processes of the local platform and their credentials (the secrets themselves are `flows.credentials`,
MLflow users and roles `flows.mlflow_auth`), which is why it is about 530 lines.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from dmax_core.env import configure_environment, environment_defaults, project_dir
from dmax_core.errors import ServerError
from dmax_core.preflight import check_mlflow, check_prefect, public_url
from flows.credentials import (
    MLFLOW_ADMIN_PASSWORD,
    MLFLOW_SECRET_KEY,
    MLFLOW_WORKER_PASSWORD,
    PLATFORM_SECRETS,
    POSTGRES_PASSWORD,
    PREFECT_AUTH_STRING,
    SecretError,
    SecretStore,
    random_password,
    read_private,
    write_private,
)
from flows.mlflow_auth import ADMIN_USERNAME, ROLES, WORKER_USERNAME, MlflowAdmin, MlflowAuthError, write_auth_config
from flows.postgres import LocalPostgres, PostgresError, database_urls

HOST = "127.0.0.1"
WORK_POOL = "dmax-process"
PROCESSES = ("prefect-server", "mlflow-server", "worker")


class PlatformError(RuntimeError):
    """A server did not come up (the message carries the tail of its log)."""


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((HOST, 0))
        return int(sock.getsockname()[1])


def _executable(name: str) -> str:
    """The tool from this interpreter's environment (the venv), else from PATH."""
    beside = Path(sys.executable).parent / name
    if beside.is_file():
        return str(beside)
    found = shutil.which(name)
    if not found:
        raise PlatformError(f"`{name}` not found: install the platform extras (pip install -e '.[platform]')")
    return found


def http_ok(url: str, timeout: float = 2.0) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            return 200 <= response.status < 300
    except (urllib.error.URLError, OSError, ValueError):
        return False


def _tail(path: Path, lines: int = 40) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


def _children(pid: int) -> list[int]:
    """Every descendant of `pid` (Linux /proc), so flow-run processes started in their own session by
    the worker are stopped too."""
    parents: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        parents.setdefault(ppid, []).append(int(entry.name))
    found, stack = [], [pid]
    while stack:
        for child in parents.get(stack.pop(), []):
            found.append(child)
            stack.append(child)
    return found


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # A zombie child of ours still answers kill(0); reap it if it is ours.
    with contextlib.suppress(ChildProcessError, OSError):
        done, _ = os.waitpid(pid, os.WNOHANG)
        if done == pid:
            return False
    return True


def stop_process_tree(pid: int, grace_seconds: float = 10.0) -> None:
    """SIGTERM the process group of `pid` and of all its descendants, SIGKILL what is left after grace."""
    targets = [pid, *_children(pid)]
    groups = set()
    for target in targets:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            groups.add(os.getpgid(target))
    for sig in (signal.SIGTERM, signal.SIGKILL):
        for group in groups:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(group, sig)
        deadline = time.monotonic() + (grace_seconds if sig == signal.SIGTERM else 5.0)
        while time.monotonic() < deadline and any(_alive(t) for t in targets):
            time.sleep(0.2)
        if not any(_alive(t) for t in targets):
            return


@dataclass
class LocalPlatform:
    """Prefect server + MLflow server + process worker on 127.0.0.1, with state under `state_dir`."""

    project: Path = field(default_factory=project_dir)
    prefect_port: int = 4200
    mlflow_port: int = 5000
    state_dir: Path | None = None  # default: <project>/.prefect/servers
    prefect_home: Path | None = None  # default: <project>/.prefect
    mlflow_db: Path | None = None  # default: <project>/mlruns.db
    mlflow_artifacts: Path | None = None  # default: <project>/mlartifacts
    work_pool: str = WORK_POOL
    # A PostgreSQL server (`postgresql://USER[:PW]@HOST:PORT`) for both servers' state, instead of sqlite.
    database_url: str | None = field(default=None, repr=False)
    # Authentication (module docstring); None: on for the team platform (a database_url), off for sqlite.
    auth: bool | None = None
    secrets_dir: Path | None = None  # default: <project>/.secrets (or DMAX_SECRETS_DIR)

    def __post_init__(self) -> None:
        self.project = Path(self.project).resolve()
        self.prefect_home = Path(self.prefect_home or self.project / ".prefect").resolve()
        self.state_dir = Path(self.state_dir or self.prefect_home / "servers").resolve()
        self.mlflow_db = Path(self.mlflow_db or self.project / "mlruns.db").resolve()
        self.mlflow_artifacts = Path(self.mlflow_artifacts or self.project / "mlartifacts").resolve()
        if self.auth is None:
            self.auth = self.database_url is not None
        self.secrets = SecretStore(Path(self.secrets_dir)) if self.secrets_dir else SecretStore.for_project(
            self.project)

    # ------------------------------------------------------------------------------ addresses
    @property
    def prefect_api_url(self) -> str:
        return f"http://{HOST}:{self.prefect_port}/api"

    @property
    def mlflow_url(self) -> str:
        return f"http://{HOST}:{self.mlflow_port}"

    def env(self) -> dict[str, str]:
        """Environment for every process of the platform (and for `prefect` CLI calls against it)."""
        env = dict(os.environ)
        for name, value in environment_defaults(self.project).items():
            env.setdefault(name, value)
        env.update(
            PREFECT_HOME=str(self.prefect_home),
            PREFECT_API_URL=self.prefect_api_url,
            MLFLOW_TRACKING_URI=self.mlflow_url,
            DMAX_PROJECT_DIR=str(self.project),
            # Workers poll every 10 s by default; a local platform should react at once.
            PREFECT_WORKER_QUERY_SECONDS=env.get("PREFECT_WORKER_QUERY_SECONDS", "2"),
            PREFECT_WORKER_PREFETCH_SECONDS=env.get("PREFECT_WORKER_PREFETCH_SECONDS", "5"),
            PYTHONUNBUFFERED="1",
        )
        if self.auth:  # what every client of the platform sends (the worker, its flow runs, `prefect` calls)
            env.update(PREFECT_API_AUTH_STRING=self.secrets.get(PREFECT_AUTH_STRING),
                       MLFLOW_TRACKING_USERNAME=WORKER_USERNAME,
                       MLFLOW_TRACKING_PASSWORD=self.secrets.get(MLFLOW_WORKER_PASSWORD))
        return env

    @property
    def mlflow_auth_config(self) -> Path:
        return self.secrets.root / "mlflow-basic-auth.ini"

    def server_env(self, name: str) -> dict[str, str]:
        """`env()` plus what only that server reads: its database URL and its side of authentication."""
        env = self.env()
        if name == "prefect-server":
            if self.database_url:
                env["PREFECT_API_DATABASE_CONNECTION_URL"] = database_urls(self.database_url)["prefect"]
            if self.auth:
                env["PREFECT_SERVER_API_AUTH_STRING"] = env["PREFECT_API_AUTH_STRING"]
        elif name == "mlflow-server":
            env["MLFLOW_BACKEND_STORE_URI"] = (database_urls(self.database_url)["mlflow"] if self.database_url
                                               else f"sqlite:///{self.mlflow_db}")
            if self.auth:
                env.update(MLFLOW_AUTH_CONFIG_PATH=str(self.mlflow_auth_config),
                           MLFLOW_FLASK_SERVER_SECRET_KEY=self.secrets.get(MLFLOW_SECRET_KEY))
        return env

    def write_mlflow_auth_config(self) -> Path:
        """The basic-auth app's ini (0600), written from the secrets at every start."""
        assert self.state_dir is not None
        auth_db = (database_urls(self.database_url)["mlflow_auth"] if self.database_url
                   else f"sqlite:///{self.state_dir / 'mlflow-auth.db'}")
        return write_auth_config(self.mlflow_auth_config, database_uri=auth_db,
                                 admin_password=self.secrets.get(MLFLOW_ADMIN_PASSWORD))

    def mlflow_admin(self) -> MlflowAdmin:
        return MlflowAdmin(self.mlflow_url, ADMIN_USERNAME, self.secrets.get(MLFLOW_ADMIN_PASSWORD))

    def preflight(self) -> None:
        """Both servers answer and take the platform's client credentials (`ServerError` otherwise)."""
        env = self.env()
        check_prefect(self.prefect_api_url, env)
        check_mlflow(self.mlflow_url, env)

    # ------------------------------------------------------------------------------ commands
    def prefect_server_command(self) -> list[str]:
        return [_executable("prefect"), "server", "start", "--host", HOST, "--port", str(self.prefect_port)]

    def mlflow_server_command(self) -> list[str]:
        # File artifact root (not a proxied mlflow-artifacts:/ one) so runs logged straight to the sqlite
        # store (`dmax pipeline --track` without a server) and runs logged through this server share
        # one experiment and both work; the UI reads the files from the same disk. The backend store URI
        # (it may hold a password) is MLFLOW_BACKEND_STORE_URI in `server_env`, not an argument.
        command = [
            _executable("mlflow"), "server",
            "--default-artifact-root", self.mlflow_artifacts.as_uri(),
            "--host", HOST, "--port", str(self.mlflow_port), "--workers", "1",
        ]  # fmt: skip
        return [*command, "--app-name", "basic-auth"] if self.auth else command

    def worker_command(self, run_once: bool = False) -> list[str]:
        command = [_executable("prefect"), "worker", "start", "--pool", self.work_pool, "--type", "process"]
        return [*command, "--run-once"] if run_once else command

    # ------------------------------------------------------------------------------ processes
    def _pid_file(self, name: str) -> Path:
        assert self.state_dir is not None
        return self.state_dir / f"{name}.pid"

    def log_file(self, name: str) -> Path:
        assert self.state_dir is not None
        return self.state_dir / f"{name}.log"

    def pid(self, name: str) -> int | None:
        try:
            pid = int(self._pid_file(name).read_text().strip())
        except (OSError, ValueError):
            return None
        return pid if _alive(pid) else None

    def spawn(self, name: str, command: Sequence[str]) -> int:
        """Start `command` in its own session (so it stops by process group), logging to a file."""
        if (running := self.pid(name)) is not None:
            raise PlatformError(f"{name} already running (pid {running}); `python -m flows.servers stop` first")
        assert self.state_dir is not None
        self.state_dir.mkdir(parents=True, exist_ok=True)
        with self.log_file(name).open("ab") as log:
            process = subprocess.Popen(
                list(command), cwd=self.project, env=self.server_env(name), stdout=log, stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL, start_new_session=True,
            )  # fmt: skip
        self._pid_file(name).write_text(f"{process.pid}\n")
        return process.pid

    def wait_healthy(self, name: str, url: str, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if http_ok(url):
                return
            if self.pid(name) is None:
                raise PlatformError(f"{name} exited during start:\n{_tail(self.log_file(name))}")
            time.sleep(0.5)
        raise PlatformError(f"{name} not healthy at {url} after {timeout:.0f} s:\n{_tail(self.log_file(name))}")

    def start_prefect_server(self, timeout: float = 180.0) -> None:
        self.spawn("prefect-server", self.prefect_server_command())
        self.wait_healthy("prefect-server", f"{self.prefect_api_url}/health", timeout)

    def start_mlflow_server(self, timeout: float = 180.0) -> None:
        self._spawn_mlflow_server()
        self.wait_healthy("mlflow-server", f"{self.mlflow_url}/health", timeout)
        self.create_worker_user()

    def _spawn_mlflow_server(self) -> None:
        self.mlflow_artifacts.mkdir(parents=True, exist_ok=True)
        if self.auth:
            self.write_mlflow_auth_config()
        self.spawn("mlflow-server", self.mlflow_server_command())

    def create_worker_user(self) -> None:
        """The MLflow user the worker's flow runs log as (role trainer), with the current secret."""
        if self.auth:
            self.mlflow_admin().add_user(WORKER_USERNAME, self.secrets.get(MLFLOW_WORKER_PASSWORD), "trainer")

    def start_worker(self) -> None:
        self.preflight()  # a worker that cannot reach or log into a server would fail every flow run
        self.spawn("worker", self.worker_command())

    def prefect(self, *args: str, timeout: float = 300.0, check: bool = True) -> subprocess.CompletedProcess:
        """Run a `prefect` CLI command against this platform's server."""
        done = subprocess.run(
            [_executable("prefect"), *args], cwd=self.project, env=self.env(), capture_output=True,
            text=True, timeout=timeout,
        )  # fmt: skip
        if check and done.returncode != 0:
            raise PlatformError(f"prefect {' '.join(args)} failed ({done.returncode}):\n{done.stdout}\n{done.stderr}")
        return done

    def deploy(self) -> None:
        """Create the process work pool (if missing) and apply every deployment of prefect.yaml."""
        if self.prefect("work-pool", "inspect", self.work_pool, check=False).returncode != 0:
            self.prefect("work-pool", "create", self.work_pool, "--type", "process")
        self.prefect("--no-prompt", "deploy", "--all", "--prefect-file", str(self.project / "prefect.yaml"))

    def start(self, *, worker: bool = True, deploy: bool = True) -> None:
        """Both servers (started in parallel), then the deployments and a worker."""
        try:
            self.spawn("prefect-server", self.prefect_server_command())
            self._spawn_mlflow_server()
            self.wait_healthy("prefect-server", f"{self.prefect_api_url}/health", 180)
            self.wait_healthy("mlflow-server", f"{self.mlflow_url}/health", 180)
            self.create_worker_user()
            if deploy:
                self.deploy()
            if worker:
                self.start_worker()
        except BaseException:
            self.stop()
            raise

    def stop(self) -> list[str]:
        """Stop every process this platform started (worker first), by process group. Idempotent."""
        stopped = []
        for name in reversed(PROCESSES):
            pid = self.pid(name)
            if pid is not None:
                stop_process_tree(pid)
                stopped.append(name)
            self._pid_file(name).unlink(missing_ok=True)
        return stopped

    def status(self) -> dict[str, dict[str, object]]:
        urls = {
            "prefect-server": f"{self.prefect_api_url}/health",
            "mlflow-server": f"{self.mlflow_url}/health",
            "worker": None,
        }
        return {
            name: {"pid": self.pid(name), "healthy": http_ok(url) if url else self.pid(name) is not None,
                   "log": str(self.log_file(name))}
            for name, url in urls.items()
        }  # fmt: skip

    @contextlib.contextmanager
    def running(self, *, worker: bool = True, deploy: bool = True) -> Iterator[LocalPlatform]:
        """`with platform.running():` — everything is stopped on exit, also when the body fails."""
        self.start(worker=worker, deploy=deploy)
        try:
            yield self
        finally:
            self.stop()

    def exports(self) -> str:
        """Shell lines for another terminal; credentials by reference (a file or variable), never by value."""
        lines = [f"export PREFECT_API_URL={self.prefect_api_url}", f"export MLFLOW_TRACKING_URI={self.mlflow_url}"]
        if self.auth:
            lines += [f"export PREFECT_API_AUTH_STRING=\"{self._reference(PREFECT_AUTH_STRING)}\"",
                      "export MLFLOW_TRACKING_USERNAME=YOU MLFLOW_TRACKING_PASSWORD=\"$(cat YOUR_PASSWORD_FILE)\"  "
                      "# python -m flows.servers add-user YOU --role reader|trainer"]
        return "\n".join(lines)

    def _reference(self, secret) -> str:
        if os.environ.get(secret.variable):
            return f"${secret.variable}"
        return f"$(cat {os.environ.get(f'{secret.variable}_FILE') or self.secrets.path(secret)})"

    def add_user(self, username: str, role: str, password_file: Path | None = None) -> tuple[bool, Path | None]:
        """Create (or update) an MLflow user with a platform role. The password comes from `password_file`,
        else `DMAX_USER_PASSWORD`, else it is generated into `<secrets>/users/<name>` (0600, returned)."""
        written = None
        if password_file is not None:
            password = read_private(password_file)
        elif os.environ.get("DMAX_USER_PASSWORD"):
            password = os.environ["DMAX_USER_PASSWORD"]
        else:
            written = self.secrets.root / "users" / username
            password = read_private(written) if written.is_file() else random_password()
            write_private(written, password + "\n")
        return self.mlflow_admin().add_user(username, password, role), written


def _postgres(args: argparse.Namespace) -> LocalPostgres:
    password = SecretStore.for_project(project_dir()).get(POSTGRES_PASSWORD)
    return LocalPostgres(project_dir() / ".postgres", port=args.postgres_port, password=password)


def _platform(args: argparse.Namespace) -> LocalPlatform:
    url = args.database_url or (_postgres(args).url if args.postgres else None)
    return LocalPlatform(prefect_port=args.prefect_port, mlflow_port=args.mlflow_port, database_url=url,
                         auth=args.auth)


def _foreground(platform: LocalPlatform, name: str, command: list[str]) -> int:
    os.chdir(platform.project)
    os.execvpe(command[0], command, platform.server_env(name))  # replaces this process: Ctrl-C goes to it


def main(argv: Sequence[str] | None = None) -> int:
    configure_environment()
    parser = argparse.ArgumentParser(prog="python -m flows.servers", description=__doc__.split("\n\n")[0])
    parser.add_argument("action", choices=["start", "stop", "status", "deploy", "prefect", "mlflow", "worker", "env",
                                           "add-user", "secrets"])
    parser.add_argument("username", nargs="?", help="add-user: the MLflow user to create or update")
    parser.add_argument("--role", choices=list(ROLES), default="reader", help="add-user: the user's role")
    parser.add_argument("--password-file", type=Path, help="add-user: a 0600 file with the user's password "
                        "(default: DMAX_USER_PASSWORD, else generated into .secrets/users/NAME)")
    parser.add_argument("--auth", action=argparse.BooleanOptionalAction, default=None,
                        help="authentication (default: on with PostgreSQL, off with sqlite)")
    parser.add_argument("--prefect-port", type=int, default=int(os.environ.get("PREFECT_PORT", 4200)))
    parser.add_argument("--mlflow-port", type=int, default=int(os.environ.get("MLFLOW_PORT", 5000)))
    parser.add_argument("--no-worker", action="store_true", help="start: servers and deployments only")
    parser.add_argument("--postgres", action="store_true",
                        help="state in a local PostgreSQL server (.postgres/, 127.0.0.1) instead of sqlite")
    parser.add_argument("--postgres-port", type=int, default=int(os.environ.get("POSTGRES_PORT", 5433)))
    parser.add_argument("--database-url", default=os.environ.get("DMAX_DATABASE_URL"),
                        help="state in this PostgreSQL server: postgresql://USER[:PASSWORD]@HOST:PORT")
    args = parser.parse_args(argv)
    try:
        platform = _platform(args)
        if args.postgres and args.action in ("start", "prefect", "mlflow"):
            _postgres(args).start()
        if args.action == "start":
            platform.start(worker=not args.no_worker)
            if platform.database_url:
                print(f"database    {public_url(platform.database_url)} (databases prefect, mlflow, mlflow_auth)")
            if platform.auth:
                print(f"auth        on: secrets in {platform.secrets.root}; users: python -m flows.servers add-user")
            print(f"Prefect UI  http://{HOST}:{platform.prefect_port}   (logs in {platform.state_dir})")
            print(f"MLflow UI   {platform.mlflow_url}")
            print(f"worker      pool {platform.work_pool}" if not args.no_worker else "worker      not started")
            print("deployments: prefect deployment ls   |   prefect deployment run dmax/full-pipeline")
            print(f"\nFor other shells:\n{platform.exports()}")
        elif args.action == "stop":
            stopped = platform.stop()
            if args.postgres and _postgres(args).stop():
                stopped.append("postgres")
            print("stopped: " + (", ".join(stopped) if stopped else "nothing was running"))
        elif args.action == "status":
            print(json.dumps(platform.status(), indent=2))
        elif args.action == "deploy":
            platform.deploy()
            print(platform.prefect("deployment", "ls").stdout)
        elif args.action == "env":
            print(platform.exports())
        elif args.action == "add-user":
            if not args.username:
                parser.error("add-user needs a USERNAME")
            if not platform.auth:
                parser.error("add-user is for a platform with authentication: add --postgres, --database-url or --auth")
            new, written = platform.add_user(args.username, args.role, args.password_file)
            where = f"; password in {written}" if written else ""
            print(f"{'created' if new else 'updated'} MLflow user {args.username} (role {args.role}){where}")
        elif args.action == "secrets":  # made once, e.g. for docker/compose.yaml's secrets; paths, not values
            for secret in PLATFORM_SECRETS:
                platform.secrets.get(secret)
                given = os.environ.get(secret.variable) or os.environ.get(f"{secret.variable}_FILE")
                print(f"{secret.variable:28} {'from the environment' if given else platform.secrets.path(secret)}")
        elif args.action == "prefect":
            return _foreground(platform, "prefect-server", platform.prefect_server_command())
        elif args.action == "mlflow":
            platform.mlflow_artifacts.mkdir(parents=True, exist_ok=True)
            if platform.auth:
                platform.write_mlflow_auth_config()
            return _foreground(platform, "mlflow-server", platform.mlflow_server_command())
        elif args.action == "worker":
            platform.preflight()
            return _foreground(platform, "worker", platform.worker_command())
    except ServerError as exc:  # a server down or refusing the credentials: the user's to fix, like the CLI's
        print(f"flows.servers: error: {exc}", file=sys.stderr)
        return 2
    except (PlatformError, PostgresError, SecretError, MlflowAuthError) as exc:
        print(f"flows.servers: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
