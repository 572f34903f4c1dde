#!/usr/bin/env bash
# One-shot GPU check of the GPU-only paths, on the shipped sample and the built-in tiny-qwen3:
#   data -> sids -> enrich -> align (bf16, DeepSpeed ZeRO-2 via the project's own accelerate launch)
#   -> evaluate (constrained beam search on cuda).
# Run from the repo root:  bash scripts/gpu_check.sh
# On the GPU machine (no network) the missing Python packages come as wheels in .whl/ (see
# docs/gpu.md) and are installed to /tmp/site; the repo itself is put on PYTHONPATH.
# GPU_CHECK_LOCAL=1: the same flow on a CPU machine with .venv (fp32, no DeepSpeed, cpu), to test the script
# (GPU_CHECK_PY / GPU_CHECK_PRECISION / GPU_CHECK_DS override the python, precision and DeepSpeed stage there).
# Reasoning stages after align: coldstart (cold-start SFT, bf16) -> grpo (TRL GRPOTrainer, constrained rollouts,
# precision auto) -> grpo_probe (the constrained-rollout logits processor inside generate on the device).
# GPU_CHECK_PARTS (comma or space separated; default all) runs only the named parts plus the ones they need:
#   data sids enrich align align_inproc evaluate evaluate_direct evaluate_direct_bf16 beam_bench coldstart grpo
#   grpo_probe. A part that needs a model (evaluate*, beam_bench, coldstart, grpo*) gets align_inproc when no
#   align part is named, e.g. GPU_CHECK_PARTS=coldstart,grpo,grpo_probe runs data sids enrich align_inproc coldstart
#   grpo grpo_probe. GPU_CHECK_CS_STEPS / GPU_CHECK_GRPO_STEPS: the two reasoning budgets in steps (GPU 200 / 4,
#   local 2 / 1); GPU_CHECK_CS_LR the cold-start learning rate (0.001).
# Prints PASS/FAIL per part and ends with one JSON line of figures. Copies key files into $OUT.
set -u
REPO=$(pwd)
LOCAL=${GPU_CHECK_LOCAL:-0}
W=${GPU_CHECK_WORK:-/tmp/gpu_check}
OUT=${OUT:-$W/out}
rm -rf "$W"; mkdir -p "$W" "$OUT"
export SIDREASONER_CACHE=$W/cache HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 TOKENIZERS_PARALLELISM=false \
  PYTHONUNBUFFERED=1 MLFLOW_TRACKING_URI= HF_HOME=$W/hf
MAX_STEPS=${GPU_CHECK_STEPS:-10}
CS_LR=${GPU_CHECK_CS_LR:-0.001}        # cold-start learning rate (high, so that a few steps teach </think>)
BUDGET=${GPU_CHECK_BUDGET:-330}        # seconds: no new part starts after this
STAGE_TIMEOUT=${GPU_CHECK_STAGE_TIMEOUT:-120}  # per part (align: +90, grpo: +60)

# Which parts run: the named ones plus what they need.
ALL_PARTS="data sids enrich align align_inproc evaluate evaluate_direct evaluate_direct_bf16 beam_bench coldstart grpo grpo_probe"
PARTS=" $(echo "${GPU_CHECK_PARTS:-all}" | tr ',' ' ') "
[[ "$PARTS" == *" all "* ]] && PARTS=" $ALL_PARTS "
for p in $PARTS; do [[ " $ALL_PARTS " == *" $p "* ]] || { echo "FAIL parts: unknown part '$p' (known: $ALL_PARTS)"; exit 2; }; done
want() { [[ "$PARTS" == *" $1 "* ]]; }
for p in evaluate evaluate_direct evaluate_direct_bf16 beam_bench coldstart grpo grpo_probe; do
  want "$p" && ! want align && ! want align_inproc && PARTS+="align_inproc "
done
{ want align || want align_inproc; } && ! want enrich && PARTS+="enrich "
want enrich && ! want sids && PARTS+="sids "
want sids && ! want data && PARTS+="data "
echo "== parts:$(for p in $ALL_PARTS; do want "$p" && printf ' %s' "$p"; done)"

if [ "$LOCAL" = 1 ]; then
  PY=${GPU_CHECK_PY:-$REPO/.venv/bin/python}; PRECISION=${GPU_CHECK_PRECISION:-fp32}; DS=${GPU_CHECK_DS:-none}
  EVAL_DEVICE=cpu; CS_STEPS=${GPU_CHECK_CS_STEPS:-2}; GRPO_STEPS=${GPU_CHECK_GRPO_STEPS:-1}
