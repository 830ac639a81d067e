"""`dmax export`: a hub-ready folder from a dmax checkpoint or a registered MLflow model version.

    dmax export runs/tiny/dmax hub/dmax-tiny --max-shard-size 2GB
    dmax export models:/dmax-oput-tiny@champion hub/dmax-tiny

One job per module: `folder` writes the export (atomically, from a verified checkpoint), `run_records` finds
which run and model a checkpoint is and reads what the run measured, `registry_source` downloads a
registered version and its evaluate run's records, `card` turns records into `generation_config.json` and
the model card, `cli` is the command. It never measures or decodes: every number it writes was recorded.
"""

from dmax_core.export.cli import main
from dmax_core.export.folder import DEFAULT_MAX_SHARD_SIZE, export_checkpoint, parse_size

__all__ = ["DEFAULT_MAX_SHARD_SIZE", "export_checkpoint", "main", "parse_size"]
