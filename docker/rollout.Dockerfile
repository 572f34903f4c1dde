# syntax=docker/dockerfile:1
# GPU rollout image: CUDA + vLLM + the sidreasoner package. Serves GRPO rollouts
# (`trl vllm-serve` / vLLM colocated with the trainer) and large batch generation.
#   docker build -f docker/rollout.Dockerfile -t "$(python -m pipelines.images --ref sidreasoner-rollout)" .
#   (the tag is a digest of this file and what it copies: components/image_tags.json)
# Same digest-pinned CUDA devel base as the trainer (shared layers; FlashInfer JIT needs nvcc).
FROM nvidia/cuda:12.8.1-cudnn-devel-ubuntu24.04@sha256:24c8e3581ea6330038b0d374920721983312627f8adbfcf390bdb4b399d280ed

# vLLM pins torch and transformers exactly; its lock is docker/constraints-rollout.txt.
# DeepSpeed: GRPO trains with ZeRO-3 (grpo.cluster.deepspeed) in this image, beside vLLM.
ARG VLLM_VERSION=0.32.0
ARG TORCH_VERSION=2.13.0
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
    VLLM_WORKER_MULTIPROC_METHOD=spawn

# Python 3.12 from the pinned Ubuntu 24.04 base; apt versions follow that snapshot's archive.
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends python3 python3-venv python3-dev build-essential \
    && rm -rf /var/lib/apt/lists/* \
    && python3 -m venv "${VIRTUAL_ENV}"

RUN groupadd --gid 1001 sid \
    && useradd --uid 1001 --gid sid --create-home --shell /bin/bash sid

WORKDIR /opt/sidreasoner
COPY docker/constraints-rollout.txt docker/constraints-rollout.txt
COPY pyproject.toml README.md ./
RUN python -c "import tomllib; print('\n'.join(d for d in tomllib.load(open('pyproject.toml', 'rb'))['project']['dependencies'] if not d.startswith(('torch', 'transformers'))))" > /tmp/requirements.txt \
    && pip install --no-cache-dir -c docker/constraints-rollout.txt \
        "vllm==${VLLM_VERSION}" "torch==${TORCH_VERSION}" -r /tmp/requirements.txt \
    && pip install --no-cache-dir -c docker/constraints-rollout.txt "deepspeed==${DEEPSPEED_VERSION}"

COPY sidreasoner_core sidreasoner_core
COPY components components
COPY pipelines pipelines
RUN pip install --no-cache-dir --no-deps . \
    && pip check \
    && python -c "import vllm, deepspeed, sidreasoner_core.cli, components.data, kfp.dsl.executor_main"

USER 1001:1001
WORKDIR /home/sid
CMD ["sidreasoner", "--help"]
