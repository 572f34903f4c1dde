"""GRPO rewards of paper §3.3.2 as plain functions with TRL's reward interface.

    r = r_rule + λ·r_format        (λ = 0.1 in the paper; TRL applies it as a reward weight)

Every function has the signature `f(prompts, completions, completion_ids=None, **columns) -> list[float]`;
the target SID arrives as the dataset column `target_sid`. Catalogue and options are bound with
`functools.partial` (TRL names a partial after the wrapped function), see `reward_functions()`.

How a completion is read (`parse_prediction`):
- the answer is the text after the first `</think>`; no `</think>` -> unparsable;
- the answer must start (after whitespace) with a run of SID tokens, and that run must be
  exactly one well-formed SID (levels a, b, c, ... in order, no leading zeros) of the catalogue's
  depth; otherwise unparsable. Several SIDs separated by text: the first counts. Text after the
  SID (an end-of-turn marker, chatter) is ignored unless `strict=True`.
Unparsable -> every reward is 0.
"""
from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Any, Callable, Sequence

from .. import sid as sidlib
from ..prompts import THINK_CLOSE, THINK_OPEN

# End-of-turn strings some chat templates leave in decoded text (skip_special_tokens keeps added tokens).
END_MARKERS = ("<|im_end|>", "<|endoftext|>", "<|eot_id|>", "</s>")

STEPWISE_VALUES = (0.25, 0.5, 1.0)


@dataclass(frozen=True)
class Prediction:
    """What a completion says: the parsed SID codes (None when unparsable) and its reasoning."""

    codes: tuple[int, ...] | None
    sid: str | None
    reasoning: str
    has_think_close: bool
    error: str = ""

    @property
    def parsed(self) -> bool:
        return self.codes is not None


def completion_text(completion: Any) -> str:
    """TRL passes a string (standard format) or a list of messages (conversational format)."""
    if isinstance(completion, str):
        return completion
    if isinstance(completion, dict):
        return str(completion.get("content", ""))
    if isinstance(completion, (list, tuple)):
        return "".join(completion_text(m) for m in completion)
    return str(completion)


def _strip_end(text: str) -> str:
    text = text.strip()
    changed = True
    while changed:
        changed = False
        for marker in END_MARKERS:
            if text.endswith(marker):
                text = text[: -len(marker)].rstrip()
                changed = True
    return text


def parse_prediction(completion: Any, levels: int = 3, strict: bool = False) -> Prediction:
    text = completion_text(completion)
    head, sep, answer = text.partition(THINK_CLOSE)
    reasoning = head.split(THINK_OPEN, 1)[-1].strip()
    if not sep:
        return Prediction(None, None, reasoning, False, "no </think>")
    answer = _strip_end(answer)
    match = sidlib.SID_RE.match(answer)
    if match is None:
        return Prediction(None, None, reasoning, True, "answer does not start with a SID")
    if strict and match.end() != len(answer):
        return Prediction(None, None, reasoning, True, "text after the SID")
    run = match.group(0)
    try:
        codes = sidlib.parse_sid(run, levels=levels)
    except sidlib.SIDError as exc:
        return Prediction(None, None, reasoning, True, str(exc))
    return Prediction(codes, run, reasoning, True)


def prefix_length(pred: Sequence[int], target: Sequence[int]) -> int:
    """Length of the longest common prefix of two code tuples."""
    m = 0
    for p, t in zip(pred, target):
        if p != t:
            break
        m += 1
    return m


def rule_score(m: int, levels: int, rule: str = "stepwise",
               stepwise_values: Sequence[float] = STEPWISE_VALUES) -> float:
    """Reward of a correct prefix of m of `levels` tokens.

    stepwise: 0.25 / 0.5 / 1.0 for levels a / a+b / a+b+c (paper §3.3.2). With a deeper SID (e.g. a
    disambiguation level) the listed values cover the first levels, later partial prefixes keep
    the last partial value, and only a full match earns 1.0.
    prefix_fraction: m / L (the paper's formula; a reference variant).
    """
    if m <= 0:
        return 0.0
    if rule == "prefix_fraction":
        return m / levels
    if rule != "stepwise":
        raise ValueError(f"unknown reward rule {rule!r} (stepwise | prefix_fraction)")
    if m >= levels:
        return 1.0
    return float(stepwise_values[min(m, len(stepwise_values) - 1) - 1])


