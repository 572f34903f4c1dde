"""The alignment stage end to end on the tiny model: component, artifact, CLI, launch plumbing."""
from __future__ import annotations

import json

import pytest
import yaml

from align_helpers import corpus_artifact, reference_sids_artifact, tiny_config
from sidreasoner_core import sid as sidlib
from sidreasoner_core.artifacts import open_artifact
from sidreasoner_core.training.options import SFTOptions


@pytest.fixture(scope="module")
def arts(sample_dataset, tmp_path_factory):
    root = tmp_path_factory.mktemp("align_stage")
    sids = reference_sids_artifact(sample_dataset, root / "sids")
    corpus = corpus_artifact(sample_dataset, sids, root / "corpus")
    return sample_dataset, sids, corpus


@pytest.fixture(scope="module")
def component_run(arts, tmp_path_factory):
    """The KFP component's python_func run once: (model artifact, KFP metrics, run dir, tracking URI)."""
    from kfp.dsl import Dataset, Metrics, Model

    from components.align import align_op
    from sidreasoner_core.lineage import model_uri

    tmp_path = tmp_path_factory.mktemp("align_component")
    dataset, sids, corpus = arts
    out = Model(name="aligned_model", uri=str(tmp_path / "aligned_model"))
    metrics = Metrics(name="metrics", uri=str(tmp_path / "metrics"))
    config = json.dumps({"align": tiny_config()})
    tracking = f"sqlite:///{tmp_path / 'mlflow.db'}"
    align_op.python_func(dataset=Dataset(name="d", uri=str(dataset.path)), sids=Dataset(name="s", uri=str(sids.path)),
                         corpus=Dataset(name="c", uri=str(corpus.path)), config_json=config,
                         base_model=Model(name="base_model", uri=model_uri("tiny-qwen3")),
                         aligned_model=out, metrics=metrics, tracking_uri=tracking)
    return open_artifact(out.path, kind="model"), metrics, tmp_path, tracking


def test_component_writes_the_model_artifact_and_its_metrics(component_run):
    art, metrics, tmp_path, _ = component_run
    assert {p["kind"] for p in art.manifest["parents"]} == {"dataset", "sids", "corpus"}
    m = json.loads((art.path / "metrics.json").read_text())
    assert m["global_step"] == 4 and "gsm8k_before" in m and "gsm8k_after" in m and m["gsm8k_n"] == 2
    assert m["n_train_item_text"] == 6 and m["n_train_user_narrative"] == 6  # tasks 7-8 from the corpus
    assert "eval_loss_sid_history_to_sid" in m and m["best_metric"] == m["eval_loss_sid_history_to_sid"]
    assert any(k.startswith("train_loss_") for k in m)
    assert metrics.metadata["global_step"] == 4
    assert len((art.path / "gsm8k.jsonl").read_text().splitlines()) == 4
    assert not (tmp_path / ".aligned_model.work").exists()  # checkpoints dropped once published


def test_component_model_carries_every_sid_token(component_run):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    art = component_run[0]
    tokens = json.loads((art.path / "sid_tokens.json").read_text())
    assert tokens["tokens"] == sidlib.vocabulary(3, 256)
    tok = AutoTokenizer.from_pretrained(art.path / "model")
    model = AutoModelForCausalLM.from_pretrained(art.path / "model")
    assert model.get_input_embeddings().weight.shape[0] == len(tok)
    s = "<a_71><b_201><c_34>"
    assert tok.convert_ids_to_tokens(tok(s, add_special_tokens=False)["input_ids"]) == sidlib.tokens_of(s)


