"""Processed-CSV reader, the `sidreasoner data` command and the data component."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from typer.testing import CliRunner

from sidreasoner_core.artifacts import open_artifact
from sidreasoner_core.data.config import DataConfig
from sidreasoner_core.data.errors import DataError
from sidreasoner_core.dataset import QUARANTINE_FILE, read_items, read_samples
from sidreasoner_core.data.stage import build, run

from conftest import REPO, SAMPLE
from data_helpers import make_raw

INDUSTRIAL = REPO.parent / "shared" / "data" / "amazon18" / "Industrial_and_Scientific"


def test_sample_reproduces_its_counts(sample_dataset):
    stats = sample_dataset.manifest["stats"]
    assert stats["format"] == "csv" and stats["items"] == 400 and stats["reference_sids"] == 400
    assert stats["samples"] == {"train": 249, "valid": 103, "test": 123}
    assert stats["dropped"] == {"items_no_title": 0, "meta_duplicate": 0, "samples_bad_item": 0,
                                "samples_duplicate": 0, "samples_no_title": 0}
    items, samples = read_items(sample_dataset.path), read_samples(sample_dataset.path)
    assert len(items) == 400 and items["item_id"].is_unique
    assert "_row" not in samples.columns
    first = samples[samples["split"] == "train"].iloc[0]
    assert first["user_id"] == "A1290" and first["history"] == ["463"] and first["target"] == "1286"


@pytest.mark.skipif(not INDUSTRIAL.is_dir(), reason="../shared/data/amazon18/Industrial_and_Scientific not present")
def test_full_industrial_counts():
    items, samples, stats, _ = build(DataConfig(), INDUSTRIAL)
    assert stats["items"] == 3686 == len(items)
    assert stats["samples"] == {"train": 10393, "valid": 4532, "test": 4533}


def _copy_sample(tmp_path: Path) -> Path:
    dst = tmp_path / "Industrial_and_Scientific"
    shutil.copytree(SAMPLE, dst)
    return dst


def _edit_line(file: Path, lineno: int, new: str | None = None, insert: str | None = None) -> None:
    lines = file.read_text().splitlines()
    if insert is not None:
        lines.insert(lineno - 1, insert)
    else:
        lines[lineno - 1] = new
    file.write_text("\n".join(lines) + "\n")


def test_wrong_field_count_names_file_and_line(tmp_path):
    d = _copy_sample(tmp_path)
    _edit_line(d / "valid.csv", 7, insert="A1,x,y,[1],2")
    with pytest.raises(DataError, match=r"valid\.csv:7: expected 7 fields, found 5"):
        build(DataConfig(), d)


def test_line_numbers_count_multiline_quoted_fields(tmp_path):
    d = _copy_sample(tmp_path)
    text = (d / "train.csv").read_text().splitlines()
    text[1] = text[1].replace("Hamburger", "Ham\nburger") if "Hamburger" in text[1] else \
        text[1].replace("['", "['line\nbreak ", 1)
    text.insert(4, "A9,x,y,not-a-list,2,[],z")  # physical line 6 once row 2 spans two lines
    (d / "train.csv").write_text("\n".join(text) + "\n")
    with pytest.raises(DataError, match=r"train\.csv:6: field 'history_item_id' is not a list literal"):
        build(DataConfig(), d)


def test_skip_bad_csv_lines_quarantines_them(tmp_path):
    d = _copy_sample(tmp_path)
    _edit_line(d / "test.csv", 3, insert="A1,x,y,[1],2")
    _edit_line(d / "test.csv", 5, insert="A2,x,y,[oops,2,[],z")
    _edit_line(d / "test.csv", 6, insert=",x,y,[1],2,[],z")
    art = run(DataConfig(skip_bad_lines=True), d, tmp_path / "out")
    stats = art.manifest["stats"]
    assert stats["samples"] == {"train": 249, "valid": 103, "test": 123}
    assert {k: v for k, v in stats["dropped"].items() if v} == {
        "bad_line:wrong_field_count": 1, "bad_line:malformed_history": 1, "bad_line:missing_field": 1}
    recs = [json.loads(x) for x in (art.path / QUARANTINE_FILE).read_text().splitlines()]
    assert [(Path(r["file"]).name, r["line"], r["reason"]) for r in recs] == [
        ("test.csv", 3, "wrong_field_count"), ("test.csv", 5, "malformed_history"), ("test.csv", 6, "missing_field")]
    assert "field 'user_id' is empty" in recs[2]["detail"]


def test_missing_column_is_named(tmp_path):
    d = _copy_sample(tmp_path)
    lines = (d / "train.csv").read_text().splitlines()
    lines[0] = lines[0].replace("history_item_id", "hist_ids")
    (d / "train.csv").write_text("\n".join(lines) + "\n")
    with pytest.raises(DataError, match=r"train\.csv:1: missing required column\(s\) \['history_item_id'\]"):
        build(DataConfig(), d)


def test_items_without_title_are_dropped_and_counted_as_in_raw(tmp_path):
    """Parity with the raw readers: an item without a usable title is dropped (items_no_title), its
    samples too (samples_no_title), and it leaves the histories it was in."""
    d = _copy_sample(tmp_path)
    items = json.loads((d / "item.json").read_text())
    clean = build(DataConfig(), d)[1]
    target = clean["target"].value_counts().index[0]  # an item that is some samples' target
    del items[target]["title"]
    (d / "item.json").write_text(json.dumps(items))
    its, samples, stats, _ = build(DataConfig(), d)
    assert stats["dropped"]["items_no_title"] == 1 and target not in set(its["item_id"])
    assert stats["dropped"]["samples_no_title"] == int((clean["target"] == target).sum()) > 0
    assert not samples["target"].eq(target).any() and not samples["history"].map(lambda h: target in h).any()


def test_unknown_history_id_names_the_row(tmp_path):
    d = _copy_sample(tmp_path)
    lines = (d / "valid.csv").read_text().splitlines()
    lines.insert(9, "A77,\"['t']\",t,\"[999999]\",7,[],z")
    (d / "valid.csv").write_text("\n".join(lines) + "\n")
    with pytest.raises(DataError, match=r"valid\.csv line 10: history item id '999999' is not in the item table"):
        build(DataConfig(), d)
    with pytest.raises(DataError, match=r"valid\.csv line 10: history item id"):
        build(DataConfig(skip_bad_lines=True), d)  # not a malformed line: never skipped


def test_every_row_skipped_is_an_error(tmp_path):
    d = _copy_sample(tmp_path)
    for split in ("train", "valid", "test"):
        f = d / f"{split}.csv"
        lines = f.read_text().splitlines()
        f.write_text("\n".join([lines[0]] + [",".join(["x"] * 3)] * 2) + "\n")
    with pytest.raises(DataError, match=r"train\.csv: split 'train' is empty \(no rows; 2 bad line\(s\) skipped\)"):
        build(DataConfig(skip_bad_lines=True), d)


# ------------------------------------------------------------------ CLI and component


def _cli(args):
    from sidreasoner_core.cli import app

    return CliRunner().invoke(app, args)


def test_cli_data_on_the_sample(tmp_path):
    res = _cli(["data", "--input", str(SAMPLE), "--out", str(tmp_path / "ds")])
    assert res.exit_code == 0, res.output
    art = open_artifact(tmp_path / "ds", kind="dataset")
    assert art.manifest["stats"]["samples"] == {"train": 249, "valid": 103, "test": 123}
    assert json.loads(res.stdout)["items"] == 400


def test_cli_data_raw_with_named_format_and_k(tmp_path):
    root, _ = make_raw(tmp_path / "Tools", "amazon2023", gz=True)
    res = _cli(["data", "--input", str(root), "--out", str(tmp_path / "ds"), "--format", "amazon2023",
                "--k-core", "3"])
    assert res.exit_code == 0, res.output
    art = open_artifact(tmp_path / "ds", kind="dataset")
    assert art.manifest["config"]["k_core"] == 3 and art.manifest["stats"]["format"] == "amazon2023"


def test_cli_data_bad_input_exits_2_naming_the_file(tmp_path):
    d = _copy_sample(tmp_path)
    _edit_line(d / "train.csv", 4, insert="A1,x")
    res = _cli(["data", "--input", str(d), "--out", str(tmp_path / "ds")])
    assert res.exit_code == 2
    assert "train.csv:4: expected 7 fields" in res.output and "Traceback" not in res.output
    assert not (tmp_path / "ds").exists()
    res = _cli(["data", "--input", str(d), "--out", str(tmp_path / "ds"), "--skip-bad-lines"])
    assert res.exit_code == 0 and (tmp_path / "ds" / QUARANTINE_FILE).is_file()
    res = _cli(["data", "--input", str(tmp_path / "nope"), "--out", str(tmp_path / "ds2")])
    assert res.exit_code == 2 and "nope: input does not exist" in res.output


def test_data_component_on_raw_input(tmp_path):
    from kfp.dsl import Dataset, Metrics

    from components.data import data_op

    root, _ = make_raw(tmp_path / "Tools", "amazon2018")
    ds = Dataset(name="dataset", uri=str(tmp_path / "dataset"))
    metrics = Metrics(name="stats", uri=str(tmp_path / "stats"))
    data_op.python_func(raw=Dataset(name="raw", uri=str(root)), fingerprint="test", config_json=json.dumps({"data": {"k_core": 4}}), dataset=ds,
                        stats=metrics, category="Tools_Cat")
    art = open_artifact(ds.path, kind="dataset")
    assert art.manifest["stats"]["category"] == "Tools_Cat"
    assert set(read_items(art.path)["category"]) == {"Tools_Cat"}
    assert metrics.metadata["items"] == art.manifest["stats"]["items"]
    assert metrics.metadata["dropped_reviews_k_core"] == art.manifest["stats"]["dropped"]["reviews_k_core"]


def test_named_format_that_does_not_fit_the_directory(tmp_path):
    root, _ = make_raw(tmp_path / "Tools", "amazon2018")
    with pytest.raises(DataError, match=r"not a processed-CSV directory, missing \['item.json'"):
        build(DataConfig(format="csv"), root)
    with pytest.raises(DataError, match="expected one reviews file and one meta"):
        build(DataConfig(format="amazon2023"), SAMPLE)


def test_csv_and_raw_readers_count_the_same_faults_the_same_way(tmp_path):
    """The same meta faults (a scraped-HTML title, a too-short title, a repeated item record) arrive once as
    a raw 2018 dump and once as processed CSV: both readers drop the same items, under the same reasons."""
    import csv as csvmod

    from data_helpers import write_lines

    root, _ = make_raw(tmp_path / "raw" / "Cat", "amazon2018", seed=4)
    meta = root / "meta_Cat.json"
    recs = [json.loads(x) for x in meta.read_text().splitlines()]
    recs[1]["title"] = '<span class="a-size-medium">x</span>'
    recs[2]["title"] = " a "
    write_lines(meta, [json.dumps(r) for r in recs] + [json.dumps(dict(recs[3], title="Second copy"))])
    items_raw, samples_raw, stats_raw, _ = build(DataConfig(k_core=2), root)

    d = tmp_path / "csv" / "Cat"
    d.mkdir(parents=True)
    entries = [json.dumps(r["asin"]) + ": " + json.dumps({"title": r["title"], "description": "",
                                                           "brand": "", "categories": ""})
               for r in recs + [dict(recs[3], title="Second copy")]]
    (d / "item.json").write_text("{" + ",\n".join(entries) + "}")  # the repeated key, as a file can hold it
    for split in ("train", "valid", "test"):
        rows = samples_raw[samples_raw["split"] == split]
        with open(d / f"{split}.csv", "w", newline="") as f:
            w = csvmod.writer(f)
            w.writerow(["user_id", "history_item_id", "item_id"])
            w.writerows([u, repr(list(h)), t] for u, h, t in zip(rows["user_id"], rows["history"], rows["target"]))
    items_csv, samples_csv, stats_csv, _ = build(DataConfig(), d)
    for reason in ("items_no_title", "meta_duplicate"):
        assert stats_csv["dropped"][reason] == stats_raw["dropped"][reason] > 0, reason
    assert set(items_csv["item_id"]) >= set(items_raw["item_id"])
    assert dict(zip(items_csv["item_id"], items_csv["title"]))[recs[3]["asin"]] == recs[3]["title"]  # first wins
    assert len(samples_csv) == len(samples_raw) and stats_csv["samples"] == stats_raw["samples"]
