"""The shared SFT machinery on the tiny model: SID tokens, loss mask, learning, resume."""
from __future__ import annotations

import pytest

from sidreasoner_core import sid as sidlib
from sidreasoner_core.training.checkpoints import last_complete_checkpoint
from sidreasoner_core.training.sft import SFTDataError, SFTOptions, build_trainer, tokenize_record, train_sft
from sidreasoner_core.models import TINY, add_sid_tokens, load_model

LEVELS, CODES = 3, 8


def planted(n: int = 4) -> list[dict]:
    """item k -> a fixed SID: learnable in a few steps at a high learning rate."""
    recs = []
    for k in range(n):
        recs.append({"task": "title_to_sid", "prompt": [{"role": "user", "content": f"Which item has the title: kit {k}?"}],
                     "completion": [{"role": "assistant", "content": sidlib.format_sid([k, (k * 3) % CODES, 7 - k])}]})
    recs.append({"task": "item_text", "text": "steel kit set pack inch " * 4})
    return recs


def opts(**kw) -> SFTOptions:
    base = dict(learning_rate=1e-2, per_device_train_batch_size=5, per_device_eval_batch_size=5,
                gradient_accumulation_steps=1, max_steps=6, max_length=96, eval_strategy="no", eval_steps=2,
                warmup_ratio=0.0, lr_scheduler_type="constant", save_total_limit=5)
    base.update(kw)
    return SFTOptions(**base)


def test_tokenizer_round_trips_every_sid_as_three_tokens():
    model, tok = load_model(TINY)
    vocab = sidlib.vocabulary(3, 256)
    assert add_sid_tokens(tok, model, vocab) == len(vocab)
    assert model.get_input_embeddings().weight.shape[0] == len(tok)
    ids = tok.convert_tokens_to_ids(vocab)
    assert ids == list(range(ids[0], ids[0] + len(vocab)))  # deterministic, contiguous order
    for a in range(0, 256, 5):
        s = sidlib.format_sid([a, 255 - a, (a * 7) % 256])
        enc = tok(s, add_special_tokens=False)["input_ids"]
        assert tok.convert_ids_to_tokens(enc) == sidlib.tokens_of(s)
        assert tok.decode(enc) == s
    # inside text too, and a second add is a no-op
    enc = tok("item <a_1><b_2><c_3>, next", add_special_tokens=False)["input_ids"]
    assert sidlib.tokens_of("<a_1><b_2><c_3>") == [t for t in tok.convert_ids_to_tokens(enc) if t.startswith("<")][:3]
    assert add_sid_tokens(tok, model, vocab) == 0


def test_loss_mask_covers_exactly_the_response(tmp_path):
    trainer, added = build_trainer(TINY, planted(), None, opts(), tmp_path,
                                   sid_tokens=sidlib.vocabulary(LEVELS, CODES))
    assert added == LEVELS * CODES
    tok = trainer.processing_class
    ds = trainer.train_dataset
    rows = {tuple(r["input_ids"]): r for r in ds}
    for rec in planted():
        ids, mask = tokenize_record(rec, tok)
        row = rows[tuple(ids)]
        labelled = [t for t, lab in zip(row["input_ids"], row["labels"]) if lab != -100]
        if "text" in rec:
            assert labelled == row["input_ids"]  # plain text: every token
            continue
        response = rec["completion"][0]["content"]
        prompt = tok.apply_chat_template(rec["prompt"], tokenize=False, add_generation_prompt=True)
        assert tok.decode(row["input_ids"][:len(ids) - len(labelled)]) == prompt
        assert tok.decode(labelled) == response + "<|im_end|>\n"
        assert tok.convert_ids_to_tokens(labelled[:3]) == sidlib.tokens_of(response)
    # the collator pads labels with -100 and carries the task id
    batch = trainer.data_collator([ds[i] for i in range(len(ds))])
    assert batch["labels"].shape == batch["input_ids"].shape
    pad = batch["attention_mask"] == 0
    assert pad.any() and (batch["labels"][pad] == -100).all()
    assert sorted(set(batch["task_id"].tolist())) == [0, 1]
    assert trainer.task_names == ["item_text", "title_to_sid"]


