"""dmax: an experiment platform for DMax diffusion language models (OPUT training, SPD decoding)."""

from dmax_core.env import configure_environment as _configure_environment

_configure_environment()  # telemetry off, offline, project-local state: before prefect/mlflow/HF imports

__version__ = "0.1.0"
