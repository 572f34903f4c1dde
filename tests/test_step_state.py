"""Resumable steps on a cluster: a retried pod starts on empty scratch and finds its run's
checkpoints and teacher answers in the persistent step state (`<state uri>/<run id>/<step>/`).

The store is moto's S3 server over HTTP (or a local folder standing in for a PVC); the step's
process is really killed (SIGKILL / SIGTERM), the retry runs with the same run id on a fresh
scratch directory, and the teacher is a real HTTP server counting every request.
"""
from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import yaml
from conftest_enrich import GATE, SECRET, ChatServer, Gate, Reply, assert_every_record_accounted, completion, enrich_inputs, smart_answer  # noqa: F401

from sidreasoner_core import storage
from sidreasoner_core.enrich.config import EnrichConfig
from sidreasoner_core.step_state import STATE_URI_ENV, step_state_uri
from sidreasoner_core.training.checkpoints import CheckpointStore, last_complete_checkpoint

REPO = Path(__file__).resolve().parents[1]



def _stored_answers(uri: str) -> int:
    return sum(len(storage.read_bytes(f"{uri}/{k}").splitlines()) for k in storage.list_keys(uri))


@pytest.fixture
def run_env(monkeypatch):
    """Sets the pipeline run id and the state location the way the pod spec does."""
    def set_env(state_uri: str, run_id: str) -> dict:
        monkeypatch.setenv(STATE_URI_ENV, state_uri)
        monkeypatch.setenv("SIDREASONER_RUN_ID", run_id)
        return {**os.environ}
    return set_env


@pytest.mark.parametrize("kill, flush", [
    (signal.SIGKILL, dict(state_flush_answers=5, state_flush_s=0.2)),  # killed once the periodic flush saved all
    (signal.SIGTERM, dict(state_flush_answers=10_000, state_flush_s=3600)),  # only the SIGTERM flush can save them
], ids=["sigkill-after-flush", "sigterm-flushes"])
def test_retried_enrich_pod_pays_no_prompt_twice(enrich_inputs, tmp_path, s3_bucket, run_env, kill, flush):
    dataset, sids = enrich_inputs
    env = run_env(f"s3://{s3_bucket}/state", "run-enrich-1")
    store = step_state_uri("enrich", "cache")
    assert store == f"s3://{s3_bucket}/state/run-enrich-1/enrich/cache"
    settings = dict(teacher="openai", model="teacher-test", api_key_env="ENRICH_TEST_KEY", concurrency=4,
                    request_timeout_s=60, max_retries=2, backoff_base_s=0.01, max_items=10, max_user_samples=6,
                    temperature=0.0, **flush)
    gate = Gate()
    with ChatServer(gate) as server:
        scratch1 = tmp_path / "pod1"
        scratch1.mkdir()
        cfg_file = scratch1 / "config.yaml"
        cfg_file.write_text(yaml.safe_dump({"enrich": {**settings, "base_url": server.url}}))
        proc = subprocess.Popen([sys.executable, "-c", "from sidreasoner_core.cli import app; app()", "enrich",
                                 "--dataset", str(dataset.path), "--sids", str(sids.path),
                                 "--out", str(scratch1 / "corpus"), "--config", str(cfg_file)],
                                env={**env, "ENRICH_TEST_KEY": SECRET}, stdout=subprocess.PIPE,
                                stderr=subprocess.STDOUT)
        local_cache = scratch1 / ".corpus.enrich-cache" / "responses.jsonl"
        deadline = time.time() + 90
        # SIGKILL: wait until the periodic flush has put every answer in the store; SIGTERM: kill as
        # soon as the answers are in the pod's scratch (nothing flushed yet: the flush interval is an hour)
        done = (lambda: _stored_answers(store) >= GATE) if kill == signal.SIGKILL else \
            (lambda: local_cache.is_file() and len(local_cache.read_text().splitlines()) >= GATE)
        while not done() and time.time() < deadline and proc.poll() is None:
            time.sleep(0.05)
        assert done(), proc.stdout.read().decode()[-2000:] if proc.poll() is not None else "timed out"
        if kill == signal.SIGTERM:
            assert _stored_answers(store) == 0  # so the store's content below came from the SIGTERM flush
        time.sleep(0.2)  # let the blocked workers pile up requests at the gate
        proc.send_signal(kill)
        proc.wait(30)
        output = proc.stdout.read().decode()
        assert proc.returncode != 0
        assert _stored_answers(store) == GATE, output[-2000:]
        first_answered = {k for k, v in server.answered.items() if v}
        assert len(first_answered) == GATE and server.requests > GATE  # requests were in flight at the kill
        seen_before = dict(server.seen)
        shutil.rmtree(scratch1)  # the retried pod gets fresh scratch

        gate.release.set()
        gate.answered = -10_000  # answer everything from now on
        os.environ["ENRICH_TEST_KEY"] = SECRET
        try:
            from sidreasoner_core.enrich.stage import run

            art = run(EnrichConfig(**settings, base_url=server.url), dataset, sids, tmp_path / "pod2" / "corpus")
        finally:
            del os.environ["ENRICH_TEST_KEY"]
        seen_after = {k: v - seen_before.get(k, 0) for k, v in server.seen.items()}
        answered = dict(server.answered)
    asked_again = {k for k in first_answered if seen_after.get(k, 0)}
    assert not asked_again, f"the retry re-sent {len(asked_again)} prompt(s) answered before the kill"
    assert max(answered.values()) == 1, "a prompt was answered twice"
    usage = json.loads((art.path / "usage.json").read_text())
    assert usage["cache_hits"] >= GATE
    _, _, failed = assert_every_record_accounted(art, 10, 6)
    assert failed == []
    assert storage.list_keys(store) == []  # published: the run's state is dropped
    assert SECRET not in output


