"""The team platform's secrets: where they come from, and private files for the ones made here.

Each secret is read, first match wins, from
1. the environment variable (`DMAX_POSTGRES_PASSWORD`, ...), e.g. from a team's secret manager;
2. the file named by `<VARIABLE>_FILE` (what compose / Kubernetes secrets mount, `/run/secrets/...`);
3. `<secrets dir>/<name>`: `.secrets/` in the project (git-ignored; `DMAX_SECRETS_DIR` moves it),
   generated there once, random, mode 0600, when none of the above exists.

A secret file readable by group or others is refused (one line, names the file): a password that every
local user can read protects nothing. Values are never printed or logged; messages name the variable or
the file. Random values are URL-safe (`secrets.token_urlsafe`), so they go into URLs, ini files and
`user:password` strings unquoted.
"""

from __future__ import annotations

import os
import secrets
import stat
from dataclasses import dataclass
from pathlib import Path

SECRETS_DIR_VARIABLE = "DMAX_SECRETS_DIR"
MIN_LENGTH = 12  # MLflow's basic-auth refuses shorter passwords


class SecretError(RuntimeError):
    """A secret is missing, unreadable, too short or exposed (the message names where, never the value)."""


@dataclass(frozen=True)
class Secret:
    """One secret: its file name in the secrets dir and its environment variable."""

    name: str
    variable: str
    prefix: str = ""  # e.g. "dmax:" for a `user:password` auth string

    def generate(self) -> str:
        return self.prefix + random_password()


def random_password() -> str:
    """32 URL-safe random characters (192 bits)."""
    return secrets.token_urlsafe(24)


POSTGRES_PASSWORD = Secret("postgres-password", "DMAX_POSTGRES_PASSWORD")
PREFECT_AUTH_STRING = Secret("prefect-auth-string", "DMAX_PREFECT_AUTH_STRING", prefix="dmax:")
MLFLOW_ADMIN_PASSWORD = Secret("mlflow-admin-password", "DMAX_MLFLOW_ADMIN_PASSWORD")
MLFLOW_WORKER_PASSWORD = Secret("mlflow-worker-password", "DMAX_MLFLOW_WORKER_PASSWORD")
MLFLOW_SECRET_KEY = Secret("mlflow-flask-secret-key", "DMAX_MLFLOW_SECRET_KEY")  # the auth app's CSRF key
PLATFORM_SECRETS = (POSTGRES_PASSWORD, PREFECT_AUTH_STRING, MLFLOW_ADMIN_PASSWORD, MLFLOW_WORKER_PASSWORD,
                    MLFLOW_SECRET_KEY)


def write_private(path: Path, text: str) -> Path:
    """Write `text` to `path` readable by its owner only (0600, in a 0700 directory), atomically: the file
    is created with that mode, so it is never readable by others, not even for a moment."""
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.fchmod(descriptor, 0o600)
        os.write(descriptor, text.encode())
    finally:
        os.close(descriptor)
    os.replace(temporary, path)
    return path


def read_private(path: Path) -> str:
    """The stripped contents of a secret file, refused if group or others may read it."""
    try:
        mode = path.stat().st_mode
        text = path.read_text().strip()
    except OSError as exc:
        raise SecretError(f"cannot read secret file {path}: {exc.strerror}") from None
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise SecretError(f"secret file {path} is readable by other users: chmod 600 {path}")
    return text


@dataclass
class SecretStore:
    """Resolves `Secret`s (module docstring); `root` is the directory of generated secret files."""

    root: Path

    @classmethod
    def for_project(cls, project: Path) -> SecretStore:
        return cls(Path(os.environ.get(SECRETS_DIR_VARIABLE) or project / ".secrets"))

    def path(self, secret: Secret) -> Path:
        return self.root / secret.name

    def get(self, secret: Secret) -> str:
        """The secret's value, generated into `root` once if it is given nowhere."""
        if value := os.environ.get(secret.variable, "").strip():
            where = secret.variable
        elif file := os.environ.get(f"{secret.variable}_FILE"):
            value, where = read_private(Path(file)), f"{secret.variable}_FILE={file}"
        elif self.path(secret).is_file():
            value, where = read_private(self.path(secret)), str(self.path(secret))
        else:
            value, where = secret.generate(), str(self.path(secret))
            write_private(self.path(secret), value + "\n")
        if secret.prefix and ":" not in value:
            raise SecretError(f"the secret from {where} must look like USER:PASSWORD")
        if len(value.partition(":")[2] if secret.prefix else value) < MIN_LENGTH:
            raise SecretError(f"the password from {where} is shorter than {MIN_LENGTH} characters")
        return value
