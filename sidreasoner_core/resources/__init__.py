"""Data files shipped inside the package (and so inside every image, which installs it).

`gsm8k_train.jsonl` (7,473 rows) and `gsm8k_test.jsonl` (1,319 rows): the full GSM8K (OpenAI, MIT
license) -- the general-reasoning mix of the alignment corpus (paper §3.2, ablation S3) and the
general-ability check after alignment. The cluster preset reads them from here: the images' build
context leaves `sample_data/` out, and the data is small and versioned with the code.
"""
from pathlib import Path

DIR = Path(__file__).parent
