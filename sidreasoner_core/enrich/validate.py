"""Checks on teacher answers. Each check returns the cleaned value and a list of reasons
(empty = valid); the reasons go back to the teacher on a retry and into failed.jsonl."""
from __future__ import annotations

import json
import re
from functools import lru_cache
from typing import Sequence

from ..sid import find_sids

THINK_BLOCK = re.compile(r"^\s*<think>.*?</think>\s*", re.S)  # reasoning-model teachers (Qwen3, vLLM)
FENCE = re.compile(r"^\s*```[a-zA-Z]*\s*(.*?)\s*```\s*$", re.S)
BULLET = re.compile(r"^\s*(?:[-*\u2022]|\d+[.)])\s+", re.M)
SENTENCE_SPLIT = re.compile(r"(?<=[.!?])\s+")
MIN_TITLE_CHARS = 4      # shorter "titles" are ordinary words; forbidding them would reject any text
MIN_REASONING_WORDS = 15
ANALYSIS_KEYS = ("description", "use_cases", "audience", "features", "keywords")


def clean(text: str | None) -> str:
    """Drop a leading <think> block and surrounding whitespace."""
    return THINK_BLOCK.sub("", text or "").strip()


def one_paragraph(text: str) -> str:
    return " ".join(text.split())


def _norm(text: str) -> str:
    return " ".join(text.lower().split())


@lru_cache(maxsize=None)
def phrase_pattern(phrase: str, word: str = r"\w", flags: int = 0) -> re.Pattern:
    """`phrase` as a whole phrase (not inside a longer word of `word` characters), compiled once: a
    corpus check runs each title's pattern over many traces, past what `re`'s own cache holds."""
    return re.compile(rf"(?<!{word}){re.escape(phrase)}(?!{word})" if word else re.escape(phrase), flags)


def mentions_title(text: str, title: str) -> bool:
    """Case/whitespace-insensitive whole-phrase match of the title."""
    t = _norm(title)
    if len(t) < MIN_TITLE_CHARS:
        return False
    return phrase_pattern(t).search(_norm(text)) is not None


def count_sentences(text: str) -> int:
    return sum(1 for s in SENTENCE_SPLIT.split(text.strip()) if len(s.split()) >= 3)


def parse_analysis(text: str | None) -> tuple[dict | None, list[str]]:
    """The analysis answer as a dict with the five keys of the analysis prompt (paper Appendix C) (a ``` fence or prose around the
    object is tolerated)."""
    body = clean(text)
    m = FENCE.match(body)
    if m:
        body = m.group(1)
    if not body:
        return None, ["the answer is empty"]
    start, end = body.find("{"), body.rfind("}")
    if start < 0 or end <= start:
        return None, ["the answer is not a JSON object"]
    try:
        obj = json.loads(body[start:end + 1])
    except json.JSONDecodeError as exc:
        return None, [f"the answer is not valid JSON ({exc.msg} at char {exc.pos})"]
    if not isinstance(obj, dict):
        return None, ["the answer is not a JSON object"]
    missing = [k for k in ANALYSIS_KEYS if not obj.get(k)]
    if missing:
        return None, [f"the JSON object lacks the keys {missing}"]
    return obj, []


def _unknown_sids(text: str, allowed: set[str]) -> list[str]:
    return sorted({s for s in find_sids(text) if s not in allowed})


def check_item_paragraph(text: str | None, sid: str, title: str, min_sentences: int) -> tuple[str, list[str]]:
    body = clean(text)
    reasons = []
    if not body:
        return "", ["the answer is empty"]
    if BULLET.search(body):
        reasons.append("it uses bullet points or a list; write one plain paragraph")
    para = one_paragraph(body)
    if sid not in para:
        reasons.append(f"it never mentions the item by its Semantic ID {sid}")
    if mentions_title(para, title):
        reasons.append("it writes the item's title; refer to the item only by its Semantic ID")
    unknown = _unknown_sids(para, {sid})
    if unknown:
        reasons.append(f"it mentions Semantic IDs that are not this item's: {', '.join(unknown[:3])}")
    n = count_sentences(para)
    if n < min_sentences:
        reasons.append(f"it has {n} sentences, at least {min_sentences} are required")
    return para, reasons


def check_user_text(text: str | None, history_sids: Sequence[str], history_titles: Sequence[str],
                    target_sid: str, target_title: str, require_all_history: bool) -> tuple[str, list[str]]:
    """Reasoning (require_all_history=False) or narrative (True): items only by SID, the
    target neither by title nor by SID. When the target also sits in the history (a repeat
    purchase, or a shared SID), its SID/title are history mentions and allowed."""
    body = clean(text)
    if not body:
        return "", ["the answer is empty"]
    para = one_paragraph(body)
    reasons = []
    allowed = set(history_sids)
    if len(para.split()) < MIN_REASONING_WORDS:
        reasons.append(f"it is too short (fewer than {MIN_REASONING_WORDS} words)")
    if "<think>" in para or "</think>" in para:
        reasons.append("it contains <think> tags")
    if target_sid not in allowed and target_sid in para:
        reasons.append("it names the next item's Semantic ID; the next item must not be named")
    if mentions_title(para, target_title) and not any(_norm(t) == _norm(target_title) for t in history_titles):
        reasons.append("it names the next item's title; the next item must not be named")
    used_titles = [t for t in dict.fromkeys(history_titles) if mentions_title(para, t)]
    if used_titles:
        reasons.append(f"it writes item titles (e.g. {used_titles[0]!r}); refer to items only by their Semantic IDs")
    mentioned = [s for s in dict.fromkeys(history_sids) if s in para]
    if require_all_history:
        missing = [s for s in dict.fromkeys(history_sids) if s not in para]
        if missing:
            reasons.append(f"it does not recite the full SID history (missing {', '.join(missing[:3])})")
    elif not mentioned:
        reasons.append("it never refers to the history items by their Semantic IDs")
    unknown = [s for s in _unknown_sids(para, allowed) if s != target_sid]
    if unknown:
        reasons.append(f"it mentions Semantic IDs that are not in the history: {', '.join(unknown[:3])}")
    return para, reasons
