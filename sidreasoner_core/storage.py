"""Local paths and `s3://` URIs behind one small interface.

S3 access goes through boto3; the endpoint comes from `AWS_ENDPOINT_URL_S3`,
`AWS_ENDPOINT_URL` or `MLFLOW_S3_ENDPOINT_URL` (MinIO on the cluster, moto in tests).
Every object-store failure (no credentials, no endpoint, no bucket, access denied) surfaces as
a `StorageError` naming the URI, so the command line can print it as one line.
"""
from __future__ import annotations

import contextlib
import os
from pathlib import Path
from urllib.parse import urlparse


class StorageError(RuntimeError):
    """An object-store operation failed; the message names the URI and what to check."""


def is_s3(uri: str | os.PathLike) -> bool:
    return str(uri).startswith("s3://")


def split_s3(uri: str) -> tuple[str, str]:
    parsed = urlparse(uri)
    return parsed.netloc, parsed.path.lstrip("/")


def _endpoint() -> str | None:
    return (os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL")
            or os.environ.get("MLFLOW_S3_ENDPOINT_URL"))


def s3_client():
    import boto3

    return boto3.client("s3", endpoint_url=_endpoint())


@contextlib.contextmanager
def s3_errors(uri: str):
    """Turn botocore's exceptions into one StorageError that names `uri` and the likely fix."""
    import botocore.exceptions as be

    try:
        yield
    except be.NoCredentialsError:
        raise StorageError(f"{uri}: no object-store credentials found (set AWS_ACCESS_KEY_ID and "
                           "AWS_SECRET_ACCESS_KEY, or AWS_PROFILE)") from None
    except (be.EndpointConnectionError, be.ConnectTimeoutError) as exc:
        raise StorageError(f"{uri}: cannot reach the object store ({exc}); check AWS_ENDPOINT_URL_S3") from None
    except be.ClientError as exc:
        err = exc.response.get("Error", {})
        code, msg = err.get("Code", "?"), err.get("Message", "")
        hint = {"NoSuchBucket": "the bucket does not exist", "404": "not found",
                "AccessDenied": "access denied (check the credentials' permissions)",
                "403": "access denied (check the credentials)",
                "InvalidAccessKeyId": "the access key is not known to the object store",
                "SignatureDoesNotMatch": "the secret key does not match the access key"}.get(code, msg or code)
        raise StorageError(f"{uri}: {hint} ({code})") from None
    except be.BotoCoreError as exc:
        raise StorageError(f"{uri}: object-store error ({exc})") from None


def list_keys(uri: str, limit: int | None = None) -> list[str]:
    """Keys under the prefix `uri` (relative to it), at most `limit`."""
    bucket, prefix = split_s3(uri)
    prefix = prefix.rstrip("/") + "/"
    out: list[str] = []
    with s3_errors(uri):
        for page in s3_client().get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
            for obj in page.get("Contents", []):
                out.append(obj["Key"][len(prefix):])
                if limit is not None and len(out) >= limit:
                    return out
    return out


def read_bytes(uri: str) -> bytes:
    bucket, key = split_s3(uri)
    with s3_errors(uri):
        return s3_client().get_object(Bucket=bucket, Key=key)["Body"].read()


def put_bytes(uri: str, data: bytes) -> None:
    bucket, key = split_s3(uri)
    with s3_errors(uri):
        s3_client().put_object(Bucket=bucket, Key=key, Body=data)


def delete_key(uri: str) -> None:
    bucket, key = split_s3(uri)
    with s3_errors(uri):
        s3_client().delete_object(Bucket=bucket, Key=key)


def upload_dir(local: Path, uri: str, last: str | None = None) -> None:
    """Upload every file under `local` to the prefix `uri`; the file named `last` goes last."""
    bucket, prefix = split_s3(uri)
    files = sorted(p for p in local.rglob("*") if p.is_file())
    files.sort(key=lambda p: p.name == last)  # stable: the commit marker ends the upload
    with s3_errors(uri):
        client = s3_client()
        for path in files:
            key = f"{prefix.rstrip('/')}/{path.relative_to(local).as_posix()}"
            client.upload_file(str(path), bucket, key)


def download_prefix(uri: str, local: Path) -> list[str]:
    """Download every object under the prefix `uri` into `local`; returns relative names."""
    bucket, prefix = split_s3(uri)
    prefix = prefix.rstrip("/") + "/"
    names = []
    with s3_errors(uri):
        client = s3_client()
        for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
            for obj in page.get("Contents", []):
                rel = obj["Key"][len(prefix):]
                if not rel or rel.endswith("/"):
                    continue  # a "folder" placeholder object
                dest = local / rel
                dest.parent.mkdir(parents=True, exist_ok=True)
                client.download_file(bucket, obj["Key"], str(dest))
                names.append(rel)
    return names


def delete_prefix(uri: str) -> None:
    bucket, prefix = split_s3(uri)
    prefix = prefix.rstrip("/") + "/"
    with s3_errors(uri):
        client = s3_client()
        for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
            keys = [{"Key": o["Key"]} for o in page.get("Contents", [])]
            if keys:
                client.delete_objects(Bucket=bucket, Delete={"Objects": keys})
