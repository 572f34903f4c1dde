"""Input faults as a new user meets them: one row per case, each run through the real command line.

Every row asserts the exit code, the message (one `error:` line naming file, line, field or URI;
no traceback unless --verbose), and that nothing outside the output path changed -- for a failing
command, not even the output path (no partial artifact, no leftover temp folder, no run folder).
"""
from __future__ import annotations

import gzip
import hashlib
import json
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import pytest
from typer.testing import CliRunner

from conftest import SAMPLE
from data_helpers import make_raw, meta_record, write_lines

OK, BAD_INPUT, ENVIRONMENT = 0, 2, 1


# ------------------------------------------------------------------ helpers for the rows


class Ctx:
    """What a row's setup may use: the work dir, env changes, finalizers, an S3 bucket on demand."""

    def __init__(self, w: Path, request, monkeypatch):
        self.w, self.request, self.monkeypatch = w, request, monkeypatch
        self._bucket = None

    @property
    def bucket(self) -> str:
        if self._bucket is None:
            self._bucket = self.request.getfixturevalue("s3_bucket")
        return self._bucket

    def mount_tmpfs(self, name: str, options: str) -> Path:
        """A real small/read-only file system (needs root); the row is skipped where mount is refused."""
        d = self.w / name
        d.mkdir()
        proc = subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(d)], capture_output=True)
        if proc.returncode != 0:
            pytest.skip(f"cannot mount a tmpfs here ({proc.stderr.decode().strip()})")
        self.request.addfinalizer(lambda: subprocess.run(["umount", "-l", str(d)], check=False))
        return d


def csv_copy(c: Ctx, name: str = "Industrial_and_Scientific") -> Path:
    dst = c.w / name
    shutil.copytree(SAMPLE, dst)
    return dst


def raw(c: Ctx, fmt: str = "amazon2018", gz: bool = False) -> Path:
    root, _ = make_raw(c.w / "Cat", fmt, gz=gz)
    return root


def reviews_file(root: Path) -> Path:
    return next(p for p in root.iterdir() if not p.name.startswith("meta"))


def meta_file(root: Path) -> Path:
    return next(p for p in root.iterdir() if p.name.startswith("meta"))


def edit_records(file: Path, fn: Callable[[int, dict], dict | None]) -> None:
    """Rewrite a JSON-lines file record by record (fn gets the 1-based line number)."""
    opener = gzip.open if file.name.endswith(".gz") else open
    with opener(file, "rt") as f:
        recs = [json.loads(x) for x in f.read().splitlines() if x.strip()]
    out = [fn(i, r) for i, r in enumerate(recs, 1)]
    write_lines(file, [json.dumps(r) for r in out if r is not None])


def put_line_bytes(file: Path, lineno: int, old: bytes, new: bytes) -> None:
    """Replace bytes inside one line of a plain file (to plant invalid UTF-8)."""
    lines = file.read_bytes().split(b"\n")
    assert old in lines[lineno - 1], (file, lineno)
    lines[lineno - 1] = lines[lineno - 1].replace(old, new, 1)
    file.write_bytes(b"\n".join(lines))


def config(c: Ctx, text: str) -> str:
    p = c.w / "cfg.yaml"
    p.write_text(text)
    return str(p)


def an_artifact(path: Path, kind: str) -> Path:
    from sidreasoner_core.artifacts import write_artifact

    with write_artifact(path, kind=kind) as d:
        (d / "x.txt").write_text("mine")
    return path


def set_ts(fmt_ts: str, fn):
    return lambda i, r: {**r, fmt_ts: fn(i, r[fmt_ts])}


def far_future_at_line_9(i: int, t: int) -> int:
    return 99_999_999_999 if i == 9 else t


# ------------------------------------------------------------------ the rows

@dataclass
class Case:
    id: str
    setup: Callable[[Ctx], list[str]]  # builds the inputs under c.w, returns the command line
    code: int
    message: str  # a substring of the output (the error line, or the stats printed on success)


def data(inp, out, *more):
    return ["data", "--input", str(inp), "--out", str(out), *map(str, more)]


def _sids_dataset(c: Ctx) -> Path:
    from sidreasoner_core.data.config import DataConfig
    from sidreasoner_core.data.stage import run

    return run(DataConfig(), SAMPLE, c.w / "ds").path


