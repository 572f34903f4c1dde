"""The four teacher prompts of paper §3.2.3, versioned.

Item-centric: analysis (metadata -> structured JSON) then integration (one SID-centred
paragraph). User-centric: reasoning (first-person monologue over the SID history, guided
by but never naming the true next item) then narrative (recites the SID history, weaves
in the reasoning). A rejected answer is retried with `retry_messages`: the previous
answer and the rejection reason are appended, so the retry is a different prompt (and a
different cache key) while a rerun of the same attempt hits the cache.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Sequence

PROMPT_VERSION = "v1"
HISTORY_DESCRIPTION_CHARS = 200  # per history item: enough for the gist, keeps 10-item prompts short

ITEM_SYSTEM = "You are an expert e-commerce product analyst. You write precise, factual text."
USER_SYSTEM = ("You are a recommendation analyst who reasons about users' shopping histories. "
               "Items are identified by Semantic IDs (SIDs) such as <a_1><b_2><c_3>.")

ITEM_ANALYSIS = """Analyse the following product.

Title: {title}
Brand: {brand}
Category: {category}
Description: {description}

Return ONLY a JSON object with these keys:
"description": a refined 2-3 sentence description,
"use_cases": a list of 2-3 use cases,
"audience": the target audience (one sentence),
"features": a list of 3-5 key features,
"keywords": a list of 5-8 keywords."""

ITEM_INTEGRATION = """The product below has the Semantic ID {sid}.

Title (for your understanding only; never write it): {title}
Brand: {brand}
Category: {category}
Description: {description}
Analysis: {analysis}

Write ONE paragraph of at least {min_sentences} sentences that fuses the metadata and the analysis.
Every mention of the product must be its Semantic ID {sid}; never write its title or name.
No bullet points, no lists, no headings."""

USER_REASONING = """A user interacted with these items, oldest first. Each item is named by its Semantic ID (SID).

{history}

For your guidance only, the item the user actually chose next is: "{target_title}" (brand: {target_brand}). \
Never mention that item, its title or its SID.

Write a first-person monologue, as the analyst thinking aloud ("I notice ..."), that infers the user's \
preferences and how they shift over time. Refer to every item only by its SID, never by its title. \
End open-ended with what the user may enjoy next ("The user may enjoy ..."), without naming any specific item."""

USER_NARRATIVE = """User history (oldest first): {sids}

Analyst's reasoning about this user:
{reasoning}

Write ONE paragraph that first recites the user's history as the SID sequence above, then weaves in the \
reasoning. Refer to every item only by its SID; never write item titles; do not name or suggest any \
specific next item."""

RETRY = ("Your answer was rejected: {reason}. Write it again and fix this; follow every instruction "
         "(try {attempt} of {max_attempts}).")

TEMPLATES = {"item_analysis": ITEM_ANALYSIS, "item_integration": ITEM_INTEGRATION,
             "user_reasoning": USER_REASONING, "user_narrative": USER_NARRATIVE, "retry": RETRY,
             "item_system": ITEM_SYSTEM, "user_system": USER_SYSTEM}


@dataclass(frozen=True)
class ItemInfo:
    item_id: str
    sid: str
    title: str
    brand: str
    category: str
    description: str


def _or_unknown(text: str) -> str:
    return text.strip() or "unknown"


def _cut(text: str, n: int) -> str:
    text = " ".join(text.split())
    return text if len(text) <= n else text[: max(n - 3, 0)].rstrip() + "..."


def _messages(system: str, user: str) -> list[dict]:
    return [{"role": "system", "content": system}, {"role": "user", "content": user}]


def item_analysis(item: ItemInfo, max_description_chars: int) -> list[dict]:
    return _messages(ITEM_SYSTEM, ITEM_ANALYSIS.format(
        title=item.title, brand=_or_unknown(item.brand), category=_or_unknown(item.category),
        description=_or_unknown(_cut(item.description, max_description_chars))))


def item_integration(item: ItemInfo, analysis: dict, max_description_chars: int, min_sentences: int) -> list[dict]:
    return _messages(ITEM_SYSTEM, ITEM_INTEGRATION.format(
        sid=item.sid, title=item.title, brand=_or_unknown(item.brand), category=_or_unknown(item.category),
        description=_or_unknown(_cut(item.description, max_description_chars)),
        analysis=json.dumps(analysis, ensure_ascii=False), min_sentences=min_sentences))


def user_reasoning(history: Sequence[ItemInfo], target: ItemInfo) -> list[dict]:
    lines = [f"{i}. {h.sid}: {h.title}" + (f" ({h.brand})" if h.brand.strip() else "")
             + (f" - {_cut(h.description, HISTORY_DESCRIPTION_CHARS)}" if h.description.strip() else "")
             for i, h in enumerate(history, 1)]
    return _messages(USER_SYSTEM, USER_REASONING.format(
        history="\n".join(lines), target_title=target.title, target_brand=_or_unknown(target.brand)))


def user_narrative(history_sids: Sequence[str], reasoning: str) -> list[dict]:
    return _messages(USER_SYSTEM, USER_NARRATIVE.format(sids=", ".join(history_sids), reasoning=reasoning))


def retry_messages(base: list[dict], answer: str, reason: str, attempt: int, max_attempts: int) -> list[dict]:
    """The base prompt + the rejected answer + why it was rejected. The try number keeps each
    retry a distinct prompt, so the cache never replays a rejected answer as the next try."""
    return [*base, {"role": "assistant", "content": answer},
            {"role": "user", "content": RETRY.format(reason=reason, attempt=attempt, max_attempts=max_attempts)}]
