# syntax=docker/dockerfile:1
# MLflow tracking server for the cluster (k8s/base/mlflow.yaml): PostgreSQL backend, S3 (MinIO) artifacts,
# basic-auth app (the `auth` extra: Flask-WTF).
#   docker build -f docker/mlflow.Dockerfile -t "$(python -m pipelines.images --ref sidreasoner-mlflow)" .
#   (the tag is a digest of this file and what it copies: components/image_tags.json)
FROM python:3.11-slim-bookworm@sha256:a36c24f9cbdf4fd0f52d67f0823eeac19c2028c637cecc392d97f980d4fec56b

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

RUN groupadd --gid 1000 mlflow \
    && useradd --uid 1000 --gid mlflow --create-home --shell /bin/bash mlflow

COPY docker/constraints.txt /tmp/constraints.txt
RUN pip install --no-cache-dir -c /tmp/constraints.txt "mlflow[auth]==3.17.2" "boto3==1.44.8" "psycopg2-binary==2.9.13" \
    && pip check

USER 1000:1000
WORKDIR /home/mlflow
EXPOSE 5000
CMD ["mlflow", "server", "--host", "0.0.0.0", "--port", "5000"]
