"""`lm_eval` with the dmax model registered: `python -m dmax_core.integrations.lm_eval_cli ARGS...`.

lm-eval 0.4.13 knows only the models registered by an import before its CLI parses `--model` (it reads no
entry points and has no include path for models; `dmax_core.integrations.lm_eval` says more), so this
command imports the dmax model and then hands every argument, unchanged, to lm-eval's own entry point
(`lm_eval.__main__.cli_evaluate`, what the `lm_eval` script runs):

    python -m dmax_core.integrations.lm_eval_cli --model dmax \\
        --model_args pretrained=CHECKPOINT_DIR,decoder=spd,threshold=0.5 --tasks TASK [lm_eval options]

The one difference: a user error of the dmax model (a bad model arg, a missing checkpoint, a
log-likelihood task) prints one line and exits with status 2, as `dmax` does, instead of a traceback.

Importing `dmax_core` sets dmax's offline defaults (`HF_HUB_OFFLINE=1`, `HF_DATASETS_OFFLINE=1`, only where
unset): for tasks whose datasets lm-eval must download, export `HF_HUB_OFFLINE=0 HF_DATASETS_OFFLINE=0`.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence

from dmax_core.errors import DmaxError


def main(argv: Sequence[str] | None = None) -> None:
    """Run lm-eval's CLI on `argv` (default: this process's arguments) with `--model dmax` available."""
    if argv is not None:
        sys.argv = [sys.argv[0], *argv]  # lm-eval's CLI reads sys.argv itself
    from lm_eval.__main__ import cli_evaluate

    import dmax_core.integrations.lm_eval  # noqa: F401  (registers the "dmax" model)

    try:
        cli_evaluate()
    except DmaxError as exc:
        print(f"dmax lm-eval: error: {exc}", file=sys.stderr)
        sys.exit(2)


if __name__ == "__main__":
    main()