def _targets(columns: dict, n: int) -> list[str]:
    targets = columns.get("target_sid")
    if targets is None:
        raise KeyError("reward needs the dataset column 'target_sid'")
    if len(targets) != n:
        raise ValueError(f"{len(targets)} target SIDs for {n} completions")
    return list(targets)


def prefix_reward(prompts, completions, completion_ids=None, *, rule: str = "stepwise",
                  stepwise_values: Sequence[float] = STEPWISE_VALUES, levels: int = 3, strict: bool = False,
                  **columns) -> list[float]:
    """r_rule: stepwise (or m/L) credit for the longest correct SID prefix after `</think>`."""
    targets = _targets(columns, len(completions))
    out = []
    for completion, target in zip(completions, targets):
        pred = parse_prediction(completion, levels=levels, strict=strict)
        if not pred.parsed:
            out.append(0.0)
            continue
        tcodes = sidlib.parse_sid(target)
        out.append(rule_score(prefix_length(pred.codes, tcodes), len(tcodes), rule, stepwise_values))
    return out


def validity_reward(prompts, completions, completion_ids=None, *, catalogue: "sidlib.Catalogue | set[str]",
                    levels: int = 3, strict: bool = False, log_metric: Callable | None = None,
                    **columns) -> list[float]:
    """r_format: 1 when the parsed SID is a catalogue item, else 0.

    Also reports rollout statistics through TRL's `log_metric` hook (when given): share of valid
    SIDs, share of completions with `</think>`, reasoning length in words (paper Figure 6).
    """
    preds = [parse_prediction(c, levels=levels, strict=strict) for c in completions]
    out = [1.0 if p.parsed and p.sid in catalogue else 0.0 for p in preds]
    if log_metric is not None and preds:
        n = len(preds)
        log_metric("sid/valid_share", sum(out) / n)
        log_metric("sid/parsed_share", sum(p.parsed for p in preds) / n)
        log_metric("reasoning/think_closed_share", sum(p.has_think_close for p in preds) / n)
        log_metric("reasoning/words", sum(len(p.reasoning.split()) for p in preds) / n)
    return out


def sid_reward(prompts, completions, completion_ids=None, *, catalogue, rule: str = "stepwise",
               stepwise_values: Sequence[float] = STEPWISE_VALUES, format_weight: float = 0.1,
               levels: int = 3, strict: bool = False, **columns) -> list[float]:
    """The total r_rule + λ·r_format in one function (evaluation, tests; training uses the parts)."""
    columns.pop("log_metric", None)
    rule_r = prefix_reward(prompts, completions, completion_ids, rule=rule, stepwise_values=stepwise_values,
                           levels=levels, strict=strict, **columns)
    fmt_r = validity_reward(prompts, completions, completion_ids, catalogue=catalogue, levels=levels,
                            strict=strict, **columns)
    return [r + format_weight * f for r, f in zip(rule_r, fmt_r)]


