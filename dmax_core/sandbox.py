"""Run untrusted generated Python programs (HumanEval / MBPP answers plus their tests) in throw-away processes.

`run_program(source)` writes `source` to `program.py` in a fresh temporary directory, runs it with
`sys.executable -I -B` under resource limits, and maps what happened to a `Verdict`: `passed` (exit 0
*and* the program ran to its last line, below), `failed` (any other end: an assertion, an exception, a
signal, or an exit before the end), `timeout` (wall or CPU time limit), `memory` (MemoryError or another
out-of-memory report) or `error` (the sandbox itself could not run it).

A pass means the tests ran to their end
---------------------------------------
A test program is the answer followed by its tests, so exit status 0 alone is no evidence: an answer
that calls `exit()`, `quit()`, `sys.exit(0)`, `raise SystemExit(0)` or `os._exit(0)` -- at top level, in
a class body, in a default argument or under `if __name__ == "__main__":` -- would end the interpreter
with status 0 before a single test ran. The sandbox therefore appends one last top-level statement to
every program: it writes a fresh random nonce (per run, `secrets.token_hex(16)`) to a pipe inherited only
by the program (its descriptor number is in that statement too). The parent says `passed` only when
the status is 0 and the pipe holds exactly the nonce; status 0 without it is `failed`, "the program
exited before its tests finished". A program that catches SystemExit and goes on does reach the end,
and passes if its tests do. The nonce is in program.py, which the program can read: this stops
generated code that ends early, not a program written to forge the marker (see "not provided").
`run_programs` runs many in parallel, keeping their order; `main` is the `dmax sandbox FILE` command.

How one program runs
--------------------
    unshare --net --pid --fork --kill-child --mount-proc --ipc --uts   (when namespaces can be created)
      └─ init: python -I -S -c _INIT   joins the pids cgroup, forks, reaps, reports the program's status
           └─ python -I -B program.py  with RLIMIT_CPU, RLIMIT_AS, RLIMIT_FSIZE, RLIMIT_CORE=0 (+ RLIMIT_NPROC)

* The outermost process starts its own session (`start_new_session`), so the whole tree is one process
  group; that group is SIGKILLed at the end of every run, passed or not, and at the wall-time deadline.
* The program is not PID 1 of its namespace: a small init (`_INIT`) is. PID 1 ignores signals it has no
  handler for, so a program running as PID 1 would survive its own SIGXCPU/SIGTERM; and util-linux 2.38's
  `unshare --fork` cannot pass on a child's death by signal ("sigprocmask unblock failed", exit 1). The init
  therefore reports the program's wait status and CPU time over a private pipe (close-on-exec, so the
  program never holds it), and the verdict is built from that report, never from unshare's exit status.
* Working directory, HOME and TMPDIR: the temporary directory, deleted afterwards. Environment: PATH, HOME,
  TMPDIR, LANG/LC_ALL and the marker `DMAX_SANDBOX_ID=<random token>`, nothing inherited. stdin is
  /dev/null; stdout and stderr are read concurrently and only their last `OUTPUT_CAP` bytes are kept, so a
  flood neither blocks the program nor fills memory.
* No `shell=True`, no `preexec_fn` (limits are set by the init, between fork and exec, so starting a
  program is safe from the threads of `run_programs`).

What isolation IS provided
--------------------------
* Time: RLIMIT_CPU (whole seconds, rounded up; SIGXCPU at the limit, SIGKILL one second later) and a wall
  deadline after which everything is killed.
* Memory: RLIMIT_AS per process (address space, not resident memory: a process of N children may use N
  times the limit). File size: RLIMIT_FSIZE (a larger write fails with EFBIG; Python ignores SIGXFSZ).
  No core files (RLIMIT_CORE 0).
* Process count: where a pids cgroup (v1 `pids` hierarchy or a v2 cgroup with the pids controller) can be
  created - normally only as root - each run gets its own with `pids.max = max_processes + 2` (init and
  the program itself), and every task in it is killed at the end: the program can then create exactly
  `max_processes` more. For a non-root user RLIMIT_NPROC is set to (tasks the user owns now) +
  max_processes + 3 (unshare, init, program); it counts every task of the uid, so the allowance is
  approximate (a couple more or less, fewer while the user's other processes grow, shared between the
  concurrent runs of `run_programs`). The kernel ignores RLIMIT_NPROC for root, so root without a
  writable pids cgroup has no process-count limit: a fork bomb is then only stopped by the wall
  deadline. Both limits count threads as well as processes.
* Network, PIDs, IPC, hostname and /proc: when `unshare` can create namespaces (as root directly, as a
  non-root user with `--user --map-root-user`; probed once, see `isolation()`), the program has its own
  network namespace with only a loopback device that is down (no network at all), its own PID namespace
  (`/proc` remounted; when the init exits the kernel kills every process left in it, so no daemonised
  grandchild survives), and its own IPC and UTS namespaces.
* Orphans without a PID namespace: the process group is killed, every task of the pids cgroup is killed,
  and every live process whose initial environment carries this run's marker (scanning /proc/*/environ)
  is killed, until none is left. The marker scan also runs when namespaces exist, as a last net.

What isolation is NOT provided
------------------------------
* No filesystem isolation beyond the working directory: the program runs as the invoking user (in a user
  namespace it sees itself as uid 0, but the host checks the invoking user's rights) and can
  read, write and delete everything that user can (as root: everything; `--mount-proc` gives it a private
  mount table but the same files). Run evaluations as an unprivileged user.
* No seccomp or capability dropping: all system calls are available. Run as real root, a deliberately
  hostile program can raise its own hard rlimits and leave the pids cgroup (root mapped in a user
  namespace cannot); in either case it can mount things in its own mount namespace. The limits stop
  buggy generated code, not an attacker.
* Without namespaces the network is reachable and a process that detaches (setsid) and re-executes with an
  environment lacking the marker escapes the cleanup unless a pids cgroup is in use.
* The end-of-tests nonce is written into program.py, which the program may read: a program written
  to find it could forge a pass (no generated answer does this by accident).
* The `marked_processes` scan sees only processes whose environment the caller may read (its own uid, or
  all as root).
* A run's pids cgroup (`dmax-sandbox-<token>` beside our own cgroup) is removed at the end of the run; if
  the calling process is killed mid-run, the empty directory stays behind.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import functools
import json
import math
import os
import re
import secrets
import selectors
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

MARKER_ENV = "DMAX_SANDBOX_ID"
OUTPUT_CAP = 64 * 1024
PROGRAM_NAME = "program.py"
# Appended to every program as its last top-level statement (module docstring); filled per run.
_END_MARKER = "\n\n# dmax sandbox: the program ran to its end\n__import__('os').write({fd}, b'{nonce}')\n"
_EARLY_EXIT = "the program exited before its tests finished (exit status 0, no end-of-tests marker)"
STATUSES = ("passed", "failed", "timeout", "memory", "error")

_UNSHARE_FLAGS = ("--net", "--pid", "--fork", "--kill-child", "--mount-proc", "--ipc", "--uts")
_SYSTEM_PATH = "/usr/local/bin:/usr/bin:/bin"
_DRAIN_SECONDS = 0.5  # how long output is still read after the program's tree has ended
_MEMORY_RE = re.compile(r"\bMemoryError\b|Cannot allocate memory|out of memory|bad_alloc", re.IGNORECASE)
_DETAIL_CHARS = 240

# The init between unshare and the program (run as `python -I -S -c _INIT FD SPEC ARGV...`). It joins the
# run's pids cgroup, forks the program with the limits set in the child, reaps every child it inherits
# (it is PID 1 of the namespace) and writes JSON lines to FD: {"status": wait status, "cpu": seconds} for the
# program, or {"error": why} when it could not start it. FD is close-on-exec for the program.
_INIT = r"""
import json, os, resource, sys
fd = int(sys.argv[1])
spec = json.loads(sys.argv[2])
argv = sys.argv[3:]
os.set_inheritable(fd, False)
def report(**fields):
    os.write(fd, (json.dumps(fields) + "\n").encode())