CASES = [
    # --- output safety (every stage goes through the same writer and the same --out check)
    Case("out-is-input", lambda c: data(raw(c), c.w / "Cat"), BAD_INPUT, "the output is the input"),
    Case("out-inside-input", lambda c: data(raw(c), c.w / "Cat" / "ds"), BAD_INPUT, "is inside the input"),
    Case("out-contains-input", lambda c: data(raw(c), c.w), BAD_INPUT, "contains the input"),
    Case("out-is-input-even-with-force", lambda c: data(raw(c), c.w / "Cat", "--force"), BAD_INPUT,
         "--force never replaces an input"),
    Case("out-is-a-regular-file", lambda c: (c.w.joinpath("f.txt").write_text("notes"), data(raw(c), c.w / "f.txt"))[1],
         BAD_INPUT, "is a file, not an artifact directory; refusing to replace it"),
    Case("out-holds-unrelated-files",
         lambda c: ((c.w / "docs").mkdir(), (c.w / "docs" / "a.md").write_text("a"),
                    (c.w / "docs" / "b.md").write_text("b"), data(raw(c), c.w / "docs"))[-1],
         BAD_INPUT, "holds 2 file(s) that are not an artifact"),
    Case("out-is-another-kind-of-artifact", lambda c: (an_artifact(c.w / "s", "sids"), data(raw(c), c.w / "s"))[1],
         BAD_INPUT, "is a 'sids' artifact, not a 'dataset' one"),
    Case("out-artifact-with-a-user-file-added",
         lambda c: (an_artifact(c.w / "d", "dataset"), (c.w / "d" / "notes.txt").write_text("mine"),
                    data(raw(c), c.w / "d"))[-1],
         BAD_INPUT, "1 file(s) not in its manifest (e.g. 'notes.txt')"),
    Case("out-parent-is-a-file", lambda c: (c.w.joinpath("f").write_text("x"), data(raw(c), c.w / "f" / "ds"))[1],
         BAD_INPUT, "is a file"),
    Case("out-replaces-own-kind", lambda c: (an_artifact(c.w / "d", "dataset"), data(raw(c), c.w / "d"))[1],
         OK, '"format": "amazon2018"'),
    Case("out-foreign-with-force", lambda c: (c.w.joinpath("f.txt").write_text("notes"),
                                              data(raw(c), c.w / "f.txt", "--force"))[1],
         OK, '"format": "amazon2018"'),
    Case("sids-out-is-its-dataset", lambda c: ["sids", "--dataset", str(_sids_dataset(c)), "--out", str(c.w / "ds")],
         BAD_INPUT, "the output is the input"),
    Case("enrich-out-inside-its-dataset",
         lambda c: ["enrich", "--dataset", str(_sids_dataset(c)), "--sids", str(c.w / "ds"),
                    "--out", str(c.w / "ds" / "enriched")], BAD_INPUT, "is inside the input"),
    Case("align-out-holds-unrelated-files",
         lambda c: ((c.w / "mine").mkdir(), (c.w / "mine" / "thesis.tex").write_text("x"),
                    ["align", "--dataset", str(_sids_dataset(c)), "--sids", str(c.w / "ds"),
                     "--out", str(c.w / "mine")])[-1], BAD_INPUT, "holds 1 file(s) that are not an artifact"),
    Case("s3-out-is-a-bucket-root", lambda c: data(raw(c), f"s3://{c.bucket}"), BAD_INPUT, "is a bucket root"),
    Case("s3-out-holds-unrelated-objects",
         lambda c: (_put(c, "keep/report.pdf", b"%PDF"), data(raw(c), f"s3://{c.bucket}/keep"))[1],
         BAD_INPUT, "holds 1 file(s) that are not an artifact (e.g. 'report.pdf')"),

    # --- encodings: invalid UTF-8 is an error naming file, line and field, or a counted quarantine
    Case("utf8-raw-meta-description",
         lambda c: (put_line_bytes(meta_file(r := raw(c)), 3, b"About", b"Ab\xffout"), data(r, c.w / "o"))[1],
         BAD_INPUT, "meta_Cat.json:3: field 'description': invalid UTF-8 (0xff)"),
    Case("utf8-raw-2023-reviews-user",
         lambda c: (put_line_bytes(reviews_file(r := raw(c, "amazon2023")), 7, b'"user_id": "U', b'"user_id": "\xc3U'),
                    data(r, c.w / "o"))[1],
         BAD_INPUT, "Cat.jsonl:7: field 'user_id': invalid UTF-8"),
    Case("utf8-raw-lone-surrogate-escape-in-title",
         lambda c: (put_line_bytes(meta_file(r := raw(c)), 2, b'"title": "Widget', b'"title": "\\udcff Widget'),
                    data(r, c.w / "o"))[1],
         BAD_INPUT, "meta_Cat.json:2: field 'title': invalid UTF-8"),
    Case("utf8-raw-skip-quarantines",
         lambda c: (put_line_bytes(meta_file(r := raw(c)), 3, b"About", b"Ab\xffout"),
                    data(r, c.w / "o", "--skip-bad-lines"))[1], OK, '"bad_line:invalid_utf8": 1'),
    Case("utf8-csv-title-column",
         lambda c: (put_line_bytes((d := csv_copy(c)) / "train.csv", 4, b",", b",\xfe", ), data(d, c.w / "o"))[1],
         BAD_INPUT, "train.csv:4: field 'history_item_title': invalid UTF-8"),
    Case("utf8-csv-item-json",
         lambda c: (_item_json_bad_bytes(d := csv_copy(c)), data(d, c.w / "o"))[1],
         BAD_INPUT, "field 'title': invalid UTF-8"),

    # --- timestamps: unit per file, plausible dates, date window
    Case("ts-2023-file-in-seconds-is-read-as-seconds",
         lambda c: (edit_records(reviews_file(r := raw(c, "amazon2023")), set_ts("timestamp", lambda i, t: t // 1000)),
                    data(r, c.w / "o"))[1], OK, '"unit": "seconds"'),
    Case("ts-2018-file-in-milliseconds-is-read-as-ms",
         lambda c: (edit_records(reviews_file(r := raw(c)), set_ts("unixReviewTime", lambda i, t: t * 1000)),
                    data(r, c.w / "o"))[1], OK, '"unit": "milliseconds"'),
    Case("ts-mixed-units",
         lambda c: (edit_records(reviews_file(r := raw(c, "amazon2023")),
                                 set_ts("timestamp", lambda i, t: t // 1000 if i % 50 == 0 else t)),
                    data(r, c.w / "o"))[1], BAD_INPUT, "field 'timestamp' mixes units"),
    Case("ts-one-far-future-value",
         lambda c: (edit_records(reviews_file(r := raw(c)), set_ts("unixReviewTime", far_future_at_line_9)),
                    data(r, c.w / "o"))[1], BAD_INPUT, "Cat.json:9: field 'unixReviewTime': 99999999999 is"),
    Case("ts-far-future-value-skipped",
         lambda c: (edit_records(reviews_file(r := raw(c)), set_ts("unixReviewTime", far_future_at_line_9)),
                    data(r, c.w / "o", "--skip-bad-lines"))[1], OK, '"bad_line:bad_timestamp": 1'),
    Case("ts-all-in-1970",
         lambda c: (edit_records(reviews_file(r := raw(c)), set_ts("unixReviewTime", lambda i, t: i)),
                    data(r, c.w / "o"))[1], BAD_INPUT, "no timestamp in the plausible range"),
    Case("ts-window-recorded",
         lambda c: data(raw(c), c.w / "o", "--date-window", "2017-01-01:2018-12-31", "--k-core", "2"),
         OK, '"window": [\n      "2017-01-01",'),
    Case("ts-window-excludes-everything", lambda c: data(raw(c), c.w / "o", "--date-window", "2001-01-01:2001-12-31"),
         BAD_INPUT, "no reviews in the date window 2001-01-01..2001-12-31"),
    Case("ts-window-reversed", lambda c: data(raw(c), c.w / "o", "--date-window", "2018-01-01:2017-01-01"),
         BAD_INPUT, "date_window starts (2018-01-01) after it ends (2017-01-01)"),
    Case("ts-window-bad-syntax", lambda c: data(raw(c), c.w / "o", "--date-window", "2018"),
         BAD_INPUT, "expected FIRST:LAST"),
    Case("ts-window-on-processed-csv", lambda c: data(csv_copy(c), c.w / "o", "--date-window", "2017-01-01:2018-01-01"),
         BAD_INPUT, "date_window needs raw reviews"),

    # --- the processed-CSV reader at parity with the raw readers
    Case("csv-empty-split",
         lambda c: (_keep_header((d := csv_copy(c)) / "valid.csv"), data(d, c.w / "o"))[1],
         BAD_INPUT, "valid.csv: split 'valid' is empty"),
    Case("csv-duplicate-rows",
         lambda c: (_duplicate_rows((d := csv_copy(c)) / "train.csv", [2, 3]), data(d, c.w / "o"))[1],
         OK, '"samples_duplicate": 2'),
    Case("csv-duplicate-item-record",
         lambda c: (_duplicate_item(d := csv_copy(c)), data(d, c.w / "o"))[1], OK, '"meta_duplicate": 1'),
    Case("csv-item-without-title",
         lambda c: (_untitle_item(d := csv_copy(c)), data(d, c.w / "o"))[1], OK, '"items_no_title": 1'),
    Case("csv-missing-column",
         lambda c: (_rename_header((d := csv_copy(c)) / "test.csv"), data(d, c.w / "o"))[1],
         BAD_INPUT, "test.csv:1: missing required column(s) ['item_id']"),
    Case("csv-item-json-not-json",
         lambda c: ((d := csv_copy(c)).joinpath("item.json").write_text('{"1": {"title": "x"},\n oops'),
                    data(d, c.w / "o"))[1], BAD_INPUT, "item.json:2: not valid JSON"),

    # --- raw input faults
    Case("input-missing", lambda c: data(c.w / "nope", c.w / "o"), BAD_INPUT, "nope: input does not exist"),
    Case("input-format-unknown", lambda c: ((c.w / "x").mkdir(), (c.w / "x" / "a.txt").write_text("?"),
                                            data(c.w / "x", c.w / "o"))[-1],
         BAD_INPUT, "cannot detect the input format"),
    Case("input-malformed-json-line",
         lambda c: (_insert_line(reviews_file(r := raw(c)), 5, '{"broken": '), data(r, c.w / "o"))[1],
         BAD_INPUT, "Cat.json:5: not valid JSON"),
    Case("input-truncated-gzip",
         lambda c: (_truncate(reviews_file(r := raw(c, gz=True))), data(r, c.w / "o"))[1],
         BAD_INPUT, "cannot read past this line"),

    # --- configuration: validated completely before any work or folder creation
    Case("config-unknown-section",
         lambda c: data(raw(c), c.w / "new" / "o", "--config", config(c, "dat:\n  k_core: 3\n")),
         BAD_INPUT, "unknown section(s) ['dat']"),
    Case("config-negative-k-core",
         lambda c: data(raw(c), c.w / "new" / "o", "--config", config(c, "data:\n  k_core: -3\n")),
         BAD_INPUT, "field 'k_core': Input should be greater than or equal to 1"),
    Case("config-zero-history", lambda c: data(raw(c), c.w / "o", "--config", config(c, "data:\n  max_history: 0\n")),
         BAD_INPUT, "field 'max_history'"),
    Case("config-bad-value-in-another-section",
         lambda c: data(raw(c), c.w / "o", "--config", config(c, "sids:\n  epochs: -1\n")),
         BAD_INPUT, "[sids]: invalid SidsConfig: field 'epochs'"),
    Case("config-zero-step-budget",
         lambda c: data(raw(c), c.w / "o", "--config", config(c, "align:\n  train:\n    max_steps: 0\n")),
         BAD_INPUT, "field 'train.max_steps': Value error, 0 is not a step budget"),
    Case("config-negative-step-budget",
         lambda c: data(raw(c), c.w / "o", "--config", config(c, "grpo:\n  max_steps: -5\n")),
         BAD_INPUT, "field 'max_steps': Value error, -5 is not a step budget"),
    Case("config-negative-budget-on-a-training-command",
         lambda c: ["grpo", "--model", "tiny-qwen3", "--dataset", str(c.w / "nope"), "--sids", str(c.w / "nope"),
                    "--out", str(c.w / "new" / "o"), "--config", config(c, "grpo:\n  max_steps: -2\n")],
         BAD_INPUT, "-2 is not a step budget"),
    Case("cli-zero-step-budget",
         lambda c: ["grpo", "--model", "tiny-qwen3", "--dataset", str(c.w / "nope"), "--sids", str(c.w / "nope"),
                    "--out", str(c.w / "new" / "o"), "--max-steps", "0"],
         BAD_INPUT, "0 is not a step budget"),
    Case("config-unknown-field", lambda c: data(raw(c), c.w / "o", "--config", config(c, "data:\n  kcore: 3\n")),
         BAD_INPUT, "field 'kcore': Extra inputs are not permitted"),
    Case("config-file-missing", lambda c: data(raw(c), c.w / "o", "--config", str(c.w / "none.yaml")),
         BAD_INPUT, "none.yaml: config file or preset not found"),
    Case("config-not-a-mapping", lambda c: data(raw(c), c.w / "o", "--config", config(c, "- a\n- b\n")),
         BAD_INPUT, "top level must be a mapping"),
    Case("run-config-unknown-section-makes-no-run-folder",
         lambda c: ["run", "--data", str(SAMPLE), "--out", str(c.w / "runs"), "--config", config(c, "grop: {}\n")],
         BAD_INPUT, "unknown section(s) ['grop']"),
    Case("run-input-missing-makes-no-run-folder",
         lambda c: ["run", "--data", str(c.w / "nope"), "--out", str(c.w / "runs"), "--config", "smoke"],
         BAD_INPUT, "nope: input does not exist"),
    Case("config-bad-yaml", lambda c: data(raw(c), c.w / "o", "--config", config(c, "data: [\n")),
         BAD_INPUT, "not valid YAML"),

    # --- the environment: disks and object stores
    Case("disk-read-only", lambda c: data(raw(c), c.mount_tmpfs("ro", "ro,size=1m") / "o"),
         ENVIRONMENT, "read-only file system; choose a writable --out"),
    Case("disk-full", lambda c: data(_big_raw(c), c.mount_tmpfs("small", "size=16k") / "o"),
         ENVIRONMENT, "no space left on device"),
    Case("s3-no-credentials", lambda c: (_no_credentials(c), data(raw(c), f"s3://{c.bucket}/o"))[1],
         ENVIRONMENT, "no object-store credentials found"),
    Case("s3-no-such-bucket", lambda c: data(raw(c), f"s3://no-such-bucket-{c.bucket}/o"),
         ENVIRONMENT, "the bucket does not exist"),
    Case("s3-input", lambda c: data(_upload_raw(c), c.w / "o"), OK, '"category": "Cat"'),
    Case("s3-input-empty-prefix", lambda c: data(f"s3://{c.bucket}/nothing", c.w / "o"),
         BAD_INPUT, "nothing: no objects under this prefix"),

    # --- tracebacks only on request
    Case("verbose-shows-the-traceback", lambda c: ["--verbose", *data(raw(c), c.w / "Cat")], BAD_INPUT,
         "Traceback (most recent call last)"),
]


def _put(c: Ctx, key: str, body: bytes) -> None:
    from sidreasoner_core.storage import s3_client

    s3_client().put_object(Bucket=c.bucket, Key=key, Body=body)


def _upload_raw(c: Ctx) -> str:
    root = raw(c)
    for p in root.iterdir():
        _put(c, f"in/Cat/{p.name}", p.read_bytes())
    shutil.rmtree(root)
    return f"s3://{c.bucket}/in/Cat"


def _no_credentials(c: Ctx) -> None:
    _ = c.bucket  # start the server and make the bucket first, with credentials
    for k in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_PROFILE"):
        c.monkeypatch.delenv(k, raising=False)
    c.monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(c.w / "none"))
    c.monkeypatch.setenv("AWS_CONFIG_FILE", str(c.w / "none"))
    c.monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    import boto3

    c.monkeypatch.setattr(boto3, "DEFAULT_SESSION", None)  # as in a fresh process: no cached credentials


def _big_raw(c: Ctx) -> Path:
    root, _ = make_raw(c.w / "Cat", "amazon2018", n_users=400, n_items=60)
    return root


def _item_json_bad_bytes(d: Path) -> None:
    p = d / "item.json"
    data = p.read_bytes()
    i = data.index(b'"title": "') + len(b'"title": "')
    p.write_bytes(data[:i] + b"\xe9" + data[i:])


def _keep_header(file: Path) -> None:
    file.write_text(file.read_text().splitlines()[0] + "\n")


def _duplicate_rows(file: Path, linenos: list[int]) -> None:
    lines = file.read_text().splitlines()
    file.write_text("\n".join(lines + [lines[n - 1] for n in linenos]) + "\n")


def _duplicate_item(d: Path) -> None:
    text = (d / "item.json").read_text().rstrip()
    items = json.loads(text)
    first = next(iter(items))
    extra = json.dumps({first: {**items[first], "title": "A second record"}})[1:-1]
    (d / "item.json").write_text(text[:-1] + ", " + extra + "}")


def _untitle_item(d: Path) -> None:
    items = json.loads((d / "item.json").read_text())
    items[next(iter(items))]["title"] = ""
    (d / "item.json").write_text(json.dumps(items))


def _rename_header(file: Path) -> None:
    lines = file.read_text().splitlines()
    lines[0] = lines[0].replace(",item_id,", ",target_id,")
    file.write_text("\n".join(lines) + "\n")


def _insert_line(file: Path, lineno: int, text: str) -> None:
    lines = file.read_text().splitlines()
    lines.insert(lineno - 1, text)
    write_lines(file, lines)


def _truncate(file: Path) -> None:
    file.write_bytes(file.read_bytes()[:-40])


# ------------------------------------------------------------------ the runner


def snapshot(root: Path) -> dict[str, str]:
    """Every path under `root` (hidden ones too) with a digest of its content."""
    out = {}
    for p in sorted(root.rglob("*")):
        rel = p.relative_to(root).as_posix()
        if p.is_symlink():
            out[rel] = "link:" + str(p.readlink())
        elif p.is_dir():
            out[rel] = "dir"
        else:
            out[rel] = hashlib.sha256(p.read_bytes()).hexdigest()
    return out


def bucket_snapshot(bucket: str | None) -> dict[str, str]:
    if bucket is None:
        return {}
    import os

    import boto3

    client = boto3.client("s3", endpoint_url=os.environ["AWS_ENDPOINT_URL_S3"], region_name="us-east-1",
                          aws_access_key_id="testing", aws_secret_access_key="testing")  # even in the no-credentials row
    pages = client.get_paginator("list_objects_v2").paginate(Bucket=bucket)
    return {o["Key"]: o["ETag"] for page in pages for o in page.get("Contents", [])}


def _out_of(args: list[str]) -> str:
    return args[args.index("--out") + 1]


def _outside(paths: dict[str, str], out_rel: str | None) -> dict[str, str]:
    if out_rel is None:
        return paths
    return {k: v for k, v in paths.items() if k != out_rel and not k.startswith(out_rel + "/")}


def test_the_table_has_enough_rows():
    assert len(CASES) >= 40 and len({c.id for c in CASES}) == len(CASES)


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_input_fault(case: Case, tmp_path, request, monkeypatch):
    from sidreasoner_core.cli import app

    monkeypatch.setenv("SIDREASONER_CACHE", str(tmp_path / "cache"))
    w = tmp_path / "w"
    w.mkdir()
    c = Ctx(w, request, monkeypatch)
    args = case.setup(c)
    out = _out_of(args)
    out_rel = None if out.startswith("s3://") else Path(out).resolve().relative_to(w.resolve()).as_posix() \
        if Path(out).resolve().is_relative_to(w.resolve()) else None
    before, before_s3 = snapshot(w), bucket_snapshot(c._bucket)

    res = CliRunner().invoke(app, args)

    text = res.output
    assert res.exit_code == case.code, text
    assert case.message in text, text
    errors = [line for line in text.splitlines() if line.startswith("error:")]
    if case.code == OK:
        assert not errors, text
    else:
        assert len(errors) == 1, text  # one line, naming what is wrong
        assert ("Traceback" in text) == ("--verbose" in args), text
    after, after_s3 = snapshot(w), bucket_snapshot(c._bucket)
    if case.code == OK:  # only the output changed
        assert _outside(after, out_rel) == _outside(before, out_rel)
        out_key = out[len(f"s3://{c._bucket}/"):] if out.startswith("s3://") else None
        assert {k: v for k, v in after_s3.items() if not (out_key and k.startswith(out_key + "/"))} == before_s3
    else:  # nothing changed at all: no partial output, no temp folder, no run folder
        assert after == before, sorted(set(after.items()) ^ set(before.items()))
        assert after_s3 == before_s3
