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
`run_programs` runs many in parallel, keeping their order; `ProgramRunner` runs them as they are submitted
(a `Future` per program); `main` is the `dmax sandbox FILE` command.

How one program runs
--------------------
    unshare --net --pid --fork --kill-child --mount-proc --ipc --uts   (when namespaces can be created)
      └─ init: python -I -S -c INIT   joins the pids cgroup, forks, reaps, reports the program's status
           └─ python -I -B program.py  with RLIMIT_CPU, RLIMIT_AS, RLIMIT_FSIZE, RLIMIT_CORE=0 (+ RLIMIT_NPROC)

* The outermost process starts its own session (`start_new_session`), so the whole tree is one process
  group; that group is SIGKILLed at the end of every run, passed or not, and at the wall-time deadline.
* The program is not PID 1 of its namespace: a small init (`INIT`) is. PID 1 ignores signals it has no
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

Modules, one job each: `limits` (Limits, Verdict), `launch` (one run: working directory, end-of-tests
marker, init, environment), `supervise` (output, end of the tree, reports), `verdict` (classification),
`cleanup` (killing and removing what a run left), `probe` (what the machine allows), `runner`
(`run_program`, `run_programs`, `ProgramRunner`), `cli` (`dmax sandbox FILE`).
"""

from dmax_core.sandbox.cleanup import MARKER_ENV, marked_processes
from dmax_core.sandbox.cli import main
from dmax_core.sandbox.launch import PROGRAM_NAME
from dmax_core.sandbox.limits import DEFAULT_LIMITS, STATUSES, Limits, Verdict
from dmax_core.sandbox.probe import isolation
from dmax_core.sandbox.runner import ProgramRunner, run_program, run_programs
from dmax_core.sandbox.supervise import OUTPUT_CAP

__all__ = ["DEFAULT_LIMITS", "MARKER_ENV", "OUTPUT_CAP", "PROGRAM_NAME", "STATUSES", "Limits", "ProgramRunner",
           "Verdict", "isolation", "main", "marked_processes", "run_program", "run_programs"]
