# syntax=docker/dockerfile:1
# GPU trainer image: CUDA (devel: DeepSpeed JIT-compiles its fused ops with nvcc) + DeepSpeed +
# the sidreasoner package. Runs alignment SFT, cold-start SFT and GRPO through accelerate/ZeRO.
#   docker build -f docker/trainer.Dockerfile -t "$(python -m pipelines.images --ref sidreasoner-trainer)" .
#   (the tag is a digest of this file and what it copies: components/image_tags.json)
FROM nvidia/cuda:12.8.1-cudnn-devel-ubuntu24.04@sha256:24c8e3581ea6330038b0d374920721983312627f8adbfcf390bdb4b399d280ed

# torch's CUDA build must match the toolkit above (12.8) for DeepSpeed's op builder.
ARG TORCH_VERSION=2.13.0
ARG TORCH_INDEX=https://download.pytorch.org/whl/cu128
ARG DEEPSPEED_VERSION=0.19.8

ENV DEBIAN_FRONTEND=noninteractive \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    MALLOC_MMAP_THRESHOLD_=33554432 \
    MALLOC_TRIM_THRESHOLD_=1073741824 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    VIRTUAL_ENV=/opt/venv \
    PATH=/opt/venv/bin:$PATH \
    HF_HOME=/home/sid/.cache/huggingface \
    TORCH_CUDA_ARCH_LIST="8.0;8.6;8.9;9.0"

# Python 3.12 from the pinned Ubuntu 24.04 base; apt versions follow that snapshot's archive.
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends python3 python3-venv python3-dev build-essential ninja-build \
    && rm -rf /var/lib/apt/lists/* \
    && python3 -m venv "${VIRTUAL_ENV}"

# The base ships an `ubuntu` user with uid 1000; run as a dedicated user with the next uid.
RUN groupadd --gid 1001 sid \
    && useradd --uid 1001 --gid sid --create-home --shell /bin/bash sid

WORKDIR /opt/sidreasoner
COPY docker/constraints-trainer.txt docker/constraints-trainer.txt
COPY pyproject.toml README.md ./
RUN pip install --no-cache-dir --index-url "${TORCH_INDEX}" "torch==${TORCH_VERSION}" \
    && python -c "import tomllib; print('\n'.join(tomllib.load(open('pyproject.toml', 'rb'))['project']['dependencies']))" > /tmp/requirements.txt \
    && pip install --no-cache-dir -c docker/constraints-trainer.txt -r /tmp/requirements.txt \
    && pip install --no-cache-dir -c docker/constraints-trainer.txt "deepspeed==${DEEPSPEED_VERSION}"

COPY sidreasoner_core sidreasoner_core
COPY components components
COPY pipelines pipelines
RUN pip install --no-cache-dir --no-deps . \
    && pip check \
    && python -c "import deepspeed, sidreasoner_core.cli, components.data, kfp.dsl.executor_main"

USER 1001:1001
WORKDIR /home/sid
CMD ["sidreasoner", "--help"]
