"""Artifacts: digests verified, tampering refused by name, atomic writes (also under SIGKILL), S3 via moto."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time

import pytest

from sidreasoner_core.artifacts import ArtifactError, open_artifact, write_artifact
from sidreasoner_core.data.config import DataConfig
from sidreasoner_core.dataset import read_samples
from sidreasoner_core.data.stage import run

from conftest import REPO, SAMPLE


def _write(out, text: str, kind: str = "dataset"):
    with write_artifact(out, kind=kind, config=DataConfig(), parents=[{"uri": "x", "kind": "raw"}]) as d:
        (d / "a.txt").write_text(text)
        (d / "sub").mkdir()
        (d / "sub" / "b.bin").write_bytes(text.encode() * 3)
    return open_artifact(out, kind=kind)


def test_manifest_lists_every_file_with_its_digest(tmp_path):
    art = _write(tmp_path / "art", "v1")
    m = art.manifest
    assert set(m["files"]) == {"a.txt", "sub/b.bin"} and all(len(h) == 64 for h in m["files"].values())
    assert m["kind"] == "dataset" and m["schema_version"] == 1 and m["config"]["k_core"] == 5
    assert m["parents"] == [{"uri": "x", "kind": "raw"}] and len(m["digest"]) == 64


@pytest.mark.parametrize("damage, named", [
    (lambda p: (p / "a.txt").write_text("v2"), "a.txt: sha256 does not match"),
    (lambda p: (p / "sub" / "b.bin").unlink(), "sub/b.bin: listed in the manifest but missing"),
    (lambda p: (p / "extra.txt").write_text("?"), "extra.txt: file not listed in the manifest"),
    (lambda p: (p / "manifest.json").unlink(), "manifest.json: manifest missing"),
    (lambda p: (p / "manifest.json").write_text("{not json"), "manifest.json: unreadable manifest"),
])
def test_tampered_or_missing_files_are_refused_by_name(tmp_path, damage, named):
    art = _write(tmp_path / "art", "v1")
    damage(art.path)
    with pytest.raises(ArtifactError, match=named.replace(".", r"\.")):
        open_artifact(tmp_path / "art")


def test_wrong_kind_is_refused(tmp_path):
    _write(tmp_path / "art", "v1", kind="sids")
    with pytest.raises(ArtifactError, match="kind is 'sids', expected 'dataset'"):
        open_artifact(tmp_path / "art", kind="dataset")


def test_tampered_dataset_parquet_is_refused(tmp_path):
    art = run(DataConfig(), SAMPLE, tmp_path / "ds")
    p = art.path / "samples.parquet"
    data = bytearray(p.read_bytes())
    data[len(data) // 2] ^= 0xFF
    p.write_bytes(bytes(data))
    with pytest.raises(ArtifactError, match=r"samples\.parquet: sha256 does not match"):
        open_artifact(tmp_path / "ds", kind="dataset")


def test_a_failing_body_publishes_nothing_and_keeps_the_previous(tmp_path):
    out = tmp_path / "art"
    with pytest.raises(RuntimeError):
        with write_artifact(out, kind="dataset") as d:
            (d / "a.txt").write_text("half")
            raise RuntimeError("boom")
    assert not out.exists() and list(tmp_path.iterdir()) == []
    _write(out, "v1")
    with pytest.raises(RuntimeError):
        with write_artifact(out, kind="dataset") as d:
            (d / "a.txt").write_text("v2")
            raise RuntimeError("boom")
    assert (open_artifact(out).path / "a.txt").read_text() == "v1"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["art"]


KILLED_WRITER = textwrap.dedent("""
    import sys, time
    from pathlib import Path
    sys.path.insert(0, {repo!r})
    from sidreasoner_core.artifacts import write_artifact
    out, marker = sys.argv[1], Path(sys.argv[2])
    with write_artifact(out, kind="dataset") as d:
        (d / "a.txt").write_text("v2")
        (d / "big.bin").write_bytes(b"x" * 2_000_000)
        marker.write_text("ready")
        time.sleep(120)
