"""Prompt builders shared by training and evaluation (one place, so both see the same text).

Task 5 of paper Appendix B (SID history -> next SID) and paper §3.3.1 (the same prompt asking for reasoning
first). The user message is a plain string; `chat_prompt` wraps it in the model's chat
template with the generation prompt, exactly as evaluation feeds it to the model.
"""
from __future__ import annotations

import re
from typing import Sequence

THINK_OPEN = "<think>"
THINK_CLOSE = "</think>"
SID_HISTORY_TEMPLATE = ("The user has interacted with items {sids} in chronological order. "
                        "Can you predict the next possible item that the user may expect?")
THINKING_INSTRUCTION = ("Let's think step by step before making recommendation. "
                        "Directly output the item SID after thinking.")


def sid_history_prompt(history_sids: Sequence[str], thinking: bool = False) -> str:
    """The user message of the next-SID task; `thinking` appends the reasoning instruction (paper §3.3.1)."""
    text = SID_HISTORY_TEMPLATE.format(sids=", ".join(history_sids))
    return f"{text} {THINKING_INSTRUCTION}" if thinking else text


def chat_prompt(tokenizer, user_message: str) -> str:
    """The chat-templated prompt text ending with the assistant generation prompt."""
    return tokenizer.apply_chat_template([{"role": "user", "content": user_message}],
                                         tokenize=False, add_generation_prompt=True)


_ANSWER_MARK = "\u241fSID\u241f"  # a string no template adds or changes


def direct_prompt(tokenizer, user_message: str) -> str:
    """The prompt of direct mode: everything the chat template puts before an assistant answer that
    training used (`prompt` + `completion` = the bare SID). For ChatML that is the generation prompt;
    Qwen3's template wraps a final assistant turn without reasoning as `<think>\\n\\n</think>\\n\\nSID`,
    so its direct prompt ends with the empty think block the model was trained to see before a SID."""
    chat = [{"role": "user", "content": user_message}, {"role": "assistant", "content": _ANSWER_MARK}]
    text = tokenizer.apply_chat_template(chat, tokenize=False)
    if _ANSWER_MARK not in text:
        raise ValueError("the chat template dropped the assistant answer; cannot build the direct-mode prompt")
    prefix = text[:text.index(_ANSWER_MARK)]
    generation = chat_prompt(tokenizer, user_message)
    if not prefix.startswith(generation):
        raise ValueError("the chat template's generation prompt is not a prefix of an answered chat")
    return prefix


def ranking_prompts(tokenizer, history_sids: Sequence[Sequence[str]], thinking: bool) -> list[str]:
    """The prompts every ranker starts from (evaluation, serving, the promotion gate), so a model is
    scored and served on the same text: thinking mode opens the assistant turn; direct mode is what
    training put before a bare SID (Qwen3's template adds an empty think block there)."""
    render = chat_prompt if thinking else direct_prompt
    return [render(tokenizer, sid_history_prompt(h, thinking=thinking)) for h in history_sids]


def thinking_response(reasoning: str, sid: str) -> str:
    """The assistant response of the reasoning format: `<think>\\n...\\n</think>\\n\\nSID` (paper §3.3.1)."""
    return f"{THINK_OPEN}\n{reasoning.strip()}\n{THINK_CLOSE}\n\n{sid}"


def shorten(text: str, max_words: int | None) -> str:
    """Whole sentences while they fit in `max_words` words (at least the first sentence's first words):
    the budget knob of small runs, so a trace fits the reasoning token budget."""
    text = str(text).strip()
    if not max_words or len(text.split()) <= max_words:
        return text
    kept, count = [], 0
    for sentence in re.split(r"(?<=[.!?])\s+", text):
        n = len(sentence.split())
        if count + n > max_words:
            break
        kept.append(sentence)
        count += n
    return " ".join(kept) if kept else " ".join(text.split()[:max_words])
