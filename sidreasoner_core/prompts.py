"""Prompt builders shared by training and evaluation (one place, so both see the same text).

Task 5 of paper Appendix B (SID history -> next SID) and paper §3.3.1 (the same prompt asking for reasoning
first). The user message is a plain string; `chat_prompt` wraps it in the model's chat
template with the generation prompt, exactly as evaluation feeds it to the model.
"""
from __future__ import annotations

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


def thinking_response(reasoning: str, sid: str) -> str:
    """The assistant response of the reasoning format: `<think>\\n...\\n</think>\\n\\nSID` (paper §3.3.1)."""
    return f"{THINK_OPEN}\n{reasoning.strip()}\n{THINK_CLOSE}\n\n{sid}"
