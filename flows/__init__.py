"""Prefect flows that wrap the dmax stages (see flows/pipeline.py and prefect.yaml)."""
