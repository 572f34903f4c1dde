#!/usr/bin/env bash
# One-shot GPU check of the GPU-only paths, on the shipped sample and the built-in tiny-qwen3:
#   data -> sids -> enrich -> align (bf16, DeepSpeed ZeRO-2 via the project's own accelerate launch)
#   -> evaluate (constrained beam search on cuda).
# Run from the repo root:  bash scripts/gpu_check.sh
# On the GPU machine (no network) the missing Python packages come as wheels in .whl/ (see
# docs/gpu.md) and are installed to /tmp/site; the repo itself is put on PYTHONPATH.
# GPU_CHECK_LOCAL=1: the same flow on a CPU machine with .venv (fp32, no DeepSpeed, cpu), to test the script
# (GPU_CHECK_PY / GPU_CHECK_PRECISION / GPU_CHECK_DS override the python, precision and DeepSpeed stage there).
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
BUDGET=${GPU_CHECK_BUDGET:-330}        # seconds: no new part starts after this
STAGE_TIMEOUT=${GPU_CHECK_STAGE_TIMEOUT:-120}  # per part (align: +90)

if [ "$LOCAL" = 1 ]; then
  PY=${GPU_CHECK_PY:-$REPO/.venv/bin/python}; PRECISION=${GPU_CHECK_PRECISION:-fp32}; DS=${GPU_CHECK_DS:-none}
  EVAL_DEVICE=cpu
else
  PY=python3; PRECISION=bf16; DS=zero2; EVAL_DEVICE=cuda
  export DS_ACCELERATOR=cuda
  echo "== installing wheels to /tmp/site"
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
    || { echo "FAIL install: pip install of .whl/*.whl"; exit 1; }
  export PYTHONPATH=/tmp/site:$REPO
  nvidia-smi || echo "WARN nvidia-smi failed"
  # peak GPU memory over the whole run (all processes, incl. the accelerate-launched worker)
  nvidia-smi --query-gpu=memory.used --format=csv,noheader,nounits -lms 200 > "$W/smi.log" 2>/dev/null &
  SMI_PID=$!
fi
export PYTHONPATH=${PYTHONPATH:-$REPO}
cd "$REPO"

RESULTS=()
declare -A SECS
stage() {  # stage NAME args... : run one CLI stage, log to $W/NAME.log, record PASS/FAIL and seconds
  local name=$1; shift
  if [ $SECONDS -gt "$BUDGET" ]; then echo "SKIP $name (past the ${BUDGET} s budget)"; RESULTS+=("$name:SKIP"); return 1; fi
  local t0=$(date +%s.%N) limit=$STAGE_TIMEOUT
  [ "$name" = align ] && limit=$((STAGE_TIMEOUT + 90))
  timeout -k 10 "$limit" "$PY" -c "from sidreasoner_core.cli import app; app()" "${name%%_*}" "$@" > "$W/$name.log" 2>&1
  local rc=$?
  [ $rc = 124 ] && echo "(timed out after $limit s)" >> "$W/$name.log"
  SECS[$name]=$(awk -v a="$t0" -v b="$(date +%s.%N)" 'BEGIN{printf "%.1f", b-a}')
  if [ $rc = 0 ]; then echo "PASS $name (${SECS[$name]} s)"; RESULTS+=("$name:PASS")
  else echo "FAIL $name (exit $rc, ${SECS[$name]} s); last lines of $W/$name.log:"; tail -n 40 "$W/$name.log"
       RESULTS+=("$name:FAIL"); fi
  return $rc
}

"$PY" - <<EOF || { echo "FAIL env: python imports"; exit 1; }
import sys, torch, transformers, accelerate, trl, datasets, pydantic
line = " ".join(map(str, ("python", sys.version.split()[0], "torch", torch.__version__, "cuda", torch.cuda.is_available(),
      "transformers", transformers.__version__, "accelerate", accelerate.__version__, "trl", trl.__version__,
      "datasets", datasets.__version__, "pydantic", pydantic.__version__,
      "huggingface_hub", __import__("huggingface_hub").__version__)))
if "$DS" != "none":
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
&& stage sids --dataset "$W/dataset" --out "$W/sids" --config "$W/config.yaml" "${SIDS_ARGS[@]}" \
&& stage enrich --dataset "$W/dataset" --sids "$W/sids" --out "$W/corpus" --config "$W/config.yaml" \
&& stage align --dataset "$W/dataset" --sids "$W/sids" --corpus "$W/corpus" --out "$W/model" --config "$W/config.yaml"
ALIGN_OK=$?
MODEL=$W/model
if [ -d "$W/corpus" ]; then  # in-process SFT, same precision, no DeepSpeed
  stage align_inproc --dataset "$W/dataset" --sids "$W/sids" --corpus "$W/corpus" --out "$W/model_inproc" \
    --config "$W/config_inproc.yaml" && [ $ALIGN_OK != 0 ] && { echo "WARN evaluating the in-process model"; MODEL=$W/model_inproc; ALIGN_OK=0; }
fi
if [ $ALIGN_OK != 0 ]; then
  echo "WARN align failed: evaluating the un-aligned tiny-qwen3 instead"; MODEL=tiny-qwen3; EXTRA=(--add-missing-sid-tokens)
fi
if [ -d "$W/sids" ]; then
  E=(--dataset "$W/dataset" --sids "$W/sids" --model "$MODEL" ${EXTRA[@]+"${EXTRA[@]}"})
  stage evaluate "${E[@]}" --out "$W/eval" --config "$W/config.yaml"
  stage evaluate_direct "${E[@]}" --out "$W/eval_direct" --config "$W/config_direct.yaml"
  stage evaluate_direct_bf16 "${E[@]}" --out "$W/eval_direct_bf16" --config "$W/config_direct_bf16.yaml"
