"""Multi-task SID-language alignment (SPEC §3) and the shared SFT machinery (`align.sft`).

(OpenMP's wait policy for all stages is set in `sidreasoner_core/__init__.py`.)"""