def test_cache_shards_merge_and_other_runs_start_clean(tmp_path, run_env):
    """On a volume (PVC path): shards of several attempts merge into one; another run id sees nothing."""
    from sidreasoner_core.enrich.cache import ResponseCache, StoreSync

    run_env(str(tmp_path / "pvc"), "run-a")
    uri = step_state_uri("enrich", "cache")
    for attempt in range(3):
        cache = ResponseCache(tmp_path / f"scratch{attempt}", sync=StoreSync(uri, flush_every=2, flush_s=60))
        assert len(cache) == 2 * attempt
        cache.put(f"k{attempt}a", "x", "stop", {})
        cache.put(f"k{attempt}b", "y", "stop", {})
        cache.close()
        assert len(storage.list_keys(uri)) == (1 if attempt == 0 else 2)  # merged shard + this attempt's
    (Path(uri) / "shard-zz-torn.jsonl").write_text('{"key": "k9", "content": "z"}\n{"key": ')  # unreadable line
    assert {*ResponseCache(tmp_path / "s4", sync=StoreSync(uri)).entries} == {
        "k0a", "k0b", "k1a", "k1b", "k2a", "k2b", "k9"}
    run_env(str(tmp_path / "pvc"), "run-b")
    assert len(ResponseCache(tmp_path / "s5", sync=StoreSync(step_state_uri("enrich", "cache")))) == 0


def _fake_checkpoint(ckpt_dir: Path, step: int) -> Path:
    p = ckpt_dir / f"checkpoint-{step}"
    p.mkdir(parents=True)
    (p / "trainer_state.json").write_text(json.dumps({"global_step": step}))
    (p / "model.safetensors").write_bytes(os.urandom(64 * step))
    return p


@pytest.mark.parametrize("where", ["s3", "pvc"])
def test_only_complete_checkpoints_are_restored(tmp_path, where, request):
    uri = (f"s3://{request.getfixturevalue('s3_bucket')}/state/r/align/checkpoints" if where == "s3"
           else str(tmp_path / "pvc" / "r" / "align" / "checkpoints"))
    store = CheckpointStore(uri)
    local = tmp_path / "pod1" / "checkpoints"
    for step in (2, 4, 6):
        _fake_checkpoint(local, step)
        if step == 2:
            shutil.rmtree(local / "checkpoint-2")  # rotated away by the trainer before the next upload
            continue
        store.upload(local / f"checkpoint-{step}")
    names = {k.split("/")[0] for k in storage.list_keys(uri)}
    assert names == {"checkpoint-4", "checkpoint-4.done", "checkpoint-6", "checkpoint-6.done"}
    # a kill during the upload of checkpoint-8 left files without a marker: never taken
    storage.put_bytes(f"{uri}/checkpoint-8/model.safetensors", b"half")
    # checkpoint-6's marker lists a file the store lost: it falls back to checkpoint-4
    storage.delete_key(f"{uri}/checkpoint-6/model.safetensors")
    fresh = tmp_path / "pod2" / "checkpoints"
    fresh.mkdir(parents=True)
    restored = store.restore(fresh)
    assert restored == str(fresh / "checkpoint-4") == last_complete_checkpoint(fresh)
    assert (fresh / "checkpoint-4" / "model.safetensors").read_bytes() == \
        (local / "checkpoint-4" / "model.safetensors").read_bytes()
    assert sorted(p.name for p in fresh.iterdir()) == ["checkpoint-4"]  # no download leftovers
    # a local checkpoint wins: nothing is downloaded over it
    assert store.restore(local) == str(local / "checkpoint-6")


