"""Training/validation records of the alignment tasks (paper §3.2.2) and the general-reasoning mix.

Each builder returns SFT records (see `training.sft`): chats `{"task", "prompt", "completion"}`
(loss on the response) or plain text `{"task", "text"}` (loss on every token). Task 5 uses the
shared prompt of `sidreasoner_core.prompts`, so training and evaluation see the same words.
"""
from __future__ import annotations

import json
import logging
import random
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Sequence

import pandas as pd

from .. import prompts
from .config import TASKS

log = logging.getLogger(__name__)

ITEM_TEXTS_FILE = "item_texts.parquet"
USER_REASONING_FILE = "user_reasoning.parquet"
MAX_TITLE_CHARS_IN_HISTORY = 120  # long titles in a 10-item history would crowd out the answer

# Reference wording (paper Appendix B), completed where the paper shortens it.
TITLE_TO_SID = "Which item has the title: {title}?"
SID_TO_TITLE = 'What is the title of item "{sid}"?'
SID_HISTORY_TO_TITLE = ("The user has sequentially interacted with items {sids}. Can you recommend the next item "
                        "for him? Tell me the title of the item?")
TITLE_HISTORY_TO_TITLE = ("The user has {verb} the following {category} items before: {titles}. Can you recommend "
                          "the next item for the user? Tell me the title of the item?")
TITLE_HISTORY_TO_SID = ("The user has {verb} the following {category} items before: {titles}. Can you predict "
                        "the next possible item that the user may expect? Tell me its SID.")


class TaskDataError(ValueError):
    """Bad task input (names the file/line/field)."""


@dataclass
class TaskInputs:
    items: pd.DataFrame                      # item_id, title, category, ... (data stage)
    sid_by_item: dict[str, str]              # from the sids artifact
    train: pd.DataFrame                      # samples of the train split (history, target)
    valid: pd.DataFrame                      # samples of the valid split
    item_texts: list[str] = field(default_factory=list)   # task 7 paragraphs (status ok)
    narratives: list[str] = field(default_factory=list)   # task 8 narratives (status ok)
    reasoning: pd.DataFrame | None = None    # task 8 traces of train samples: history, target, reasoning
    gsm8k_train: list[dict] = field(default_factory=list)
    gsm8k_test: list[dict] = field(default_factory=list)


def _chat(task: str, user: str, answer: str) -> dict:
    return {"task": task, "prompt": [{"role": "user", "content": user}],
            "completion": [{"role": "assistant", "content": answer}]}


def _category_words(category: str | None) -> tuple[str, str]:
    name = (category or "").replace("_", " ").strip()
    verb = "played" if "game" in name.lower() else "bought"
    return verb, name


def _short(title: str) -> str:
    title = " ".join(str(title).split())
    return title if len(title) <= MAX_TITLE_CHARS_IN_HISTORY else title[:MAX_TITLE_CHARS_IN_HISTORY].rstrip() + "..."


class _Catalog:
    def __init__(self, inputs: TaskInputs):
        items = inputs.items
        self.title = dict(zip(items["item_id"], items["title"].astype(str)))
        self.category = dict(zip(items["item_id"], items.get("category", pd.Series([""] * len(items)))))
        self.sid = inputs.sid_by_item

    def usable(self, ids: Sequence[str]) -> bool:
        return all(i in self.sid and i in self.title for i in ids)


# ---------------------------------------------------------------- the task builders

def title_to_sid(cat: _Catalog, item: str) -> dict:
    return _chat("title_to_sid", TITLE_TO_SID.format(title=" ".join(cat.title[item].split())), cat.sid[item])


def sid_to_title(cat: _Catalog, item: str) -> dict:
    return _chat("sid_to_title", SID_TO_TITLE.format(sid=cat.sid[item]), cat.title[item])


def sid_history_to_title(cat: _Catalog, history: Sequence[str], target: str) -> dict:
    sids = ", ".join(cat.sid[h] for h in history)
    return _chat("sid_history_to_title", SID_HISTORY_TO_TITLE.format(sids=sids), cat.title[target])


def _titles(cat: _Catalog, history: Sequence[str]) -> str:
    return ", ".join(f'"{_short(cat.title[h])}"' for h in history)


