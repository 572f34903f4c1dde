"""Records as small state machines: each asks for its next call, validates the answer,
retries with the reason, and ends "ok" or "failed" with every reason kept.

The same jobs run under the async client, the Ray batch path and the offline teacher,
so validation and retry rules live here once.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Callable

from . import prompts, validate
from .config import EnrichConfig
from .prompts import ItemInfo


@dataclass
class Step:
    name: str
    build: Callable[[], list[dict]]                      # the base prompt
    check: Callable[[str | None], tuple[object, list[str]]]  # answer -> (value, reasons)


@dataclass
class Job:
    kind: str                 # "item" | "user"
    id: str
    steps: list[Step] = field(default_factory=list)
    max_attempts: int = 3
    status: str = "pending"   # pending | ok | failed
    values: dict = field(default_factory=dict)
    attempts: int = 0         # calls made for this record, all steps
    error: str | None = None
    reasons: list[dict] = field(default_factory=list)  # every rejection: step, try, reason
    _step: int = 0
    _tries: int = 0
    _messages: list[dict] | None = None

    @property
    def step(self) -> Step | None:
        return self.steps[self._step] if self._step < len(self.steps) and self.status == "pending" else None

    def next_call(self) -> list[dict] | None:
        """The messages to send next, or None when the record is finished."""
        step = self.step
        if step is None:
            return None
        if self._messages is None:
            self._messages = step.build()
        return self._messages

    def accept(self, answer: str | None, transport_error: str | None = None) -> None:
        step = self.step
        assert step is not None, "accept() on a finished job"
        self.attempts += 1
        self._tries += 1
        if transport_error is not None:  # the client already retried; do not spend more
            self._fail(step, transport_error)
            return
        value, reasons = step.check(answer)
        if not reasons:
            self.values[step.name] = value
            self._step, self._tries, self._messages = self._step + 1, 0, None
            if self._step == len(self.steps):
                self.status = "ok"
            return
        reason = "; ".join(reasons)
        self.reasons.append({"step": step.name, "try": self._tries, "reason": reason})
        if self._tries >= self.max_attempts:
            self._fail(step, f"invalid after {self._tries} tries: {reason}")
        else:
            self._messages = prompts.retry_messages(step.build(), answer or "", reason, self._tries + 1, self.max_attempts)

    def _fail(self, step: Step, error: str) -> None:
        self.status = "failed"
        self.error = f"{step.name}: {error}"

    def report(self) -> dict:
        """The failed.jsonl record."""
        return {"kind": self.kind, "id": self.id, "step": self.steps[min(self._step, len(self.steps) - 1)].name,
                "attempts": self.attempts, "error": self.error, "rejections": self.reasons}


def item_job(item: ItemInfo, config: EnrichConfig) -> Job:
    job = Job(kind="item", id=item.item_id, max_attempts=config.max_attempts)

    def check_integration(answer):
        return validate.check_item_paragraph(answer, item.sid, item.title, config.min_paragraph_sentences)

    job.steps = [
        Step("analysis", lambda: prompts.item_analysis(item, config.max_description_chars), validate.parse_analysis),
        Step("integration", lambda: prompts.item_integration(item, job.values["analysis"], config.max_description_chars,
                                                             config.min_paragraph_sentences), check_integration),
    ]
    job.item = item  # for the offline teacher
    return job


def user_job(sample_id: str, history: list[ItemInfo], target: ItemInfo, config: EnrichConfig) -> Job:
    job = Job(kind="user", id=sample_id, max_attempts=config.max_attempts)
    sids = [h.sid for h in history]
    titles = [h.title for h in history]

    def check(answer, full):
        return validate.check_user_text(answer, sids, titles, target.sid, target.title, require_all_history=full)

    job.steps = [
        Step("reasoning", lambda: prompts.user_reasoning(history, target), lambda a: check(a, False)),
        Step("narrative", lambda: prompts.user_narrative(sids, job.values["reasoning"]), lambda a: check(a, True)),
    ]
    job.history, job.target = history, target  # for the offline teacher
    return job


def offline_answer(job: Job, config: EnrichConfig) -> str:
    """What the offline teacher 'says' for the job's current step (deterministic)."""
    from . import offline

    name = job.step.name
    if job.kind == "item":
        if name == "analysis":
            return offline.item_analysis(job.item)
        return offline.item_paragraph(job.item, job.values["analysis"], config.min_paragraph_sentences)
    hint = job.target if config.offline_target_hint else None
    make = offline.user_reasoning if name == "reasoning" else offline.user_narrative
    text = make(job.history, hint)
    if hint is not None and job.step.check(text)[1]:
        text = make(job.history, None)  # the hint collided with a title: fall back to no hint
    return text


def analysis_json(job: Job) -> str | None:
    value = job.values.get("analysis")
    return json.dumps(value, ensure_ascii=False) if value is not None else None
