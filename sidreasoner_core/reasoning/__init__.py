"""Reasoning stages: cold-start activation SFT and GRPO with the prefix-match reward (SPEC §4-5)."""