else
  PY=python3; PRECISION=bf16; DS=zero2; EVAL_DEVICE=cuda; CS_STEPS=${GPU_CHECK_CS_STEPS:-200}
  GRPO_STEPS=${GPU_CHECK_GRPO_STEPS:-4}
  export DS_ACCELERATOR=cuda
  echo "== installing wheels to /tmp/site"
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
    || { echo "FAIL install: pip install of .whl/*.whl"; exit 1; }
  export PYTHONPATH=/tmp/site:$REPO
  nvidia-smi || echo "WARN nvidia-smi failed"
  # peak GPU memory over the whole run (all processes, incl. the accelerate-launched worker)
  nvidia-smi --query-gpu=timestamp,memory.used --format=csv,noheader,nounits -lms 200 > "$W/smi.log" 2>/dev/null &
  SMI_PID=$!
fi
export PYTHONPATH=${PYTHONPATH:-$REPO}
cd "$REPO"

RESULTS=()
declare -A SECS
run_part() {  # run_part NAME LIMIT cmd... : run one part under the budget and a timeout, log to $W/NAME.log,
              # record PASS/FAIL, seconds and its time span (for the per-part peak of GPU memory)
  local name=$1 limit=$2; shift 2
  if [ $SECONDS -gt "$BUDGET" ]; then echo "SKIP $name (past the ${BUDGET} s budget)"; RESULTS+=("$name:SKIP"); return 1; fi
  local t0=$(date +%s.%N)
  timeout -k 10 "$limit" "$@" > "$W/$name.log" 2>&1
  local rc=$?
  [ $rc = 124 ] && echo "(timed out after $limit s)" >> "$W/$name.log"
  local t1=$(date +%s.%N)
  SECS[$name]=$(awk -v a="$t0" -v b="$t1" 'BEGIN{printf "%.1f", b-a}')
  echo "$name $t0 $t1" >> "$W/spans.txt"
  if [ $rc = 0 ]; then echo "PASS $name (${SECS[$name]} s)"; RESULTS+=("$name:PASS")
  else echo "FAIL $name (exit $rc, ${SECS[$name]} s); last lines of $W/$name.log:"; tail -n 40 "$W/$name.log"
       RESULTS+=("$name:FAIL"); fi
  return $rc
}
stage() {  # stage NAME args... : one CLI stage (NAME up to the first _ is the subcommand)
  local name=$1; shift
  local limit=$STAGE_TIMEOUT
  [ "$name" = align ] && limit=$((STAGE_TIMEOUT + 90))
  [ "$name" = grpo ] && limit=$((STAGE_TIMEOUT + 60))
  run_part "$name" "$limit" "$PY" -c "from sidreasoner_core.cli import app; app()" "${name%%_*}" "$@"
}
pyscript() {  # pyscript NAME args... <<'EOF' : a python script on stdin
  local name=$1; shift
  run_part "$name" "$STAGE_TIMEOUT" "$PY" - "$@"
}

"$PY" - <<EOF || { echo "FAIL env: python imports"; exit 1; }
import sys, torch, transformers, accelerate, trl, datasets, pydantic
line = " ".join(map(str, ("python", sys.version.split()[0], "torch", torch.__version__, "cuda", torch.cuda.is_available(),
      "transformers", transformers.__version__, "accelerate", accelerate.__version__, "trl", trl.__version__,
      "datasets", datasets.__version__, "pydantic", pydantic.__version__,
      "huggingface_hub", __import__("huggingface_hub").__version__)))
if "$DS" != "none" and "$(want align && echo 1)" == "1":
    import deepspeed; line += f" deepspeed {deepspeed.__version__}"
if "$EVAL_DEVICE" == "cuda":
    assert torch.cuda.is_available(), "no CUDA"
    line += f" gpu {torch.cuda.get_device_name(0)} bf16 {torch.cuda.is_bf16_supported()}"
print(line); open("$W/env.txt", "w").write(line)
EOF
echo "PASS env"

# The smoke preset with this check's settings on top.
"$PY" - <<EOF
import yaml
cfg = yaml.safe_load(open("sidreasoner_core/presets/smoke.yaml"))
t = cfg["align"]["train"]
t.update(precision="$PRECISION", deepspeed="$DS", num_gpus=1, max_steps=$MAX_STEPS, eval_steps=5)
cfg["evaluate"].update(device="$EVAL_DEVICE")
# cold-start SFT in process at the align precision; short traces so that the activated reasoning can close
# within GRPO's completion budget
cs = cfg["coldstart"]
cs.update(max_samples=32, max_reasoning_words=12)
cs["train"].update(precision="$PRECISION", deepspeed="none", num_gpus=1, max_steps=$CS_STEPS, eval_steps=$CS_STEPS,
                   learning_rate=$CS_LR)
