"""Killing everything a run started and removing what it left: its process group, its pids cgroup, every
process carrying its marker, its working directory."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

MARKER_ENV = "DMAX_SANDBOX_ID"


def marked_processes(token: str | None = None) -> list[int]:
    """PIDs of live processes whose initial environment carries the sandbox marker (of run `token`, or of any
    run when None). Zombies and processes whose environment we may not read are not listed."""
    wanted = f"{MARKER_ENV}={token}".encode() if token is not None else f"{MARKER_ENV}=".encode()
    me = os.getpid()
    found = []
    for pid in proc_pids():
        if pid == me:
            continue
        try:
            entries = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
        except OSError:
            continue
        if any(entry == wanted if token is not None else entry.startswith(wanted) for entry in entries):
            found.append(pid)
    return found


def kill_everything(token: str, cgroup: Path | None, pgid: int | None = None) -> None:
    """SIGKILL the run's process group, every task of its cgroup and every process carrying its marker."""
    if pgid is not None:
        kill_group(pgid)
    if cgroup is not None:
        kill_cgroup_tasks(cgroup)
    kill_marked(token)


def kill_group(pgid: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, signal.SIGKILL)


def kill_marked(token: str, rounds: int = 50) -> None:
    """SIGKILL every live process carrying this run's marker, again until none is left (they may fork)."""
    kill_until_gone(lambda: marked_processes(token), rounds)


def proc_pids() -> Iterator[int]:
    try:
        names = os.listdir("/proc")
    except OSError:
        return
    for name in names:
        if name.isdigit():
            yield int(name)


def tasks_of_uid(uid: int) -> int:
    """Tasks (threads included, as RLIMIT_NPROC counts them) whose real uid is `uid`."""
    total = 0
    for pid in proc_pids():
        try:
            status = Path(f"/proc/{pid}/status").read_text()
        except OSError:
            continue
        fields = dict(line.split(":", 1) for line in status.splitlines() if ":" in line)
        try:
            if int(fields["Uid"].split()[0]) == uid:
                total += int(fields.get("Threads", "1"))
        except (KeyError, ValueError, IndexError):
            continue
    return total


def remove_tree(path: Path) -> None:
    """Delete the working directory even if the program removed permissions inside it."""

    def retry(function: Any, name: str, _error: Any) -> None:
        try:
            os.chmod(os.path.dirname(name), 0o700)
            if os.path.isdir(name) and not os.path.islink(name):
                os.chmod(name, 0o700)
            function(name)
        except OSError:
            pass

    if sys.version_info >= (3, 12):
        shutil.rmtree(path, onexc=retry)
    else:
        shutil.rmtree(path, onerror=retry)


def create_cgroup(parent: Path, token: str, max_tasks: int) -> Path:
    path = parent / f"dmax-sandbox-{token}"
    path.mkdir()
    try:
        (path / "pids.max").write_text(str(max_tasks))
    except OSError:
        path.rmdir()
        raise
    return path


def kill_cgroup_tasks(path: Path) -> None:
    """Forbid new tasks in the run's cgroup, then kill every task in it until none is left."""
    with contextlib.suppress(OSError):
        (path / "pids.max").write_text("0")

    def members() -> list[int]:
        try:
            return [int(line) for line in (path / "cgroup.procs").read_text().split()]
        except (OSError, ValueError):
            return []

    kill_until_gone(members, 200)


def kill_until_gone(find: Callable[[], list[int]], rounds: int) -> None:
    """SIGKILL every pid `find` lists, and again (processes may fork) until it lists none or `rounds` run out."""
    for _ in range(rounds):
        pids = find()
        if not pids:
            return
        for pid in pids:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, signal.SIGKILL)
        time.sleep(0.005)


def remove_cgroup(path: Path) -> None:
    for _ in range(200):
        try:
            path.rmdir()
            return
        except FileNotFoundError:
            return
        except OSError:
            time.sleep(0.005)
