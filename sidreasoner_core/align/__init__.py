"""Multi-task SID-language alignment (paper §3.2.2-§3.2.3): task records and the alignment stage;
the SFT itself is the shared training core (`training.sft`).

(OpenMP's wait policy for all stages is set in `sidreasoner_core/__init__.py`.)"""
