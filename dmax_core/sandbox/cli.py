"""`dmax sandbox FILE`: run one program file and print its verdict as one JSON line."""

from __future__ import annotations

import argparse
import dataclasses
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from dmax_core.sandbox.limits import DEFAULT_LIMITS
from dmax_core.sandbox.runner import run_program


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
