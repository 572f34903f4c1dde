"""KFP pipeline definitions (cluster) and the local runner (kfp.local)."""