class TargetLikelihood:
    """r_lik: how likely a rollout's reasoning makes the target, p(target SID | prompt, reasoning)^(1/L)
    under the model it is bound to (teacher-forced after the rollout's `</think>`; 0 without one): the
    policy being trained, or the frozen reference model, a reward the policy cannot raise by moving itself.

    Not in the paper. The prefix reward is sparse at small scale: a sampled rollout names the
    target's first SID token in a few percent of cases, so most groups of G rollouts score alike and
    give GRPO no gradient (docs/quality.md). Evaluation ranks the catalogue by p(SID | reasoning),
    so this reward scores a trace by exactly what thinking mode then uses, and it differs between
    any two traces. The per-level geometric mean keeps it in [0, 1] beside the stepwise reward.
    Bind the scorer with `bind(model)` once the trainer exists (TRL passes rewards no model)."""

    __name__ = "likelihood_reward"  # TRL's name for the part: rewards/likelihood_reward/mean

    def __init__(self, tokenizer, batch_size: int = 64):
        self.tokenizer, self.batch_size, self.model = tokenizer, batch_size, None

    def bind(self, model) -> "TargetLikelihood":
        self.model = model
        return self

    def texts(self, prompts, completions, targets) -> list[str | None]:
        """Prompt, the rollout up to its `</think>`, then the target as the answer (None: not closed)."""
        out = []
        for prompt, completion, target in zip(prompts, completions, targets):
            head, sep, _ = completion_text(completion).partition(THINK_CLOSE)
            if not sep:
                out.append(None)
                continue
            if not isinstance(prompt, str):  # conversational: the chat template TRL rolled out from
                prompt = self.tokenizer.apply_chat_template(prompt, add_generation_prompt=True, tokenize=False)
            out.append(f"{prompt}{head}{THINK_CLOSE}\n\n{target}")
        return out

    def __call__(self, prompts, completions, completion_ids=None, **columns) -> list[float]:
        import torch

        if self.model is None:
            raise RuntimeError("likelihood_reward: no policy bound (call bind(model) after building the trainer)")
        targets = _targets(columns, len(completions))
        texts = self.texts(prompts, completions, targets)
        closed = [t is not None for t in texts]
        # Unclosed rows are scored too (and then zeroed): every rank runs the same number of forwards,
        # which ZeRO-3's collective parameter gathering needs.
        texts = [t if t is not None else f"{THINK_CLOSE}\n\n{target}" for t, target in zip(texts, targets)]
        scores = [0.0] * len(texts)
        tok, model = self.tokenizer, self.model
        was_training = model.training
        model.eval()
        try:
            with torch.no_grad():
                for start in range(0, len(texts), self.batch_size):
                    idx = range(start, min(start + self.batch_size, len(texts)))
                    enc = tok([texts[i] for i in idx], return_tensors="pt", padding=True, padding_side="right",
                              add_special_tokens=False).to(model.device)
                    logp = torch.log_softmax(model(**enc).logits[:, :-1].float(), dim=-1)
                    lengths = enc["attention_mask"].sum(1)
                    for row, i in enumerate(idx):
                        n = len(tok(targets[i], add_special_tokens=False)["input_ids"])
                        end = int(lengths[row])
                        ids = enc["input_ids"][row, end - n:end]
                        scores[i] = float(logp[row, end - n - 1:end - 1].gather(1, ids[:, None]).mean().exp())
        finally:
            model.train(was_training)
        return [s if ok else 0.0 for s, ok in zip(scores, closed)]


def reward_functions(catalogue, rule: str = "stepwise", stepwise_values: Sequence[float] = STEPWISE_VALUES,
                     format_weight: float = 0.1, levels: int | None = None, strict: bool = False,
                     likelihood_weight: float = 0.0, tokenizer=None) -> tuple[list[Callable], list[float]]:
    """(reward_funcs, reward_weights) for `GRPOTrainer`: TRL logs each part as rewards/<name>/mean.
    With `likelihood_weight` > 0 the last part is a `TargetLikelihood` (bind it to the policy)."""
    levels = levels or getattr(catalogue, "levels", None) or 3
    funcs = [
        functools.partial(prefix_reward, rule=rule, stepwise_values=tuple(stepwise_values), levels=levels,
                          strict=strict),
        functools.partial(validity_reward, catalogue=catalogue, levels=levels, strict=strict),
    ]
    weights = [1.0, float(format_weight)]
    if likelihood_weight > 0:
        if tokenizer is None:
            raise ValueError("likelihood_weight > 0 needs the policy's tokenizer")
        funcs.append(TargetLikelihood(tokenizer))
        weights.append(float(likelihood_weight))
    return funcs, weights
