# Platform image: the Prefect server and the MLflow server (the compose file runs one of each from it),
# with their state in PostgreSQL. CPU only. Build from the repository root:
#   docker build -f docker/platform.Dockerfile -t dmax-platform .
ARG BASE_IMAGE=python:3.11-slim
FROM ${BASE_IMAGE}
ENV PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1
RUN apt-get update && apt-get install -y --no-install-recommends curl && rm -rf /var/lib/apt/lists/*
WORKDIR /opt/dmax
COPY requirements ./requirements
# The servers need no torch: install the pinned platform packages only.
RUN grep -E '^(prefect|fastapi|mlflow|psycopg2-binary|flask-wtf)' requirements/lock.txt > /tmp/platform.txt \
 && pip install -r /tmp/platform.txt
RUN useradd --create-home --uid 1000 dmax && mkdir -p /artifacts && chown dmax /artifacts
USER dmax