def test_component_logs_losses_params_and_output_to_mlflow(component_run):
    """Per-step training loss, per-task validation losses, the config as params and the output's digest."""
    import mlflow

    art, _, _, tracking = component_run
    m = json.loads((art.path / "metrics.json").read_text())
    client = mlflow.MlflowClient(tracking)
    run = client.search_runs([e.experiment_id for e in client.search_experiments()],
                             "tags.`sidreasoner.stage` = 'align'")[0]
    assert [h.step for h in client.get_metric_history(run.info.run_id, "loss")] == [1, 2, 3, 4]
    assert [h.step for h in client.get_metric_history(run.info.run_id, "eval_sid_history_to_sid_loss")] == [2, 4]
    assert run.data.metrics["gsm8k_after"] == m["gsm8k_after"]
    assert run.data.params["train.learning_rate"] == "0.005"
    assert run.data.tags["output.model.digest"] == art.manifest["digest"]


def test_killed_stage_resumes_from_its_work_dir(arts, tmp_path):
    from transformers import TrainerCallback

    from sidreasoner_core.align.config import AlignConfig
    from sidreasoner_core.align.stage import run
    from sidreasoner_core.training.checkpoints import work_dir_for

    class Kill(TrainerCallback):
        def on_step_end(self, args, state, control, **kw):
            if state.global_step == 3:
                raise KeyboardInterrupt("killed")

    dataset, sids, _ = arts
    cfg = AlignConfig.build({**tiny_config(), "gsm8k_eval_n": 0, "max_per_task": 4,
                             "eval_tasks": ["sid_history_to_sid"], "task_ratios": {"gsm8k": 0}})
    out = tmp_path / "model"
    with pytest.raises(KeyboardInterrupt):
        run(cfg, dataset, sids, None, out, callbacks=[Kill()])
    assert not out.exists() and (work_dir_for(str(out)) / "checkpoints" / "checkpoint-2").is_dir()
    art = run(cfg, dataset, sids, None, out)
    m = art.manifest["metrics"]
    assert m["resumed_from_step"] == 2 and m["global_step"] == 4 and "gsm8k_before" not in m
    assert not work_dir_for(str(out)).exists()


def test_cli_reports_a_missing_input_cleanly(arts, tmp_path):
    from typer.testing import CliRunner

    from sidreasoner_core.cli import app

    dataset, _, _ = arts
    res = CliRunner().invoke(app, ["align", "--dataset", str(dataset.path), "--sids", str(tmp_path / "nope"),
                                   "--out", str(tmp_path / "o"), "--model", "tiny-qwen3"])
    assert res.exit_code == 2 and "nope: artifact directory does not exist" in res.output
    assert not (tmp_path / "o").exists()


def test_accelerate_configs_and_launch_command(tmp_path, monkeypatch):
    from sidreasoner_core.training import runtime
    from sidreasoner_core.training.launch import accelerate_config, launch_command

    monkeypatch.setattr(runtime, "has_gpu", lambda: True)  # launched workers run on a GPU pod

    for stage in (2, 3):
        cfg = yaml.safe_load(accelerate_config(f"zero{stage}").read_text())
        assert cfg["distributed_type"] == "DEEPSPEED" and cfg["deepspeed_config"]["zero_stage"] == stage
    assert yaml.safe_load(accelerate_config("zero3").read_text())["deepspeed_config"]["zero3_save_16bit_model"]
    assert yaml.safe_load(accelerate_config("none").read_text())["distributed_type"] == "MULTI_GPU"
    with pytest.raises(ValueError, match="zero1"):
        accelerate_config("zero1")
    cmd = launch_command(tmp_path / "job.json", 4, "zero3", "bf16")
    assert cmd[1:3] == ["-m", "accelerate.commands.launch"]
    assert cmd[cmd.index("--num_processes") + 1] == "4" and cmd[cmd.index("--config_file") + 1].endswith("zero3.yaml")
    assert cmd[cmd.index("--mixed_precision") + 1] == "bf16"
    assert cmd[-3:] == ["-m", "sidreasoner_core.training.launch", str(tmp_path / "job.json")]