# GRPO in process (TRL GRPOTrainer, transformers rollouts), catalogue-constrained after </think>, precision auto
# (bf16 on a bf16-capable GPU, else fp32)
cfg["grpo"].update(constrained_sid=True, max_steps=$GRPO_STEPS, max_completion_length=48, eval_steps=2, save_steps=2,
                   eval_samples=4, eval_max_reasoning_tokens=24,
                   cluster={"precision": "auto" if "$LOCAL" != "1" else "fp32", "deepspeed": "none", "num_gpus": 1})
yaml.safe_dump(cfg, open("$W/config.yaml", "w"), sort_keys=False)
# the same training in process (one device, no accelerate launch / DeepSpeed)
t["deepspeed"] = "none"
yaml.safe_dump(cfg, open("$W/config_inproc.yaml", "w"), sort_keys=False)
# direct mode only (constrained beam search) over the whole test split, float32 and bfloat16
cfg["evaluate"].update(max_samples=0, thinking_samples=0, best_of_n=0, batch_size=32)
yaml.safe_dump(cfg, open("$W/config_direct.yaml", "w"), sort_keys=False)
cfg["evaluate"].update(dtype="bfloat16")
yaml.safe_dump(cfg, open("$W/config_direct_bf16.yaml", "w"), sort_keys=False)
EOF
EMB=$REPO/.whl/sample_embeddings.npy
SIDS_ARGS=(--embeddings "$EMB"); [ -f "$EMB" ] || SIDS_ARGS=(--from-index)

stage data --input sample_data/Industrial_and_Scientific --out "$W/dataset" --config "$W/config.yaml" \
&& { ! want sids || stage sids --dataset "$W/dataset" --out "$W/sids" --config "$W/config.yaml" "${SIDS_ARGS[@]}"; } \
&& { ! want enrich || stage enrich --dataset "$W/dataset" --sids "$W/sids" --out "$W/corpus" --config "$W/config.yaml"; }
ALIGN_OK=1
if want align && [ -d "$W/corpus" ]; then
  stage align --dataset "$W/dataset" --sids "$W/sids" --corpus "$W/corpus" --out "$W/model" --config "$W/config.yaml" \
    && ALIGN_OK=0
fi
MODEL=$W/model
if want align_inproc && [ -d "$W/corpus" ]; then  # in-process SFT, same precision, no DeepSpeed
  stage align_inproc --dataset "$W/dataset" --sids "$W/sids" --corpus "$W/corpus" --out "$W/model_inproc" \
    --config "$W/config_inproc.yaml" && [ $ALIGN_OK != 0 ] && { want align && echo "WARN using the in-process model"
                                                              MODEL=$W/model_inproc; ALIGN_OK=0; }
fi
if [ $ALIGN_OK != 0 ]; then
  echo "WARN no aligned model: using the un-aligned tiny-qwen3 instead"; MODEL=tiny-qwen3; EXTRA=(--add-missing-sid-tokens)
fi
if [ -d "$W/sids" ]; then
  E=(--dataset "$W/dataset" --sids "$W/sids" --model "$MODEL" ${EXTRA[@]+"${EXTRA[@]}"})
  want evaluate && stage evaluate "${E[@]}" --out "$W/eval" --config "$W/config.yaml"
  want evaluate_direct && stage evaluate_direct "${E[@]}" --out "$W/eval_direct" --config "$W/config_direct.yaml"
  want evaluate_direct_bf16 && stage evaluate_direct_bf16 "${E[@]}" --out "$W/eval_direct_bf16" \
    --config "$W/config_direct_bf16.yaml"
fi

# Constrained beam search alone, timed with the device synchronised: the test split's prompts,
# 10 beams, after one warm-up pass; float32 and bfloat16, batch 8 and 32.
if [ -d "$W/sids" ] && want beam_bench; then
  pyscript beam_bench "$W" "$MODEL" "$EVAL_DEVICE" <<'EOF'
