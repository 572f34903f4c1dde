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
import logging
import os
import re
import shutil
import tempfile
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

from . import storage

log = logging.getLogger(__name__)

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


# ---------------------------------------------------------------- output safety
#
# A write replaces only what it may: nothing, an empty directory, or an artifact of its own kind
# whose files are all its manifest's. It never touches its inputs (the output may not be an
# input, lie inside one or contain one). Anything else is refused, naming the path and the way
# on; `--force` (or `force_outputs()`) allows replacing a foreign path, never an input.

WRITING = ".writing.json"  # S3: marks a prefix whose upload is in progress (the manifest ends it)
_FORCE = False


class OutputError(ArtifactError):
    """An output path that a write must not replace."""


def set_force(on: bool) -> None:
    """Allow (or stop allowing) writes to replace foreign outputs for this process (`--force`)."""
    global _FORCE
    _FORCE = bool(on)


def force_enabled() -> bool:
    return _FORCE or os.environ.get("SIDREASONER_FORCE", "") in ("1", "true", "yes")


def _uri_of(parent: "Artifact | dict | str | os.PathLike") -> list[str]:
    if isinstance(parent, Artifact):
        return [parent.uri, str(parent.path)]
    if isinstance(parent, dict):
        return [str(parent["uri"])] if parent.get("uri") else []
    return [str(parent)]


def _overlap(out: str, inp: str) -> str | None:
    """How `out` overlaps the input `inp` ("is", "is inside", "contains"), None when apart."""
    if storage.is_s3(out) != storage.is_s3(inp):
        return None
    if storage.is_s3(out):
        a, b = out.rstrip("/") + "/", inp.rstrip("/") + "/"
    else:
        a, b = str(Path(out).resolve()).rstrip("/") + "/", str(Path(inp).resolve()).rstrip("/") + "/"
    if a == b:
        return "is"
    if a.startswith(b):
        return "is inside"
    if b.startswith(a):
        return "contains"
    return None


def _local_state(target: Path, kind: str | None) -> str | None:
    """None when a write may replace `target`, else what is there (for the error message)."""
    if not target.exists() and not target.is_symlink():
        return None
    if not target.is_dir() or target.is_symlink():
        return "is a file, not an artifact directory"
    present = [p for p in target.rglob("*") if p.is_file() or p.is_symlink()]
    if not present and not any(target.iterdir()):
        return None  # empty: e.g. an output dir pre-created by a runner (KFP)
    mpath = target / MANIFEST
    return _state_of(target.name, mpath.read_bytes() if mpath.is_file() else None,
                     [p.relative_to(target).as_posix() for p in present], kind)


def _state_of(name: str, manifest_bytes: bytes | None, present: list[str], kind: str | None,
              writing_kind: str | None = None) -> str | None:
    manifest = None
    if manifest_bytes is not None:
        try:
            manifest = json.loads(manifest_bytes)
            listed = set(manifest["files"]) | {MANIFEST}
            found_kind = manifest["kind"]
        except (ValueError, KeyError, TypeError):
            manifest = None
    if manifest is None:
        if writing_kind is not None and (kind is None or writing_kind == kind):
            return None  # the leftover of a killed write of this kind
        example = sorted(present)[0] if present else "?"
        return f"holds {len(present)} file(s) that are not an artifact (e.g. {example!r})"
    if kind is not None and found_kind != kind:
        return f"is a {found_kind!r} artifact, not a {kind!r} one"
    extra = sorted(set(present) - listed - {WRITING})
    if extra:
        return f"is an artifact with {len(extra)} file(s) not in its manifest (e.g. {extra[0]!r})"
    return None