def test_launch_precision_auto_follows_the_hardware(tmp_path, monkeypatch):
    """"auto" is bf16 only on a bf16-capable GPU, for launched workers as for in-process runs."""
    from sidreasoner_core.training import runtime
    from sidreasoner_core.training.launch import launch_command

    def precision_of(cmd):
        return cmd[cmd.index("--mixed_precision") + 1]

    monkeypatch.setattr(runtime, "bf16_supported", lambda: False)
    assert precision_of(launch_command(tmp_path / "job.json", 2, "none", "auto")) == "no"
    assert runtime.trainer_precision("auto") == {"bf16": False, "fp16": False}
    monkeypatch.setattr(runtime, "bf16_supported", lambda: True)
    assert precision_of(launch_command(tmp_path / "job.json", 2, "none", "auto")) == "bf16"
    assert runtime.trainer_precision("auto") == {"bf16": True, "fp16": False}


def test_bf16_on_a_cpu_without_native_bf16_trains_in_fp32(tmp_path, monkeypatch):
    """A preset's bf16 pays only on a CPU with AVX-512 BF16 or AMX; elsewhere emulated bf16 is ~15x slower
    than fp32, so it resolves to fp32 there (in process and for launched workers)."""
    from sidreasoner_core.training import runtime
    from sidreasoner_core.training.launch import launch_command

    avx2, bf16 = tmp_path / "avx2", tmp_path / "bf16"
    avx2.write_text("flags\t\t: fpu sse2 avx avx2 fma avx512f avx512bw\n")
    bf16.write_text("flags\t\t: fpu sse2 avx avx2 fma avx512f avx512_bf16\n")
    assert not runtime.cpu_has_native_bf16.__wrapped__(str(avx2))
    assert runtime.cpu_has_native_bf16.__wrapped__(str(bf16))
    assert not runtime.cpu_has_native_bf16.__wrapped__(str(tmp_path / "missing"))

    monkeypatch.setattr(runtime, "has_gpu", lambda: False)
    monkeypatch.setattr(runtime, "cpu_has_native_bf16", lambda: False)
    assert runtime.trainer_precision("bf16") == {"bf16": False, "fp16": False}
    cmd = launch_command(tmp_path / "job.json", 2, "none", "bf16")
    assert cmd[cmd.index("--mixed_precision") + 1] == "no"
    monkeypatch.setattr(runtime, "cpu_has_native_bf16", lambda: True)
    assert runtime.trainer_precision("bf16") == {"bf16": True, "fp16": False}
    assert runtime.trainer_precision("auto") == {"bf16": False, "fp16": False}  # auto stays fp32 on any CPU


def test_launch_worker_trains_from_a_job_file(tmp_path, monkeypatch):
    """The code each `accelerate launch` process runs, here as one CPU process."""
    from sidreasoner_core.training.launch import WORKER_ENV, worker_main, write_job
    from sidreasoner_core.training.sft import FINAL_DIR, RESULT_FILE, write_job_inputs

    recs = [{"task": "t", "prompt": [{"role": "user", "content": f"kit {k}?"}],
             "completion": sidlib.format_sid([k, 1, 2])} for k in range(4)]
    opts = SFTOptions(per_device_train_batch_size=2, gradient_accumulation_steps=1, max_steps=2, max_length=64,
                      eval_strategy="steps", eval_steps=1, num_gpus=2)
    job_dir, payload = write_job_inputs("tiny-qwen3", recs, recs[:2], opts, tmp_path,
                                        sid_tokens=sidlib.vocabulary(3, 4), early_stopping_task="t")
    job = write_job("sidreasoner_core.training.sft:worker", payload, job_dir)
    monkeypatch.setenv(WORKER_ENV, "1")
    worker_main(str(job))
    info = json.loads((tmp_path / RESULT_FILE).read_text())
    assert info["metrics"]["global_step"] == 2 and info["sid_tokens_added"] == 12
    assert info["first_eval_losses"].keys() == info["eval_losses"].keys() == {"t"}
    assert (tmp_path / FINAL_DIR / "model.safetensors").is_file() and (tmp_path / FINAL_DIR / "tokenizer.json").is_file()


