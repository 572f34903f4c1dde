"""Local paths and `s3://` URIs behind one small interface.

S3 access goes through boto3; the endpoint comes from `AWS_ENDPOINT_URL_S3`,
`AWS_ENDPOINT_URL` or `MLFLOW_S3_ENDPOINT_URL` (MinIO on the cluster, moto in tests).
Every object-store failure (no credentials, no endpoint, no bucket, access denied) surfaces as
a `StorageError` naming the URI, so the command line can print it as one line.
The key-level functions below also take a local path (a mounted volume, e.g. a PVC) for the same
URI shape, so callers that keep state "in the store" need not care which one is configured.
"""
from __future__ import annotations

import contextlib
import os
import shutil
import uuid
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
    import boto3.exceptions
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
    except (be.BotoCoreError, boto3.exceptions.Boto3Error) as exc:  # e.g. S3UploadFailedError from upload_file
        raise StorageError(f"{uri}: object-store error ({exc})") from None


def _is_partial(p: Path) -> bool:
    return p.name.startswith(".") and p.name.endswith(".part")  # a write in progress (_copy_atomic)


def _local_files(root: Path) -> list[Path]:
    return sorted(p for p in root.rglob("*") if p.is_file() and not _is_partial(p)) if root.is_dir() else []


def list_keys(uri: str, limit: int | None = None) -> list[str]:
    """Keys under the prefix `uri` (relative to it), at most `limit`."""
    if not is_s3(uri):
        root = Path(uri)
        return [p.relative_to(root).as_posix() for p in _local_files(root)][:limit]
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
    if not is_s3(uri):
        try:
            return Path(uri).read_bytes()
        except OSError as exc:
            raise StorageError(f"{uri}: cannot read ({exc.strerror})") from None
    bucket, key = split_s3(uri)
    with s3_errors(uri):
        return s3_client().get_object(Bucket=bucket, Key=key)["Body"].read()


def _copy_atomic(write, dest: Path) -> None:
    """Write through a temp name and rename: a reader (or a kill) never sees half a file, as with an S3 PUT."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    part = dest.with_name(f".{dest.name}.{uuid.uuid4().hex[:8]}.part")
    try:
        write(part)
        os.replace(part, dest)
    finally:
        part.unlink(missing_ok=True)


def put_bytes(uri: str, data: bytes) -> None:
    if not is_s3(uri):
        try:
            _copy_atomic(lambda p: p.write_bytes(data), Path(uri))
        except OSError as exc:
            raise StorageError(f"{uri}: cannot write ({exc.strerror})") from None
        return
    bucket, key = split_s3(uri)
    with s3_errors(uri):
        s3_client().put_object(Bucket=bucket, Key=key, Body=data)


def delete_key(uri: str) -> None:
    if not is_s3(uri):
        Path(uri).unlink(missing_ok=True)
        return
    bucket, key = split_s3(uri)
    with s3_errors(uri):
        s3_client().delete_object(Bucket=bucket, Key=key)


def upload_dir(local: Path, uri: str, last: str | None = None) -> None:
    """Upload every file under `local` to the prefix `uri`; the file named `last` goes last."""
    files = _local_files(Path(local))
    files.sort(key=lambda p: p.name == last)  # stable: the commit marker ends the upload
    if not is_s3(uri):
        try:
            for path in files:
                _copy_atomic(lambda p, src=path: shutil.copyfile(src, p), Path(uri) / path.relative_to(local))
        except OSError as exc:
            raise StorageError(f"{uri}: cannot write ({exc.strerror})") from None
        return
    bucket, prefix = split_s3(uri)
    with s3_errors(uri):
        client = s3_client()
        for path in files:
            key = f"{prefix.rstrip('/')}/{path.relative_to(local).as_posix()}"
            client.upload_file(str(path), bucket, key)


def download_prefix(uri: str, local: Path) -> list[str]:
    """Download every object under the prefix `uri` into `local`; returns relative names."""
    if not is_s3(uri):
        names = list_keys(uri)
        for rel in names:
            dest = Path(local) / rel
            dest.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(Path(uri) / rel, dest)
        return names
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
    if not is_s3(uri):
        shutil.rmtree(uri, ignore_errors=True)
        return
    bucket, prefix = split_s3(uri)
    prefix = prefix.rstrip("/") + "/"
    with s3_errors(uri):
        client = s3_client()
        for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
            keys = [{"Key": o["Key"]} for o in page.get("Contents", [])]
            if keys:
                client.delete_objects(Bucket=bucket, Delete={"Objects": keys})
