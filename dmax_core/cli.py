"""`dmax` command line, derived from the stage table: one subcommand per stage, plus `pipeline`,
`config` and `benchmark`, and the tools with their own parsers: `sandbox` (run one program file in the code
sandbox), `lm-eval`, `export` (a hub-ready folder from a checkpoint or a registered model version).

    dmax pipeline --preset tiny
    dmax train --preset smoke train.lr=3e-4 seed=1 --track
    dmax sandbox solution.py --timeout 5
    dmax export runs/tiny/dmax hub/dmax-tiny --max-shard-size 2GB
    dmax lm-eval --model dmax --model_args pretrained=DIR,decoder=spd,threshold=0.5 --tasks gsm8k

User errors (bad config keys, missing or corrupt files) print one line and exit with status 2;
nothing half-written is left behind because every stage writes atomically.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from dmax_core.errors import DmaxError

COMMANDS = {
    "pipeline": "all stages in order (pretrain only when the preset trains its own base model)",
    "config": "print the resolved configuration (YAML) and exit",
    "benchmark": "the DMax reproduction benchmark: per seed pretrain..OPUT + control, ablation grid, summary",
}
# Commands with their own argument parsers (listed in `dmax --help`, dispatched before it parses).
TOOLS = {
    "sandbox": "run one Python file in the code sandbox and print its verdict as one JSON line",
    "lm-eval": "lm-evaluation-harness with dmax's decoders as `--model dmax`",
    "export": "a hub-ready folder (sharded safetensors, model card) from a checkpoint or registered version",
}


def _parser() -> argparse.ArgumentParser:
    from dmax_core.stages.table import STAGES

    parser = argparse.ArgumentParser(prog="dmax", description="DMax experiment platform (OPUT + SPD).")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    commands = {**{stage.name: stage.help for stage in STAGES}, **COMMANDS}
    for name, text in commands.items():
        p = sub.add_parser(name, help=text, description=text)
        p.add_argument("--preset", default="tiny", help="preset name in params/ or a YAML path (default: tiny)")
        p.add_argument("overrides", nargs="*", metavar="key=value", help="config overrides, e.g. train.lr=3e-4")
        if name == "benchmark":
            p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2], help="seeds (default: 0 1 2)")
            p.add_argument("--reuse", action="store_true", help="reuse per-seed metrics already on disk")
            p.add_argument("--out", default=None, help="root directory (default: runs/benchmark-PRESET)")
        elif name != "config":
            p.add_argument("--track", action="store_true",
                           help="record the run in MLflow (MLFLOW_TRACKING_URI or the project's sqlite store)")
    for name, text in TOOLS.items():
        sub.add_parser(name, help=text, add_help=False)
    return parser


def _print_report(cfg) -> None:
    from dmax_core.stages.layout import REPORT_MARKDOWN, TRADEOFF_PLOT, RunLayout

    layout = RunLayout.of(cfg)
    path = layout.path(REPORT_MARKDOWN)
    if path.is_file():
        print(path.read_text())
        print(f"report: {path}\nplot:   {layout.path(TRADEOFF_PLOT)}")


def run(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["sandbox"]:  # its own small parser: a program file, limits, a JSON verdict
        from dmax_core.sandbox import main as sandbox_main

        return sandbox_main(argv[1:])
    if argv[:1] == ["export"]:  # its own parser: SOURCE OUT, shard size, where the run's records are
        from dmax_core.export import main as export_main

        return export_main(argv[1:])
    if argv[:1] == ["lm-eval"]:  # lm-evaluation-harness's own CLI with `--model dmax` registered
        from dmax_core.integrations.lm_eval_cli import main as lm_eval_main

        lm_eval_main(argv[1:])
        return 0
    args = _parser().parse_args(argv)
    from dmax_core.config import load_config

    if args.command == "benchmark":
        from dmax_core.benchmark import run_benchmark

        out = run_benchmark(args.preset, args.seeds, args.overrides, args.out, reuse=args.reuse)
        print((out / "summary.md").read_text())
        print(f"summary: {out}")
        return 0

    cfg = load_config(args.preset, args.overrides)
    if args.command == "config":
        print(cfg.to_yaml(), end="")
        return 0
    from dmax_core.stages.common import is_main_process
    from dmax_core.stages.runner import run_pipeline, run_stage

    tracker = None
    if args.track and is_main_process():  # one MLflow record per distributed launch
        from dmax_core.tracking import Tracker

        tracker = Tracker()
    if args.command == "pipeline":
        results = run_pipeline(cfg, tracker=tracker)
    else:
        results = {args.command: run_stage(args.command, cfg, tracker=tracker)}
    for result in results.values():
        print(result.describe())
    if args.command in {"pipeline", "report"}:
        _print_report(cfg)
    return 0


def main(argv: Sequence[str] | None = None) -> None:
    try:
        code = run(argv)
    except DmaxError as exc:
        print(f"dmax: error: {exc}", file=sys.stderr)
        code = 2
    except KeyboardInterrupt:
        print("dmax: interrupted", file=sys.stderr)
        code = 130
    sys.exit(code)


if __name__ == "__main__":
    main()
