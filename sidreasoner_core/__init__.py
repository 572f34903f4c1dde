"""SIDReasoner: reasoning-based generative recommendation over Semantic IDs.

Every stage is plain, typed Python here; `components/` wraps them for KFP.
"""
import os

# OpenMP threads that spin while waiting made torch 2-7x slower on a shared CPU
# (bench/align_omp_wait.py); passive waiting costs nothing measurable when idle.
# Set before any torch import, which every stage does after importing this package.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

__version__ = "0.1.0"
