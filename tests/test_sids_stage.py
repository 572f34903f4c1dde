"""The SID stage end to end: real encoder + RQ-VAE on the sample, from_index mode, determinism,
bad input, CLI and the KFP component's python_func."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest
import torch

from conftest_sids import FAST, make_dataset, sample_embeddings, sample_sids  # noqa: F401 (fixtures)
from sidreasoner_core.config import ConfigError
from sidreasoner_core.dataset import read_items
from sidreasoner_core.sid import Catalogue, parse_sid
from sidreasoner_core.sids.config import SidsConfig
from sidreasoner_core.sids.errors import SidsError
from sidreasoner_core.sids.rqvae import RQVAE
from sidreasoner_core.sids.stage import run
from sidreasoner_core.sid import SIDS_FILE, read_sid_table


def read_sids(artifact_dir):
    """The artifact's SID table as written (item_id, sid, codes)."""
    return pd.read_parquet(Path(artifact_dir) / SIDS_FILE)


def load_catalogue(artifact_dir):
    return read_sid_table(artifact_dir).catalogue


def test_sample_sids_are_collision_free(sample_dataset, sample_sids):
    m = sample_sids.manifest["metrics"]
    items = read_items(sample_dataset.path)
    table = read_sids(sample_sids.path)
    assert table["item_id"].tolist() == items["item_id"].tolist()          # item order kept
    assert table["sid"].is_unique and m["shared_sids_after"] == 0 and m["unique_sids"] == 400
    assert m["shared_sids_before"] > 0                                     # identical items exist in the sample
    cat = load_catalogue(sample_sids.path)
    assert len(cat) == 400 and cat.levels == 3
    assert all(parse_sid(s, levels=3, codes_per_level=256) == tuple(c) for s, c in zip(table["sid"], table["codes"]))
    emb = np.load(sample_sids.path / "embeddings.npy")
    assert emb.shape == (400, 384) and emb.dtype == np.float32 and np.isfinite(emb).all()
    assert np.allclose(np.linalg.norm(emb, axis=1), 1.0, atol=1e-3)
    for key in ("recon_loss", "quant_loss", "code_usage_l0", "perplexity_l2", "reference_shared_sids"):
        assert key in m
    assert 1.0 <= m["perplexity_l0"] <= 256 and 0 < m["code_usage_l0"] <= 1
    assert json.loads((sample_sids.path / "metrics.json").read_text())["unique_sids"] == 400
    # the saved RQ-VAE reproduces the codes of every item that resolution did not move
    model = RQVAE.load(sample_sids.path / "rqvae.pt")
    codes, _, _ = model.assign(emb)
    moved = (codes != np.array(table["codes"].tolist())).any(1).sum()
    assert moved == m["reassigned_items"]


def test_seeded_runs_are_identical(sample_dataset, sample_embeddings, tmp_path):
    cfg = SidsConfig(embeddings=sample_embeddings, epochs=5, seed=7)
    a = run(cfg, sample_dataset, tmp_path / "a", progress=False)
    b = run(cfg, sample_dataset, tmp_path / "b", progress=False)
    c = run(cfg.model_copy(update={"seed": 8}), sample_dataset, tmp_path / "c", progress=False)
    assert read_sids(a.path)["sid"].tolist() == read_sids(b.path)["sid"].tolist()
    assert a.manifest["files"]["sids.parquet"] == b.manifest["files"]["sids.parquet"]
    wa, wb = (torch.load(x.path / "rqvae.pt", weights_only=True)["state_dict"] for x in (a, b))
    assert all(torch.equal(wa[k], wb[k]) for k in wa)
    assert read_sids(a.path)["sid"].tolist() != read_sids(c.path)["sid"].tolist()