fi

# Constrained beam search alone, timed with the device synchronised: the test split's prompts,
# 10 beams, after one warm-up pass; float32 and bfloat16, batch 8 and 32.
if [ -d "$W/sids" ]; then
  t0=$(date +%s.%N)
  [ $SECONDS -gt "$BUDGET" ] && { echo "SKIP beam_bench"; RESULTS+=("beam_bench:SKIP"); } || \
  timeout -k 10 "$STAGE_TIMEOUT" "$PY" - "$W" "$MODEL" "$EVAL_DEVICE" > "$W/beam_bench.log" 2>&1 <<'EOF'
import json, sys, time
import torch
from sidreasoner_core.artifacts import open_artifact
from sidreasoner_core.data.schema import read_samples
from sidreasoner_core.evaluation.config import EvaluateConfig
from sidreasoner_core.evaluation.constrained import SIDTrie, rank_sids
from sidreasoner_core.evaluation.stage import _history_sids, load_eval_model, load_sid_map
from sidreasoner_core.prompts import chat_prompt, sid_history_prompt
w, model_ref, device = sys.argv[1:4]
dataset, sids = open_artifact(f"{w}/dataset", kind="dataset"), open_artifact(f"{w}/sids", kind="sids")
sid_by_item = load_sid_map(dataset, sids)
item_of_sid = {}
for item, s in sorted(sid_by_item.items()):
    item_of_sid.setdefault(s, item)
samples = read_samples(dataset.path, "test")
hist = _history_sids(samples, sid_by_item, "test")
sync = torch.cuda.synchronize if device.startswith("cuda") else (lambda: None)
out = {}
for dtype in ("float32", "bfloat16"):
    model, tok, _ = load_eval_model(model_ref, EvaluateConfig(device=device, dtype=dtype))
    if model_ref == "tiny-qwen3":  # align failed: the un-aligned model with random SID rows
        from sidreasoner_core.models import add_sid_tokens
        from sidreasoner_core.sid import parse_sid, vocabulary
        lv = max(len(parse_sid(s)) for s in item_of_sid)
        top = max(max(parse_sid(s)) for s in item_of_sid) + 1
        add_sid_tokens(tok, model, vocabulary(lv, top))
        model.to(device)
    trie = SIDTrie.build(item_of_sid, tok)
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
  rc=$?
  [ -f "$W/beam_bench.log" ] || rc=skip
  SECS[beam_bench]=$(awk -v a="$t0" -v b="$(date +%s.%N)" 'BEGIN{printf "%.1f", b-a}')
  if [ $rc = 0 ]; then echo "PASS beam_bench (${SECS[beam_bench]} s)"; RESULTS+=("beam_bench:PASS")
  elif [ $rc != skip ]; then echo "FAIL beam_bench (exit $rc)"; tail -n 30 "$W/beam_bench.log"; RESULTS+=("beam_bench:FAIL"); fi
fi

[ -n "${SMI_PID:-}" ] && kill "$SMI_PID" 2>/dev/null

# Figures and files back.
cp "$W/align.log" "$W/align_inproc.log" "$OUT/" 2>/dev/null
cp "$W/model/metrics.json" "$OUT/align_metrics.json" 2>/dev/null
cp "$W/eval/metrics.json" "$OUT/eval_metrics.json" 2>/dev/null
cp "$W/config.yaml" "$OUT/config.yaml" 2>/dev/null
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
for name in ("model", "model_inproc"):
    a = {}
    lp = w / ("align.log" if name == "model" else "align_inproc.log")
    log = lp.read_text() if lp.exists() else ""
    c = re.search(r"launching: .*--config_file \S*/(\S+\.yaml)", log)
    a["launch"] = c.group(1) if c else "in-process"
    m = re.findall(r"\{[^{}]*'train_runtime'[^{}]*\}", log)
    if m:
        d = ast.literal_eval(m[-1])
        a["train_runtime_s"] = round(float(d["train_runtime"]), 2)
        a["train_steps_per_s"] = float(d["train_steps_per_second"])
    p = w / name / "metrics.json"
    if p.exists():
        mt = json.loads(p.read_text())
        a.update({k: mt[k] for k in ("global_step", "train_loss", "best_metric", "wall_s", "gsm8k_before", "gsm8k_after")
                  if isinstance(mt.get(k), (int, float))})
        if a.get("train_runtime_s") and mt.get("global_step"):
            a["s_per_step_incl_eval_save"] = round(a["train_runtime_s"] / mt["global_step"], 3)
    fig["align" if name == "model" else "align_inproc"] = a
for name in ("eval", "eval_direct", "eval_direct_bf16"):
    d = w / name
    if (d / "metrics.json").exists():
        mt = json.loads((d / "metrics.json").read_text())
        e = {"wall_s": json.loads((d / "manifest.json").read_text()).get("wall_s")}
        for mode in ("direct", "thinking"):
            if isinstance(mt.get(mode), dict):
                e.update({f"{mode}_{k}": mt[mode][k] for k in ("n", "invalid", "recall@10", "ndcg@10") if k in mt[mode]})
        fig[name] = e
bb = w / "beam_bench.log"
if bb.exists():
    for line in bb.read_text().splitlines():
        if line.startswith("BEAM_BENCH "):
            fig["beam_bench"] = json.loads(line[len("BEAM_BENCH "):])
smi = w / "smi.log"
if smi.exists():
    vals = [int(x) for x in smi.read_text().split() if x.strip().isdigit()]
    fig["peak_gpu_mem_mib"] = max(vals) if vals else None
print(json.dumps(fig, sort_keys=True))  # the last line: the figures
EOF
[ $OVERALL = PASS ]