def test_curves_and_kept_policy_travel_with_the_checkpoint(tmp_path, s3_bucket):
    """A stage's curves (a snapshot inside each stored checkpoint) and its kept `best-<step>` policy come back
    with the checkpoint a retried pod resumes from; a policy kept after that checkpoint does not."""
    uri = f"s3://{s3_bucket}/state/r/grpo/checkpoints"
    work = tmp_path / "pod1" / "work"
    store = CheckpointStore(uri, beside=work)

    def keep(step: int) -> None:
        for old in work.glob("best-*"):
            shutil.rmtree(old)
        (work / f"best-{step}").mkdir(parents=True)
        (work / f"best-{step}" / "model.safetensors").write_bytes(os.urandom(32 + step))

    work.mkdir(parents=True)
    (work / "curves.jsonl").write_text('{"step": 3, "eval/recall@10": 0.2}\n')
    keep(3)
    store.upload(_fake_checkpoint(work / "checkpoints", 4))
    assert {k.split("/")[0] for k in storage.list_keys(uri)} == {"checkpoint-4", "checkpoint-4.done", "best-3",
                                                                 "best-3.done"}
    # step 5 kept a better policy; the pod died storing checkpoint-6 (its files, no marker)
    (work / "curves.jsonl").write_text('{"step": 3, "eval/recall@10": 0.2}\n{"step": 5, "eval/recall@10": 0.3}\n')
    keep(5)
    store._put(work / "best-5")
    storage.put_bytes(f"{uri}/checkpoint-6/model.safetensors", b"half")

    fresh = tmp_path / "pod2" / "work"
    retry = CheckpointStore(uri, beside=fresh)
    assert retry.restore(fresh / "checkpoints") == str(fresh / "checkpoints" / "checkpoint-4")
    assert (fresh / "curves.jsonl").read_text() == '{"step": 3, "eval/recall@10": 0.2}\n'  # as at checkpoint-4
    assert sorted(p.name for p in fresh.glob("best-*")) == ["best-3"]
    assert (fresh / "best-3" / "model.safetensors").read_bytes() == (
        storage.read_bytes(f"{uri}/best-3/model.safetensors"))
    # the next stored checkpoint drops the replaced policy from the store
    shutil.rmtree(fresh / "best-3")
    (fresh / "best-7").mkdir()
    (fresh / "best-7" / "w").write_bytes(b"7")
    retry.upload(_fake_checkpoint(fresh / "checkpoints", 8))
    names = {k.split("/")[0] for k in storage.list_keys(uri)}
    assert "best-7.done" in names and not names & {"best-3", "best-3.done"}


KILLED_ALIGN = textwrap.dedent("""
    import os, signal, sys
    sys.path.insert(0, {tests!r})
    from transformers import TrainerCallback
    from align_helpers import tiny_config
    from sidreasoner_core.align.config import AlignConfig
    from sidreasoner_core.align.stage import run
    from sidreasoner_core.artifacts import open_artifact

    class KillAfterCheckpoint(TrainerCallback):  # the pod dies after checkpoint-2 was saved (and copied)
        def on_step_end(self, args, state, control, **kw):
            if state.global_step == 3:
                os.kill(os.getpid(), signal.SIGKILL)

    cfg = AlignConfig.build({config!r})
    run(cfg, open_artifact({dataset!r}), open_artifact({sids!r}), None, {out!r}, callbacks=[KillAfterCheckpoint()])
""")


def test_retried_training_pod_resumes_from_the_stored_checkpoint(sample_dataset, tmp_path, s3_bucket, run_env):
    sys.path.insert(0, str(REPO / "tests"))
    from align_helpers import reference_sids_artifact, tiny_config

    from sidreasoner_core.align.config import AlignConfig
    from sidreasoner_core.align.stage import run

    sids = reference_sids_artifact(sample_dataset, tmp_path / "sids")
    config = {**tiny_config(), "gsm8k_eval_n": 0, "max_per_task": 4, "eval_tasks": ["sid_history_to_sid"],
              "task_ratios": {"gsm8k": 0}}
    env = run_env(f"s3://{s3_bucket}/state", "run-align-1")
    store = step_state_uri("align", "checkpoints")
    out1 = tmp_path / "pod1" / "model"
    script = KILLED_ALIGN.format(tests=str(REPO / "tests"), config=config, dataset=str(sample_dataset.path),
                                 sids=str(sids.path), out=str(out1))
    proc = subprocess.run([sys.executable, "-c", script], env=env, cwd=REPO, capture_output=True, text=True,
                          timeout=600)
    assert proc.returncode == -signal.SIGKILL, proc.stderr[-3000:]
    assert not out1.exists()
    assert {k.split("/")[0] for k in storage.list_keys(store)} >= {"checkpoint-2", "checkpoint-2.done"}
    shutil.rmtree(tmp_path / "pod1")  # the retried pod gets fresh scratch

    art = run(AlignConfig.build(config), sample_dataset, sids, None, tmp_path / "pod2" / "model")
    m = art.manifest["metrics"]
    assert m["resumed_from_step"] == 2 and m["global_step"] == 4
    assert storage.list_keys(store) == []  # published: the run's checkpoints are dropped