def title_history_to_title(cat: _Catalog, history: Sequence[str], target: str) -> dict:
    verb, name = _category_words(cat.category.get(target))
    user = TITLE_HISTORY_TO_TITLE.format(verb=verb, category=name, titles=_titles(cat, history))
    return _chat("title_history_to_title", " ".join(user.split()), f'"{cat.title[target]}"')


def sid_history_to_sid(cat: _Catalog, history: Sequence[str], target: str) -> dict:
    return _chat("sid_history_to_sid", prompts.sid_history_prompt([cat.sid[h] for h in history]), cat.sid[target])


def user_reasoning(cat: _Catalog, history: Sequence[str], target: str, reasoning: str) -> dict:
    """The teacher's user-centric reasoning as a reason-then-SID answer to the thinking prompt: alignment
    associates SIDs with reasoning about the user (paper §3.2.3), so the cold-start only has to settle
    the format (paper §3.3.1: "the model already possesses the capability")."""
    return _chat("user_reasoning", prompts.sid_history_prompt([cat.sid[h] for h in history], thinking=True),
                 prompts.thinking_response(reasoning, cat.sid[target]))


def title_history_to_sid(cat: _Catalog, history: Sequence[str], target: str) -> dict:
    verb, name = _category_words(cat.category.get(target))
    user = TITLE_HISTORY_TO_SID.format(verb=verb, category=name, titles=_titles(cat, history))
    return _chat("title_history_to_sid", " ".join(user.split()), cat.sid[target])


ITEM_TASKS: dict[str, Callable] = {"title_to_sid": title_to_sid, "sid_to_title": sid_to_title}
SEQUENCE_TASKS: dict[str, Callable] = {
    "sid_history_to_title": sid_history_to_title, "title_history_to_title": title_history_to_title,
    "sid_history_to_sid": sid_history_to_sid, "title_history_to_sid": title_history_to_sid}


_CALC = re.compile(r"<<[^>]*>>")


def gsm8k_chat(row: dict) -> dict:
    """A GSM8K chat: question -> worked answer ending in `#### n` (calculator marks removed)."""
    return _chat("gsm8k", row["question"].strip(), _CALC.sub("", row["answer"]).strip())


# ---------------------------------------------------------------- pools and the mix

def task_pools(inputs: TaskInputs, max_history: int = 10, eval_items: int = 500,
               seed: int = 42, reasoning_max_words: int | None = None) -> dict[str, tuple[list[dict], list[dict]]]:
    """Every task's full (train, validation) records. Item tasks and corpora have no held-out
    split: their validation rows are a fixed sample of the training rows (a memorisation check)."""
    cat = _Catalog(inputs)
    rng = random.Random(seed)
    items = [i for i in inputs.items["item_id"] if i in cat.sid]
    missing = len(inputs.items) - len(items)
    if missing:
        log.warning("%d items have no SID and are left out of the item tasks", missing)
    eval_item_ids = rng.sample(items, min(eval_items, len(items)))
    pools: dict[str, tuple[list[dict], list[dict]]] = {}
    for name, fn in ITEM_TASKS.items():
        pools[name] = ([fn(cat, i) for i in items], [fn(cat, i) for i in eval_item_ids])

    def seq(df: pd.DataFrame, fn) -> list[dict]:
        out = []
        for h, t in zip(df["history"], df["target"]):
            h = list(h)[-max_history:]
            if h and cat.usable(h + [t]):
                out.append(fn(cat, h, t))
        return out

    for name, fn in SEQUENCE_TASKS.items():
        pools[name] = (seq(inputs.train, fn), seq(inputs.valid, fn))
    if inputs.item_texts:
        recs = [{"task": "item_text", "text": t} for t in inputs.item_texts]
        pools["item_text"] = (recs, rng.sample(recs, min(eval_items, len(recs))))
    if inputs.narratives:
        recs = [{"task": "user_narrative", "text": t} for t in inputs.narratives]
        pools["user_narrative"] = (recs, rng.sample(recs, min(eval_items, len(recs))))
    if inputs.reasoning is not None and len(inputs.reasoning):
        recs = [user_reasoning(cat, list(h)[-max_history:], t, prompts.shorten(r, reasoning_max_words))
                for h, t, r in zip(inputs.reasoning["history"], inputs.reasoning["target"], inputs.reasoning["reasoning"])
                if len(h) and cat.usable(list(h)[-max_history:] + [t])]
        if recs:
            pools["user_reasoning"] = (recs, rng.sample(recs, min(eval_items, len(recs))))
    if inputs.gsm8k_train:
        pools["gsm8k"] = ([gsm8k_chat(r) for r in inputs.gsm8k_train], [gsm8k_chat(r) for r in inputs.gsm8k_test])
    return pools