""")


@pytest.mark.parametrize("previous", [False, True], ids=["fresh", "over-previous"])
def test_a_killed_write_leaves_no_readable_artifact(tmp_path, previous):
    out, marker = tmp_path / "art", tmp_path / "ready"
    if previous:
        _write(out, "v1")
    script = tmp_path / "writer.py"
    script.write_text(KILLED_WRITER.format(repo=str(REPO)))
    proc = subprocess.Popen([sys.executable, str(script), str(out), str(marker)])
    try:
        deadline = time.time() + 60
        while not marker.exists():
            assert proc.poll() is None, "writer exited early"
            assert time.time() < deadline, "writer never got ready"
            time.sleep(0.05)
        os.kill(proc.pid, signal.SIGKILL)
        assert proc.wait(timeout=30) == -signal.SIGKILL
    finally:
        if proc.poll() is None:
            proc.kill()
    leftovers = [p for p in tmp_path.iterdir() if p.name.startswith(".art.tmp-")]
    assert leftovers  # the half-written temp dir is still there, but nobody takes it for an artifact
    for p in leftovers:
        with pytest.raises(ArtifactError, match="manifest missing"):
            open_artifact(p)
    if previous:
        art = open_artifact(out, kind="dataset")
        assert (art.path / "a.txt").read_text() == "v1" and set(art.manifest["files"]) == {"a.txt", "sub/b.bin"}
    else:
        with pytest.raises(ArtifactError, match="does not exist"):
            open_artifact(out)
    _write(out, "v3")  # the next write goes through and removes the killed write's leftovers
    assert (open_artifact(out).path / "a.txt").read_text() == "v3"
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".art.")]


# ------------------------------------------------------------------ S3 (moto server over HTTP)


def test_s3_round_trip_of_a_dataset(s3_bucket, tmp_path, monkeypatch):
    from sidreasoner_core.storage import s3_client

    monkeypatch.setenv("SIDREASONER_CACHE", str(tmp_path / "cache"))
    uri = f"s3://{s3_bucket}/x"
    art = run(DataConfig(), SAMPLE, uri)
    assert art.uri == uri and art.manifest["stats"]["items"] == 400
    again = open_artifact(uri, kind="dataset")
    assert len(read_samples(again.path)) == 249 + 103 + 123
    client = s3_client()
    keys = sorted(o["Key"] for o in client.list_objects_v2(Bucket=s3_bucket, Prefix="x/")["Contents"])
    assert keys == ["x/items.parquet", "x/manifest.json", "x/samples.parquet", "x/stats.json"]

    client.put_object(Bucket=s3_bucket, Key="x/stats.json", Body=b"{}")
    with pytest.raises(ArtifactError, match=r"x/stats\.json: sha256 does not match"):
        open_artifact(uri, kind="dataset")

    client.put_object(Bucket=s3_bucket, Key="partial/items.parquet", Body=b"half")
    with pytest.raises(ArtifactError, match=r"partial/manifest\.json: manifest missing"):
        open_artifact(f"s3://{s3_bucket}/partial")


def test_s3_failing_body_uploads_nothing(s3_bucket):
    from sidreasoner_core.storage import s3_client

    with pytest.raises(RuntimeError):
        with write_artifact(f"s3://{s3_bucket}/y", kind="dataset") as d:
            (d / "a.txt").write_text("v1")
            raise RuntimeError("boom")
    assert "Contents" not in s3_client().list_objects_v2(Bucket=s3_bucket, Prefix="y/")


CRASH_IN_PUBLISH = textwrap.dedent("""
    import os, shutil, signal, sys
    sys.path.insert(0, {repo!r})
    from sidreasoner_core import artifacts
    # the first rename/delete of the publishing step completes, then the process dies
    def dying(real):
        def f(*a, **k):
            real(*a, **k)
            os.kill(os.getpid(), signal.SIGKILL)
        return f
    os.rename, shutil.rmtree = dying(os.rename), dying(shutil.rmtree)
    with artifacts.write_artifact(sys.argv[1], kind="dataset") as d:
        (d / "a.txt").write_text("v2")
""")


def test_a_write_killed_while_publishing_leaves_old_or_new(tmp_path):
    out = tmp_path / "art"
    _write(out, "v1")
    script = tmp_path / "writer.py"
    script.write_text(CRASH_IN_PUBLISH.format(repo=str(REPO)))
    proc = subprocess.run([sys.executable, str(script), str(out)], timeout=120)
    assert proc.returncode == -signal.SIGKILL
    art = open_artifact(out, kind="dataset")  # verified: whole, either version
    assert (art.path / "a.txt").read_text() in {"v1", "v2"}


def test_s3_killed_write_is_replaced_but_a_foreign_prefix_is_refused(s3_bucket):
    """A prefix left by a killed upload (its `.writing.json` marker, no manifest) is the writer's own
    leftover and is replaced; objects the writer did not put there are refused, named, and kept."""
    import json

    from sidreasoner_core.artifacts import OutputError
    from sidreasoner_core.storage import s3_client

    client = s3_client()
    client.put_object(Bucket=s3_bucket, Key="z/.writing.json", Body=json.dumps({"kind": "dataset"}).encode())
    client.put_object(Bucket=s3_bucket, Key="z/items.parquet", Body=b"half")
    with write_artifact(f"s3://{s3_bucket}/z", kind="dataset") as d:
        (d / "a.txt").write_text("v1")
    keys = sorted(o["Key"] for o in client.list_objects_v2(Bucket=s3_bucket, Prefix="z/")["Contents"])
    assert keys == ["z/a.txt", "z/manifest.json"]
    assert (open_artifact(f"s3://{s3_bucket}/z", kind="dataset").path / "a.txt").read_text() == "v1"

    client.put_object(Bucket=s3_bucket, Key="f/report.pdf", Body=b"%PDF")
    with pytest.raises(OutputError, match=r"f: holds 1 file\(s\) that are not an artifact \(e\.g\. 'report\.pdf'\)"):
        with write_artifact(f"s3://{s3_bucket}/f", kind="dataset") as d:
            (d / "a.txt").write_text("v1")
    assert [o["Key"] for o in client.list_objects_v2(Bucket=s3_bucket, Prefix="f/")["Contents"]] == ["f/report.pdf"]


def test_leftovers_of_live_writers_are_kept(tmp_path):
    """Only temp folders whose writer process is gone are removed (a concurrent writer's are not)."""
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    gone = tmp_path / f".art.tmp-{int(dead.stdout)}-0123abcd"
    live = tmp_path / f".art.tmp-{os.getpid()}-4567abcd"
    gone.mkdir(), live.mkdir()
    _write(tmp_path / "art", "v1")
    assert not gone.exists() and live.exists()


def test_a_failing_write_removes_the_folders_it_made(tmp_path):
    (tmp_path / "a").mkdir()
    with pytest.raises(RuntimeError):
        with write_artifact(tmp_path / "a" / "b" / "c" / "art", kind="dataset") as d:
            (d / "x.txt").write_text("half")
            raise RuntimeError("boom")
    assert [p.name for p in tmp_path.rglob("*")] == ["a"]  # `a` was there before; b and c are gone
