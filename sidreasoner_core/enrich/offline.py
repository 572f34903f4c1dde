"""The offline teacher (no LLM): item texts from metadata templates, user reasoning by rules.

This is the paper's "metadata-only template" setting (paper §3.2.3, Table 5).

User reasoning is a compact rationale whose informative parts come first, so a cold-start budget
of 16-32 words keeps them: the user's interests (product types, a loyal brand), their shift, then
the attributes expected of the next item; one closing sentence anchors it on the latest history
SID. It never writes a title or the target's SID. With `offline_target_hint` (a named teacher
setting, on by default: the paper's teacher sees the target "for guidance") the expected
attributes are the target's product type and brand; off, they are extrapolated from the history.
How identifying such hints are is measured per corpus (`enrich.leakage`).
"""
from __future__ import annotations

import ast
import json
import re
from collections import Counter
from functools import lru_cache
from typing import Sequence

from .prompts import ItemInfo
from .validate import SENTENCE_SPLIT, mentions_title, phrase_pattern

STOPWORDS = set("""a an and the of for with in on to by from at or as is are be this that these those it its
your you our we all any each per set pack kit piece pieces pcs pc inch inches x mm cm ft lb lbs oz count ct
size sizes new black white red blue green yellow clear grey gray silver assorted assortment various
""".split())
WORD = re.compile(r"[A-Za-z][A-Za-z\-]+")


def clean_description(text: str | None) -> str:
    """Amazon descriptions often arrive as a stringified list: join it; collapse whitespace."""
    text = (text or "").strip()
    if text.startswith("[") and text.endswith("]"):
        try:
            parts = ast.literal_eval(text)
            if isinstance(parts, (list, tuple)):
                text = " ".join(str(p) for p in parts)
        except (ValueError, SyntaxError):
            pass
    text = re.sub(r"<[^>]+>", " ", text)  # stray HTML
    return " ".join(text.split())


@lru_cache(maxsize=None)   # asked for each item many times over a corpus (items are frozen)
def product_type(item: ItemInfo) -> str:
    """A short noun phrase for what the item is, from the title's head segment without the brand
    and model numbers; always strictly shorter than the title, so writing it never writes the title."""
    head = re.split(r"[,(\[|;:]| - ", item.title)[0]
    brand = {w.lower() for w in item.brand.split()}
    words = [w for w in head.split() if not any(ch.isdigit() for ch in w) and w.lower() not in brand
             and w.lower() not in STOPWORDS and len(w) > 1]
    words = [w.strip(".!?;:\"'") for w in words]
    words = [w for w in words if len(w) > 1]
    phrase = " ".join(words[-3:]).strip(" -&/").lower()
    if not phrase or " ".join(item.title.lower().split()) == phrase:
        phrase = " ".join(words[-2:]).lower() if len(words) >= 3 else ""
    return phrase or "product"


def keywords(item: ItemInfo, n: int = 8) -> list[str]:
    return list(_keywords(item, n))


@lru_cache(maxsize=None)
def _keywords(item: ItemInfo, n: int) -> tuple[str, ...]:
    words = WORD.findall(f"{item.title} {item.description[:400]}")
    brand = {w.lower() for w in item.brand.split()}
    counts = Counter(w.lower() for w in words if w.lower() not in STOPWORDS and w.lower() not in brand and len(w) > 2)
    title_words = [w.lower() for w in WORD.findall(item.title)]
    ranked = sorted(counts, key=lambda w: (w not in title_words, -counts[w], title_words.index(w) if w in title_words else 0))
    return tuple(ranked[:n])


def _sentences(text: str, n: int) -> list[str]:
    out = [s if s[-1] in ".!?" else s + "." for s in SENTENCE_SPLIT.split(text) if len(s.split()) >= 3]
    return out[:n]


def _scrub(text: str, title: str, replacement: str) -> str:
    """Replace the title wherever it appears (case-insensitive) so templates never leak it."""
    if not mentions_title(text, title):
        return text
    return phrase_pattern(" ".join(title.split()), "", re.I).sub(replacement, " ".join(text.split()))


def _join(words: Sequence[str]) -> str:
    words = list(words)
    if len(words) <= 1:
        return "".join(words)
    return ", ".join(words[:-1]) + " and " + words[-1]


def item_analysis(item: ItemInfo) -> str:
    """The analysis JSON (same keys as the LLM prompt asks for)."""
    ptype = product_type(item)
    kws = keywords(item)
    desc = _sentences(_scrub(item.description, item.title, f"this {ptype}"), 3)
    category = item.category.replace("_", " ") or "general"
    extras = [s.strip() for s in re.findall(r"[,(]([^,()]+)", item.title) if s.strip()][:3]
    features = ([f"brand: {item.brand}"] if item.brand else []) + [f"product type: {ptype}"] + extras
    features += [f"{k}" for k in kws[: max(0, 3 - len(features))]]
    analysis = {
        "description": " ".join(desc) or f"A {ptype} in the {category} category.",
        "use_cases": [f"everyday use as a {ptype}", f"{category.lower()} projects that need {kws[0] if kws else ptype}"],
        "audience": f"Buyers of {category.lower()} supplies looking for a {ptype}.",
        "features": features[:5],
        "keywords": list(dict.fromkeys([*kws, ptype, item.brand.lower()] if item.brand else [*kws, ptype]))[:8],
    }
    while len(analysis["keywords"]) < 5:
        analysis["keywords"].append(category.lower().split()[len(analysis["keywords"]) % max(len(category.split()), 1)]
                                    + f"-{len(analysis['keywords'])}")
    return json.dumps(analysis, ensure_ascii=False)