try:
    if spec["cgroup"]:
        with open(os.path.join(spec["cgroup"], "cgroup.procs"), "w") as f:
            f.write("0")
    pid = os.fork()
except OSError as exc:
    report(error=f"sandbox init: {exc}")
    sys.exit(125)
if pid == 0:
    try:
        for name, soft, hard in spec["rlimits"]:
            kind = getattr(resource, name)
            old_hard = resource.getrlimit(kind)[1]
            if old_hard != resource.RLIM_INFINITY:
                hard = min(hard, old_hard)
            resource.setrlimit(kind, (min(soft, hard), hard))
        os.execv(argv[0], argv)
    except BaseException as exc:
        report(error=f"cannot start the program: {exc}")
    os._exit(127)
while True:
    child, status, usage = os.wait4(-1, 0)
    if child == pid:
        break
report(status=status, cpu=usage.ru_utime + usage.ru_stime)
"""


@dataclass(frozen=True)
class Limits:
    """Per-program limits. CPU seconds are rounded up to whole seconds (RLIMIT_CPU's unit)."""

    cpu_seconds: float = 10.0  # RLIMIT_CPU
    wall_seconds: float = 15.0  # everything is killed after this wall time
    memory_bytes: int = 1 << 30  # RLIMIT_AS, per process
    max_processes: int = 16  # processes and threads the program may create (pids cgroup / RLIMIT_NPROC)
    file_bytes: int = 16 << 20  # RLIMIT_FSIZE

    def __post_init__(self) -> None:
        for name in ("cpu_seconds", "wall_seconds", "memory_bytes", "file_bytes"):
            value = getattr(self, name)
            if not value > 0 or not math.isfinite(value):
                raise ValueError(f"Limits.{name} must be a positive finite number, got {value!r}")
        if self.max_processes < 0:
            raise ValueError(f"Limits.max_processes must be >= 0, got {self.max_processes!r}")

    def rlimits(self) -> list[tuple[str, int, int]]:
        """(resource name, soft, hard) for the program; RLIMIT_NPROC is added per run (it depends on the uid)."""
        cpu = max(1, math.ceil(self.cpu_seconds))
        return [
            ("RLIMIT_CORE", 0, 0),
            ("RLIMIT_CPU", cpu, cpu + 1),
            ("RLIMIT_AS", self.memory_bytes, self.memory_bytes),
            ("RLIMIT_FSIZE", self.file_bytes, self.file_bytes),
        ]


DEFAULT_LIMITS = Limits()


@dataclass(frozen=True)
class Verdict:
    """What happened to one program. `detail` is one short line: the last stderr line, the signal, or why."""

    status: str  # "passed" | "failed" | "timeout" | "memory" | "error"
    returncode: int | None  # exit code, or -signal; None when the sandbox killed or never ran the program
    seconds: float  # wall time from start to the end of the program's process tree
    detail: str

    def to_json(self) -> str:
        """One JSON line (no trailing newline)."""
        return json.dumps(dataclasses.asdict(self), ensure_ascii=False)


@dataclass(frozen=True)
class _Config:
    """How programs are launched on this machine (probed once by `_config`)."""

    unshare: tuple[str, ...] | None = None  # argv prefix creating the namespaces, None without them
    user_namespace: bool = False
    cgroup_parent: str | None = None  # directory in which each run creates its pids cgroup
    nproc_rlimit: bool = False  # RLIMIT_NPROC is enforced for our uid (not root)


@dataclass
class _Outcome:
    timed_out: bool
    seconds: float
    stdout: bytes
    stderr: bytes
    reports: list[dict[str, Any]]
    leader_returncode: int | None  # of unshare, or of the init without namespaces
    reached_end: bool = False  # the end-of-tests marker arrived with this run's nonce


# ----------------------------------------------------------------------------------------------------------
# Public API


def isolation() -> dict[str, bool]:
    """What this machine provides to sandboxed programs (probed on first use, then cached).

    network_namespace / pid_namespace / mount_namespace / ipc_uts_namespaces: created by `unshare` per run;
    user_namespace: `--user --map-root-user` was needed (non-root); pids_cgroup: a per-run pids cgroup;
    rlimit_nproc: RLIMIT_NPROC is enforced (non-root); process_limit: either of the two;
    privileged: the program runs with root's file access on the host."""
    config = _config()
    namespaces = config.unshare is not None
    return {
        "network_namespace": namespaces,
        "pid_namespace": namespaces,
        "mount_namespace": namespaces,
        "ipc_uts_namespaces": namespaces,
        "user_namespace": config.user_namespace,
        "pids_cgroup": config.cgroup_parent is not None,
        "rlimit_nproc": config.nproc_rlimit,
        "process_limit": config.cgroup_parent is not None or config.nproc_rlimit,
        "privileged": os.geteuid() == 0,
    }


def run_program(source: str, limits: Limits = DEFAULT_LIMITS) -> Verdict:
    """Run one Python program in the sandbox and say how it ended (see the module docstring)."""
    return _execute(source, limits, _config())


def run_programs(sources: Sequence[str], limits: Limits = DEFAULT_LIMITS, workers: int | None = None) -> list[Verdict]:
    """`run_program` for each source, `workers` at a time (default: `os.cpu_count()`); verdicts in input order.

    Threads suffice: each worker only waits on its child process."""
    sources = list(sources)
    count = workers if workers is not None else (os.cpu_count() or 1)
    if count < 1:
        raise ValueError(f"workers must be >= 1, got {workers}")
    if not sources:
        return []
    config = _config()  # probe once, before the threads start
    with ThreadPoolExecutor(max_workers=min(count, len(sources)), thread_name_prefix="dmax-sandbox") as pool:
        return list(pool.map(lambda source: _execute(source, limits, config), sources))


def marked_processes(token: str | None = None) -> list[int]:
    """PIDs of live processes whose initial environment carries the sandbox marker (of run `token`, or of any
    run when None). Zombies and processes whose environment we may not read are not listed."""
    wanted = f"{MARKER_ENV}={token}".encode() if token is not None else f"{MARKER_ENV}=".encode()
    me = os.getpid()
    found = []
    for pid in _proc_pids():
        if pid == me:
            continue
        try:
            entries = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
        except OSError:
            continue
        if any(entry == wanted if token is not None else entry.startswith(wanted) for entry in entries):
            found.append(pid)
    return found


def main(argv: Sequence[str] | None = None) -> int:
    """`dmax sandbox FILE [--timeout S] [--memory-mb N]`: run one program file, print its Verdict as one JSON
    line. Exit 0 when it passed, 1 otherwise, 2 when FILE cannot be read or a limit is invalid."""
    parser = argparse.ArgumentParser(prog="dmax sandbox", description="Run one Python program in the sandbox.")
    parser.add_argument("file", type=Path, help="the Python program to run")
    parser.add_argument("--timeout", type=float, default=None, metavar="S",
                        help=f"wall and CPU seconds (default: {DEFAULT_LIMITS.wall_seconds:g} wall, "
                             f"{DEFAULT_LIMITS.cpu_seconds:g} CPU)")
    parser.add_argument("--memory-mb", type=int, default=None, metavar="N",
                        help=f"address-space limit in MiB (default: {DEFAULT_LIMITS.memory_bytes >> 20})")
    args = parser.parse_args(argv)
    try:
        source = args.file.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        print(f"dmax sandbox: cannot read {args.file}: {reason}", file=sys.stderr)
        return 2
    changes: dict[str, Any] = {}
    if args.timeout is not None:
        changes.update(wall_seconds=args.timeout, cpu_seconds=args.timeout)
    if args.memory_mb is not None:
        changes.update(memory_bytes=args.memory_mb << 20)
    try:
        limits = dataclasses.replace(DEFAULT_LIMITS, **changes)
    except ValueError as exc:
        print(f"dmax sandbox: {exc}", file=sys.stderr)
        return 2
    verdict = run_program(source, limits)
    print(verdict.to_json())
    return 0 if verdict.status == "passed" else 1


# ----------------------------------------------------------------------------------------------------------
# One run


def _execute(source: str, limits: Limits, config: _Config) -> Verdict:
    token = secrets.token_hex(8)
    workdir = Path(tempfile.mkdtemp(prefix="dmax-sandbox-"))
    cgroup: Path | None = None
    started = time.monotonic()
    end_read, end_write = os.pipe()
    try:
        nonce = secrets.token_hex(16)
        (workdir / PROGRAM_NAME).write_text(source + _END_MARKER.format(fd=end_write, nonce=nonce), encoding="utf-8")
        if config.cgroup_parent is not None:
            cgroup = _create_cgroup(Path(config.cgroup_parent), token, limits.max_processes + 2)
        outcome = _run(workdir, token, limits, config, cgroup, end_write)
        os.close(end_write)
        end_write = -1
        outcome.reached_end = _read_all(end_read) == nonce.encode()
    except (OSError, ValueError, subprocess.SubprocessError) as exc:
        return Verdict("error", None, round(time.monotonic() - started, 3), _one_line(f"sandbox: {exc}"))
    finally:
        for fd in (end_read, end_write):
            if fd >= 0:
                os.close(fd)
        _kill_everything(token, cgroup)
        if cgroup is not None:
            _remove_cgroup(cgroup)
        _remove_tree(workdir)
    return _classify(outcome, limits)


def _run(workdir: Path, token: str, limits: Limits, config: _Config, cgroup: Path | None,
         end_fd: int) -> _Outcome:
    """Launch the program (the end-of-tests pipe `end_fd` inherited by it alone) and supervise it."""
    status_read, status_write = os.pipe()
    try:
        try:
            proc = subprocess.Popen(
                _command(workdir, status_write, limits, config, cgroup),
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                cwd=workdir,
                env=_environment(workdir, token),
                start_new_session=True,
                close_fds=True,
                pass_fds=(status_write, end_fd),
            )
        finally:
            os.close(status_write)
        try:
            started = time.monotonic()
            timed_out, ended, stdout, stderr = _supervise(
                proc, limits.wall_seconds, lambda: _kill_everything(token, cgroup, proc.pid)
            )
            seconds = ended - started
        finally:
            _kill_group(proc.pid)
            proc.wait()
            for stream in (proc.stdout, proc.stderr):
                if stream is not None:
                    stream.close()
        return _Outcome(timed_out, seconds, stdout, stderr, _read_reports(status_read), proc.returncode)
    finally:
        os.close(status_read)


def _command(workdir: Path, status_fd: int, limits: Limits, config: _Config, cgroup: Path | None) -> list[str]:
    rlimits = limits.rlimits()
    if config.nproc_rlimit:
        # RLIMIT_NPROC counts every task of the real uid: allow what it owns now plus unshare, init, program.
        allowed = _tasks_of_uid(os.getuid()) + limits.max_processes + 3
        rlimits.append(("RLIMIT_NPROC", allowed, allowed))
    spec = json.dumps({"cgroup": str(cgroup) if cgroup is not None else None, "rlimits": rlimits})
    program = [sys.executable, "-I", "-B", str(workdir / PROGRAM_NAME)]
    init = [sys.executable, "-I", "-S", "-c", _INIT, str(status_fd), spec, *program]
    return [*config.unshare, "--", *init] if config.unshare else init


def _environment(workdir: Path, token: str) -> dict[str, str]:
    """A minimal environment: nothing of ours (tokens, credentials, proxies) reaches the program."""
    return {
        "PATH": _SYSTEM_PATH,
        "HOME": str(workdir),
        "TMPDIR": str(workdir),
        "LANG": "C.UTF-8",
        "LC_ALL": "C.UTF-8",
        MARKER_ENV: token,
    }


def _supervise(
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
    pidfd = _open_pidfd(proc.pid)
    if pidfd is not None:
        selector.register(pidfd, selectors.EVENT_READ)
    deadline = time.monotonic() + wall_seconds
    timed_out = False
    ended: float | None = None
    open_pipes = set(buffers)
    try:
        while True:
            now = time.monotonic()
            if ended is None and _has_ended(proc.pid):
                ended = now
                kill_all()  # whatever the program left behind
                if pidfd is not None:
                    selector.unregister(pidfd)
            if ended is not None and (not open_pipes or now >= ended + _DRAIN_SECONDS):
                break
            if ended is None and not timed_out and now >= deadline:
                timed_out = True
                kill_all()
            if ended is not None:
                wait = ended + _DRAIN_SECONDS - now
            elif timed_out:
                wait = 0.01
            else:
                wait = min(deadline - now, 0.5 if pidfd is not None else 0.01)
            for key, _ in selector.select(max(wait, 0.0)):
                if key.fd in open_pipes and not _read_into(key.fd, buffers[key.fd]):
                    selector.unregister(key.fd)
                    open_pipes.discard(key.fd)
    finally:
        selector.close()
        if pidfd is not None:
            os.close(pidfd)
    assert ended is not None
    return timed_out, ended, bytes(buffers[proc.stdout.fileno()]), bytes(buffers[proc.stderr.fileno()])


def _read_into(fd: int, buffer: bytearray) -> bool:
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


def _open_pidfd(pid: int) -> int | None:
    try:
        return os.pidfd_open(pid)
    except (AttributeError, OSError):
        return None  # kernel < 5.3 or no os.pidfd_open: poll every 10 ms instead


def _has_ended(pid: int) -> bool:
    try:
        return os.waitid(os.P_PID, pid, os.WEXITED | os.WNOHANG | os.WNOWAIT) is not None
    except ChildProcessError:
        return True


def _read_all(fd: int) -> bytes:
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


def _read_reports(fd: int) -> list[dict[str, Any]]:
    reports = []
    for line in _read_all(fd).decode("utf-8", "replace").splitlines():
        try:
            item = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(item, dict):
            reports.append(item)
    return reports


def _classify(outcome: _Outcome, limits: Limits) -> Verdict:
    """Map the init's report, the deadline and stderr to a Verdict (the mapping is in the module docstring)."""
    seconds = round(outcome.seconds, 3)
    last_line = _last_line(outcome.stderr)
    if outcome.timed_out:
        return Verdict("timeout", None, seconds, f"wall time limit of {limits.wall_seconds:g} s exceeded")
    errors = [item["error"] for item in outcome.reports if "error" in item]
    statuses = [item for item in outcome.reports if "status" in item]
    if errors:
        return Verdict("error", None, seconds, _one_line(str(errors[0])))
    if not statuses:
        leader = outcome.leader_returncode
        if leader is not None and leader < 0:  # the init was killed: only the program can have done that
            return Verdict("failed", None, seconds, f"the sandbox init was killed by {_signal_name(-leader)}")
        why = last_line or f"exit code {leader}"
        return Verdict("error", None, seconds, _one_line(f"sandbox ended without a report: {why}"))
    code = os.waitstatus_to_exitcode(int(statuses[-1]["status"]))
    cpu = float(statuses[-1].get("cpu", 0.0))
    if code == 0:
        if not outcome.reached_end:
            return Verdict("failed", 0, seconds, _EARLY_EXIT)
        return Verdict("passed", 0, seconds, "exit code 0")
    if code < 0:
        number = -code
        cpu_limit = max(1, math.ceil(limits.cpu_seconds))
        if number in (signal.SIGXCPU, signal.SIGKILL) and cpu >= cpu_limit - 0.1:
            return Verdict("timeout", code, seconds, f"CPU time limit of {cpu_limit} s exceeded")
        if _MEMORY_RE.search(last_line):
            return Verdict("memory", code, seconds, _one_line(last_line))
        suffix = f": {last_line}" if last_line else ""
        return Verdict("failed", code, seconds, _one_line(f"killed by {_signal_name(number)}{suffix}"))
    if _MEMORY_RE.search(last_line):
        return Verdict("memory", code, seconds, _one_line(last_line))
    return Verdict("failed", code, seconds, _one_line(last_line or f"exit code {code}"))


def _signal_name(number: int) -> str:
    try:
        return signal.Signals(number).name
    except ValueError:
        return f"signal {number}"


def _last_line(data: bytes) -> str:
    for line in reversed(data.decode("utf-8", "replace").splitlines()):
        if line.strip():
            return line.strip()
    return ""


def _one_line(text: str) -> str:
    text = " ".join(text.split())
    return text if len(text) <= _DETAIL_CHARS else text[: _DETAIL_CHARS - 3] + "..."


# ----------------------------------------------------------------------------------------------------------
# Killing and cleaning up


def _kill_everything(token: str, cgroup: Path | None, pgid: int | None = None) -> None:
    """SIGKILL the run's process group, every task of its cgroup and every process carrying its marker."""
    if pgid is not None:
        _kill_group(pgid)
    if cgroup is not None:
        _kill_cgroup_tasks(cgroup)
    _kill_marked(token)


def _kill_group(pgid: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, signal.SIGKILL)


def _kill_marked(token: str, rounds: int = 50) -> None:
    """SIGKILL every live process carrying this run's marker, again until none is left (they may fork)."""
    for _ in range(rounds):
        pids = marked_processes(token)
        if not pids:
            return
        for pid in pids:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, signal.SIGKILL)
        time.sleep(0.005)


def _proc_pids() -> Iterator[int]:
    try:
        names = os.listdir("/proc")
    except OSError:
        return
    for name in names:
        if name.isdigit():
            yield int(name)


def _tasks_of_uid(uid: int) -> int:
    """Tasks (threads included, as RLIMIT_NPROC counts them) whose real uid is `uid`."""
    total = 0
    for pid in _proc_pids():
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


def _remove_tree(path: Path) -> None:
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


def _create_cgroup(parent: Path, token: str, max_tasks: int) -> Path:
    path = parent / f"dmax-sandbox-{token}"
    path.mkdir()
    try:
        (path / "pids.max").write_text(str(max_tasks))
    except OSError:
        path.rmdir()
        raise
    return path


def _kill_cgroup_tasks(path: Path) -> None:
    """Forbid new tasks in the run's cgroup, then kill every task in it until none is left."""
    with contextlib.suppress(OSError):
        (path / "pids.max").write_text("0")
    for _ in range(200):
        try:
            pids = [int(line) for line in (path / "cgroup.procs").read_text().split()]
        except (OSError, ValueError):
            pids = []
        if not pids:
            break
        for pid in pids:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, signal.SIGKILL)
        time.sleep(0.005)