def test_identical_texts_get_distinct_sids(tmp_path):
    """300 items with the same text (identical embeddings) in a 32x32 code space: one prefix overflows,
    so those items are spread over the last level and get an extra level; all stay distinct."""
    items = [{"item_id": f"dup{i}", "title": "Stainless steel hex bolt, pack of 100"} for i in range(300)]
    items += [{"item_id": f"u{i}", "title": t} for i, t in enumerate(
        ["Nitrile gloves, large", "Digital caliper 6 inch", "Lab thermometer", "Safety goggles"])]
    ds = make_dataset(tmp_path / "ds", items)
    art = run(SidsConfig(**FAST, levels=2, codes_per_level=32), ds, tmp_path / "sids", progress=False)
    table = read_sids(art.path)
    assert table["sid"].is_unique and len(table) == 304
    Catalogue(zip(table["item_id"], table["sid"]))
    m = art.manifest["metrics"]
    assert m["max_items_per_sid_before"] >= 300 and m["shared_sids_after"] == 0
    assert m["extra_level_items"] >= 300 and m["max_levels"] == 3
    emb = np.load(art.path / "embeddings.npy")
    assert np.allclose(emb[:300], emb[0], atol=1e-5)


def test_from_index_reports_and_resolves_reference_collisions(sample_dataset, tmp_path):
    items = read_items(sample_dataset.path)
    shared = items["reference_sid"].value_counts()
    assert (shared > 1).sum() == 3                                         # the sample's reference index
    art = run(SidsConfig(from_index=True), sample_dataset, tmp_path / "resolved", progress=False)
    m = art.manifest["metrics"]
    assert m["shared_sids_before"] == 3 and m["shared_sids_after"] == 0
    assert not (art.path / "rqvae.pt").exists() and not (art.path / "embeddings.npy").exists()
    table = read_sids(art.path).merge(items[["item_id", "reference_sid"]], on="item_id")
    changed = table[table["sid"] != table["reference_sid"]]
    assert len(changed) == m["reassigned_items"] == m["colliding_items_before"] - 3
    assert changed["reference_sid"].isin(shared[shared > 1].index).all()  # only colliding items move
    assert all(s[:len(r) - len(r.split("><")[-1])] == r[:len(r) - len(r.split("><")[-1])]
               for s, r in zip(changed["sid"], changed["reference_sid"]))  # within the same (a, b) prefix
    load_catalogue(art.path)

    kept = run(SidsConfig(from_index=True, collisions="keep"), sample_dataset, tmp_path / "kept", progress=False)
    assert kept.manifest["metrics"]["shared_sids_after"] == 3
    assert read_sids(kept.path)["sid"].tolist() == items["reference_sid"].tolist()
    with pytest.raises(SidsError, match="3 SIDs are shared"):
        run(SidsConfig(from_index=True, collisions="error"), sample_dataset, tmp_path / "err", progress=False)
    with pytest.raises(ConfigError, match="only allowed with from_index"):
        SidsConfig.build({"collisions": "keep"})


def test_bad_inputs_give_clear_errors(sample_dataset, sample_embeddings, tmp_path):
    ds = make_dataset(tmp_path / "empty", [{"item_id": "ok", "title": "A drill"},
                                           {"item_id": "blank-7", "title": "  ", "description": ""}])
    with pytest.raises(SidsError, match="item 'blank-7' has empty text"):
        run(SidsConfig(**FAST), ds, tmp_path / "o1", progress=False)

    emb = np.load(sample_embeddings)
    bad = emb.copy()
    bad[5, 3] = np.nan
    np.save(tmp_path / "nan.npy", bad)
    item5 = read_items(sample_dataset.path)["item_id"][5]
    with pytest.raises(SidsError, match=rf"item '{item5}' \(row 5\) has NaN"):
        run(SidsConfig(embeddings=str(tmp_path / "nan.npy")), sample_dataset, tmp_path / "o2", progress=False)
    with pytest.raises(SidsError, match="embedding dimension 384, expected 100"):
        run(SidsConfig(embeddings=sample_embeddings, embedding_dim=100), sample_dataset, tmp_path / "o3")
    np.save(tmp_path / "short.npy", emb[:10])
    with pytest.raises(SidsError, match="10 embeddings for 400 items"):
        run(SidsConfig(embeddings=str(tmp_path / "short.npy")), sample_dataset, tmp_path / "o4")
    with pytest.raises(SidsError, match="400 items do not fit the code space of 2 levels x 16 codes"):
        run(SidsConfig(embeddings=sample_embeddings, levels=2, codes_per_level=16), sample_dataset, tmp_path / "o5")
    ds2 = make_dataset(tmp_path / "noref", [{"item_id": "x1", "title": "A", "reference_sid": "<a_1><b_2><c_3>"},
                                            {"item_id": "x2", "title": "B", "reference_sid": "<a_1><b_02><c_3>"}])
    with pytest.raises(SidsError, match="item 'x2': bad reference_sid.*leading zeros"):
        run(SidsConfig(from_index=True), ds2, tmp_path / "o6")
    assert not any((tmp_path / f"o{i}").exists() for i in range(1, 7))    # nothing half-written


