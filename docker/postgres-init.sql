-- The second database of the platform (the first, prefect, is POSTGRES_DB): MLflow's tracking store.
CREATE DATABASE mlflow;
