"""OpenMP wait policy vs torch CPU speed on a shared box: one SmolLM2 forward (batch 8 x 128
tokens) and one training step, timed in fresh processes with the default policy (baseline) and
with OMP_WAIT_POLICY=PASSIVE (what `sidreasoner_core.align` sets). Ends with one JSON line."""
from __future__ import annotations

import json
import os
import subprocess
import sys

CHILD = r"""
import json, time, torch
from sidreasoner_core.models import load_model
model, tok = load_model(sys.argv[1])
ids = torch.randint(100, 1000, (8, 128))
with torch.no_grad():
    model(ids)
    t = time.time(); model(ids); fwd = time.time() - t
opt = torch.optim.AdamW(model.parameters(), lr=1e-5)
t = time.time(); model(ids, labels=ids).loss.backward(); opt.step(); step = time.time() - t
print(json.dumps({"forward_s": fwd, "train_step_s": step, "threads": torch.get_num_threads()}))
"""


def measure(ref: str, policy: str | None) -> dict:
    env = {k: v for k, v in os.environ.items() if k != "OMP_WAIT_POLICY"}
    if policy:
        env["OMP_WAIT_POLICY"] = policy
    out = subprocess.run([sys.executable, "-c", "import sys\n" + CHILD, ref], env=env, capture_output=True,
                         text=True, check=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def main() -> None:
    ref = sys.argv[1] if len(sys.argv) > 1 else "smollm2"
    base = measure(ref, None)
    passive = measure(ref, "PASSIVE")
    print(json.dumps({"model": ref, "load_avg_1m": os.getloadavg()[0],
                      "default_forward_s": round(base["forward_s"], 3), "passive_forward_s": round(passive["forward_s"], 3),
                      "default_train_step_s": round(base["train_step_s"], 3),
                      "passive_train_step_s": round(passive["train_step_s"], 3),
                      "forward_speedup": round(base["forward_s"] / passive["forward_s"], 2),
                      "train_step_speedup": round(base["train_step_s"] / passive["train_step_s"], 2)}))


if __name__ == "__main__":
    main()
