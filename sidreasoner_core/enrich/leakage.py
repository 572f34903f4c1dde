"""How identifying a corpus's reasoning traces are: the share of traces that state the target's
product type and brand when that pair belongs to the target alone in the catalogue. Such a trace
all but names the next item (the leak a teacher that sees the target can produce); the figure goes
into the corpus stats and the pipeline report."""
from __future__ import annotations

from collections import Counter
from typing import Iterable

from .offline import product_type
from .prompts import ItemInfo
from .validate import phrase_pattern


def _mentions(text: str, phrase: str) -> bool:
    return bool(phrase) and phrase_pattern(phrase.lower(), r"[\w-]").search(text) is not None


def identifying_share(traces: Iterable[tuple[str, ItemInfo]], catalogue: Iterable[ItemInfo]) -> dict[str, float]:
    """`traces`: (reasoning text, target item). Returns the share of traces stating the target's
    product type (`states_target_type`) and the share whose stated type + brand match the target
    alone (`identifying`), over `n` traces."""
    pairs = Counter((product_type(i), i.brand.strip().lower()) for i in catalogue)
    n = stated = unique = 0
    for text, target in traces:
        n += 1
        low = " ".join(str(text).lower().split())
        ptype, brand = product_type(target), target.brand.strip().lower()
        if not _mentions(low, ptype):
            continue
        stated += 1
        if (not brand or _mentions(low, brand)) and pairs[(ptype, brand)] == 1:
            unique += 1
    return {"n": float(n), "states_target_type": stated / n if n else 0.0, "identifying": unique / n if n else 0.0}