def test_retried_grpo_worker_resumes_from_the_stored_checkpoint(tmp_path, s3_bucket):
    """GRPO's launched-worker entry point (as on a multi-GPU pod) copies each checkpoint through the
    payload's store; SIGKILLed after a stored checkpoint, the retry on fresh scratch resumes there."""
    sys.path.insert(0, str(REPO / "tests"))
    from reasoning_helpers import one_torch_thread, planted_catalogue, planted_rows, tiny_sid_model

    from sidreasoner_core.reasoning import grpo
    from sidreasoner_core.reasoning.config import GRPOStageConfig
    from sidreasoner_core.sid import Catalogue
    from sidreasoner_core.training import launch

    sid_by_item = planted_catalogue()
    model_dir = tiny_sid_model(tmp_path / "base")
    steps = 6
    cfg = GRPOStageConfig(num_generations=2, prompts_per_step=2, per_device_train_batch_size=4,
                          max_completion_length=8, learning_rate=1e-4, beta=0.0, max_steps=steps, save_steps=1,
                          eval_samples=0, logging_steps=1)
    uri = f"s3://{s3_bucket}/state/run-grpo-1/grpo/checkpoints"

    def job(scratch: Path) -> Path:
        payload = {"config": cfg.model_dump(mode="json"), "model_dir": str(model_dir),
                   "train_rows": planted_rows(sid_by_item, n=8), "sid_by_item": sid_by_item,
                   "output_dir": str(scratch / "ckpt"), "final_dir": str(scratch / "final"), "curves_path": None,
                   "eval_rows": [], "checkpoint_store": uri}
        return launch.write_job("sidreasoner_core.reasoning.grpo:worker", payload, scratch / "ckpt")

    env = {**os.environ, "OMP_NUM_THREADS": "1", launch.WORKER_ENV: "1"}
    log = tmp_path / "worker.log"
    with open(log, "wb") as f:
        proc = subprocess.Popen([sys.executable, "-m", "sidreasoner_core.training.launch",
                                 str(job(tmp_path / "pod1"))], env=env, stdout=f, stderr=subprocess.STDOUT)
    store = CheckpointStore(uri)
    try:
        deadline = time.time() + 300
        while "checkpoint-2" not in store.complete():
            assert proc.poll() is None, log.read_text()[-3000:]
            assert time.time() < deadline, "no stored checkpoint-2 in time"
            time.sleep(0.05)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    stored = max(int(n.rsplit("-", 1)[1]) for n in store.complete())
    assert 2 <= stored < steps
    shutil.rmtree(tmp_path / "pod1")  # the retried pod gets fresh scratch

    fresh = tmp_path / "pod2"
    assert store.restore(fresh / "ckpt") == str(fresh / "ckpt" / f"checkpoint-{stored}")  # what the stage does first
    with one_torch_thread():
        launch.worker_main(str(job(fresh)))
    info = json.loads((fresh / "ckpt" / grpo.RESULT_FILE).read_text())
    assert info["resumed_from_step"] == stored and info["train_steps"] == steps
    assert {k.split("/")[0] for k in storage.list_keys(uri)} >= {f"checkpoint-{steps}", f"checkpoint-{steps}.done"}


def test_a_failed_checkpoint_copy_warns_and_training_goes_on(tmp_path, moto_server, caplog):
    from types import SimpleNamespace

    ckpt = _fake_checkpoint(tmp_path / "checkpoints", 3)
    store = CheckpointStore("s3://no-such-bucket-here/state/r/align/checkpoints")
    with pytest.raises(storage.StorageError, match="no-such-bucket-here"):
        store.upload(ckpt)
    args, state = SimpleNamespace(output_dir=str(ckpt.parent)), SimpleNamespace(is_world_process_zero=True,
                                                                                  global_step=3)
    store.callback().on_save(args, state, None)  # does not raise
    assert "checkpoint-3 not copied to s3://no-such-bucket-here" in caplog.text