def _s3_state(uri: str, kind: str | None) -> str | None:
    bucket, prefix = storage.split_s3(uri)
    if not prefix.strip("/"):
        return "is a bucket root; an output needs a key prefix (s3://bucket/some/prefix)"
    present = storage.list_keys(uri)
    if not present:
        return None
    base = uri.rstrip("/")
    manifest = storage.read_bytes(f"{base}/{MANIFEST}") if MANIFEST in present else None
    writing = None
    if WRITING in present:
        try:
            writing = json.loads(storage.read_bytes(f"{base}/{WRITING}")).get("kind")
        except (ValueError, AttributeError):
            writing = None
    return _state_of(base, manifest, present, kind, writing)


def check_output(uri: str | os.PathLike, kind: str | None = None,
                 inputs: "list[Artifact | dict | str | os.PathLike]" = (), force: bool | None = None) -> None:
    """Raise OutputError if a write of `kind` must not replace `uri` (see the rules above).

    `kind=None` accepts an artifact of any kind: the CLI checks `--out` before a stage starts,
    the writer checks the kind again when it publishes.
    """
    uri = str(uri)
    force = force_enabled() if force is None else force
    for parent in inputs:
        for inp in _uri_of(parent):
            how = _overlap(uri, inp)
            if how:
                raise OutputError(f"{uri}: the output {how} the input {inp}; choose an --out outside it "
                                  "(--force never replaces an input)")
    state = _s3_state(uri, kind) if storage.is_s3(uri) else _local_state(Path(uri), kind)
    if state is None:
        return
    if state.startswith("is a bucket root"):
        raise OutputError(f"{uri}: {state}")
    if not force:
        raise OutputError(f"{uri}: {state}; refusing to replace it. Choose another --out, move it away, "
                          "or pass --force to replace it")
    log.warning("%s: %s; replacing it (--force)", uri, state)


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def clean_leftovers(folder: Path, stem: str) -> list[Path]:
    """Remove `<stem>.tmp-<pid>-*` / `<stem>.old-<pid>-*` folders whose writer process is gone."""
    removed = []
    if not folder.is_dir():
        return removed
    pattern = re.compile(re.escape(stem) + r"\.(tmp|old)-(\d+)-[0-9a-f]+")
    for p in folder.iterdir():
        m = pattern.fullmatch(p.name)
        if m and not _pid_alive(int(m.group(2))):
            if p.is_dir() and not p.is_symlink():
                shutil.rmtree(p, ignore_errors=True)
            else:
                p.unlink(missing_ok=True)
            removed.append(p)
    if removed:
        log.info("removed %d leftover temp folder(s) of killed writes: %s", len(removed),
                 ", ".join(p.name for p in removed))
    return removed


def temp_name(stem: str, what: str = "tmp") -> str:
    return f"{stem}.{what}-{os.getpid()}-{uuid.uuid4().hex[:8]}"


@contextlib.contextmanager
def write_artifact(
    uri: str | os.PathLike,
    kind: str,
    config: Any = None,
    parents: list[Artifact | dict] | None = None,
    extra: dict | None = None,
    overwrite: bool = True,
    inputs: list | None = None,
) -> Iterator[Path]:
    """Yield a fresh temp directory; on a clean exit publish it atomically at `uri`.

    The output is checked first (`check_output`, against `parents` and `inputs`), so a write never
    replaces its input or a path holding something else. Local: the files are written next to the
    target and renamed into place, so a reader sees either the old artifact, nothing, or the whole
    new one. S3: a `.writing.json` marker, then the files, then the manifest (the commit marker).
    If the body raises, nothing is published and the temp directory is removed; temp folders
    left by killed writes are removed by the next write.
    """
    uri = str(uri)
    sources = list(parents or []) + list(inputs or [])
    check_output(uri, kind, sources)
    if storage.is_s3(uri):
        clean_leftovers(Path(tempfile.gettempdir()), "sidr-art")
        tmp = Path(tempfile.gettempdir()) / temp_name("sidr-art")
        tmp.mkdir()
    else:
        target = Path(uri)
        created = _missing_ancestors(target.parent)
        _mkdir(target.parent, uri)
        clean_leftovers(target.parent, f".{target.name}")
        tmp = target.parent / temp_name(f".{target.name}")
        _mkdir(tmp, uri)
    published = False
    try:
        with _output_errors(uri, tmp):
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
        if storage.is_s3(uri):
            _write_json_atomic(tmp / MANIFEST, manifest)
            check_output(uri, kind, sources)  # again: the body may have run for hours
            if overwrite:
                storage.delete_prefix(uri)
            elif storage.list_keys(uri, limit=1):
                raise ArtifactError(f"{uri}: exists and overwrite=False")
            base = uri.rstrip("/")
            storage.put_bytes(f"{base}/{WRITING}", json.dumps({"kind": kind, "pid": os.getpid()}).encode())
            storage.upload_dir(tmp, uri, last=MANIFEST)
            storage.delete_key(f"{base}/{WRITING}")
        else:
            check_output(uri, kind, sources)
            with _output_errors(uri, tmp):
                _write_json_atomic(tmp / MANIFEST, manifest)
                _publish_local(tmp, Path(uri), overwrite)
        published = True
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
        if not published and not storage.is_s3(uri):
            for d in reversed(created):  # folders made for the output, when nothing was published
                with contextlib.suppress(OSError):
                    d.rmdir()


