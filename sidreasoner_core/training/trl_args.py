"""Our stage configs -> TRL's configs, in one place.

Our configs use TRL's own field names where they mean the same thing, so those fields pass
through by name; `RENAMED` lists the few that TRL (transformers 5) names differently, and every
trainer adds only what it derives (output dir, precision flags, batch plan, ...).
"""
from __future__ import annotations

import dataclasses
from typing import Any, Iterable

from pydantic import BaseModel

# our name -> TRL/transformers 5 name
RENAMED = {
    "warmup_ratio": "warmup_steps",                  # transformers 5: a float < 1 is a ratio of the total steps
    "gradient_checkpointing": "activation_checkpointing",
    "sampling": "train_sampling_strategy",
}
# Fields whose name TRL also has with another meaning: ours names a DeepSpeed stage ("zero2"),
# TRL's takes a DeepSpeed config (ours reaches the run through the accelerate launch instead).
NOT_TRL = {"deepspeed"}


def trl_fields(config_cls) -> set[str]:
    return {f.name for f in dataclasses.fields(config_cls)}


def shared_values(config_cls, ours: BaseModel, skip: Iterable[str] = ()) -> dict[str, Any]:
    """The values of `ours` that `config_cls` takes: same-named fields as they are, `RENAMED` ones renamed."""
    names, skip = trl_fields(config_cls), set(skip) | NOT_TRL
    out: dict[str, Any] = {}
    for field in type(ours).model_fields:
        if field in skip:
            continue
        theirs = RENAMED.get(field, field)
        if theirs in names:
            out[theirs] = getattr(ours, field)
    return out


def build_trl_config(config_cls, *ours: BaseModel, skip: Iterable[str] = (), **derived: Any):
    """`config_cls(...)` from one or more of our configs (later ones win) plus derived values (win over all)."""
    values: dict[str, Any] = {}
    for part in ours:
        values.update(shared_values(config_cls, part, skip))
    values.update(derived)
    return config_cls(**values)
