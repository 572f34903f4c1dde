"""Baselines scored on the same splits with the same metric code: most-popular and SASRec."""