def test_bad_record_names_index_and_field():
    _, tok = load_model(TINY)
    with pytest.raises(SFTDataError, match="record 3 .*'messages' has no assistant turn"):
        tokenize_record({"task": "x", "messages": [{"role": "user", "content": "hi"}]}, tok, 3)
    with pytest.raises(SFTDataError, match="record 0 .*needs 'text'"):
        tokenize_record({"task": "x", "prompt": "hi"}, tok, 0)


def test_completion_context_is_given_not_trained_on():
    """A reasoning trace the model wrote itself is context: only the SID after it carries the loss."""
    model, tok = load_model(TINY)
    add_sid_tokens(tok, model, sidlib.vocabulary(LEVELS, CODES))
    sid = sidlib.format_sid([1, 2, 3])
    given = "<think>\nsteel kit, then a pack.\n</think>\n\n"
    rec = {"prompt": [{"role": "user", "content": "history <a_0><b_1><c_2>"}],
           "completion": [{"role": "assistant", "content": given + sid}], "completion_context": given}
    ids, mask = tokenize_record(rec, tok)
    trained = [t for t, m in zip(ids, mask) if m]
    assert tok.convert_ids_to_tokens(trained[:3]) == sidlib.tokens_of(sid)
    assert tok.decode(trained) == sid + "<|im_end|>\n"
    whole, whole_mask = tokenize_record({k: v for k, v in rec.items() if k != "completion_context"}, tok)
    assert whole == ids and sum(whole_mask) > sum(mask)  # same tokens; the trace is no longer trained on
    with pytest.raises(SFTDataError, match="record 7 .*'completion_context'"):
        tokenize_record({**rec, "completion_context": "<think>\nsomething else"}, tok, 7)


def test_a_few_steps_lower_the_loss_and_log_per_task(tmp_path):
    recs = planted() * 4
    res = train_sft(TINY, recs, planted(), opts(max_steps=8, eval_strategy="steps", eval_steps=4),
                    tmp_path, sid_tokens=sidlib.vocabulary(LEVELS, CODES), early_stopping_task="title_to_sid")
    losses = [h["loss"] for h in res.log_history if "loss" in h]
    assert len(losses) == 8 and losses[-1] < 0.6 * losses[0]
    assert set(res.train_losses) == {"title_to_sid", "item_text"}
    assert set(res.eval_losses) == {"title_to_sid", "item_text"}
    assert res.eval_losses["title_to_sid"] < res.first_eval_losses["title_to_sid"]
    assert res.best_checkpoint and res.best_metric == pytest.approx(
        min(h["eval_title_to_sid_loss"] for h in res.log_history if "eval_title_to_sid_loss" in h))
    assert (tmp_path / "sft_result.json").is_file()


class _Crash(Exception):
    pass


def _crash_after(step: int):
    from transformers import TrainerCallback

    class Crash(TrainerCallback):
        def on_step_end(self, args, state, control, **kw):
            if state.global_step == step:
                raise _Crash(f"killed at step {step}")

    return Crash()


@pytest.mark.parametrize("sampling", ["random", "length_batches", "sorted_micro_batches"])
def test_killed_run_resumes_from_checkpoint_with_same_step_count(tmp_path, sampling):
    recs = planted() * 3
    split = dict(per_device_train_batch_size=2, gradient_accumulation_steps=3) if sampling == "sorted_micro_batches" else {}
    o = opts(max_steps=6, eval_steps=2, sampling=sampling, **split)
    full = train_sft(TINY, recs, None, o, tmp_path / "full", sid_tokens=sidlib.vocabulary(LEVELS, CODES))
    with pytest.raises(_Crash):
        train_sft(TINY, recs, None, o, tmp_path / "killed", sid_tokens=sidlib.vocabulary(LEVELS, CODES),
                  callbacks=[_crash_after(3)])
    assert last_complete_checkpoint(tmp_path / "killed" / "checkpoints").endswith("checkpoint-2")
    (tmp_path / "killed" / "checkpoints" / "checkpoint-9").mkdir()  # a half-written save is skipped
    resumed = train_sft(TINY, recs, None, o, tmp_path / "killed", sid_tokens=sidlib.vocabulary(LEVELS, CODES))
    assert resumed.resumed_from.endswith("checkpoint-2")
    assert resumed.global_step == full.global_step == 6
    last = lambda r: [h["loss"] for h in r.log_history if "loss" in h][-1]  # noqa: E731
    assert last(resumed) == pytest.approx(last(full), rel=1e-3)


