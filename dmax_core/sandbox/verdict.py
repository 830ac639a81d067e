"""How a finished run is classified: the init's report, the deadline, the end-of-tests marker and stderr
-> a `Verdict` (the rules are in the package docstring)."""

from __future__ import annotations

import math
import os
import re
import signal
from dataclasses import dataclass
from typing import Any

from dmax_core.sandbox.limits import Limits, Verdict

MEMORY_RE = re.compile(r"\bMemoryError\b|Cannot allocate memory|out of memory|bad_alloc", re.IGNORECASE)


DETAIL_CHARS = 240


EARLY_EXIT = "the program exited before its tests finished (exit status 0, no end-of-tests marker)"


@dataclass
class Outcome:
    timed_out: bool
    seconds: float
    stdout: bytes
    stderr: bytes
    reports: list[dict[str, Any]]
    leader_returncode: int | None  # of unshare, or of the init without namespaces
    reached_end: bool = False  # the end-of-tests marker arrived with this run's nonce


def classify(outcome: Outcome, limits: Limits) -> Verdict:
    """Map the init's report, the deadline and stderr to a Verdict (the mapping is in the package docstring)."""
    seconds = round(outcome.seconds, 3)
    tail = last_line(outcome.stderr)
    if outcome.timed_out:
        return Verdict("timeout", None, seconds, f"wall time limit of {limits.wall_seconds:g} s exceeded")
    errors = [item["error"] for item in outcome.reports if "error" in item]
    statuses = [item for item in outcome.reports if "status" in item]
    if errors:
        return Verdict("error", None, seconds, one_line(str(errors[0])))
    if not statuses:
        leader = outcome.leader_returncode
        if leader is not None and leader < 0:  # the init was killed: only the program can have done that
            return Verdict("failed", None, seconds, f"the sandbox init was killed by {signal_name(-leader)}")
        why = tail or f"exit code {leader}"
        return Verdict("error", None, seconds, one_line(f"sandbox ended without a report: {why}"))
    code = os.waitstatus_to_exitcode(int(statuses[-1]["status"]))
    cpu = float(statuses[-1].get("cpu", 0.0))
    if code == 0:
        if not outcome.reached_end:
            return Verdict("failed", 0, seconds, EARLY_EXIT)
        return Verdict("passed", 0, seconds, "exit code 0")
    if code < 0:
        number = -code
        cpu_limit = max(1, math.ceil(limits.cpu_seconds))
        if number in (signal.SIGXCPU, signal.SIGKILL) and cpu >= cpu_limit - 0.1:
            return Verdict("timeout", code, seconds, f"CPU time limit of {cpu_limit} s exceeded")
        if MEMORY_RE.search(tail):
            return Verdict("memory", code, seconds, one_line(tail))
        suffix = f": {tail}" if tail else ""
        return Verdict("failed", code, seconds, one_line(f"killed by {signal_name(number)}{suffix}"))
    if MEMORY_RE.search(tail):
        return Verdict("memory", code, seconds, one_line(tail))
    return Verdict("failed", code, seconds, one_line(tail or f"exit code {code}"))


def signal_name(number: int) -> str:
    try:
        return signal.Signals(number).name
    except ValueError:
        return f"signal {number}"


def last_line(data: bytes) -> str:
    for line in reversed(data.decode("utf-8", "replace").splitlines()):
        if line.strip():
            return line.strip()
    return ""


def one_line(text: str) -> str:
    text = " ".join(text.split())
    return text if len(text) <= DETAIL_CHARS else text[: DETAIL_CHARS - 3] + "..."
