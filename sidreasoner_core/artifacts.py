"""Typed, verifiable stage artifacts.

An artifact is a directory (local or `s3://`) holding the stage's files and a
`manifest.json` written last: kind, schema version, sha256 of every file, the
config that made it and its parent artifacts. A directory without a valid
manifest is never taken for a finished artifact.

    with write_artifact(out, kind="dataset", config=cfg, parents=[inp]) as d:
        (d / "items.parquet").write_bytes(...)
    art = open_artifact(out, kind="dataset")   # verifies every digest
    art.path / "items.parquet"
"""
from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import os
import shutil
import tempfile
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

from . import storage

MANIFEST = "manifest.json"
SCHEMA_VERSION = 1


class ArtifactError(RuntimeError):
    """An artifact directory is missing, incomplete, of the wrong kind or corrupted."""


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _digests(root: Path) -> dict[str, str]:
    return {
        p.relative_to(root).as_posix(): sha256_file(p)
        for p in sorted(root.rglob("*"))
        if p.is_file() and p.name != MANIFEST
    }


def _config_dict(config: Any) -> dict:
    if config is None:
        return {}
    if hasattr(config, "model_dump"):
        return config.model_dump(mode="json")
    return dict(config)


@dataclass
class Artifact:
    uri: str
    path: Path  # local directory holding the files (a verified download for s3://)
    manifest: dict

    @property
    def kind(self) -> str:
        return self.manifest["kind"]

    def ref(self) -> dict:
        """How a child artifact names this one as its parent."""
        return {"uri": self.uri, "kind": self.kind, "digest": self.manifest["digest"]}


def _manifest_digest(files: dict[str, str]) -> str:
    return hashlib.sha256(json.dumps(files, sort_keys=True).encode()).hexdigest()


@contextlib.contextmanager
def write_artifact(
    uri: str | os.PathLike,
    kind: str,
    config: Any = None,
    parents: list[Artifact | dict] | None = None,
    extra: dict | None = None,
    overwrite: bool = True,
) -> Iterator[Path]:
    """Yield a fresh temp directory; on a clean exit publish it atomically at `uri`.

    Local: the files are written next to the target and renamed into place, so
    a reader sees either the old artifact, nothing, or the whole new one.
    S3: files are uploaded first and the manifest last (it is the commit marker).
    If the body raises, nothing is published and the temp directory is removed.
    """
    uri = str(uri)
    if storage.is_s3(uri):
        tmp = Path(tempfile.mkdtemp(prefix="sidr-art-"))
    else:
        target = Path(uri)
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = target.parent / f".{target.name}.tmp-{uuid.uuid4().hex[:8]}"
        tmp.mkdir()
    try:
        yield tmp
        files = _digests(tmp)
        manifest = {
            "kind": kind,
            "schema_version": SCHEMA_VERSION,
            "created_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "files": files,
            "digest": _manifest_digest(files),
            "config": _config_dict(config),
            "parents": [p.ref() if isinstance(p, Artifact) else p for p in (parents or [])],
            **(extra or {}),
        }
        _write_json_atomic(tmp / MANIFEST, manifest)
        if storage.is_s3(uri):
            if overwrite:
                storage.delete_prefix(uri)
            storage.upload_dir(tmp, uri, last=MANIFEST)
        else:
            _publish_local(tmp, Path(uri), overwrite)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


def _exchange(a: Path, b: Path) -> bool:
    """Swap two paths in one atomic step (Linux renameat2 RENAME_EXCHANGE); False where unsupported."""
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        renameat2 = libc.renameat2
    except (OSError, AttributeError):
        return False
    at_fdcwd, rename_exchange = -100, 2
    if renameat2(at_fdcwd, os.fsencode(a), at_fdcwd, os.fsencode(b), rename_exchange) == 0:
        return True
    err = ctypes.get_errno()
    if err in (errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP):  # e.g. a file system without it
        return False
    raise OSError(err, os.strerror(err), str(b))


def _publish_local(tmp: Path, target: Path, overwrite: bool) -> None:
    if target.exists():
        if not overwrite:
            raise ArtifactError(f"{target}: exists and overwrite=False")
        # Move the old one aside first so the swap is two renames, never a half-deleted dir.
        old = target.parent / f".{target.name}.old-{uuid.uuid4().hex[:8]}"
        if target.is_dir() and not any(target.iterdir()):
            target.rmdir()  # an empty output dir pre-created by a runner (e.g. KFP)
        elif target.is_dir() and _exchange(tmp, target):
            # one atomic swap: a crash at any moment leaves either the old or the new artifact
            shutil.rmtree(tmp, ignore_errors=True)  # tmp now holds the old one
            return
        else:
            os.rename(target, old)
            os.rename(tmp, target)
            shutil.rmtree(old, ignore_errors=True)
            return
    os.rename(tmp, target)


def _write_json_atomic(path: Path, obj: Any) -> None:
    part = path.with_name(path.name + ".part")
    part.write_text(json.dumps(obj, indent=2, sort_keys=True))
    os.replace(part, path)


def write_json_atomic(path: str | os.PathLike, obj: Any) -> None:
    _write_json_atomic(Path(path), obj)


def _cache_dir_for(uri: str) -> Path:
    root = Path(os.environ.get("SIDREASONER_CACHE", Path.home() / ".cache" / "sidreasoner"))
    return root / "s3" / hashlib.sha256(uri.encode()).hexdigest()[:16]


def open_artifact(uri: str | os.PathLike, kind: str | None = None, verify: bool = True) -> Artifact:
    """Open and verify an artifact; raise ArtifactError naming the offending file."""
    uri = str(uri)
    if storage.is_s3(uri):
        local = _cache_dir_for(uri)
        if local.exists():
            shutil.rmtree(local)
        local.mkdir(parents=True)
        storage.download_prefix(uri, local)
    else:
        local = Path(uri)
        if not local.is_dir():
            raise ArtifactError(f"{uri}: artifact directory does not exist")
    mpath = local / MANIFEST
    if not mpath.is_file():
        raise ArtifactError(f"{uri}/{MANIFEST}: manifest missing (incomplete or foreign directory)")
    try:
        manifest = json.loads(mpath.read_text())
        files = manifest["files"]
        found_kind = manifest["kind"]
    except (json.JSONDecodeError, KeyError, TypeError) as exc:
        raise ArtifactError(f"{uri}/{MANIFEST}: unreadable manifest ({exc})") from exc
    if kind is not None and found_kind != kind:
        raise ArtifactError(f"{uri}/{MANIFEST}: kind is {found_kind!r}, expected {kind!r}")
    if manifest.get("schema_version", 0) > SCHEMA_VERSION:
        raise ArtifactError(f"{uri}/{MANIFEST}: schema version {manifest['schema_version']} is newer than supported {SCHEMA_VERSION}")
    if verify:
        for rel, digest in files.items():
            p = local / rel
            if not p.is_file():
                raise ArtifactError(f"{uri}/{rel}: listed in the manifest but missing")
            if sha256_file(p) != digest:
                raise ArtifactError(f"{uri}/{rel}: sha256 does not match the manifest")
        extra = set(_digests(local)) - set(files)
        if extra:
            raise ArtifactError(f"{uri}/{sorted(extra)[0]}: file not listed in the manifest")
    return Artifact(uri=uri, path=local, manifest=manifest)


def is_complete(uri: str | os.PathLike, kind: str | None = None) -> bool:
    try:
        open_artifact(uri, kind=kind)
        return True
    except ArtifactError:
        return False