def test_prompts_filling_max_length_are_dropped_not_trained_on(tmp_path):
    long = {"task": "long", "prompt": [{"role": "user", "content": "steel kit " * 40}], "completion": "<a_1><b_1><c_1>"}
    trainer, _ = build_trainer(TINY, planted() + [long], planted()[:1] + [long], opts(max_length=48), tmp_path,
                               sid_tokens=sidlib.vocabulary(LEVELS, CODES), early_stopping_task="long")
    assert len(trainer.train_dataset) == len(planted())
    assert set(trainer.eval_dataset) == {"title_to_sid"}  # the emptied task is not evaluated
    assert trainer.args.metric_for_best_model is None  # and cannot drive early stopping
    with pytest.raises(SFTDataError, match="no training record fits max_length=48"):
        build_trainer(TINY, [long], None, opts(max_length=48), tmp_path)


def test_evaluation_off_trains_without_early_stopping(tmp_path):
    """eval_strategy 'no' with validation records and the default patience: no early stopping to crash on."""
    from transformers import EarlyStoppingCallback

    trainer, _ = build_trainer(TINY, planted(), planted()[:2], opts(eval_strategy="no", max_steps=1), tmp_path,
                               sid_tokens=sidlib.vocabulary(LEVELS, CODES), early_stopping_task="title_to_sid")
    assert trainer.args.eval_strategy == "no" and trainer.args.metric_for_best_model is None
    assert not any(isinstance(cb, EarlyStoppingCallback) for cb in trainer.callback_handler.callbacks)
    trainer.train()
    assert trainer.state.global_step == 1


def test_length_grouped_batches_reach_the_trainer(tmp_path):
    from transformers.trainer_pt_utils import LengthGroupedSampler  # noqa: F401  (the sampler this selects)

    from sidreasoner_core.training.sft import make_sft_config

    assert make_sft_config(SFTOptions(), tmp_path, None, False).train_sampling_strategy == "random"
    grouped = make_sft_config(SFTOptions(sampling="group_by_length"), tmp_path, None, False)
    assert grouped.train_sampling_strategy == "group_by_length"


def test_length_batches_group_similar_lengths_in_random_order():
    import torch

    from sidreasoner_core.training.sampling import length_batches_order

    lengths = [10] * 1005 + [50] * 400  # 140 full batches of 10 and one of 5; transformers' 5 mega-batches of 350
    torch.manual_seed(0)
    order = length_batches_order(lengths, 10)
    assert sorted(order) == list(range(len(lengths)))
    batches = [[lengths[i] for i in order[k:k + 10]] for k in range(0, len(order), 10)]
    assert [len(b) for b in batches] == [10] * 140 + [5]  # the short batch ends the epoch
    mixed = sum(len(set(b)) > 1 for b in batches)
    assert mixed <= 5  # at most one mixed batch per mega-batch
    # transformers' grouping walks each mega-batch longest first: a shorter batch is followed by a longer one
    # only at mega-batch boundaries (4). Shuffled batches go up in length far more often.
    rises = sum(max(a) < max(b) for a, b in zip(batches, batches[1:]))
    assert rises > 10
    torch.manual_seed(0)
    assert length_batches_order(lengths, 10) == order  # the Trainer's seed fixes the order


