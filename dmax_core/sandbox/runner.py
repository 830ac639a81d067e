"""Running programs: one (`run_program`), many in order (`run_programs`), or as they come (`ProgramRunner`)."""

from __future__ import annotations

import os
from collections.abc import Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from types import TracebackType

from dmax_core.sandbox.launch import execute
from dmax_core.sandbox.limits import DEFAULT_LIMITS, Limits, Verdict
from dmax_core.sandbox.probe import machine_config


def run_program(source: str, limits: Limits = DEFAULT_LIMITS) -> Verdict:
    """Run one Python program in the sandbox and say how it ended (the package docstring)."""
    return execute(source, limits, machine_config())


class ProgramRunner:
    """A bounded pool of sandboxed programs running at once: `submit` returns a `Future[Verdict]` at once,
    so a caller (a decode loop, a scoring thread) goes on while the program runs.

    Threads suffice: each one only waits on its program's process tree. The machine is probed before the
    first thread starts. Leaving the `with` block waits for every submitted program; leaving it on an
    exception cancels those not yet started (the running ones are waited for, so none is left behind)."""

    def __init__(self, limits: Limits = DEFAULT_LIMITS, workers: int | None = None) -> None:
        count = workers if workers is not None else (os.cpu_count() or 1)
        if count < 1:
            raise ValueError(f"workers must be >= 1, got {workers}")
        self.limits, self.workers = limits, count
        self._config = machine_config()
        self._pool = ThreadPoolExecutor(max_workers=count, thread_name_prefix="dmax-sandbox")

    def submit(self, source: str) -> Future[Verdict]:
        """Start `source` as soon as a slot is free; its verdict arrives in the returned future."""
        return self._pool.submit(execute, source, self.limits, self._config)

    def close(self, cancel_pending: bool = False) -> None:
        """Wait for the running programs (and, unless `cancel_pending`, for the queued ones)."""
        self._pool.shutdown(wait=True, cancel_futures=cancel_pending)

    def __enter__(self) -> ProgramRunner:
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None,
                 trace: TracebackType | None) -> None:
        self.close(cancel_pending=kind is not None)


def run_programs(sources: Sequence[str], limits: Limits = DEFAULT_LIMITS, workers: int | None = None) -> list[Verdict]:
    """`run_program` for each source, `workers` at a time (default: `os.cpu_count()`); verdicts in input order."""
    sources = list(sources)
    if workers is not None and workers < 1:
        raise ValueError(f"workers must be >= 1, got {workers}")
    if not sources:
        return []
    count = min(workers or os.cpu_count() or 1, len(sources))
    with ProgramRunner(limits, count) as runner:
        futures = [runner.submit(source) for source in sources]
    return [future.result() for future in futures]
