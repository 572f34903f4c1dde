"""Test inputs for the reasoning stages, built here until the upstream stages land:
a tiny Qwen3 with SID tokens, a SID table, and a planted task GRPO can learn in seconds."""
from __future__ import annotations

import contextlib
import itertools
import random
from pathlib import Path

import pandas as pd

from sidreasoner_core import sid as sidlib

LEVELS, CODES = 3, 4  # a small SID space so random rollouts hit partial matches


@contextlib.contextmanager
def one_torch_thread():
    """Tiny models on this shared 2-core box run ~20x faster on one intra-op thread (no contention)."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def tiny_sid_model(dest: Path, levels: int = LEVELS, codes: int = CODES, seed: int = 0) -> Path:
    """tiny-qwen3 + SID tokens, saved as a HF directory. Seeded: the new SID rows are drawn from
    torch's global generator, which earlier tests leave in any state."""
    import torch

    from sidreasoner_core.models import TINY, add_sid_tokens, load_model

    torch.manual_seed(seed)
    model, tok = load_model(TINY)
    add_sid_tokens(tok, model, sidlib.vocabulary(levels, codes))
    model.save_pretrained(dest)
    tok.save_pretrained(dest)
    return dest


def planted_catalogue(n_items: int = 24, seed: int = 0) -> dict[str, str]:
    rng = random.Random(seed)
    all_codes = list(itertools.product(range(CODES), repeat=LEVELS))
    rng.shuffle(all_codes)
    return {f"i{k}": sidlib.format_sid(c) for k, c in enumerate(all_codes[:n_items])}


def write_sids_artifact(out: Path, sid_by_item: dict[str, str]):
    import pyarrow as pa
    import pyarrow.parquet as pq

    from sidreasoner_core.artifacts import open_artifact, write_artifact

    table = pa.table({"item_id": list(sid_by_item), "sid": list(sid_by_item.values()),
                      "codes": [list(sidlib.parse_sid(s)) for s in sid_by_item.values()]})
    with write_artifact(out, kind=sidlib.KIND) as d:
        pq.write_table(table, d / sidlib.SIDS_FILE)
    return open_artifact(out, kind=sidlib.KIND)


def unique_reference_sids(items: pd.DataFrame) -> dict[str, str]:
    """The sample's reference SIDs with the shared ones made unique on the last level."""
    used, out = set(), {}
    for item, sid in zip(items["item_id"], items["reference_sid"]):
        codes = list(sidlib.parse_sid(sid))
        while sidlib.format_sid(codes) in used:
            codes[-1] = (codes[-1] + 1) % 256
        used.add(sidlib.format_sid(codes))
        out[item] = sidlib.format_sid(codes)
    return out


def planted_rows(sid_by_item: dict[str, str], n: int = 8, seed: int = 0) -> list[dict]:
    """Prompts over random histories whose target is always the same item (learnable)."""
    from sidreasoner_core.reasoning.config import PromptConfig
    from sidreasoner_core.reasoning.samples import sid_rows

    rng = random.Random(seed)
    items = list(sid_by_item)
    target = items[0]
    samples = pd.DataFrame([{"user_id": f"u{k}", "history": rng.sample(items[1:], 3), "target": target}
                            for k in range(n)])
    return sid_rows(samples, sid_by_item, PromptConfig())


def teach_format(model_dir: Path, sid_by_item: dict[str, str], rows: list[dict], steps: int = 150,
                 seed: int = 0) -> None:
    """A few steps of plain SFT so the random model answers `<think>..</think>` + a random
    catalogue SID: GRPO then has reward variance to learn the planted target from."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    torch.manual_seed(seed)
    rng = random.Random(seed)
    tok = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForCausalLM.from_pretrained(model_dir)
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    sids = list(sid_by_item.values())
    model.train()
    for _ in range(steps):
        batch = []
        for row in rng.sample(rows, min(4, len(rows))):
            prompt = tok.apply_chat_template(row["prompt"], tokenize=False, add_generation_prompt=True)
            answer = f"<think>\nok\n</think>\n\n{rng.choice(sids)}{tok.eos_token}"
            p_ids = tok(prompt, add_special_tokens=False)["input_ids"]
            a_ids = tok(answer, add_special_tokens=False)["input_ids"]
            batch.append((p_ids + a_ids, [-100] * len(p_ids) + a_ids))
        width = max(len(ids) for ids, _ in batch)
        ids = torch.tensor([i + [tok.pad_token_id] * (width - len(i)) for i, _ in batch])
        labels = torch.tensor([lab + [-100] * (width - len(lab)) for _, lab in batch])
        mask = torch.tensor([[1] * len(i) + [0] * (width - len(i)) for i, _ in batch])
        loss = model(input_ids=ids, attention_mask=mask, labels=labels).loss
        loss.backward()
        opt.step()
        opt.zero_grad()
    model.save_pretrained(model_dir)


def expected_sid_reward(model_dir: Path, rows: list[dict]) -> float:
    """Exact mean stepwise reward of the SID the model writes after a well-formed reasoning block:
    0.25 P(a) + 0.25 P(a) P(b|a) + 0.5 P(a) P(b|a) P(c|a,b), teacher-forced, averaged over rows.
    Deterministic, so a test can compare before and after training without sampling noise."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForCausalLM.from_pretrained(model_dir).eval()
    total = 0.0
    for row in rows:
        prompt = tok.apply_chat_template(row["prompt"], tokenize=False, add_generation_prompt=True)
        p_ids = tok(prompt + "<think>\nok\n</think>\n\n", add_special_tokens=False)["input_ids"]
        t_ids = tok(row["target_sid"], add_special_tokens=False)["input_ids"]
        with torch.no_grad():
            logits = model(torch.tensor([p_ids + t_ids])).logits[0]
        probs = [logits[len(p_ids) - 1 + i].softmax(-1)[t].item() for i, t in enumerate(t_ids)]
        pa, pab, pabc = probs[0], probs[0] * probs[1], probs[0] * probs[1] * probs[2]
        total += 0.25 * pa + 0.25 * pab + 0.5 * pabc
    return total / len(rows)
