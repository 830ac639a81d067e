"""Fast checks that a server answers and accepts our credentials, before any work starts.

MLflow's client retries a dead server for minutes (7 retries with backoff, 256 s here) and then raises a
traceback; Prefect's fails deep inside a flow. One GET with a short timeout instead tells the user, in
one line, which server is wrong and why (`ServerError`, which the CLI prints and exits 2 on):

- MLflow (`MLFLOW_TRACKING_URI` an http(s) URL): `GET /api/2.0/mlflow/experiments/search`, which every
  authenticated user may call (the answer is filtered by permission), with `MLFLOW_TRACKING_USERNAME` /
  `MLFLOW_TRACKING_PASSWORD` as HTTP basic auth, the variables MLflow's own client reads.
- Prefect (`PREFECT_API_URL`): `GET /admin/version` with `PREFECT_API_AUTH_STRING` (`user:password`),
  the setting Prefect's client sends as basic auth to a server started with
  `PREFECT_SERVER_API_AUTH_STRING`. Both servers leave their health routes open, so health says nothing
  about credentials.

Messages never contain a password: they name the variable to fix. Stdlib only, so `flows.servers` (which
imports no MLflow) uses the same code.
"""

from __future__ import annotations

import base64
import json
import os
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Mapping
from typing import Any

from dmax_core.errors import ServerError

TIMEOUT_SECONDS = 5.0
MLFLOW_USER_VARIABLES = ("MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD")
PREFECT_AUTH_VARIABLE = "PREFECT_API_AUTH_STRING"


def basic_auth(username: str, password: str) -> str:
    """The `Authorization` header value of HTTP basic auth."""
    return "Basic " + base64.b64encode(f"{username}:{password}".encode()).decode()


def public_url(url: str) -> str:
    """`url` without any `user:password@` part, for messages."""
    parts = urllib.parse.urlsplit(url)
    host = parts.hostname or ""
    netloc = f"{host}:{parts.port}" if parts.port else host
    return urllib.parse.urlunsplit((parts.scheme, netloc, parts.path, "", ""))


def request_json(url: str, *, method: str = "GET", payload: dict[str, Any] | None = None,
                 authorization: str | None = None, timeout: float = TIMEOUT_SECONDS) -> tuple[int, Any]:
    """(HTTP status, decoded JSON or None) of one request; raises `urllib.error.URLError`/`OSError` when
    nothing answers. Error statuses are returned, not raised."""
    data = None if payload is None else json.dumps(payload).encode()
    request = urllib.request.Request(url, data=data, method=method, headers={"Content-Type": "application/json"})
    if authorization:
        request.add_header("Authorization", authorization)
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            status, body = response.status, response.read()
    except urllib.error.HTTPError as exc:
        status, body = exc.code, exc.read()
    try:
        return status, json.loads(body) if body else None
    except ValueError:
        return status, None


def check_server(name: str, url: str, *, authorization: str | None, credentials: str,
                 timeout: float = TIMEOUT_SECONDS) -> None:
    """GET `url`; `ServerError` naming `name` unless it answers 2xx. `credentials` names the variables
    the user sets to authenticate (for the message)."""
    where = public_url(url).split("/api/", 1)[0]
    try:
        status, _ = request_json(url, authorization=authorization, timeout=timeout)
    except (urllib.error.URLError, OSError, ValueError) as exc:
        reason = getattr(exc, "reason", exc)
        raise ServerError(f"{name} at {where} does not answer ({reason}); start it or fix the URL") from None
    if status == 401:
        why = "wrong username or password in" if authorization else "no credentials given: set"
        raise ServerError(f"{name} at {where} refused the request (HTTP 401): {why} {credentials}")
    if status == 403:
        raise ServerError(f"{name} at {where} refused the request (HTTP 403): the user in {credentials} "
                          "lacks permission")
    if not 200 <= status < 300:
        raise ServerError(f"{name} at {where} answered HTTP {status} to {public_url(url)}")


def check_mlflow(uri: str, env: Mapping[str, str] | None = None, timeout: float = TIMEOUT_SECONDS) -> None:
    """Check an MLflow tracking server (http/https URIs only; sqlite and other stores need no server) with
    the credentials in `env` (default: this process's environment)."""
    if not uri.startswith(("http://", "https://")):
        return
    env = os.environ if env is None else env
    username, password = (env.get(name) for name in MLFLOW_USER_VARIABLES)
    authorization = basic_auth(username, password or "") if username else None
    check_server("MLflow server", f"{uri.rstrip('/')}/api/2.0/mlflow/experiments/search?max_results=1",
                 authorization=authorization, credentials="/".join(MLFLOW_USER_VARIABLES), timeout=timeout)


def check_prefect(api_url: str, env: Mapping[str, str] | None = None, timeout: float = TIMEOUT_SECONDS) -> None:
    """Check a Prefect server's API (`PREFECT_API_URL`, ending in /api) with `PREFECT_API_AUTH_STRING` from
    `env` (default: this process's environment)."""
    auth_string = (os.environ if env is None else env).get(PREFECT_AUTH_VARIABLE)
    # Prefect's client sends the whole string base64-encoded; so do we (no split at the colon).
    authorization = "Basic " + base64.b64encode(auth_string.encode()).decode() if auth_string else None
    check_server("Prefect server", f"{api_url.rstrip('/')}/admin/version", authorization=authorization,
                 credentials=PREFECT_AUTH_VARIABLE, timeout=timeout)
