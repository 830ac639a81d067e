-- The other databases of the platform (the first, prefect, is POSTGRES_DB): MLflow's tracking store and the
-- user store of MLflow's basic-auth app (users, roles, permissions). The role `dmax` authenticates with the
-- password from the postgres-password secret (scram-sha-256 for every connection, compose.yaml).
CREATE DATABASE mlflow;
CREATE DATABASE mlflow_auth;