def _take(pool: list[dict], ratio: float, cap: int | None, rng: random.Random) -> list[dict]:
    if ratio <= 0 or not pool:
        return []
    whole, frac = divmod(ratio, 1.0)
    out = list(pool) * int(whole) + rng.sample(pool, int(round(frac * len(pool))))
    if cap is not None and len(out) > cap:
        out = rng.sample(out, cap)
    return out


def mix(pools: dict[str, tuple[list[dict], list[dict]]], ratios: dict[str, float], max_per_task: int | None = None,
        eval_max_per_task: int = 500, eval_tasks: Sequence[str] | None = None,
        seed: int = 42) -> tuple[list[dict], list[dict], dict[str, int]]:
    """(train, validation, counts): per task `ratio` x its pool (missing ratio = 1), capped; shuffled."""
    rng = random.Random(seed)
    train, evals, counts = [], [], {}
    for task in TASKS:
        if task not in pools:
            continue
        tr, ev = pools[task]
        picked = _take(tr, ratios.get(task, 1.0), max_per_task, rng)
        if not picked:
            continue
        train += picked
        counts[f"n_train_{task}"] = len(picked)
        if eval_tasks is None or task in eval_tasks:
            ev = ev[:eval_max_per_task]
            evals += ev
            counts[f"n_eval_{task}"] = len(ev)
    rng.shuffle(train)
    return train, evals, counts


# ---------------------------------------------------------------- reading inputs

def read_jsonl(path: str | Path, required: Sequence[str] = ("question", "answer")) -> list[dict]:
    path = Path(path)
    if not path.is_file():
        raise TaskDataError(f"{path}: file not found")
    rows = []
    with open(path) as f:
        for n, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as exc:
                raise TaskDataError(f"{path}:{n}: not valid JSON ({exc.msg})") from None
            for k in required:
                if not isinstance(row.get(k), str) or not row[k].strip():
                    raise TaskDataError(f"{path}:{n}: field '{k}' missing or empty")
            rows.append(row)
    return rows


def read_reasoning(corpus_dir: str | Path | None) -> pd.DataFrame | None:
    """The corpus's usable user reasoning traces of training samples (history, target, reasoning), or None."""
    if not corpus_dir or not (Path(corpus_dir) / USER_REASONING_FILE).is_file():
        return None
    import pyarrow.parquet as pq

    from ..corpus import read_user_reasoning, usable_traces

    path = Path(corpus_dir) / USER_REASONING_FILE
    columns = pq.read_schema(path).names
    missing = [c for c in ("history", "history_sids", "target", "reasoning", "status") if c not in columns]
    if missing:
        raise TaskDataError(f"{path}: column '{missing[0]}' missing (columns: {columns})")
    return usable_traces(read_user_reasoning(corpus_dir, ok_only=False)).reset_index(drop=True)


def read_corpus(corpus_dir: str | Path | None) -> tuple[list[str], list[str]]:
    """(item paragraphs, user narratives) of an enrichment corpus; only rows with status == "ok"."""
    if not corpus_dir:
        return [], []
    import pyarrow.parquet as pq

    out = []
    for name, column in ((ITEM_TEXTS_FILE, "paragraph"), (USER_REASONING_FILE, "narrative")):
        path = Path(corpus_dir) / name
        if not path.is_file():
            out.append([])
            continue
        df = pq.read_table(path).to_pandas()
        if column not in df.columns:
            raise TaskDataError(f"{path}: column '{column}' missing (columns: {list(df.columns)})")
        if "status" in df.columns:
            df = df[df["status"] == "ok"]
        out.append([str(t) for t in df[column] if isinstance(t, str) and t.strip()])
    return out[0], out[1]