def test_parquet_embeddings_by_item_id(sample_dataset, sample_embeddings, tmp_path):
    import pyarrow as pa

    ids = read_items(sample_dataset.path)["item_id"].tolist()
    emb = np.load(sample_embeddings)
    rev = pa.table({"item_id": ids[::-1], "embedding": [list(map(float, v)) for v in emb[::-1]]})
    pq.write_table(rev, tmp_path / "emb.parquet")
    a = run(SidsConfig(embeddings=str(tmp_path / "emb.parquet"), epochs=2), sample_dataset, tmp_path / "a")
    b = run(SidsConfig(embeddings=sample_embeddings, epochs=2), sample_dataset, tmp_path / "b")
    assert read_sids(a.path)["sid"].tolist() == read_sids(b.path)["sid"].tolist()
    pq.write_table(rev.slice(1), tmp_path / "missing.parquet")
    with pytest.raises(SidsError, match=f"no embedding for item '{ids[-1]}'"):
        run(SidsConfig(embeddings=str(tmp_path / "missing.parquet")), sample_dataset, tmp_path / "c")


def test_cli(sample_dataset, sample_embeddings, tmp_path):
    from typer.testing import CliRunner

    from sidreasoner_core.cli import app

    out = tmp_path / "sids"
    res = CliRunner().invoke(app, ["sids", "--dataset", str(sample_dataset.path), "--out", str(out),
                                   "--embeddings", sample_embeddings, "--epochs", "2"])
    assert res.exit_code == 0, res.output
    assert json.loads(res.output[res.output.index("{"):])["shared_sids_after"] == 0
    assert len(load_catalogue(out)) == 400
    res = CliRunner().invoke(app, ["sids", "--dataset", str(sample_dataset.path), "--out", str(tmp_path / "x"),
                                   "--collisions", "keep"])
    assert res.exit_code == 2 and "only allowed with from_index" in res.output
    res = CliRunner().invoke(app, ["sids", "--dataset", str(tmp_path / "nope"), "--out", str(tmp_path / "y")])
    assert res.exit_code == 2 and "artifact directory does not exist" in res.output


def test_component_python_func(sample_dataset, sample_embeddings, tmp_path):
    from kfp.dsl import Dataset, Metrics

    from components.sids import sids_op

    sids = Dataset(name="sids", uri=str(tmp_path / "sids"))
    metrics = Metrics(name="metrics", uri=str(tmp_path / "metrics"))
    cfg = {"sids": {"embeddings": sample_embeddings, "epochs": 3}, "data": {"format": "auto"}}
    sids_op.python_func(dataset=Dataset(name="d", uri=str(sample_dataset.path)), config_json=json.dumps(cfg),
                        sids=sids, metrics=metrics)
    assert metrics.metadata["shared_sids_after"] == 0 and metrics.metadata["items"] == 400
    assert len(read_sid_table(sids.path).catalogue) == 400
    assert json.loads((tmp_path / "sids" / "manifest.json").read_text())["kind"] == "sids"


