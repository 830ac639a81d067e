"""The preflight check (`dmax_core.preflight`) against a stand-in HTTP server on loopback that answers like
the real ones (401 without or with wrong basic auth, 200 with the right one), and a port where nothing
listens; and `dmax train --track` against a down server: exit 2, one line, before any work starts (it
used to retry for 256 s and end in a traceback). The real servers are in tests/integration/test_auth.py."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from dmax_core.errors import DmaxError, ServerError
from dmax_core.preflight import basic_auth, check_mlflow, check_prefect, public_url
from flows.servers import free_port

REPO = Path(__file__).resolve().parent.parent
GOOD = basic_auth("alice", "right-password-123")


class _Handler(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        status = 200 if self.headers.get("Authorization") == GOOD else 401
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.end_headers()
        self.wfile.write(b"{}")

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture(scope="module")
def server() -> Iterator[str]:
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}"
    finally:
        httpd.shutdown()


def test_mlflow_credentials_right_missing_wrong(server):
    check_mlflow(server, {"MLFLOW_TRACKING_USERNAME": "alice", "MLFLOW_TRACKING_PASSWORD": "right-password-123"})
    missing = r"refused the request \(HTTP 401\): no credentials given: set MLFLOW_TRACKING_USERNAME/MLFLOW_TRACKING_P"
    with pytest.raises(ServerError, match=r"^MLflow server at http://127.0.0.1:\d+ " + missing):
        check_mlflow(server, {})
    with pytest.raises(ServerError, match="wrong username or password in MLFLOW_TRACKING_USERNAME") as wrong:
        check_mlflow(server, {"MLFLOW_TRACKING_USERNAME": "alice", "MLFLOW_TRACKING_PASSWORD": "not-it-at-all"})
    assert "not-it-at-all" not in str(wrong.value) and "\n" not in str(wrong.value)
    assert issubclass(ServerError, DmaxError)  # the CLI's one-line, exit-2 path


def test_prefect_auth_string_and_a_server_that_does_not_answer(server):
    check_prefect(f"{server}/api", {"PREFECT_API_AUTH_STRING": "alice:right-password-123"})
    with pytest.raises(ServerError, match=r"Prefect server .* no credentials given: set PREFECT_API_AUTH_STRING"):
        check_prefect(f"{server}/api", {})
    with pytest.raises(ServerError, match=r"^MLflow server at http://127.0.0.1:\d+ does not answer"):
        check_mlflow(f"http://127.0.0.1:{free_port()}", {}, timeout=2)


def test_stores_without_a_server_are_not_checked_and_urls_lose_their_password():
    check_mlflow("sqlite:///nowhere/mlruns.db", {})
    check_mlflow("postgresql://u:p@127.0.0.1:1/mlflow", {})
    assert public_url("postgresql://dmax:s3cret@127.0.0.1:5433/mlflow") == "postgresql://127.0.0.1:5433/mlflow"


def test_track_against_a_down_server_exits_2_in_one_line_before_any_work(tmp_path):
    run_dir = tmp_path / "run"
    done = subprocess.run(
        [sys.executable, "-m", "dmax_core.cli", "train", "--preset", "smoke", f"run_dir={run_dir}", "--track"],
        cwd=REPO, capture_output=True, text=True, timeout=120,
        env={**_clean_env(), "MLFLOW_TRACKING_URI": f"http://127.0.0.1:{free_port()}"},
    )  # fmt: skip
    assert done.returncode == 2, done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("dmax: error: MLflow server at http://127.0.0.1:"), done.stderr
    assert "does not answer" in lines[0]
    assert not run_dir.exists()  # nothing started


def _clean_env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith(("MLFLOW_TRACKING_", "DMAX_PROJECT_DIR"))}
