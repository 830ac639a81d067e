"""Time limits for calls that can hang (sympy, math-verify on model text), from any thread of any process.

Why a process. A SIGALRM limit works only on the main thread and cannot stop C code; a thread cannot be
stopped at all. A call made in another process always can: the caller waits at most `seconds` for the
reply and otherwise kills that process and answers a fallback. Workers are long-lived and reused --
starting Python and importing sympy costs about a second, a call costs two pipe messages -- and a killed
worker is replaced by the next call.

Why `subprocess` rather than `multiprocessing`. A worker is a fresh interpreter started by fork + exec,
as with multiprocessing's "spawn" (so it is safe beside torch's threads), but a daemonic multiprocessing
worker (a `multiprocessing.Pool` process) may not start multiprocessing children, and "spawn" re-imports
the caller's ``__main__`` script; a plain subprocess has neither limit, so the time limit also holds
inside such workers.

What crosses the pipes is pickled: the function by reference (it must be defined at module level) and its
arguments, so both sides should be strings and plain values. Workers never outlive the interpreter: they
are killed at exit, exit when their request pipe closes, and exit within a second of being orphaned.
"""

from __future__ import annotations

import atexit
import os
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from multiprocessing.connection import Connection
from typing import Any, TypeVar

__all__ = ["Deadline", "WorkerPool", "WorkerStartError", "serve"]

T = TypeVar("T")

# The worker's entry point: `serve` reads requests from and writes replies to the pipe fds on its argv.
_BOOT = f"import sys; from {__name__} import serve; serve(*map(int, sys.argv[1:]))"


class WorkerStartError(RuntimeError):
    """A worker process did not start or its warm-up failed: a broken environment, not a slow answer."""


class Deadline:
    """A wall-clock deadline `seconds` from now, shared by several time-limited calls."""

    def __init__(self, seconds: float) -> None:
        self.at = time.monotonic() + seconds

    def remaining(self) -> float:
        return self.at - time.monotonic()

    def passed(self) -> bool:
        return time.monotonic() > self.at


def _ready() -> None:
    """The warm-up of a worker that needs none: it only proves the worker answers."""


def _describe(error: BaseException) -> str:
    lines = str(error).splitlines()
    return f"{type(error).__name__}: {lines[0] if lines else ''}"


class _Worker:
    """One worker process and the two pipes to it; started and warmed up by the constructor."""

    def __init__(self, warm_up: Callable[[], object], startup_s: float) -> None:
        request_read, request_write = os.pipe()
        reply_read, reply_write = os.pipe()
        try:
            self.process = subprocess.Popen(
                # -P: the worker's import path is exactly the caller's (below), never its current directory too
                [sys.executable, "-P", "-c", _BOOT, str(request_read), str(reply_write), str(os.getpid())],
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,  # stray prints of a library must not reach the caller's stdout
                pass_fds=(request_read, reply_write),
                env={**os.environ, "PYTHONPATH": os.pathsep.join(path or os.getcwd() for path in sys.path)},
                start_new_session=True,  # a terminal's Ctrl-C reaches the caller, which then stops its workers
            )
        except BaseException:
            os.close(request_write)
            os.close(reply_read)
            raise
        finally:
            os.close(request_read)
            os.close(reply_write)
        self.requests = Connection(request_write, readable=False)
        self.replies = Connection(reply_read, writable=False)
        try:
            reply = self.call(warm_up, (), startup_s)
        except (EOFError, OSError):
            reply = ("error", f"the worker exited during start-up (exit code {self.process.wait()})")
        if reply is None or reply[0] != "ok":
            self.stop()
            why = f"no answer within {startup_s:g} s" if reply is None else reply[1]
            raise WorkerStartError(f"time-limit worker failed to start: {why}")

    def call(self, fn: Callable[..., Any], args: tuple[Any, ...], seconds: float) -> tuple[str, Any] | None:
        """("ok", result) or ("error", message) from the worker, None if no reply came within `seconds`.

        `EOFError` / `OSError` if the worker died."""
        self.requests.send((fn, args))
        return self.replies.recv() if self.replies.poll(seconds) else None

    def alive(self) -> bool:
        return self.process.poll() is None

    def stop(self) -> None:
        """Kill and reap the process (no zombie), then close the pipes; safe to repeat."""
        if self.process.poll() is None:
            self.process.kill()
        self.process.wait()
        self.requests.close()
        self.replies.close()

    def forget(self) -> None:
        """In a forked child: drop this copy of the pipes and leave the process to the parent that owns it."""
        self.requests.close()
        self.replies.close()