import json, sys, time
import torch
from sidreasoner_core.artifacts import open_artifact
from sidreasoner_core.dataset import read_samples
from sidreasoner_core.evaluation.config import EvaluateConfig
from sidreasoner_core.decoding.constrained import SIDTrie, rank_sids
from sidreasoner_core.evaluation.load import history_sids, load_eval_model, sid_table
w, model_ref, device = sys.argv[1:4]
dataset, sids = open_artifact(f"{w}/dataset", kind="dataset"), open_artifact(f"{w}/sids", kind="sids")
table = sid_table(dataset, sids)
samples = read_samples(dataset.path, "test")
hist = history_sids(samples, table.sid_by_item, "test")
sync = torch.cuda.synchronize if device.startswith("cuda") else (lambda: None)
out = {}
for dtype in ("float32", "bfloat16"):
    model, tok, _ = load_eval_model(model_ref, EvaluateConfig(device=device, dtype=dtype))
    if model_ref == "tiny-qwen3":  # align failed: the un-aligned model with random SID rows
        from sidreasoner_core.models import add_sid_tokens
        add_sid_tokens(tok, model, table.vocabulary())
        model.to(device)
    trie = SIDTrie.build(table.item_by_sid, tok)
    prompts = [chat_prompt(tok, sid_history_prompt(h)) for h in hist]
    for bs in (8, 32):
        rank_sids(model, tok, prompts[:bs], trie, 10, bs, progress=False)  # warm-up
        sync(); t = time.perf_counter()
        ranked = rank_sids(model, tok, prompts, trie, 10, bs, progress=False)
        sync(); dt = time.perf_counter() - t
        assert all(len(r) == 10 for r in ranked), "a sample got fewer than 10 beams"
        out[f"{dtype}_bs{bs}"] = {"n": len(prompts), "s": round(dt, 3), "samples_per_s": round(len(prompts) / dt, 1)}
    if device.startswith("cuda"):
        out[f"{dtype}_max_mem_alloc_mib"] = round(torch.cuda.max_memory_allocated() / 2**20, 1)
    del model
print("BEAM_BENCH " + json.dumps(out))
EOF
fi

# Reasoning stages on the aligned model: cold-start SFT, then GRPO on the cold-started model (on the aligned
# one when the cold start failed or was not selected).
RL_MODEL=$MODEL
if want coldstart && [ -d "$W/corpus" ]; then
  stage coldstart --model "$MODEL" --dataset "$W/dataset" --sids "$W/sids" --corpus "$W/corpus" --out "$W/coldstart" \
    --config "$W/config.yaml" && RL_MODEL=$W/coldstart || echo "WARN cold start failed: GRPO starts from $MODEL"
fi
if want grpo && [ -d "$W/sids" ]; then
  stage grpo --model "$RL_MODEL" --dataset "$W/dataset" --sids "$W/sids" --out "$W/grpo" --config "$W/config.yaml" \
    && RL_MODEL=$W/grpo
fi

# The constrained-rollout logits processor GRPO uses (constrained_sid), inside generate on the device, in bf16
# where the device has it: half the rows have closed their reasoning with </think> (they must answer one catalogue
# SID, then EOS), half are still reasoning (left free).
if want grpo_probe && [ -d "$W/sids" ]; then
  pyscript grpo_probe "$W" "$RL_MODEL" "$EVAL_DEVICE" <<'EOF'
import json, sys, time
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer, LogitsProcessorList
from sidreasoner_core.models import resolve_model_dir
from sidreasoner_core.reasoning.grpo import sid_logits_processor
from sidreasoner_core.reasoning.rewards import THINK_CLOSE, parse_prediction
from sidreasoner_core.reasoning.samples import prompt_messages
from sidreasoner_core.sid import read_sid_table
from sidreasoner_core.training.runtime import bf16_supported
w, model_ref, device = sys.argv[1:4]
cat = read_sid_table(f"{w}/sids").catalogue
model_dir = resolve_model_dir(model_ref)
dtype = torch.bfloat16 if device.startswith("cuda") and bf16_supported() else torch.float32
tok = AutoTokenizer.from_pretrained(model_dir, padding_side="left")
tok.pad_token = tok.pad_token or tok.eos_token
model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=dtype).to(device).eval()
proc = sid_logits_processor(tok, cat)
sids = sorted(cat.item_by_sid)
n = 16
texts, closed = [], []
for i in range(n):
    hist = [sids[(7 * i + k) % len(sids)] for k in range(3)]
    p = tok.apply_chat_template(prompt_messages(hist), tokenize=False, add_generation_prompt=True)
    c = i % 2 == 0
    texts.append(p + "<think>\nThe user buys lab tools.\n" + (THINK_CLOSE + "\n\n" if c else ""))
    closed.append(c)
