"""MLflow's own authentication for the team platform: the basic-auth app's config file, its roles, its users.

`mlflow server --app-name basic-auth` reads `MLFLOW_AUTH_CONFIG_PATH`, an ini file with the user store's
`database_uri` (here the `mlflow_auth` database of the platform's PostgreSQL), `default_permission` and
the admin's name and password; it creates that admin on first start (MLflow ships no default password
and refuses a short one). The file holds the admin password and the database password, so it is written
at every start from the secrets (`flows.credentials`), mode 0600, into the git-ignored secrets dir.

Roles are MLflow's role-based grants (`/api/3.0/mlflow/roles/...`, workspace `default`), with a pattern
`*` so they cover experiments and registered models made later too:

    reader    READ on every experiment and registered model: browse runs, metrics, artifacts, versions;
              cannot log runs into them, register a version, move an alias (`champion`) or delete
    trainer   MANAGE on every experiment and registered model: all of the above (the platform's worker is one)

`default_permission` is READ, so an authenticated user without a role can browse too; what authenticates
is a user the admin created (`python -m flows.servers add-user`), nobody else gets in (401).
Stdlib HTTP only (`dmax_core.preflight.request_json`): this runs in `flows.servers`, which imports no
MLflow.
"""

from __future__ import annotations

import urllib.error
import urllib.parse
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from dmax_core.errors import ServerError
from dmax_core.preflight import basic_auth, public_url, request_json
from flows.credentials import write_private

ADMIN_USERNAME = "admin"
WORKER_USERNAME = "dmax-worker"  # the trainer the platform's worker logs runs as
DEFAULT_PERMISSION = "READ"
WORKSPACE = "default"  # MLflow's only workspace while workspaces are off
RESOURCE_TYPES = ("experiment", "registered_model")
ROLES: dict[str, str] = {"reader": "READ", "trainer": "MANAGE"}  # role -> permission on RESOURCE_TYPES "*"


class MlflowAuthError(RuntimeError):
    """An MLflow user-management call failed (the message has the endpoint and MLflow's answer)."""


def role_name(role: str) -> str:
    """The MLflow role that stands for a platform role (`reader` -> `dmax-reader`)."""
    return f"dmax-{role}"


def write_auth_config(path: Path, *, database_uri: str, admin_password: str,
                      admin_username: str = ADMIN_USERNAME) -> Path:
    """The basic-auth app's ini file (0600). `%` is doubled: MLflow reads it with ConfigParser's
    interpolation, and URL-quoted passwords contain `%`."""
    values = {"default_permission": DEFAULT_PERMISSION, "database_uri": database_uri,
              "admin_username": admin_username, "admin_password": admin_password,
              "authorization_function": "mlflow.server.auth:authenticate_request_basic_auth",
              # Each request otherwise pays a PBKDF2 check (~0.3 s here); a pipeline makes hundreds. The cache
              # is per server worker and password changes through the API clear it there: with one worker
              # (`--workers 1`) nothing goes stale.
              "auth_cache_ttl_seconds": "60"}
    body = "".join(f"{key} = {value.replace('%', '%%')}\n" for key, value in values.items())
    return write_private(path, "# written by flows.servers at start; holds secrets, never commit\n[mlflow]\n" + body)


@dataclass
class MlflowAdmin:
    """Calls the basic-auth app's REST API as an admin."""

    url: str
    username: str
    password: str = field(repr=False)

    def call(self, method: str, endpoint: str, payload: dict[str, Any] | None = None, *,
             version: int = 2, ok_missing: bool = False) -> Any:
        """One API call; `ok_missing` returns None on 404 instead of raising."""
        url = f"{self.url.rstrip('/')}/api/{version}.0/mlflow/{endpoint}"
        if method == "GET" and payload:
            url, payload = f"{url}?{urllib.parse.urlencode(payload)}", None
        try:
            status, body = request_json(url, method=method, payload=payload,
                                        authorization=basic_auth(self.username, self.password), timeout=30)
        except (urllib.error.URLError, OSError) as exc:
            reason = getattr(exc, "reason", exc)
            raise ServerError(f"MLflow server at {public_url(self.url)} does not answer ({reason})") from None
        if status == 404 and ok_missing:
            return None
        if status == 401:
            raise ServerError(f"MLflow server at {public_url(self.url)} refused admin {self.username!r} (HTTP 401): "
                              "DMAX_MLFLOW_ADMIN_PASSWORD / .secrets/mlflow-admin-password is not the one it was "
                              "created with")
        if not 200 <= status < 300:
            message = (body or {}).get("message", "") if isinstance(body, dict) else ""
            raise MlflowAuthError(f"{method} {endpoint} as {self.username}: HTTP {status} {message}".rstrip())
        return body

    def ensure_roles(self) -> dict[str, int]:
        """Create or correct the platform roles (`ROLES`); returns role -> MLflow role id."""
        existing = {r["name"]: r for r in self.call("GET", "roles/list", {"workspace": WORKSPACE}, version=3)["roles"]}
        ids = {}
        for role, permission in ROLES.items():
            found = existing.get(role_name(role))
            if found is None:
                found = self.call("POST", "roles/create", {"name": role_name(role), "workspace": WORKSPACE,
                                                           "description": f"dmax platform {role}"}, version=3)["role"]
            grants = {(p["resource_type"], p["resource_pattern"]): p for p in found.get("permissions", [])}
            for resource_type in RESOURCE_TYPES:
                grant = grants.get((resource_type, "*"))
                if grant is None:
                    self.call("POST", "roles/permissions/add", {"role_id": found["id"], "resource_type": resource_type,
                                                                "resource_pattern": "*", "permission": permission},
                              version=3)
                elif grant["permission"] != permission:
                    self.call("PATCH", "roles/permissions/update",
                              {"role_permission_id": grant["id"], "permission": permission}, version=3)
            ids[role] = found["id"]
        return ids

    def add_user(self, username: str, password: str, role: str) -> bool:
        """Create `username` (or set its password) with exactly one platform role; True if it was new."""
        if role not in ROLES:
            raise MlflowAuthError(f"unknown role {role!r}; choose one of {', '.join(ROLES)}")
        ids = self.ensure_roles()
        new = self.call("GET", "users/get", {"username": username}, ok_missing=True) is None
        if new:
            self.call("POST", "users/create", {"username": username, "password": password})
        else:
            self.call("PATCH", "users/update-password", {"username": username, "password": password})
        held = {r["name"] for r in self.call("GET", "users/roles/list", {"username": username}, version=3)["roles"]}
        for other, role_id in ids.items():
            if other != role and role_name(other) in held:
                self.call("DELETE", "roles/unassign", {"username": username, "role_id": role_id}, version=3)
        if role_name(role) not in held:
            self.call("POST", "roles/assign", {"username": username, "role_id": ids[role]}, version=3)
        return new
