"""Multi-task SID-language alignment (SPEC §3) and the shared SFT machinery (`align.sft`)."""
import os as _os
import sys as _sys

# On a shared CPU box OpenMP's busy-waiting threads make torch ~15x slower (measured: SmolLM2
# forward 7.3 s with 2 spinning threads vs 0.54 s passive). Only effective before torch loads.
if "torch" not in _sys.modules:
    _os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
