"""Shared fixtures: a tokenizer, problems and a smoke config, built in-process with fixed seeds and no
downloads. Tiny models come from `builders.py`, the one model builder of the tests."""

from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
# Triton kernels run in Triton's interpreter on CPU tensors when there is no GPU; the variable is read when
# a kernel is defined, so it is set before any dmax module (which may define one) is imported.
import torch

if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")

import pytest

from dmax_core.config import load_config
from dmax_core.tasks.running_total import generate_problems, vocabulary
from dmax_core.tokenizer import build_tokenizer

# One thread: the test models are tiny, and two OpenMP threads per process thrash badly whenever
# another process (a server, a DVC stage) wants a core too.
torch.set_num_threads(1)


@pytest.fixture(scope="session")
def tokenizer():
    return build_tokenizer(vocabulary())


@pytest.fixture()
def smoke_config(tmp_path):
    return load_config("smoke", [f"run_dir={tmp_path / 'run'}"])


@pytest.fixture(scope="session")
def problems():
    return generate_problems(16, seed=3)