enc = tok(texts, return_tensors="pt", padding=True, add_special_tokens=False).to(device)
sync = torch.cuda.synchronize if device.startswith("cuda") else (lambda: None)
out = {"dtype": str(dtype).removeprefix("torch."), "rows": n, "catalogue": len(cat)}
for mode in ("warmup", "timed"):
    sync(); t = time.perf_counter()
    gen = model.generate(**enc, max_new_tokens=cat.levels + 4, do_sample=mode == "timed", temperature=1.0,
                         logits_processor=LogitsProcessorList([proc]), pad_token_id=tok.pad_token_id)
    sync(); dt = time.perf_counter() - t
new = gen[:, enc["input_ids"].shape[1]:]
answers = [tok.decode(r, skip_special_tokens=False) for r in new]
valid = [parse_prediction(THINK_CLOSE + a.split(THINK_CLOSE)[-1] if not c else THINK_CLOSE + a).sid in cat
         for a, c in zip(answers, closed)]
out.update(generate_s=round(dt, 3), new_tokens=int(new.shape[1]),
           closed_valid=sum(v for v, c in zip(valid, closed) if c), closed_rows=sum(closed),
           open_rows_that_closed=sum(THINK_CLOSE in a for a, c in zip(answers, closed) if not c),
           open_rows_that_closed_valid=sum(v and THINK_CLOSE in a for v, a, c in zip(valid, answers, closed) if not c),
           example=answers[0][:200])
if device.startswith("cuda"):
    out["max_mem_alloc_mib"] = round(torch.cuda.max_memory_allocated() / 2**20, 1)
print("GRPO_PROBE " + json.dumps(out))
bad = [a for a, v, c in zip(answers, valid, closed) if c and not v]
assert not bad, f"{len(bad)} closed rows did not answer a catalogue SID, e.g. {bad[0]!r}"
EOF
fi

[ -n "${SMI_PID:-}" ] && kill "$SMI_PID" 2>/dev/null

# Figures and files back ($OUT takes at most 8 files): every log, metrics file and curve in one archive.
cp "$W/model/metrics.json" "$OUT/align_metrics.json" 2>/dev/null
cp "$W/eval/metrics.json" "$OUT/eval_metrics.json" 2>/dev/null
cp "$W/coldstart/metrics.json" "$OUT/coldstart_metrics.json" 2>/dev/null
cp "$W/grpo/metrics.json" "$OUT/grpo_metrics.json" 2>/dev/null
cp "$W/config.yaml" "$OUT/config.yaml" 2>/dev/null
(cd "$W" && tar czf "$OUT/logs.tar.gz" --ignore-failed-read *.log env.txt spans.txt config*.yaml */metrics.json \
  */curves.jsonl */curves.md 2>/dev/null)
for f in "$W"/*.log; do case $f in */smi.log) ;; *) tail -n 30 "$f" | sed "s|^|$(basename "$f" .log): |"; esac; done \
  > "$OUT/tails.txt" 2>/dev/null
SECS_JSON="{$(for k in "${!SECS[@]}"; do printf '"%s": %s, ' "$k" "${SECS[$k]}"; done | sed 's/, $//')}"
case " ${RESULTS[*]} " in *FAIL*|*SKIP*) OVERALL=FAIL;; *) OVERALL=PASS;; esac
echo "OVERALL $OVERALL (${SECONDS} s)"
"$PY" - "$W" "${RESULTS[*]}" "$SECS_JSON" "$OVERALL" "$SECONDS" <<'EOF' | tee "$OUT/figures.json"
import ast, json, re, sys
from pathlib import Path
w, results, secs, overall, total = Path(sys.argv[1]), sys.argv[2].split(), sys.argv[3], sys.argv[4], sys.argv[5]
fig = {"overall": overall, "total_s": int(total), "parts": dict(r.split(":") for r in results),
       "stage_cli_s": json.loads(secs)}
envf = w / "env.txt"
if envf.exists():
    fig["env"] = envf.read_text().strip()
def train_log(name):  # the Trainer's closing {'train_runtime': ...} line of a stage log
    lp = w / f"{name}.log"
    m = re.findall(r"\{[^{}]*'train_runtime'[^{}]*\}", lp.read_text() if lp.exists() else "")
    return ast.literal_eval(m[-1]) if m else {}