def test_length_batches_reach_the_trainer(tmp_path):
    from sidreasoner_core.training.sampling import LengthBatchSampler

    trainer, _ = build_trainer(TINY, planted() * 3, None, opts(sampling="length_batches"), tmp_path,
                               sid_tokens=sidlib.vocabulary(LEVELS, CODES))
    assert trainer.args.train_sampling_strategy == "random"  # transformers' own sampler is not used
    sampler = trainer._get_train_sampler()
    assert isinstance(sampler, LengthBatchSampler) and len(sampler) == len(trainer.train_dataset)
    assert sorted(sampler) == list(range(len(trainer.train_dataset)))


def test_sorted_micro_batches_are_random_batches_sorted_by_length():
    import torch

    from sidreasoner_core.training.sampling import sorted_micro_batches_order

    lengths = [10] * 700 + [50] * 300 + [30] * 5
    torch.manual_seed(0)
    order = sorted_micro_batches_order(lengths, 16, 4)
    torch.manual_seed(0)
    perm = torch.randperm(len(lengths)).tolist()
    assert sorted(order) == list(range(len(lengths)))
    steps = [order[k:k + 64] for k in range(0, len(order), 64)]
    assert [set(s) for s in steps] == [set(perm[k:k + 64]) for k in range(0, len(perm), 64)]  # the random batches
    assert all([lengths[i] for i in s] == sorted(lengths[i] for i in s) for s in steps)
    micro = [order[k:k + 16] for k in range(0, len(order), 16)]
    padded = sum(max(lengths[i] for i in m) * len(m) for m in micro)
    random_padded = sum(max(lengths[i] for i in perm[k:k + 16]) * len(perm[k:k + 16]) for k in range(0, len(perm), 16))
    assert padded < 0.8 * random_padded  # short rows are padded with short rows
    torch.manual_seed(0)
    assert sorted_micro_batches_order(lengths, 16, 4) == order  # the Trainer's seed fixes the order


def test_sorted_micro_batches_take_the_same_step_as_one_random_batch(tmp_path):
    """Every row of the data in one optimizer step: one random batch of 8, or 4 length-sorted micro-batches
    of 2 accumulated, give the optimizer the same gradient (TRL normalises by the labelled tokens of the
    whole step). Gradients, not weights: Adam's first step moves a weight by ~lr whatever its gradient's size."""
    import torch
    from transformers import TrainerCallback

    from sidreasoner_core.training.sampling import SortedMicroBatchSampler

    recs = planted(4) + [{"task": "title_to_sid", "prompt": [{"role": "user", "content": "Which item has the title: "
                          + "steel kit set " * k + "?"}], "completion": [{"role": "assistant", "content":
                          sidlib.format_sid([k, 1, 2])}]} for k in (1, 6, 12)]
    assert len(recs) == 8
    grads = {}

    class Grads(TrainerCallback):
        def on_pre_optimizer_step(self, args, state, control, model=None, **kw):
            grads[name] = {k: p.grad.detach().clone() for k, p in model.named_parameters() if p.grad is not None}

    for name, o in {"random": opts(per_device_train_batch_size=8, max_steps=1),
                    "sorted": opts(per_device_train_batch_size=2, gradient_accumulation_steps=4, max_steps=1,
                                   sampling="sorted_micro_batches")}.items():
        trainer, _ = build_trainer(TINY, recs, None, o, tmp_path / name, sid_tokens=sidlib.vocabulary(LEVELS, CODES),
                                   callbacks=[Grads()])
        if name == "sorted":
            sampler = trainer._get_train_sampler()
            assert isinstance(sampler, SortedMicroBatchSampler) and sampler.accumulation == 4
            lengths = [len(ids) for ids in trainer.train_dataset["input_ids"]]
            assert len(set(lengths)) > 3  # the micro-batches differ in padding
        trainer.train()
        assert trainer.state.global_step == 1
    assert grads["random"].keys() == grads["sorted"].keys() and grads["random"]
    scale = max(g.abs().max().item() for g in grads["random"].values())
    assert scale > 0
    for k, g in grads["random"].items():
        assert torch.allclose(g, grads["sorted"][k], rtol=1e-4, atol=1e-5 * scale), k
