"""The time limit of the answer checkers: a call that never returns is cut off at its limit on any thread,
the worker that ran it is replaced, and real MATH answers are still scored right off the main thread.

The functions the workers run are defined here at module level: a worker imports this module by name.
"""

from __future__ import annotations

import contextlib
import math
import multiprocessing
import os
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from dmax_core.tasks.answers import MathScore, score_math
from dmax_core.tasks.answers.timeout import WorkerPool, WorkerStartError

LIMIT_S = 0.5


def spin() -> str:
    """Never returns, and swallows every exception on the way (as careless library code does)."""
    while True:
        with contextlib.suppress(Exception):
            time.sleep(0.01)


def worker_pid() -> int:
    return os.getpid()


def spin_after_writing_pid(path: str) -> None:
    Path(path).write_text(str(os.getpid()))
    spin()


def fail() -> None:
    raise ValueError("not this one")


def fail_to_warm_up() -> None:
    raise RuntimeError("no sympy here")


def gone(pid: int, within_s: float = 5.0) -> bool:
    """Whether process `pid` has exited and been reaped (a zombie still answers signal 0)."""
    deadline = time.monotonic() + within_s
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return True
        time.sleep(0.05)
    return False


@pytest.fixture
def pool():
    workers = WorkerPool(max_workers=2)
    yield workers
    workers.close()


def timed_spin(workers: WorkerPool) -> tuple[str, float]:
    started = time.monotonic()
    result = workers.call("timed out", LIMIT_S, spin)
    return result, time.monotonic() - started


def assert_cut_off_at_the_limit(result: str, elapsed: float) -> None:
    assert result == "timed out"
    assert LIMIT_S <= elapsed < LIMIT_S + 2.0


def test_a_call_returns_its_value_and_the_worker_is_reused(pool):
    assert pool.call(None, 5.0, math.comb, 10, 3) == 10 * 9 * 8 // 6
    first = pool.call(None, 5.0, worker_pid)
    assert first != os.getpid()
    assert pool.call(None, 5.0, worker_pid) == first
    assert pool.workers() == 1


def test_an_exception_in_the_worker_returns_the_fallback(pool):
    assert pool.call("failed", 5.0, fail) == "failed"
    assert pool.call(None, 5.0, math.comb, 5, 2) == 10


def test_endless_call_is_cut_off_on_the_main_thread_and_its_worker_replaced(pool):
    assert threading.current_thread() is threading.main_thread()
    before = pool.call(None, 5.0, worker_pid)
    assert_cut_off_at_the_limit(*timed_spin(pool))
    assert gone(before)  # killed and reaped
    after = pool.call(None, 5.0, worker_pid)
    assert after not in (None, before)
    assert pool.workers() == 1


def test_endless_call_is_cut_off_in_a_thread(pool):
    outcome: list[tuple[str, float]] = []
    thread = threading.Thread(target=lambda: outcome.append(timed_spin(pool)))
    thread.start()
    thread.join(timeout=60)
    assert len(outcome) == 1
    assert_cut_off_at_the_limit(*outcome[0])
    assert pool.call(None, 5.0, math.comb, 6, 3) == 20


def test_endless_call_is_cut_off_in_a_thread_pool_worker(pool):
    with ThreadPoolExecutor(max_workers=2) as executor:
        cut = executor.submit(timed_spin, pool)
        normal = executor.submit(pool.call, None, 5.0, math.comb, 7, 2)
        assert_cut_off_at_the_limit(*cut.result(timeout=60))
        assert normal.result(timeout=60) == 21
        assert executor.submit(pool.call, None, 5.0, math.comb, 8, 4).result(timeout=60) == 70


def test_a_worker_that_cannot_warm_up_is_a_one_line_error():
    workers = WorkerPool(fail_to_warm_up)
    with pytest.raises(WorkerStartError, match="no sympy here") as raised:
        workers.call(None, 5.0, worker_pid)
    assert "\n" not in str(raised.value)
    assert workers.workers() == 0


def test_a_busy_worker_does_not_outlive_the_interpreter(tmp_path):
    pid_file = tmp_path / "worker.pid"
    code = (
        "import sys, threading, time\n"
        "from dmax_core.tasks.answers.timeout import WorkerPool\n"
        f"from {spin_after_writing_pid.__module__} import spin_after_writing_pid\n"
        "pool = WorkerPool()\n"
        f"threading.Thread(target=pool.call, args=(None, 60.0, spin_after_writing_pid, {str(pid_file)!r}),"
        " daemon=True).start()\n"
        f"while not __import__('os').path.exists({str(pid_file)!r}): time.sleep(0.05)\n"
    )
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(path for path in sys.path if path)}
    subprocess.run([sys.executable, "-c", code], env=env, check=True, timeout=120)
    assert gone(int(pid_file.read_text()))


# ----------------------------------------------------------------------------- real answer comparisons
HALF = ("Hence $\\boxed{0.5}$.", "\\frac{1}{2}")


def test_equivalent_fractions_score_right_off_the_main_thread():
    # 0.5 vs \frac{1}{2}: not equal as strings or after normalisation, so only sympy / math-verify, which
    # run in the workers, can make them equal; 0.4 must stay wrong.
    with ThreadPoolExecutor(max_workers=2) as executor:
        right = executor.submit(score_math, *HALF)
        wrong = executor.submit(score_math, "Hence $\\boxed{0.4}$.", "\\frac{1}{2}")
        assert right.result(timeout=120) == MathScore(True, True, "0.5")
        assert wrong.result(timeout=120) == MathScore(False, False, "0.4")


def score_half() -> MathScore:
    return score_math(*HALF)


def test_scoring_works_inside_a_daemonic_forked_process():
    # A multiprocessing.Pool process may not start multiprocessing children, and a forked child inherits
    # the parent's workers' pipes; both must still give the right score.
    score_math(*HALF)  # this process holds a worker when it forks
    with multiprocessing.get_context("fork").Pool(1) as processes:
        assert processes.apply(score_half) == MathScore(True, True, "0.5")


def test_the_scoring_process_never_imports_sympy():
    code = (
        "import sys\n"
        "from dmax_core.tasks.answers import score_math\n"
        "assert score_math('$\\\\boxed{0.5}$', '\\\\frac{1}{2}').strict\n"
        "print(sorted(m for m in ('sympy', 'math_verify') if m in sys.modules))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=120)
    assert out.stdout.strip() == "[]"
