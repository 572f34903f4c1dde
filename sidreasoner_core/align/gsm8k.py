"""General-ability check: GSM8K accuracy on a fixed subset (paper Table 4: alignment without the
general-reasoning mix collapses it). Batched greedy generation through the chat template."""
from __future__ import annotations

import logging
import re
from typing import Sequence

log = logging.getLogger(__name__)

_FINAL = re.compile(r"####\s*(-?[\d,]*\.?\d+)")
_NUMBER = re.compile(r"-?\d[\d,]*\.?\d*|-?\.\d+")


def _clean(num: str) -> float | None:
    num = num.replace(",", "").rstrip(".")
    try:
        return float(num)
    except ValueError:
        return None


def extract_answer(text: str) -> float | None:
    """The number after `#### `, else the last number in the text; None when there is none."""
    m = _FINAL.search(text)
    if m:
        return _clean(m.group(1))
    nums = _NUMBER.findall(text)
    return _clean(nums[-1]) if nums else None


def gold_answer(answer: str) -> float:
    value = extract_answer(answer)
    if value is None:
        raise ValueError(f"GSM8K answer without a final number: {answer[-80:]!r}")
    return value


def evaluate(model, tokenizer, rows: Sequence[dict], max_new_tokens: int = 256, batch_size: int = 16,
             desc: str = "gsm8k") -> dict:
    """Greedy answers to `rows` ({question, answer}); returns accuracy, counts and the outputs."""
    import torch
    from tqdm.auto import tqdm

    if not rows:
        return {"accuracy": float("nan"), "n": 0, "correct": 0, "outputs": []}
    side = tokenizer.padding_side
    tokenizer.padding_side = "left"  # batched decoding: prompts end at the same position
    was_training = model.training
    model.eval()
    outputs, correct = [], 0
    try:
        for start in tqdm(range(0, len(rows), batch_size), desc=desc):
            batch = rows[start:start + batch_size]
            texts = [tokenizer.apply_chat_template([{"role": "user", "content": r["question"].strip()}],
                                                   tokenize=False, add_generation_prompt=True) for r in batch]
            enc = tokenizer(texts, return_tensors="pt", padding=True, add_special_tokens=False).to(model.device)
            with torch.no_grad():
                gen = model.generate(**enc, max_new_tokens=max_new_tokens, do_sample=False,
                                     pad_token_id=tokenizer.pad_token_id)
            for r, seq in zip(batch, gen[:, enc["input_ids"].shape[1]:]):
                text = tokenizer.decode(seq, skip_special_tokens=True)
                pred, gold = extract_answer(text), gold_answer(r["answer"])
                ok = pred is not None and abs(pred - gold) < 1e-6
                correct += ok
                outputs.append({"question": r["question"], "output": text, "pred": pred, "gold": gold, "correct": ok})
    finally:
        tokenizer.padding_side = side
        model.train(was_training)
    return {"accuracy": correct / len(rows), "n": len(rows), "correct": correct, "outputs": outputs}