def _remove_cgroup(path: Path) -> None:
    for _ in range(200):
        try:
            path.rmdir()
            return
        except FileNotFoundError:
            return
        except OSError:
            time.sleep(0.005)


# ----------------------------------------------------------------------------------------------------------
# Probing what the machine allows (once per process)


@functools.cache
def _config() -> _Config:
    unshare, user_namespace = _probe_namespaces()
    base = _Config(unshare=unshare, user_namespace=user_namespace, nproc_rlimit=os.geteuid() != 0)
    for parent in _pids_cgroup_dirs():
        candidate = dataclasses.replace(base, cgroup_parent=str(parent))
        if _execute("pass\n", Limits(wall_seconds=10.0), candidate).status == "passed":
            return candidate
    return base


def _probe_namespaces() -> tuple[tuple[str, ...] | None, bool]:
    """The unshare argv prefix that works here (root: plain first, then with a user namespace), if any."""
    path = shutil.which("unshare", path="/usr/bin:/bin:/usr/sbin:/sbin")
    if path is None:
        return None, False
    candidates: list[tuple[tuple[str, ...], bool]] = []
    if os.geteuid() == 0:
        candidates.append(((path, *_UNSHARE_FLAGS), False))
    candidates.append(((path, "--user", "--map-root-user", *_UNSHARE_FLAGS), True))
    for argv, user_namespace in candidates:
        if _succeeds([*argv, "--", sys.executable, "-I", "-S", "-c", "pass"]):
            return argv, user_namespace
    return None, False