def test_step_logs_to_mlflow(sample_dataset, sample_embeddings, tmp_path):
    import mlflow

    from sidreasoner_core.sids.stage import step

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    cfg = json.dumps({"sids": {"embeddings": sample_embeddings, "epochs": 4}})
    metrics = step(cfg, str(sample_dataset.path), str(tmp_path / "sids"), tracking_uri=uri, seed=3)
    client = mlflow.MlflowClient(tracking_uri=uri)
    (run,) = client.search_runs(["0"])
    assert run.data.params["seed"] == "3" and run.data.params["levels"] == "3"
    assert run.data.metrics["shared_sids_after"] == metrics["shared_sids_after"] == 0
    assert [m.step for m in client.get_metric_history(run.info.run_id, "train_loss")] == [0, 1, 2, 3, 3]
    logged = {f.path for f in client.list_artifacts(run.info.run_id, "sids")}
    assert {"sids/metrics.json", "sids/history.json"} <= logged
    assert str(sample_dataset.path) in run.inputs.dataset_inputs[0].dataset.source


def test_encoder_from_s3_matches_local(moto_server, s3_bucket, tmp_path, monkeypatch):
    from sidreasoner_core.sids.embed import encode, resolve_encoder
    from sidreasoner_core.storage import upload_dir

    monkeypatch.setenv("SIDREASONER_CACHE", str(tmp_path / "cache"))
    local = resolve_encoder("all-minilm-l6-v2")
    upload_dir(local, f"s3://{s3_bucket}/encoders/minilm")
    texts = ["Digital caliper, 6 inch. Brand: Neiko.", "Nitrile gloves, large, box of 100."]
    via_s3 = encode(texts, f"s3://{s3_bucket}/encoders/minilm", progress=False, max_seq_length=32)
    assert resolve_encoder(f"s3://{s3_bucket}/encoders/minilm").is_relative_to(tmp_path / "cache")
    np.testing.assert_allclose(via_s3, encode(texts, str(local), progress=False, max_seq_length=32), atol=1e-6)
    with pytest.raises(SidsError, match="encoder"):
        resolve_encoder(str(tmp_path / "no-such-encoder"))


def test_embedding_cache_skips_the_encoder_on_rerun(tmp_path, monkeypatch):
    from sidreasoner_core.sids import embed

    monkeypatch.setenv("SIDREASONER_CACHE", str(tmp_path / "cache"))
    items = [{"item_id": f"i{i}", "title": f"Hex key set, {i} pieces"} for i in range(5)]
    ds = make_dataset(tmp_path / "ds", items)
    cfg = SidsConfig(**{**FAST, "cache_embeddings": True, "epochs": 1})
    first = run(cfg, ds, tmp_path / "a", progress=False)
    assert len(list((tmp_path / "cache" / "embeddings").glob("*.npy"))) == 1

    def no_encoder(*a, **k):
        raise AssertionError("encoder called despite a cached result")

    monkeypatch.setattr(embed, "encode", no_encoder)
    second = run(cfg, ds, tmp_path / "b", progress=False)
    assert np.array_equal(np.load(first.path / "embeddings.npy"), np.load(second.path / "embeddings.npy"))
    changed = make_dataset(tmp_path / "ds2", [{**items[0], "title": "Something else"}, *items[1:]])
    with pytest.raises(AssertionError, match="encoder called"):  # other text: a cache miss
        run(cfg, changed, tmp_path / "c", progress=False)


def test_encoder_threads_do_not_change_the_embeddings(sample_dataset):
    """`sids.encoder_threads` (all cores by default) may differ from the RQ-VAE's single thread because
    the encoder's embeddings on the shipped items equal one thread's bit for bit."""
    from sidreasoner_core.sids.embed import encode, item_texts
    from sidreasoner_core.training.runtime import cpu_threads

    cfg = SidsConfig()
    texts = item_texts(read_items(sample_dataset.path), cfg.text_fields, cfg.max_text_chars)[:96]
    by_threads = {}
    for n in (1, 2):
        with cpu_threads(n):
            by_threads[n] = encode(texts, cfg.encoder, cfg.encode_batch_size, progress=False,
                                   max_seq_length=cfg.max_seq_length)
    assert by_threads[1].shape == (96, 384)
    assert np.array_equal(by_threads[1], by_threads[2])
