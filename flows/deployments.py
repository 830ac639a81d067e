"""`prefect.yaml` derived from the stage table: `python -m flows.deployments > prefect.yaml` (`make
platform-files`). A test compares the committed file with `deployments()`.

Deployments: `dmax/full-pipeline` (the plan of `dmax_core.stages`), `dmax/scheduled-retrain` (the same on a
weekly cron, shipped inactive), `dmax-distill/sharded` (distillation fanned out over workers) and
`dmax-stage/<stage>` for every row of the stage table. This module
does not import Prefect; it only writes the file `prefect deploy --all` reads.
"""

from __future__ import annotations

import sys
from typing import Any

import yaml

from dmax_core.stages.table import STAGES

PREFECT_VERSION = "3.8.8"
WORK_POOL = {"name": "dmax-process", "work_queue_name": "default", "job_variables": {}}
DEFAULT_PARAMETERS = {"preset": "tiny", "overrides": []}
RETRAIN_CRON = "0 3 * * 1"

HEADER = """\
# Prefect deployments of the dmax flows (flows/pipeline.py), generated from the stage table by
# `make platform-files` (= python -m flows.deployments > prefect.yaml); a test compares this file with it.
#   make servers                                  # Prefect + MLflow servers, a worker, and `prefect deploy --all`
#   prefect deployment run dmax/full-pipeline     # the tiny pipeline; add --param preset=smoke for a quick one
#   prefect deployment run dmax/full-pipeline --param preset=tiny --param 'overrides=["train.lr=1e-4"]'
#   prefect deployment run dmax-stage/evaluate    # one stage alone
#   prefect deployment run dmax-distill/sharded --param shards=8   # distillation over 8 workers
# `dmax/scheduled-retrain` retrains weekly and ships INACTIVE, so nothing runs by surprise:
#   prefect deployment schedule ls dmax/scheduled-retrain
#   prefect deployment schedule resume dmax/scheduled-retrain <SCHEDULE_ID>
# No build/push/pull steps on purpose: `prefect deploy` records the directory it runs in as the working
# directory of the flow runs, so the process worker runs the checked-out code in place.
"""


def deployments() -> dict[str, Any]:
    """The prefect.yaml mapping."""
    pipeline = {"entrypoint": "flows/pipeline.py:full_pipeline", "parameters": DEFAULT_PARAMETERS,
                "work_pool": WORK_POOL}
    items: list[dict[str, Any]] = [
        {"name": "full-pipeline", **pipeline, "tags": ["dmax", "pipeline"],
         "description": "the stages of the plan in order (pretrain only for a preset that trains its own base), "
                        "tracked in MLflow"},
        {"name": "scheduled-retrain", **pipeline, "tags": ["dmax", "retrain", "scheduled"],
         "description": "scheduled retraining (cron, inactive until resumed); promotes `champion` only if it "
                        "beats it",
         "schedules": [{"cron": RETRAIN_CRON, "timezone": "UTC", "active": False}]},
    ]
    items.append({"name": "sharded", "entrypoint": "flows/pipeline.py:distill_sharded",
                  "parameters": {**DEFAULT_PARAMETERS, "shards": 2}, "work_pool": WORK_POOL,
                  "tags": ["dmax", "distill"],
                  "description": "distillation fanned out: one dmax-stage/distill flow run per missing shard "
                                 "(any worker takes it), then the merge into one trajectory dataset"})
    items += [{"name": stage.name, "entrypoint": "flows/pipeline.py:stage_flow", "description": stage.help,
               "tags": ["dmax", "stage"], "parameters": {"stage": stage.name, **DEFAULT_PARAMETERS},
               "work_pool": WORK_POOL} for stage in STAGES]
    return {"name": "dmax", "prefect-version": PREFECT_VERSION, "deployments": items}


def render() -> str:
    class NoAliases(yaml.SafeDumper):
        def ignore_aliases(self, data: Any) -> bool:  # the shared dicts are written out in full
            return True

    return HEADER + yaml.dump(deployments(), Dumper=NoAliases, sort_keys=False, width=120)


if __name__ == "__main__":
    sys.stdout.write(render())
