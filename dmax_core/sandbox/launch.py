"""One run of one program: its working directory, the end-of-tests marker appended to it, the init that
starts it under its limits, its minimal environment, and the outcome handed to `verdict.classify`."""

from __future__ import annotations

import json
import os
import secrets
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from dmax_core.sandbox.cleanup import (
    MARKER_ENV,
    create_cgroup,
    kill_everything,
    kill_group,
    remove_cgroup,
    remove_tree,
    tasks_of_uid,
)
from dmax_core.sandbox.limits import Limits, Verdict
from dmax_core.sandbox.probe import SYSTEM_PATH, MachineConfig
from dmax_core.sandbox.supervise import read_all, read_reports, supervise
from dmax_core.sandbox.verdict import Outcome, classify, one_line

PROGRAM_NAME = "program.py"


# Appended to every program as its last top-level statement (the package docstring); filled per run.
END_MARKER = "\n\n# dmax sandbox: the program ran to its end\n__import__('os').write({fd}, b'{nonce}')\n"


# The init between unshare and the program (run as `python -I -S -c INIT FD SPEC ARGV...`). It joins the
# run's pids cgroup, forks the program with the limits set in the child, reaps every child it inherits
# (it is PID 1 of the namespace) and writes JSON lines to FD: {"status": wait status, "cpu": seconds} for the
# program, or {"error": why} when it could not start it. FD is close-on-exec for the program.
INIT = r"""
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


def execute(source: str, limits: Limits, config: MachineConfig) -> Verdict:
    token = secrets.token_hex(8)
    workdir = Path(tempfile.mkdtemp(prefix="dmax-sandbox-"))
    cgroup: Path | None = None
    started = time.monotonic()
    end_read, end_write = os.pipe()
    try:
        nonce = secrets.token_hex(16)
        (workdir / PROGRAM_NAME).write_text(source + END_MARKER.format(fd=end_write, nonce=nonce), encoding="utf-8")
        if config.cgroup_parent is not None:
            cgroup = create_cgroup(Path(config.cgroup_parent), token, limits.max_processes + 2)
        outcome = run_supervised(workdir, token, limits, config, cgroup, end_write)
        os.close(end_write)
        end_write = -1
        outcome.reached_end = read_all(end_read) == nonce.encode()
    except (OSError, ValueError, subprocess.SubprocessError) as exc:
        return Verdict("error", None, round(time.monotonic() - started, 3), one_line(f"sandbox: {exc}"))
    finally:
        for fd in (end_read, end_write):
            if fd >= 0:
                os.close(fd)
        kill_everything(token, cgroup)
        if cgroup is not None:
            remove_cgroup(cgroup)
        remove_tree(workdir)
    return classify(outcome, limits)


def run_supervised(workdir: Path, token: str, limits: Limits, config: MachineConfig, cgroup: Path | None,
         end_fd: int) -> Outcome:
    """Launch the program (the end-of-tests pipe `end_fd` inherited by it alone) and supervise it."""
    status_read, status_write = os.pipe()
    try:
        try:
            proc = subprocess.Popen(
                command(workdir, status_write, limits, config, cgroup),
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                cwd=workdir,
                env=environment(workdir, token),
                start_new_session=True,
                close_fds=True,
                pass_fds=(status_write, end_fd),
            )
        finally:
            os.close(status_write)
        try:
            started = time.monotonic()
            timed_out, ended, stdout, stderr = supervise(
                proc, limits.wall_seconds, lambda: kill_everything(token, cgroup, proc.pid)
            )
            seconds = ended - started
        finally:
            kill_group(proc.pid)
            proc.wait()
            for stream in (proc.stdout, proc.stderr):
                if stream is not None:
                    stream.close()
        return Outcome(timed_out, seconds, stdout, stderr, read_reports(status_read), proc.returncode)
    finally:
        os.close(status_read)


def command(workdir: Path, status_fd: int, limits: Limits, config: MachineConfig, cgroup: Path | None) -> list[str]:
    rlimits = limits.rlimits()
    if config.nproc_rlimit:
        # RLIMIT_NPROC counts every task of the real uid: allow what it owns now plus unshare, init, program.
        allowed = tasks_of_uid(os.getuid()) + limits.max_processes + 3
        rlimits.append(("RLIMIT_NPROC", allowed, allowed))
    spec = json.dumps({"cgroup": str(cgroup) if cgroup is not None else None, "rlimits": rlimits})
    program = [sys.executable, "-I", "-B", str(workdir / PROGRAM_NAME)]
    init = [sys.executable, "-I", "-S", "-c", INIT, str(status_fd), spec, *program]
    return [*config.unshare, "--", *init] if config.unshare else init


def environment(workdir: Path, token: str) -> dict[str, str]:
    """A minimal environment: nothing of ours (tokens, credentials, proxies) reaches the program."""
    return {
        "PATH": SYSTEM_PATH,
        "HOME": str(workdir),
        "TMPDIR": str(workdir),
        "LANG": "C.UTF-8",
        "LC_ALL": "C.UTF-8",
        MARKER_ENV: token,
    }
