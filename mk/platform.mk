# Platform targets (included from the Makefile). Everything binds to 127.0.0.1; state stays in the
# project (.prefect/, mlruns.db, mlartifacts/, .dvc/cache). Ports: make servers PREFECT_PORT=4300 MLFLOW_PORT=5001
#   make servers        Prefect server + MLflow server + `prefect deploy --all` + a process worker (background)
#   make stop-servers   stop all of them (by process group)
#   make prefect-server / mlflow-ui / worker   one of them in the foreground (Ctrl-C stops it)
#   make deploy         (re)apply prefect.yaml to a running Prefect server
#   make dvc-repro      `dvc repro` with the project's interpreter first on PATH
#   make platform-files regenerate dvc.yaml and prefect.yaml (from the stage table) and params.yaml
PREFECT_PORT ?= 4200
MLFLOW_PORT ?= 5000
SERVERS = $(BIN)/python -m flows.servers --prefect-port $(PREFECT_PORT) --mlflow-port $(MLFLOW_PORT)

.PHONY: servers stop-servers servers-status prefect-server mlflow-ui worker deploy dvc-repro platform-files \
	servers-postgres stop-servers-postgres platform-user \
	test-integration

servers: install
	$(SERVERS) start

stop-servers:
	@if [ -x $(BIN)/python ]; then $(SERVERS) stop; fi

servers-status:
	$(SERVERS) status

prefect-server: install
	$(SERVERS) prefect

mlflow-ui: install
	$(SERVERS) mlflow

worker: install
	$(SERVERS) worker

deploy: install
	$(SERVERS) deploy

dvc-repro: install
	PATH="$(CURDIR)/$(BIN):$$PATH" $(BIN)/dvc repro

DVC_PARAMS_HEADER = \
	'\# DVC parameters: the fully resolved `tiny` preset, grouped by stage (dvc.yaml says which stage reads' \
	'\# which group). Regenerate after changing params/tiny.yaml with `make platform-files`' \
	'\# (= dmax config --preset tiny run_dir=runs/dvc). Sweep with e.g. `dvc exp run -S train.lr=1e-4`.'
# dvc.yaml and prefect.yaml from the stage table, params.yaml = the resolved tiny preset (DVC tracks it by
# group); rerun after editing params/tiny.yaml or the stage table. A test fails while any is out of date.
platform-files: install
	$(BIN)/python -m dmax_core.stages.dvc > dvc.yaml.new
	$(BIN)/python -m flows.deployments > prefect.yaml.new
	{ printf '%s\n' $(DVC_PARAMS_HEADER); $(BIN)/dmax config --preset tiny run_dir=runs/dvc; } > params.yaml.new
	mv dvc.yaml.new dvc.yaml
	mv prefect.yaml.new prefect.yaml
	mv params.yaml.new params.yaml

test-integration: install
	$(BIN)/python -m pytest -q -m integration

# The team platform: both servers keep their state in PostgreSQL (a local server in .postgres/ on 127.0.0.1,
# port POSTGRES_PORT, started here; or an existing one: DMAX_DATABASE_URL=postgresql://USER:PW@HOST:PORT make servers).
# Authentication is on there (Prefect auth string, MLflow basic-auth, PostgreSQL passwords; secrets in .secrets/).
POSTGRES_PORT ?= 5433
servers-postgres: install
	$(SERVERS) start --postgres --postgres-port $(POSTGRES_PORT)

stop-servers-postgres:
	@if [ -x $(BIN)/python ]; then $(SERVERS) stop --postgres --postgres-port $(POSTGRES_PORT); fi

# An MLflow user of the team platform (auth on): make platform-user NAME=alice ROLE=reader|trainer
ROLE ?= reader
platform-user: install
	@test -n "$(NAME)" || { echo "usage: make platform-user NAME=alice ROLE=reader|trainer"; exit 2; }
	$(SERVERS) add-user $(NAME) --role $(ROLE) --postgres --postgres-port $(POSTGRES_PORT)