class WorkerPool:
    """Time-limited calls in reusable worker processes, from any thread.

    A call takes an idle worker or starts one (at most `max_workers` at a time, default one per CPU;
    callers beyond that wait, and the wait does not count against their limit) and gives it back after
    the reply. A worker that ran out of time or died is killed and reaped instead; a later call starts a
    fresh one. `warm_up` (a module-level function, e.g. importing sympy) runs once in each new worker before
    its first call, so start-up never counts against a call's limit.
    """

    def __init__(
        self, warm_up: Callable[[], object] = _ready, *, max_workers: int | None = None, startup_s: float = 120.0
    ) -> None:
        self.warm_up = warm_up
        self.max_workers = max_workers or os.cpu_count() or 1
        self.startup_s = startup_s
        self._reset()
        atexit.register(self.close)
        os.register_at_fork(after_in_child=self._forget_all)

    def _reset(self) -> None:
        self._lock = threading.Lock()
        self._slots = threading.BoundedSemaphore(self.max_workers)
        self._idle: list[_Worker] = []
        self._live: set[_Worker] = set()

    def call(self, default: T, seconds: float, fn: Callable[..., T], *args: Any) -> T:
        """`fn(*args)` in a worker; `default` if it raised there, or gave no reply within `seconds` (that
        worker is then killed and replaced), or the worker died. `WorkerStartError` if no worker starts."""
        if seconds <= 0:
            return default
        with self._slots:
            worker = self._take()
            reply: tuple[str, Any] | None = None
            try:
                reply = worker.call(fn, args, seconds)
            except (EOFError, OSError):
                reply = None
            finally:
                if reply is None:
                    self._discard(worker)
                else:
                    with self._lock:
                        self._idle.append(worker)
        return reply[1] if reply is not None and reply[0] == "ok" else default

    def _take(self) -> _Worker:
        """An idle live worker, else a new one (started outside the lock: start-up takes a while)."""
        with self._lock:
            while self._idle:
                worker = self._idle.pop()
                if worker.alive():
                    return worker
                self._live.discard(worker)
                worker.stop()
        worker = _Worker(self.warm_up, self.startup_s)
        with self._lock:
            self._live.add(worker)
        return worker

    def _discard(self, worker: _Worker) -> None:
        with self._lock:
            self._live.discard(worker)
        worker.stop()

    def workers(self) -> int:
        """How many worker processes this pool holds now (idle or busy)."""
        with self._lock:
            return len(self._live)

    def close(self) -> None:
        """Stop every worker, idle or busy, and reap it; the pool stays usable (it starts new ones)."""
        with self._lock:
            workers, self._idle, self._live = list(self._live), [], set()
        for worker in workers:
            worker.stop()

    def _forget_all(self) -> None:
        """After a fork, in the child: the workers belong to the parent, so this copy starts afresh."""
        for worker in self._live:
            worker.forget()
        self._reset()


def _exit_when_orphaned(parent: int) -> None:
    """Exit (from a watcher thread) once `parent` is gone, even if the main thread is stuck in a call."""

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(1.0)
        os._exit(1)

    threading.Thread(target=watch, name="orphan-watch", daemon=True).start()


def serve(request_fd: int, reply_fd: int, parent: int) -> None:
    """The worker loop: answer each ``(fn, args)`` request with ``("ok", fn(*args))`` or ``("error", why)``
    until the request pipe closes."""
    requests = Connection(request_fd, writable=False)
    replies = Connection(reply_fd, readable=False)
    _exit_when_orphaned(parent)
    while True:
        try:
            fn, args = requests.recv()
        except EOFError:
            return
        except Exception as error:  # an unimportable function: the request was read whole, so reply
            reply: tuple[str, Any] = ("error", _describe(error))
        else:
            try:
                reply = ("ok", fn(*args))
            except Exception as error:
                reply = ("error", _describe(error))
        try:
            replies.send(reply)
        except Exception as error:  # an unpicklable result (pickling fails before anything is written)
            replies.send(("error", _describe(error)))