def _succeeds(argv: list[str]) -> bool:
    try:
        done = subprocess.run(argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                              env={"PATH": _SYSTEM_PATH}, start_new_session=True, timeout=10, check=False)
    except (OSError, subprocess.SubprocessError):
        return False
    return done.returncode == 0


def _pids_cgroup_dirs() -> list[Path]:
    """Writable directories of our own cgroup in a hierarchy with the pids controller (v1 first, then v2)."""
    try:
        memberships = Path("/proc/self/cgroup").read_text().splitlines()
        mounts = Path("/proc/self/mountinfo").read_text().splitlines()
    except OSError:
        return []
    found: list[Path] = []
    for line in memberships:
        parts = line.split(":", 2)
        if len(parts) != 3:
            continue
        hierarchy, controllers, cgroup_path = parts
        if "pids" in controllers.split(","):
            fstype, option = "cgroup", "pids"
        elif hierarchy == "0" and not controllers:
            fstype, option = "cgroup2", None
        else:
            continue
        for mount_root, mountpoint in _cgroup_mounts(mounts, fstype, option):
            directory = _cgroup_directory(mountpoint, mount_root, cgroup_path)
            if directory is not None and os.access(directory, os.W_OK) and directory not in found:
                found.append(directory)
    found.sort(key=lambda directory: directory.name == "unified")  # v1 pids before a v2 mount
    return found


def _cgroup_mounts(mounts: list[str], fstype: str, option: str | None) -> Iterator[tuple[str, str]]:
    for line in mounts:
        left, _, right = line.partition(" - ")
        fields, extra = left.split(), right.split()
        if len(fields) < 5 or len(extra) < 3 or extra[0] != fstype:
            continue
        if option is not None and option not in extra[2].split(","):
            continue
        yield _unescape(fields[3]), _unescape(fields[4])


def _cgroup_directory(mountpoint: str, mount_root: str, cgroup_path: str) -> Path | None:
    relative = cgroup_path
    if mount_root != "/" and (cgroup_path == mount_root or cgroup_path.startswith(mount_root + "/")):
        relative = cgroup_path[len(mount_root):]
    directory = Path(mountpoint) / relative.lstrip("/")
    return directory if directory.is_dir() else None


def _unescape(field: str) -> str:
    """mountinfo escapes space, tab, newline and backslash as \\ooo."""
    return re.sub(r"\\([0-7]{3})", lambda match: chr(int(match.group(1), 8)), field)


if __name__ == "__main__":
    sys.exit(main())