def _missing_ancestors(path: Path) -> list[Path]:
    """`path` and its ancestors that do not exist yet, outermost first."""
    missing = []
    while not path.exists() and path != path.parent:
        missing.append(path)
        path = path.parent
    return missing[::-1]


def _mkdir(path: Path, uri: str) -> None:
    try:
        path.mkdir(parents=True, exist_ok=True)
    except FileExistsError:
        raise OutputError(f"{uri}: a parent of it is a file; cannot create the output folder there") from None
    except OSError as exc:
        raise OSError(exc.errno, exc.strerror, uri) from exc


_WRITE_ERRNOS = {errno.ENOSPC, errno.EDQUOT, errno.EROFS}


@contextlib.contextmanager
def _output_errors(uri: str, tmp: Path):
    """A write's OSError (disk full, read-only, permissions) re-addressed to the output the user named,
    not to a temp file inside it; Arrow's errors carry the errno only in their text. Errors about
    other files (an input the body reads) pass unchanged."""
    try:
        yield
    except OSError as exc:
        code = exc.errno
        if code is None:
            m = re.search(r"\[Errno (\d+)\]", str(exc))
            code = int(m.group(1)) if m else None
        if code not in _WRITE_ERRNOS and not str(exc.filename or "").startswith(str(tmp)):
            raise
        raise OSError(code, exc.strerror or str(exc), uri) from exc


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
    if target.exists() or target.is_symlink():
        if not overwrite:
            raise ArtifactError(f"{target}: exists and overwrite=False")
        if target.is_dir() and not target.is_symlink() and not any(target.iterdir()):
            target.rmdir()  # an empty output dir pre-created by a runner (e.g. KFP)
        elif target.is_dir() and not target.is_symlink() and _exchange(tmp, target):
            # one atomic swap: a crash at any moment leaves either the old or the new artifact
            shutil.rmtree(tmp, ignore_errors=True)  # tmp now holds the old one
            return
        else:
            # Move the old one aside first so the swap is two renames, never a half-deleted dir.
            old = target.parent / temp_name(f".{target.name}", "old")
            os.rename(target, old)
            os.rename(tmp, target)
            if old.is_dir() and not old.is_symlink():
                shutil.rmtree(old, ignore_errors=True)
            else:
                old.unlink()
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
        extra = set(_digests(local)) - set(files) - {WRITING}
        if extra:
            raise ArtifactError(f"{uri}/{sorted(extra)[0]}: file not listed in the manifest")
    return Artifact(uri=uri, path=local, manifest=manifest)


def is_complete(uri: str | os.PathLike, kind: str | None = None) -> bool:
    try:
        open_artifact(uri, kind=kind)
        return True
    except ArtifactError:
        return False
