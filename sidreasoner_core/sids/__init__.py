"""Semantic IDs (paper §3.2.1): item text embeddings, RQ-VAE, collision-free SIDs.

The SID codec and catalogue trie live in `sidreasoner_core.sid`; this package makes the SIDs.
"""
