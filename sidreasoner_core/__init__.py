"""SIDReasoner: reasoning-based generative recommendation over Semantic IDs.

Every stage is plain, typed Python here; `components/` wraps them for KFP.
"""
import os

# OpenMP threads that spin while waiting made torch 2-7x slower on a shared CPU
# (bench/align_omp_wait.py); passive waiting costs nothing measurable when idle.
# Set before any torch import, which every stage does after importing this package.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
# `import mlflow` (3.x) starts a telemetry thread that sets, then offline unsets, an environment variable
# while requests may be iterating os.environ: a KeyError race that failed a rehearsed pod's first MLflow
# call. Pods and CI are offline and have nothing to report; set before any mlflow import.
os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")

__version__ = "0.1.0"
