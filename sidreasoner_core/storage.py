"""Local paths and `s3://` URIs behind one small interface.

S3 access goes through boto3; the endpoint comes from `AWS_ENDPOINT_URL_S3`,
`AWS_ENDPOINT_URL` or `MLFLOW_S3_ENDPOINT_URL` (MinIO on the cluster, moto in tests).
"""
from __future__ import annotations

import os
from pathlib import Path
from urllib.parse import urlparse


def is_s3(uri: str | os.PathLike) -> bool:
    return str(uri).startswith("s3://")


def split_s3(uri: str) -> tuple[str, str]:
    parsed = urlparse(uri)
    return parsed.netloc, parsed.path.lstrip("/")


def s3_client():
    import boto3

    endpoint = (
        os.environ.get("AWS_ENDPOINT_URL_S3")
        or os.environ.get("AWS_ENDPOINT_URL")
        or os.environ.get("MLFLOW_S3_ENDPOINT_URL")
    )
    return boto3.client("s3", endpoint_url=endpoint)


def upload_dir(local: Path, uri: str, last: str | None = None) -> None:
    """Upload every file under `local` to the prefix `uri`; the file named `last` goes last."""
    bucket, prefix = split_s3(uri)
    client = s3_client()
    files = sorted(p for p in local.rglob("*") if p.is_file())
    files.sort(key=lambda p: p.name == last)  # stable: the commit marker ends the upload
    for path in files:
        key = f"{prefix.rstrip('/')}/{path.relative_to(local).as_posix()}"
        client.upload_file(str(path), bucket, key)


def download_prefix(uri: str, local: Path) -> list[str]:
    """Download every object under the prefix `uri` into `local`; returns relative names."""
    bucket, prefix = split_s3(uri)
    prefix = prefix.rstrip("/") + "/"
    client = s3_client()
    names = []
    for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
        for obj in page.get("Contents", []):
            rel = obj["Key"][len(prefix):]
            dest = local / rel
            dest.parent.mkdir(parents=True, exist_ok=True)
            client.download_file(bucket, obj["Key"], str(dest))
            names.append(rel)
    return names


def delete_prefix(uri: str) -> None:
    bucket, prefix = split_s3(uri)
    prefix = prefix.rstrip("/") + "/"
    client = s3_client()
    for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
        keys = [{"Key": o["Key"]} for o in page.get("Contents", [])]
        if keys:
            client.delete_objects(Bucket=bucket, Delete={"Objects": keys})
