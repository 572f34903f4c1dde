"""SIDReasoner: reasoning-based generative recommendation over Semantic IDs.

Every stage is plain, typed Python here; `components/` wraps them for KFP.
"""
import os

# OMP_WAIT_POLICY is left to the caller. PASSIVE (threads sleep between parallel regions) helps where
# several torch processes share the cores (spinning threads made torch 2-7x slower there,
# bench/align_omp_wait.py): the test suite and side-by-side quality seeds set it. A stage running alone
# (a pod, a step of `sidreasoner run`) keeps libgomp's default: PASSIVE made the scratch model's alignment
# steps 1.4x slower on an idle 2-core machine, its kernels being too small to amortise the wake-ups
# (docs/quality.md, session 17).
# `import mlflow` (3.x) starts a telemetry thread that sets, then offline unsets, an environment variable
# while requests may be iterating os.environ: a KeyError race that failed a rehearsed pod's first MLflow
# call. Pods and CI are offline and have nothing to report; set before any mlflow import.
os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")

__version__ = "0.1.0"
