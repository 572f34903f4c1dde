"""Data stage: raw or processed Amazon reviews -> items.parquet + samples.parquet."""