def item_paragraph(item: ItemInfo, analysis: dict, min_sentences: int) -> str:
    s, ptype = item.sid, product_type(item)
    category = item.category.replace("_", " ") or "general"
    brand = item.brand or "an unnamed maker"
    kws = analysis.get("keywords", [])[:4]
    sents = [f"{s} is a {ptype} made by {brand} in the {category} category."]
    sents += [f"In short, {d[0].lower()}{d[1:]}" for d in _sentences(_scrub(analysis.get("description", ""), item.title, s), 2)]
    sents += [f"One of its details is {f}." for f in analysis.get("features", [])[:3]]
    sents += [f"A typical use of {s} is {u}." for u in analysis.get("use_cases", [])[:2]]
    sents += [f"{s} is meant for this audience: {analysis.get('audience', '').rstrip('.')}."]
    if kws:
        sents.append(f"Shoppers searching for {_join(kws)} are likely to come across {s}.")
    fillers = [
        f"Customers who already trust {brand} often look at {s} when they need a {ptype}.",
        f"Within {category}, {s} competes with other products of the same type.",
        f"Reviews of {s} usually discuss how well it works as a {ptype}.",
        f"People who bought {s} tend to buy related {category.lower()} supplies as well.",
        f"The metadata of {s} places it among {ptype} products.",
        f"Anyone comparing options for a {ptype} can consider {s} as a candidate.",
        f"{s} can be recommended to users whose recent purchases involve {kws[0] if kws else ptype}.",
        f"Altogether, {s} is a practical choice for buyers in the {category} category.",
    ]
    for f in fillers:
        if len(sents) >= min_sentences:
            break
        sents.append(f)
    i = 0
    while len(sents) < min_sentences:  # very large min_sentences: keep restating facts
        sents.append(f"As noted before, {s} is a {ptype} (fact {i + 1}).")
        i += 1
    return _scrub(" ".join(sents), item.title, s)


def _facts(history: Sequence[ItemInfo], target: ItemInfo | None) -> list[str]:
    """Neutral clauses about the history (no titles; items by SID)."""
    sids = [h.sid for h in history]
    types = [product_type(h) for h in history]
    facts = [f"the history holds {len(history)} item{'s' if len(history) > 1 else ''}, from {sids[0]} to {sids[-1]}"]
    brands = Counter(h.brand for h in history if h.brand.strip())
    top = brands.most_common(1)
    if top and top[0][1] > 1:
        b, k = top[0]
        facts.append(f"the brand {b} appears {k} times ({_join([h.sid for h in history if h.brand == b][:4])}), "
                     "which points to loyalty to it")
    elif len(brands) > 1:
        facts.append(f"the brands vary ({_join(list(brands)[:4])}), so brand loyalty looks weak and function matters more")
    facts.append(f"the first item, {sids[0]}, is a {types[0]}")
    recent = list(zip(sids, types))[-2:] if len(history) > 1 else []
    if recent:
        facts.append(f"the most recent items are {_join([f'{s} (a {t})' for s, t in recent])}, "
                     "so the current interest lies there")
        early = set(" ".join(types[:-2] or types[:1]).split())
        late = set(" ".join(types[-2:]).split())
        if early & late:
            facts.append(f"the interest in {_join(sorted(early & late)[:3])} is stable across the history")
        else:
            facts.append(f"there is a shift from {types[0]} toward {types[-1]}")
    kw = Counter(w for h in history for w in dict.fromkeys(keywords(h, 6)))   # in order: ties break the same way every run
    shared = [w for w, c in kw.most_common(4) if c > 1]
    if shared:
        facts.append(f"words like {_join(shared)} recur, which marks a steady need")
    return facts


def _ending(history: Sequence[ItemInfo], target: ItemInfo | None) -> str:
    last = product_type(history[-1])
    if target is None:
        return f"the user may enjoy another item that complements {history[-1].sid}, such as a related {last}"
    ttype = product_type(target)
    brand = f", possibly from {target.brand}" if target.brand.strip() else ""
    return f"the user may enjoy a {ttype} next{brand}, something that fits the recent needs around {last}"


def loyal_brand(history: Sequence[ItemInfo]) -> str:
    """A brand bought more than once in the history, else ""."""
    brands = Counter(h.brand.strip() for h in history if h.brand.strip()).most_common(1)
    return brands[0][0] if brands and brands[0][1] > 1 else ""


def expected_next(history: Sequence[ItemInfo], target: ItemInfo | None) -> tuple[str, str]:
    """(product type, brand) the rationale expects next: the target's when the teacher is shown it,
    else the latest interest (with the loyal brand, if any)."""
    if target is not None:
        return product_type(target), target.brand.strip()
    return product_type(history[-1]), loyal_brand(history)


def user_reasoning(history: Sequence[ItemInfo], target: ItemInfo | None) -> str:
    """Interests and their shift, then the expected next item (together about 15 words), then the
    SID anchor (see the module docstring)."""
    first, last, brand = product_type(history[0]), product_type(history[-1]), loyal_brand(history)
    etype, ebrand = expected_next(history, target)
    loyal = f", loyal to {brand}" if brand else ""
    interest = f"From {first} to {last}{loyal}." if first != last else f"Steady on {last}{loyal}."
    return (f"{interest} Next: a {etype}{f' by {ebrand}' if ebrand else ''}. "
            f"The user may enjoy it after the latest purchase, {history[-1].sid}, as it fits the same needs.")


def user_narrative(history: Sequence[ItemInfo], target: ItemInfo | None) -> str:
    facts = _facts(history, target)[1:]
    sids = ", ".join(h.sid for h in history)
    body = " ".join(f"{f[0].upper()}{f[1:]}." for f in facts)
    return (f"The user interacted with {sids}, in this order. {body} "
            f"Taken together, {_ending(history, target)}.")
