"""Multi-task SID-language alignment (SPEC §3) and the shared SFT machinery (`align.sft`)."""
