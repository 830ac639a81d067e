"""Watching one running program: its output read concurrently and capped, its end detected, its reports read."""

from __future__ import annotations

import json
import os
import selectors
import subprocess
import time
from collections.abc import Callable
from typing import Any

OUTPUT_CAP = 64 * 1024


DRAIN_SECONDS = 0.5  # how long output is still read after the program's tree has ended


def supervise(
    proc: subprocess.Popen[bytes], wall_seconds: float, kill_all: Callable[[], None]
) -> tuple[bool, float, bytes, bytes]:
    """Read stdout/stderr until the process tree has ended; `kill_all` when the leader ends or at the deadline.

    Returns (timed out, when the leader ended, stdout tail, stderr tail). The leader is detected as ended
    with WNOWAIT and left unreaped, so its group id cannot be reused before the group is killed. Killing
    everything as soon as the leader ends also closes the pipes a detached grandchild would hold open."""
    assert proc.stdout is not None and proc.stderr is not None
    buffers = {proc.stdout.fileno(): bytearray(), proc.stderr.fileno(): bytearray()}
    selector = selectors.DefaultSelector()
    for fd in buffers:
        os.set_blocking(fd, False)
        selector.register(fd, selectors.EVENT_READ)
    pidfd = open_pidfd(proc.pid)
    if pidfd is not None:
        selector.register(pidfd, selectors.EVENT_READ)
    deadline = time.monotonic() + wall_seconds
    timed_out = False
    ended: float | None = None
    open_pipes = set(buffers)
    try:
        while True:
            now = time.monotonic()
            if ended is None and has_ended(proc.pid):
                ended = now
                kill_all()  # whatever the program left behind
                if pidfd is not None:
                    selector.unregister(pidfd)
            if ended is not None and (not open_pipes or now >= ended + DRAIN_SECONDS):
                break
            if ended is None and not timed_out and now >= deadline:
                timed_out = True
                kill_all()
            if ended is not None:
                wait = ended + DRAIN_SECONDS - now
            elif timed_out:
                wait = 0.01
            else:
                wait = min(deadline - now, 0.5 if pidfd is not None else 0.01)
            for key, _ in selector.select(max(wait, 0.0)):
                if key.fd in open_pipes and not read_into(key.fd, buffers[key.fd]):
                    selector.unregister(key.fd)
                    open_pipes.discard(key.fd)
    finally:
        selector.close()
        if pidfd is not None:
            os.close(pidfd)
    assert ended is not None
    return timed_out, ended, bytes(buffers[proc.stdout.fileno()]), bytes(buffers[proc.stderr.fileno()])


def read_into(fd: int, buffer: bytearray) -> bool:
    """Append what `fd` has to `buffer`, keeping its last OUTPUT_CAP bytes; False at end of file."""
    try:
        chunk = os.read(fd, 1 << 16)
    except BlockingIOError:
        return True
    if not chunk:
        return False
    buffer += chunk
    if len(buffer) > OUTPUT_CAP:
        del buffer[: len(buffer) - OUTPUT_CAP]
    return True


def open_pidfd(pid: int) -> int | None:
    try:
        return os.pidfd_open(pid)
    except (AttributeError, OSError):
        return None  # kernel < 5.3 or no os.pidfd_open: poll every 10 ms instead


def has_ended(pid: int) -> bool:
    try:
        return os.waitid(os.P_PID, pid, os.WEXITED | os.WNOHANG | os.WNOWAIT) is not None
    except ChildProcessError:
        return True


def read_all(fd: int) -> bytes:
    """What a pipe holds now (its writers have ended), without waiting for more."""
    os.set_blocking(fd, False)
    data = bytearray()
    while True:
        try:
            chunk = os.read(fd, 1 << 16)
        except BlockingIOError:
            break
        if not chunk:
            break
        data += chunk
    return bytes(data)


def read_reports(fd: int) -> list[dict[str, Any]]:
    reports = []
    for line in read_all(fd).decode("utf-8", "replace").splitlines():
        try:
            item = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(item, dict):
            reports.append(item)
    return reports
