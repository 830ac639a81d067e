# GPU worker: CUDA PyTorch + dmax + a Prefect process worker that takes the dmax deployments' flow runs
# (one GPU per worker container; the compose file reserves it). Build from the repository root:
#   docker build -f docker/worker.Dockerfile -t dmax-worker .
ARG BASE_IMAGE=nvidia/cuda:12.8.1-cudnn-runtime-ubuntu24.04
FROM ${BASE_IMAGE}
ARG TORCH_INDEX=https://download.pytorch.org/whl/cu128
ENV DEBIAN_FRONTEND=noninteractive PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1
# util-linux: `unshare` for the code sandbox's namespaces; git: DVC.
RUN apt-get update \
 && apt-get install -y --no-install-recommends python3 python3-venv python3-dev git util-linux ca-certificates \
 && rm -rf /var/lib/apt/lists/*
RUN python3 -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH
RUN pip install "torch>=2.5" --index-url ${TORCH_INDEX}
WORKDIR /opt/dmax
COPY pyproject.toml README.md ./
COPY dmax_core ./dmax_core
COPY flows ./flows
COPY params ./params
COPY prefect.yaml prefect.toml ./
RUN pip install -e ".[platform,eval]"
# The sandbox refuses nothing as root, but a worker has no reason to be root.
# Run outputs go to the /runs volume (presets write runs/<preset> relative to the project).
RUN useradd --create-home --uid 1000 dmax && mkdir -p /data /models /runs && chown dmax /data /models /runs \
 && ln -s /runs /opt/dmax/runs
USER dmax
ENV DMAX_PROJECT_DIR=/opt/dmax PREFECT_HOME=/home/dmax/.prefect HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1
ENTRYPOINT ["prefect", "worker", "start", "--pool", "dmax-process", "--type", "process"]
