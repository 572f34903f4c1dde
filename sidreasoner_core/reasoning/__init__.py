"""Reasoning stages: cold-start activation SFT and GRPO with the prefix-match reward (paper §3.3)."""