for name, log_name in (("model", "align"), ("model_inproc", "align_inproc")):
    a = {}
    lp = w / f"{log_name}.log"
    if not lp.exists():
        continue
    c = re.search(r"launching: .*--config_file \S*/(\S+\.yaml)", lp.read_text())
    a["launch"] = c.group(1) if c else "in-process"
    d = train_log(log_name)
    if d:
        a["train_runtime_s"] = round(float(d["train_runtime"]), 2)
        a["train_steps_per_s"] = float(d["train_steps_per_second"])
    p = w / name / "metrics.json"
    if p.exists():
        mt = json.loads(p.read_text())
        a.update({k: mt[k] for k in ("global_step", "train_loss", "best_metric", "wall_s", "gsm8k_before", "gsm8k_after")
                  if isinstance(mt.get(k), (int, float))})
        if a.get("train_runtime_s") and mt.get("global_step"):
            a["s_per_step_incl_eval_save"] = round(a["train_runtime_s"] / mt["global_step"], 3)
    fig[log_name] = a
for name in ("eval", "eval_direct", "eval_direct_bf16"):
    d = w / name
    if (d / "metrics.json").exists():
        mt = json.loads((d / "metrics.json").read_text())
        e = {"wall_s": json.loads((d / "manifest.json").read_text()).get("wall_s")}
        for mode in ("direct", "thinking"):
            if isinstance(mt.get(mode), dict):
                e.update({f"{mode}_{k}": mt[mode][k] for k in ("n", "invalid", "recall@10", "ndcg@10") if k in mt[mode]})
        fig[name] = e
for name, tag in (("beam_bench", "BEAM_BENCH "), ("grpo_probe", "GRPO_PROBE ")):
    bb = w / f"{name}.log"
    if bb.exists():
        for line in bb.read_text().splitlines():
            if line.startswith(tag):
                fig[name] = json.loads(line[len(tag):])
def model_dtype(d):
    p = d / "model" / "config.json"
    if p.exists():
        c = json.loads(p.read_text())
        return c.get("dtype") or c.get("torch_dtype")
p = w / "coldstart" / "metrics.json"
if p.exists():
    mt, d = json.loads(p.read_text()), train_log("coldstart")
    c = {k: round(mt[k], 4) for k in ("global_step", "samples", "train_loss", "loss_first", "loss_last", "wall_s")
         if isinstance(mt.get(k), (int, float))}
    if d:
        c.update(train_runtime_s=round(float(d["train_runtime"]), 2), train_steps_per_s=float(d["train_steps_per_second"]))
    c["saved_dtype"] = model_dtype(w / "coldstart")
    fig["coldstart"] = c
p = w / "grpo" / "metrics.json"
if p.exists():
    mt = json.loads(p.read_text())
    g = {k: round(v, 4) for k, v in mt.items() if isinstance(v, (int, float)) and (
         k in ("train_steps", "train_runtime_s", "train_prompts", "eval_prompts", "wall_s", "resumed_from_step")
         or k.startswith(("reward_", "rewards_", "sid_", "reasoning_think", "completions_mean_length", "kl_",
                          "eval_recall", "eval_reasoning_tokens")))}
    if mt.get("train_runtime_s") and mt.get("train_steps"):
        g["train_steps_per_s"] = round(mt["train_steps"] / mt["train_runtime_s"], 3)
    g["saved_dtype"] = model_dtype(w / "grpo")
    fig["grpo"] = g
smi = w / "smi.log"
if smi.exists():  # "YYYY/MM/DD HH:MM:SS.fff, MiB" every 200 ms: the peak overall and within each part
    import time as _t
    pts = []
    for line in smi.read_text().splitlines():
        ts, _, mib = line.rpartition(",")
        if not mib.strip().isdigit():
            continue
        try:
            day, _, frac = ts.strip().partition(".")
            t = _t.mktime(_t.strptime(day, "%Y/%m/%d %H:%M:%S")) + float("0." + (frac or "0"))
        except ValueError:
            t = None
        pts.append((t, int(mib)))
    fig["peak_gpu_mem_mib"] = max((v for _, v in pts), default=None)
    spans = w / "spans.txt"
    if spans.exists() and pts:
        per = {}
        for line in spans.read_text().splitlines():
            name, a, b = line.split()
            vals = [v for t, v in pts if t is not None and float(a) <= t <= float(b)]
            if vals:
                per[name] = max(vals)
        fig["peak_gpu_mem_mib_by_part"] = per
print(json.dumps(fig, sort_keys=True))  # the last line: the figures
EOF
[ $OVERALL = PASS ]
