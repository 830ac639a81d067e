"""Makes this interpreter look like the lent GPU machine: the packages it lacks cannot be imported.

Put this directory first on PYTHONPATH (tests/test_gpu_check.py does): Python imports `sitecustomize` at
start-up, and from then on importing pydantic, MLflow, Prefect, accelerate, DVC, lm-eval or diffusers
raises ModuleNotFoundError, and `importlib.util.find_spec` reports them absent (transformers probes
optional packages that way, so it takes its no-accelerate paths as it would there).
"""

import importlib.util
import sys

ABSENT = frozenset({"pydantic", "pydantic_core", "mlflow", "prefect", "accelerate", "dvc", "lm_eval",
                    "diffusers", "sqlalchemy", "psycopg", "psycopg2"})


def _absent(name: str) -> bool:
    return name.split(".")[0] in ABSENT


class _Absent:
    """A meta-path finder, first in line, that refuses the absent packages."""

    @staticmethod
    def find_spec(name, path=None, target=None):  # the importlib finder protocol
        if _absent(name):
            raise ModuleNotFoundError(f"No module named {name!r} (not on the lent GPU machine)", name=name)
        return None


_real_find_spec = importlib.util.find_spec


def _find_spec(name, package=None):  # importlib.util.find_spec's signature
    if _absent(name):
        return None
    return _real_find_spec(name, package)


sys.meta_path.insert(0, _Absent())
importlib.util.find_spec = _find_spec
