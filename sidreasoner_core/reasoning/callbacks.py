"""Training-time logging of the reasoning stages (paper Figure 6).

`CurveLog` appends every trainer log (reward and each reward part, KL, entropy, completion and
reasoning length, valid-SID share, ...) to a JSON-lines file that survives a kill, and forwards it
to MLflow. `RecallCallback` measures Recall@10 on a fixed validation subset every N steps in
the evaluation's thinking mode (the shared `decoding.thinking` + `decoding.constrained`): greedy
reasoning until `</think>` (closed by force when the budget runs out), then beam search over
catalogue SIDs.
"""
from __future__ import annotations

import json
import logging
import os
import shutil
from pathlib import Path
from typing import Sequence


from ..curves import CURVES_FILE, RECALL_KEY, CurveLog  # noqa: F401 (the stages import them from here)
from ..training.checkpoints import BEST_PREFIX, best_saved  # noqa: F401 (kept policies live beside the checkpoints)
from ..training.runtime import rank_zero_decides

log = logging.getLogger(__name__)



def _trainer_callback_base():
    from transformers import TrainerCallback

    return TrainerCallback


def curve_callback(curves: CurveLog, prefix: str = "", step_offset: int = 0):
    """A TrainerCallback that writes every `on_log` to `curves`. A stage's second training run writes into
    the same curves with its keys under `prefix` and its steps after the first run's (`step_offset`)."""
    Base = _trainer_callback_base()

    class CurveCallback(Base):
        def on_log(self, args, state, control, logs=None, **kwargs):
            if state.is_world_process_zero and logs:
                curves.write(step_offset + state.global_step, {prefix + k: v for k, v in logs.items()})

    return CurveCallback()


def thinking_recall(model, tokenizer, prompts: Sequence[str], targets: Sequence[str], trie,
                    max_reasoning_tokens: int, num_beams: int = 10, batch_size: int = 8,
                    max_sid_tokens: int | None = None, reasoning_samples: int = 0) -> dict[str, float]:
    """Recall/NDCG@{1,5,10} of the evaluation's thinking mode (`decoding.thinking.think_then_rank`:
    greedy or sampled reasoning, then constrained beam search over catalogue SIDs), plus mean
    reasoning tokens and the share closed by force."""
    from ..decoding.thinking import think_then_rank
    from ..metrics import rank_metrics

    was_training = model.training
    model.eval()
    try:
        pairs = think_then_rank(model, tokenizer, prompts, trie, num_beams, batch_size=batch_size,
                                max_new_tokens=max_reasoning_tokens, thinking_batch_size=batch_size,
                                max_sid_tokens=max_sid_tokens, progress=False, reasoning_samples=reasoning_samples)
    finally:
        model.train(was_training)
    traces = [t for t, _ in pairs]
    metrics = rank_metrics([[s for s, _ in r] for _, r in pairs], list(targets), ks=(1, 5, 10))
    out = {k: v for k, v in metrics.items() if k.startswith(("recall@", "ndcg@"))}
    out["reasoning_tokens"] = sum(t.tokens for t in traces) / max(len(traces), 1)
    out["reasoning_forced_close"] = sum(t.forced for t in traces) / max(len(traces), 1)
    return out


def _keep_best(model, tokenizer, work_dir: Path, step: int) -> None:
    """Save the policy as `best-<step>` (built aside, renamed into place) and drop the earlier best."""
    tmp = work_dir / f".{BEST_PREFIX}{step}.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    model.save_pretrained(tmp)
    tokenizer.save_pretrained(tmp)
    shutil.rmtree(work_dir / f"{BEST_PREFIX}{step}", ignore_errors=True)  # a re-run of the same step
    os.replace(tmp, work_dir / f"{BEST_PREFIX}{step}")
    for old, d in best_saved(work_dir).items():
        if old != step:
            shutil.rmtree(d, ignore_errors=True)


def recall_callback(curves: CurveLog, rows: Sequence[dict], catalogue_sids: Sequence[str], cfg,
                    best_dir: Path | None = None):
    """A TrainerCallback measuring Recall@10 on `rows` at step 0, every `cfg.eval_steps` steps and at
    the end, with the GRPO config's evaluation settings (`eval_*`). With `best_dir`, a policy that beats
    every earlier measurement (the input's at step 0 included; on a resume, those in `curves` up to its step) is
    saved there as `best-<step>` (`best_saved`), so the stage can publish it (`grpo.publish`). With
    `cfg.early_stopping_patience`, training stops once that many measurements in a row have not beaten the best
    (counted over the curves read back on a resume too)."""
    every = cfg.eval_steps
    patience = cfg.early_stopping_patience
    max_reasoning_tokens = cfg.eval_max_reasoning_tokens or cfg.max_completion_length
    Base = _trainer_callback_base()

    class RecallCallback(Base):
        def __init__(self):
            self.trie = None
            self.prompts: list[str] | None = None
            self.done: set[int] = set()
            self.last: dict[str, float] = {}
            self.best, self.since_best = None, 0  # measurements since the best (early stopping)

        def _record(self, value: float) -> bool:
            """Track the best; True when `value` beats every earlier measurement."""
            better = self.best is not None and value > self.best
            if self.best is None or value > self.best:
                self.best, self.since_best = value, 0
            else:
                self.since_best += 1
            return better

        def _measure(self, state, model, tokenizer, keep: bool = True):
            if state.global_step in self.done or not state.is_world_process_zero:
                return
            from ..decoding.constrained import SIDTrie

            if self.trie is None:
                self.trie = SIDTrie.build(catalogue_sids, tokenizer)
                self.prompts = [tokenizer.apply_chat_template(r["prompt"], tokenize=False, add_generation_prompt=True)
                                for r in rows]
            m = thinking_recall(model, tokenizer, self.prompts, [r["target_sid"] for r in rows], self.trie,
                                max_reasoning_tokens, cfg.eval_beams, max_sid_tokens=cfg.eval_max_reasoning_sid_tokens,
                                reasoning_samples=cfg.eval_reasoning_samples)
            self.done.add(state.global_step)
            self.last = {f"eval/{k}": v for k, v in m.items()}
            curves.write(state.global_step, self.last)
            log.info("step %d: %s", state.global_step, json.dumps(self.last))
            if self._record(self.last[RECALL_KEY]) and best_dir is not None and keep and state.global_step:
                _keep_best(model, tokenizer, best_dir, state.global_step)

        def on_train_begin(self, args, state, control, model=None, processing_class=None, **kw):
            # a resumed run: the measurements up to its checkpoint set the best and the patience count
            for r in curves.rows():
                if RECALL_KEY in r and r["step"] <= state.global_step:
                    self._record(r[RECALL_KEY])
            if state.global_step == 0:
                self._measure(state, model, processing_class)

        def on_step_end(self, args, state, control, model=None, processing_class=None, **kw):
            if state.global_step % every == 0:  # the last step's policy is published as `final` anyway
                self._measure(state, model, processing_class, keep=state.global_step < state.max_steps)
                if patience and rank_zero_decides(self.since_best >= patience):  # every rank stops together
                    log.info("step %d: validation Recall@10 has not beaten %s for %d measurements; stopping "
                             "(grpo.early_stopping_patience)", state.global_step, self.best, self.since_best)
                    control.should_training_stop = True
            return control

        def on_train_end(self, args, state, control, model=None, processing_class=None, **kw):
            self._measure(state, model, processing_class, keep=False)

    return RecallCallback()
