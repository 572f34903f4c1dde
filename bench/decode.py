"""Constrained SID decoding: our tensor-trie beam search vs HF `generate` + `prefix_allowed_tokens_fn`.

Same model (SmolLM2-135M-Instruct + the 768 SID tokens, random new embeddings), same Industrial
test samples and reference SIDs, same beams (10), same batches (sorted by prompt length). Reports
throughput of both, whether the top-10 lists are identical, the speed-up, and the overhead of the
constraint over the same loop run unconstrained. Ends with one JSON line.

    .venv/bin/python bench/decode.py --n 200
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "amazon18" / "Industrial_and_Scientific"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", default=str(DATA))
    ap.add_argument("--model", default="smollm2")
    ap.add_argument("--n", type=int, default=200, help="test samples (the first N)")
    ap.add_argument("--beams", type=int, default=10)
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--threads", type=int, default=1, help="torch threads (1 is steadiest on a shared CPU)")
    ap.add_argument("--hf-unconstrained", action="store_true", help="also time HF generate without a constraint")
    args = ap.parse_args()

    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from sidreasoner_core.data.config import DataConfig
    from sidreasoner_core.data.stage import build
    from sidreasoner_core.decoding.constrained import SIDTrie, beam_search, pad_left
    from sidreasoner_core.models import add_sid_tokens, resolve_model_dir
    from sidreasoner_core.prompts import ranking_prompts
    from sidreasoner_core.sid import vocabulary

    torch.set_num_threads(args.threads)
    items, samples, _, _ = build(DataConfig(), args.data)
    sid_of = dict(zip(items["item_id"], items["reference_sid"]))
    test = samples[samples["split"] == "test"].head(args.n)
    path = resolve_model_dir(args.model)
    tok = AutoTokenizer.from_pretrained(path)
    model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32).eval()
    torch.manual_seed(0)
    add_sid_tokens(tok, model, vocabulary(3, 256))
    trie = SIDTrie.build(sid_of.values(), tok)
    prompts = ranking_prompts(tok, [[sid_of[h] for h in hist] for hist in test["history"]], False)
    ids = [tok(p, add_special_tokens=False)["input_ids"] for p in prompts]
    order = sorted(range(len(ids)), key=lambda i: len(ids[i]))
    batches = [order[s:s + args.batch_size] for s in range(0, len(order), args.batch_size)]
    K = args.beams

    allowed = trie.allowed_dict(tok)

    def ours(b, constrained: bool):
        x, m = pad_left([ids[i] for i in b], tok.pad_token_id)
        scores, seqs, leaves = beam_search(model, x, m, trie if constrained else None, K, levels=3)
        return [[trie.sids[int(l)] for l in leaves[r]] if constrained else seqs[r].tolist() for r in range(len(b))]

    def hf(b, constrained: bool):
        x, m = pad_left([ids[i] for i in b], tok.pad_token_id)
        start = x.size(1)
        kw = {}
        if constrained:
            kw["prefix_allowed_tokens_fn"] = lambda _, seq: allowed.get(tuple(seq[start:].tolist()), [tok.eos_token_id])
        with torch.no_grad():
            g = model.generate(input_ids=x, attention_mask=m, num_beams=K, num_return_sequences=K, max_new_tokens=3,
                               min_new_tokens=3, do_sample=False, length_penalty=0.0, early_stopping=True,
                               pad_token_id=tok.pad_token_id, temperature=None, top_p=None, top_k=None, **kw)
        g = g[:, start:].view(len(b), K, -1)
        return [[tok.decode(s) for s in g[r]] for r in range(len(b))]

    methods = {"ours": lambda b: ours(b, True), "ours_unconstrained": lambda b: ours(b, False),
               "hf_prefix_fn": lambda b: hf(b, True)}
    if args.hf_unconstrained:
        methods["hf_unconstrained"] = lambda b: hf(b, False)
    ours(batches[0], True)  # warm-up (allocator, first-call costs)
    # Round-robin per batch so a change of load on the shared CPU hits every method alike;
    # both wall and process CPU time are kept (CPU time is the steadier figure here).
    wall = dict.fromkeys(methods, 0.0)
    cpu = dict.fromkeys(methods, 0.0)
    lists: dict[str, dict[int, list]] = {k: {} for k in methods}
    from tqdm import tqdm

    for b in tqdm(batches, desc="batches"):
        for name, fn in methods.items():
            t, c = time.perf_counter(), time.process_time()
            out = fn(b)
            wall[name] += time.perf_counter() - t
            cpu[name] += time.process_time() - c
            lists[name].update(zip(b, out))
    ours, hf = lists["ours"], lists["hf_prefix_fn"]
    t_ours, t_free, t_hf = wall["ours"], wall["ours_unconstrained"], wall["hf_prefix_fn"]
    same = sum(ours[i] == hf[i] for i in ours)
    overlap = sum(len(set(ours[i]) & set(hf[i])) for i in ours) / (K * len(ours))
    res = {
        "samples": len(ids), "beams": K, "batch_size": args.batch_size, "threads": args.threads,
        "prompt_tokens_mean": round(sum(map(len, ids)) / len(ids), 1),
        "ours_samples_per_s": round(len(ids) / t_ours, 3),
        "ours_unconstrained_samples_per_s": round(len(ids) / t_free, 3),
        "hf_prefix_fn_samples_per_s": round(len(ids) / t_hf, 3),
        "speedup_vs_hf": round(t_hf / t_ours, 2),
        "overhead_vs_unconstrained_pct": round(100 * (t_ours / t_free - 1), 1),
        "cpu_s": {k: round(v, 1) for k, v in cpu.items()},
        "speedup_vs_hf_cpu": round(cpu["hf_prefix_fn"] / cpu["ours"], 2),
        "overhead_vs_unconstrained_cpu_pct": round(100 * (cpu["ours"] / cpu["ours_unconstrained"] - 1), 1),
        "identical_top10_lists": same, "top10_overlap": round(overlap, 4),
    }
    if args.hf_unconstrained:
        res["hf_unconstrained_samples_per_s"] = round(len(ids) / wall["hf_unconstrained"], 3)
    print(f"ours (tensor trie, one prefill per sample): {res['ours_samples_per_s']} samples/s")
    print(f"ours unconstrained (same loop):             {res['ours_unconstrained_samples_per_s']} samples/s "
          f"-> constraint overhead {res['overhead_vs_unconstrained_pct']}% (target <= 15%)")
    print(f"HF generate + prefix_allowed_tokens_fn:      {res['hf_prefix_fn_samples_per_s']} samples/s")
    print(f"CPU seconds: {res['cpu_s']}")
    print(f"speed-up {res['speedup_vs_hf']}x wall, {res['speedup_vs_hf_cpu']}x CPU (target >= 3x); identical top-10 lists {same}/{len(ids)}, "
          f"overlap {res['top10_overlap']}")
    print(json.dumps(res))


if __name__ == "__main__":
    main()