CPU_TWO_PROCESSES = """\
compute_environment: LOCAL_MACHINE
distributed_type: MULTI_GPU
mixed_precision: 'no'
num_machines: 1
num_processes: 2
machine_rank: 0
main_process_ip: 127.0.0.1
main_process_port: {port}
rdzv_backend: static
same_network: true
use_cpu: true
"""


@pytest.mark.slow
def test_num_gpus_above_one_launches_accelerate_processes(tmp_path, monkeypatch):
    """The multi-process path for real: accelerate's torchrun launcher with 2 CPU processes (gloo)
    standing in for GPUs; the data is sharded, so 2 steps cover all 8 rows once."""
    from conftest import free_port
    from sidreasoner_core.training import launch
    from sidreasoner_core.training.sft import train_sft
    from transformers import TrainerCallback

    class Seen(TrainerCallback):
        def __init__(self):
            self.steps = []

        def on_log(self, args, state, control, logs=None, **kwargs):
            self.steps.append((state.global_step, dict(logs or {})))

    cfg = tmp_path / "cpu2.yaml"
    cfg.write_text(CPU_TWO_PROCESSES.format(port=free_port()))
    monkeypatch.setattr(launch, "accelerate_config", lambda _stage: cfg)
    recs = [{"task": "t", "prompt": [{"role": "user", "content": f"kit {k}?"}],
             "completion": sidlib.format_sid([k, 1, 2])} for k in range(8)]
    opts = SFTOptions(per_device_train_batch_size=2, gradient_accumulation_steps=1, max_steps=2, max_length=64,
                      eval_strategy="steps", eval_steps=1, num_gpus=2, precision="fp32")
    seen = Seen()
    res = train_sft("tiny-qwen3", recs, recs[:2], opts, tmp_path / "run", sid_tokens=sidlib.vocabulary(3, 8),
                    early_stopping_task="t", callbacks=[seen])
    assert res.global_step == 2 and res.trainer is None
    assert seen.steps and [s for s, _ in seen.steps] == [h["step"] for h in res.log_history]  # workers' logs replayed
    assert res.first_eval_losses.keys() == {"t"}
    assert [h["epoch"] for h in res.log_history if "train_loss" in h] == [1.0]  # 2 steps x 2 procs x 2 = 8 rows
    assert len(res.tokenizer) == res.model.get_input_embeddings().weight.shape[0]
    assert "<c_7>" in res.tokenizer.get_vocab() and "eval_loss_t" in res.metrics()


def test_scratch_model_learns_the_catalogue_words_and_the_reasoning_rows(arts, tmp_path, monkeypatch):
    """A scratch model with `scratch_vocab_size` gets a tokenizer trained on the catalogue's titles and the
    teacher's traces (the aligned model keeps it), and the user reasoning rows join the mix (task 8)."""
    from transformers import AutoTokenizer

    from sidreasoner_core.align.config import AlignConfig
    from sidreasoner_core.align.stage import run
    from sidreasoner_core.models import TINY, load_model

    monkeypatch.setenv("SIDREASONER_CACHE", str(tmp_path / "cache"))
    dataset, sids, corpus = arts
    cfg = AlignConfig.build({**tiny_config(max_steps=2, eval_strategy="no"), "gsm8k_eval_n": 0,
                             "scratch_vocab_size": 1000, "reasoning_max_words": 8})
    art = run(cfg, dataset, sids, corpus, tmp_path / "aligned")
    m = json.loads((art.path / "metrics.json").read_text())
    assert m["n_train_user_reasoning"] == 5 and m["global_step"] == 2   # the corpus's train-split traces
    tok = AutoTokenizer.from_pretrained(art.path / "model")
    _, base = load_model(TINY)
    rationale = "Steady on steel parts. Next: a tool kit by Acme."
    assert len(tok(rationale)["input_ids"]) < len(base(rationale)["input_ids"])
    assert len(tok) > len(base) + 3 * 256  # the learned words beside the SID tokens
