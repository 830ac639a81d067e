"""Per-program limits and the verdict a run ends with: the types every other sandbox module and its callers share."""

from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import dataclass

STATUSES = ("passed", "failed", "timeout", "memory", "error")


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
