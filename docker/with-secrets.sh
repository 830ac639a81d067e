#!/bin/sh
# Entry point of the platform containers: turns the compose secrets (/run/secrets, files made by
# `python -m flows.servers secrets`) into what each server reads, then runs the command. Values go into
# this process's environment or a 0600 file, never onto a command line or into a log.
#   PGPASSWORD                      libpq / asyncpg read it: the database URLs carry no password
#   PREFECT_API_AUTH_STRING         Prefect's clients; with DMAX_PREFECT_SERVER=1 also the server's
#                                   PREFECT_SERVER_API_AUTH_STRING
#   MLFLOW_TRACKING_USERNAME/PASSWORD   the worker's MLflow user, dmax-worker (role trainer)
#   MLFLOW_AUTH_CONFIG_PATH         MLflow's basic-auth ini with the admin password (mlflow server only)
set -eu
s="${DMAX_SECRETS_DIR:-/run/secrets}"  # compose mounts them here
read_secret() { tr -d '\n' < "$s/$1"; }
if [ -f "$s/postgres-password" ]; then PGPASSWORD="$(read_secret postgres-password)"; export PGPASSWORD; fi
if [ -f "$s/prefect-auth-string" ]; then
  PREFECT_API_AUTH_STRING="$(read_secret prefect-auth-string)"; export PREFECT_API_AUTH_STRING
  if [ "${DMAX_PREFECT_SERVER:-}" = 1 ]; then export PREFECT_SERVER_API_AUTH_STRING="$PREFECT_API_AUTH_STRING"; fi
fi
if [ -f "$s/mlflow-worker-password" ]; then
  MLFLOW_TRACKING_PASSWORD="$(read_secret mlflow-worker-password)"; export MLFLOW_TRACKING_PASSWORD
  export MLFLOW_TRACKING_USERNAME=dmax-worker
fi
if [ -f "$s/mlflow-admin-password" ] && [ "${DMAX_MLFLOW_SERVER:-}" = 1 ]; then
  umask 077
  ini=/tmp/mlflow-basic-auth.ini
  # % doubled: MLflow reads the file with ConfigParser interpolation (flows/mlflow_auth.py writes the same keys)
  printf '[mlflow]\ndefault_permission = READ\ndatabase_uri = %s\nadmin_username = admin\nadmin_password = %s\nauth_cache_ttl_seconds = 60\n' \
    "$MLFLOW_AUTH_DATABASE_URI" "$(read_secret mlflow-admin-password | sed 's/%/%%/g')" > "$ini"
  MLFLOW_FLASK_SERVER_SECRET_KEY="$(read_secret mlflow-flask-secret-key)"
  export MLFLOW_AUTH_CONFIG_PATH="$ini" MLFLOW_FLASK_SERVER_SECRET_KEY
fi
exec "$@"
