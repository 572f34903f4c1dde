"""Cleaning rules shared by every reader (raw dumps and processed CSV), so the same input is kept or
dropped -- and counted under the same reason -- whichever format it arrives in (the Amazon datasets of
paper §4.1.1)."""
from __future__ import annotations

import html

import numpy as np
import pandas as pd

JUNK_TITLE = r"^\s*<|getTime\(\)|\{\s*var\s"  # scraped HTML/JS found in some 2018 meta titles

# Reasons a row is dropped, as counted in the dataset's stats (`dropped`), by every reader.
ITEMS_NO_TITLE = "items_no_title"      # no usable title (missing, too short, scraped HTML)
META_DUPLICATE = "meta_duplicate"      # a second record of the same item id (the first is kept)


def clean_titles(titles: pd.Series) -> pd.Series:
    """HTML entities in titles (`&amp;`) decoded; only titles holding `&` are touched (fast)."""
    t = titles.fillna("").astype(str)
    amp = t.str.contains("&", regex=False).to_numpy()
    if amp.any():
        t = t.copy()
        t.loc[amp] = t.loc[amp].map(html.unescape)
    return t


def usable_title(titles: pd.Series, min_chars: int) -> np.ndarray:
    t = titles.fillna("")
    return ((t.str.len() >= min_chars) & ~t.str.contains(JUNK_TITLE, case=False, regex=True)).to_numpy()
