# dmax — the two commands of the README:
#   make pipeline   install (pinned, CPU torch) and run the whole tiny pipeline, printing the table
#   make test       install and run the test suite
VENV ?= .venv
PYTHON ?= python3
PRESET ?= tiny
BIN := $(VENV)/bin
STAMP := $(VENV)/.dmax-installed

.PHONY: install pipeline test test-fast lint format asset gpu-check clean

install: $(STAMP)

# torch==2.13.0 is pinned in the same command (and constrained) so pip never resolves a CUDA build.
$(STAMP): requirements/lock.txt requirements/constraints.txt pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --disable-pip-version-check -q -r requirements/lock.txt -c requirements/constraints.txt
	$(BIN)/pip install --disable-pip-version-check -q --no-deps -e .
	touch $@

pipeline: install
	$(BIN)/dmax pipeline --preset $(PRESET)

test: install
	$(BIN)/python -m pytest -q

test-fast: install
	$(BIN)/python -m pytest -q -m "not slow and not integration"

lint: install
	$(BIN)/ruff check .

format: install
	$(BIN)/ruff format dmax_core tests flows

# Regenerates the shipped trained base (models/ledger-base: `tiny` starts from it, tests use it): the ledger
# preset's base (3000 steps, ~12 min on 2 cores), past the accuracy phase change; pretrain.seed=1000 is
# the benchmark's seed 0, the run the committed asset came from.
asset: install
	$(BIN)/python scripts/make_test_asset.py pretrain.seed=1000

# Every GPU path in one command (benchmarks/gpu_check.py says how to run it on a lent GPU machine, which
# has no venv: there it is `PYTHONPATH=. python3 benchmarks/gpu_check.py`). ARGS: extra flags, e.g.
# make gpu-check ARGS="--device cpu --scale tiny --no-compile" for its CPU path.
gpu-check:
	PYTHONPATH=. $(if $(wildcard $(BIN)/python),$(BIN)/python,python3) benchmarks/gpu_check.py $(ARGS)

clean:
	rm -rf runs

-include mk/platform.mk
