# syntax=docker/dockerfile:1
# CPU image: the sidreasoner package (library, components, pipelines) with CPU-only torch.
# Runs the data, SID, enrichment (remote teacher), evaluation-report and tracking steps.
#   docker build -f docker/cpu.Dockerfile -t "$(python -m pipelines.images --ref sidreasoner-cpu)" .
#   (the tag is a digest of this file and what it copies: components/image_tags.json)
FROM python:3.11-slim-bookworm@sha256:a36c24f9cbdf4fd0f52d67f0823eeac19c2028c637cecc392d97f980d4fec56b

ARG TORCH_VERSION=2.13.0
ARG TORCH_INDEX=https://download.pytorch.org/whl/cpu

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    MALLOC_MMAP_THRESHOLD_=33554432 \
    MALLOC_TRIM_THRESHOLD_=1073741824 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    HF_HOME=/home/sid/.cache/huggingface

# Non-root runtime user; KFP mounts artifacts and emptyDirs writable for any uid.
RUN groupadd --gid 1000 sid \
    && useradd --uid 1000 --gid sid --create-home --shell /bin/bash sid

WORKDIR /opt/sidreasoner

# Dependencies first, so their layer survives source edits: CPU torch, then the project's
# dependencies at the exact versions the tests passed with (docker/lock.sh).
COPY docker/constraints.txt docker/constraints.txt
COPY pyproject.toml README.md ./
RUN pip install --no-cache-dir --index-url "${TORCH_INDEX}" "torch==${TORCH_VERSION}" \
    && python -c "import tomllib; print('\n'.join(tomllib.load(open('pyproject.toml', 'rb'))['project']['dependencies']))" > /tmp/requirements.txt \
    && pip install --no-cache-dir -c docker/constraints.txt -r /tmp/requirements.txt

COPY sidreasoner_core sidreasoner_core
COPY components components
COPY pipelines pipelines
RUN pip install --no-cache-dir --no-deps . \
    && pip check \
    && python -c "import sidreasoner_core.cli, components.data, kfp.dsl.executor_main"

USER 1000:1000
WORKDIR /home/sid
CMD ["sidreasoner", "--help"]
