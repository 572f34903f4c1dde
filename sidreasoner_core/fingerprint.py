"""A fingerprint of a pipeline input: what is under a local path or an `s3://` prefix, by listing.

KFP's cache key of the data step is built from its parameters, and a weekly schedule passes the
same `data_uri` every week. The fingerprint (a digest of every object's name, size and ETag or
modification time) is passed to the data step as a parameter, so new or changed files under the
same prefix change the key and are never served from last week's cache. Listing only: no object
is read, so a prefix of many gigabytes fingerprints in one paginated LIST.
"""
from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

from .storage import is_s3, s3_client, s3_errors, split_s3


def listing(uri: str | os.PathLike) -> list[dict]:
    """One entry per file/object under `uri` (a file, directory, S3 object or prefix), sorted by name:
    {name, size, version} where version is the S3 ETag or the file's mtime in nanoseconds."""
    entries = _s3_listing(str(uri)) if is_s3(uri) else _local_listing(Path(uri))
    if not entries:
        raise FileNotFoundError(f"{uri}: no input files to fingerprint (empty or missing)")
    return sorted(entries, key=lambda e: e["name"])


def digest(entries: list[dict]) -> str:
    """sha256 over the canonical JSON of a listing."""
    return hashlib.sha256(json.dumps(entries, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


def fingerprint(uri: str | os.PathLike) -> str:
    """The input's fingerprint: `sha256:<hex>` of its listing."""
    return f"sha256:{digest(listing(uri))}"


def _local_listing(path: Path) -> list[dict]:
    if not path.exists():
        raise FileNotFoundError(f"{path}: input does not exist")
    files = [path] if path.is_file() else [p for p in path.rglob("*") if p.is_file()]
    out = []
    for f in files:
        st = f.stat()
        name = f.name if f == path else f.relative_to(path).as_posix()
        out.append({"name": name, "size": st.st_size, "version": str(st.st_mtime_ns)})
    return out


def _s3_listing(uri: str) -> list[dict]:
    bucket, key = split_s3(uri)
    client = s3_client()
    prefix = key.rstrip("/") + "/" if key else ""
    out = []
    with s3_errors(uri):
        for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
            for obj in page.get("Contents", []):
                out.append({"name": obj["Key"][len(prefix):], "size": obj["Size"], "version": obj["ETag"].strip('"')})
        if not out and key and not key.endswith("/"):  # a single object, not a prefix
            from botocore.exceptions import ClientError

            try:
                head = client.head_object(Bucket=bucket, Key=key)
            except ClientError as exc:
                if exc.response.get("Error", {}).get("Code") in ("404", "NoSuchKey", "NotFound"):
                    return []
                raise
            out.append({"name": key.rsplit("/", 1)[-1], "size": head["ContentLength"],
                        "version": head["ETag"].strip('"')})
    return out
