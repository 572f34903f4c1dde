"""Constrained decoding: only catalogue SIDs, top-K equal to exhaustive scoring, equal to HF
generate with a prefix constraint; thinking mode force-closes the reasoning."""
from __future__ import annotations

import pytest
import torch

from eval_helpers import eval_model_dir, one_thread  # noqa: F401 (fixtures)

pytestmark = pytest.mark.usefixtures("one_thread")
from sidreasoner_core.decoding.constrained import (SIDTrie, TrieLogitsProcessor, beam_search, encode_left_padded,
                                                     rank_sids)
from sidreasoner_core.decoding.thinking import generate_reasoning, think_then_rank
from sidreasoner_core.prompts import THINK_CLOSE, chat_prompt, sid_history_prompt
from sidreasoner_core.models import add_sid_tokens
from sidreasoner_core.sid import TOKEN_RE, SIDError, format_sid, token

CATALOGUE = [format_sid(c) for c in [(1, 0, 1), (1, 1, 1), (1, 3, 0), (1, 3, 5), (1, 3, 6), (2, 0, 5), (2, 1, 2),
                                     (2, 2, 2), (2, 2, 7), (7, 4, 4)]]


@pytest.fixture(scope="module")
def model_tok(eval_model_dir):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(eval_model_dir)
    model = AutoModelForCausalLM.from_pretrained(eval_model_dir).eval()
    add_sid_tokens(tok, model, [token(3, c) for c in range(8)])   # a 4th level for variable-length SIDs
    sid_ids = [i for t, i in tok.get_vocab().items() if TOKEN_RE.fullmatch(t)]
    with torch.no_grad():  # random SID embeddings are tiny: spread them so scores have no near-ties
        model.get_input_embeddings().weight[sid_ids] *= 60
    return model, tok


def _prompts(tok, histories):
    return [chat_prompt(tok, sid_history_prompt(h)) for h in histories]


def exhaustive(model, tok, prompt, sids):
    """log p(SID tokens | prompt) of every SID, one forward each, best first."""
    base = tok(prompt, add_special_tokens=False)["input_ids"]
    out = []
    for s in sids:
        ids = tok(prompt + s, add_special_tokens=False)["input_ids"]
        assert ids[:len(base)] == base
        with torch.no_grad():
            lp = model(torch.tensor([ids])).logits[0].float().log_softmax(-1)
        out.append((s, sum(lp[j - 1, ids[j]].item() for j in range(len(base), len(ids)))))
    return sorted(out, key=lambda x: -x[1])


def test_top_k_equals_exhaustive_scoring(model_tok):
    model, tok = model_tok
    trie = SIDTrie.build(CATALOGUE, tok)
    # prompts of different lengths in one left-padded batch
    prompts = _prompts(tok, [CATALOGUE[:1], CATALOGUE[2:6], CATALOGUE[::2] + CATALOGUE[1::3]])
    ranked = rank_sids(model, tok, prompts, trie, num_beams=10, batch_size=3, progress=False)
    for prompt, got in zip(prompts, ranked):
        want = exhaustive(model, tok, prompt, CATALOGUE)
        assert [s for s, _ in got] == [s for s, _ in want]
        assert all(abs(a[1] - b[1]) < 1e-3 for a, b in zip(got, want))
        assert set(s for s, _ in got) <= set(CATALOGUE)


def test_variable_length_sids_score_their_own_tokens(model_tok):
    model, tok = model_tok
    cat = [format_sid(c) for c in [(1, 0, 1), (1, 2, 3, 0), (1, 2, 3, 1), (2, 2, 2), (2, 5, 1, 7)]]
    trie = SIDTrie.build(cat, tok)
    prompt = _prompts(tok, [cat[:2]])[0]
    got = rank_sids(model, tok, [prompt], trie, num_beams=10, progress=False)[0]
    want = exhaustive(model, tok, prompt, cat)
    assert [s for s, _ in got] == [s for s, _ in want]
    with pytest.raises(SIDError, match="prefix"):
        SIDTrie.build([format_sid((1, 2, 3)), format_sid((1, 2, 3, 0))], tok)


def test_matches_hf_generate_with_prefix_constraint(model_tok):
    from transformers import LogitsProcessorList

    model, tok = model_tok
    trie = SIDTrie.build(CATALOGUE, tok)
    prompts = _prompts(tok, [CATALOGUE[3:5], CATALOGUE[:7]])
    ours = rank_sids(model, tok, prompts, trie, num_beams=10, batch_size=2, progress=False)
    ids, mask = encode_left_padded(tok, prompts)
    start = ids.size(1)
    allowed = trie.allowed_dict(tok)
    common = dict(input_ids=ids, attention_mask=mask, num_beams=10, num_return_sequences=10, max_new_tokens=3,
                  do_sample=False, length_penalty=0.0, pad_token_id=tok.pad_token_id, early_stopping=True)
    ref = model.generate(prefix_allowed_tokens_fn=lambda b, x: allowed.get(tuple(x[start:].tolist()), [tok.eos_token_id]),
                         **common)
    proc = model.generate(logits_processor=LogitsProcessorList([TrieLogitsProcessor(trie, start, tok.eos_token_id)]),
                          **common)
    assert torch.equal(ref, proc)
    for i, got in enumerate(ours):
        hf = [tok.decode(s) for s in ref[i * 10:(i + 1) * 10, start:]]
        assert [s for s, _ in got] == hf


def test_only_catalogue_sids_with_fewer_beams_and_small_catalogues(model_tok):
    model, tok = model_tok
    import random

    rng = random.Random(0)
    big = sorted({format_sid((rng.randrange(6), rng.randrange(6), rng.randrange(6))) for _ in range(80)})
    trie = SIDTrie.build(big, tok)
    prompts = _prompts(tok, [big[:3], big[5:9], big[20:21]])
    for got in rank_sids(model, tok, prompts, trie, num_beams=4, progress=False):
        assert len(got) == 4 and len({s for s, _ in got}) == 4 and all(s in big for s, _ in got)
        assert [x for _, x in got] == sorted((x for _, x in got), reverse=True)
    small = SIDTrie.build(CATALOGUE[:3], tok)   # fewer catalogue SIDs than beams: no padding entries
    got = rank_sids(model, tok, prompts[:1], small, num_beams=10, progress=False)[0]
    assert sorted(s for s, _ in got) == sorted(CATALOGUE[:3])


def test_unconstrained_loop_and_missing_sid_tokens(model_tok, tiny_model_dir):
    from transformers import AutoTokenizer

    model, tok = model_tok
    ids, mask = encode_left_padded(tok, _prompts(tok, [CATALOGUE[:2]]))
    scores, seqs, leaves = beam_search(model, ids, mask, None, num_beams=5, levels=3)
    assert leaves is None and seqs.shape == (1, 5, 3) and torch.all(scores[0, :-1] >= scores[0, 1:])
    with pytest.raises(SIDError, match="no token <a_1>"):
        SIDTrie.build(CATALOGUE, AutoTokenizer.from_pretrained(tiny_model_dir))


def test_thinking_force_closes_and_keeps_reasoning(model_tok):
    model, tok = model_tok
    prompts = [chat_prompt(tok, sid_history_prompt(CATALOGUE[:2], thinking=True))]
    assert prompts[0].count("Let's think step by step") == 1
    (trace,), = generate_reasoning(model, tok, prompts, max_new_tokens=6, progress=False)
    assert trace.forced and trace.tokens == 6 and trace.text
    assert trace.context.startswith(prompts[0] + "<think>\n") and trace.context.endswith(f"\n{THINK_CLOSE}\n\n")
    # a model whose favourite token is </think> closes on its own after zero reasoning tokens
    close = tok.convert_tokens_to_ids(THINK_CLOSE)
    head = model.lm_head
    biased = torch.nn.Linear(head.in_features, head.out_features, bias=True)
    with torch.no_grad():
        biased.weight.copy_(head.weight)
        biased.bias.zero_()
        biased.bias[close] = 1e4
    model.lm_head = biased
    try:
        traces = generate_reasoning(model, tok, prompts * 2, max_new_tokens=6, num_return_sequences=2,
                                    do_sample=True, progress=False)
    finally:
        model.lm_head = head
    assert len(traces) == 2 and all(len(t) == 2 for t in traces)
    assert all(not t.forced and t.tokens == 0 for ts in traces for t in ts)


def test_sid_tokens_inside_reasoning_are_bounded(model_tok):
    """A model that loves SID tokens writes only SIDs when unbounded; the budget caps them per trace."""
    model, tok = model_tok
    prompts = [chat_prompt(tok, sid_history_prompt(CATALOGUE[:2], thinking=True))] * 2
    sid_ids = [i for t, i in tok.get_vocab().items() if TOKEN_RE.fullmatch(t)]
    head = model.lm_head
    biased = torch.nn.Linear(head.in_features, head.out_features, bias=True)
    with torch.no_grad():
        biased.weight.copy_(head.weight)
        biased.bias.zero_()
        biased.bias[sid_ids[0]] = 1e4          # one SID token, again and again: the loop seen in `make run`
    model.lm_head = biased
    try:
        def sid_count(budget):
            traces = generate_reasoning(model, tok, prompts, max_new_tokens=8, progress=False, max_sid_tokens=budget)
            return [len(TOKEN_RE.findall(t[0].text)) for t in traces]

        assert sid_count(None) == [8, 8]
        assert sid_count(3) == [3, 3]
        assert sid_count(0) == [0, 0]
    finally:
        model.lm_head = head


def test_reasoning_beams_rank_by_trace_plus_sid_log_probability(model_tok):
    """One reasoning beam is greedy reasoning + the SID search; B beams rank every SID by the best
    log p(trace) + log p(SID | trace) over the B traces, so the top 10 spans more than one guess."""
    model, tok = model_tok
    trie = SIDTrie.build(CATALOGUE, tok)
    prompts = [chat_prompt(tok, sid_history_prompt(h, thinking=True)) for h in (CATALOGUE[:2], CATALOGUE[3:6])]
    greedy = [t[0] for t in generate_reasoning(model, tok, prompts, max_new_tokens=5, progress=False)]
    one = think_then_rank(model, tok, prompts, trie, 4, 1, max_new_tokens=5, progress=False)
    assert [t.text for t, _ in one] == [t.text for t in greedy]
    _assert_same_ranking([r for _, r in one], rank_sids(model, tok, [t.context for t in greedy], trie, 4,
                                                        progress=False))

    beams = generate_reasoning(model, tok, prompts, max_new_tokens=5, num_return_sequences=3, num_beams=3,
                               progress=False)
    assert all(len(ts) == 3 and all(t.logprob < 0 for t in ts) for ts in beams)
    assert beams[0][0].logprob >= beams[0][1].logprob >= beams[0][2].logprob
    merged = think_then_rank(model, tok, prompts, trie, 4, 3, max_new_tokens=5, progress=False)
    for (top, ranked), ts in zip(merged, beams):
        assert len(ranked) == 4 and len({s for s, _ in ranked}) == 4
        assert [x for _, x in ranked] == sorted((x for _, x in ranked), reverse=True)
        expected = {}
        for t in ts:
            for sid, score in rank_sids(model, tok, [t.context], trie, 4, progress=False)[0]:
                expected[sid] = max(expected.get(sid, float("-inf")), t.logprob + score)
        best = sorted(expected.items(), key=lambda kv: -kv[1])[:4]
        assert [s for s, _ in ranked] == [s for s, _ in best]
        assert [x for _, x in ranked] == pytest.approx([x for _, x in best], abs=1e-4)
        assert top.text in [t.text for t in ts]


def _assert_same_ranking(got, expected):
    assert [[s for s, _ in r] for r in got] == [[s for s, _ in r] for r in expected]
    assert [x for r in got for _, x in r] == pytest.approx([x for r in expected for _, x in r], abs=1e-3)


@pytest.mark.parametrize("favourite", [None, THINK_CLOSE, "<|im_end|>"])
def test_greedy_thinking_searches_from_the_reasoning_cache(model_tok, favourite):
    """The SID search continues from the reasoning's KV cache: the same traces as `generate_reasoning`,
    and the same ranking as a fresh search after the generated tokens + `</think>\n\n`, in a batch whose
    rows closed `</think>` themselves, were closed by force at the budget, or ended their turn (that
    token dropped)."""
    from sidreasoner_core.decoding.constrained import rank_sid_ids
    from sidreasoner_core.decoding.thinking import greedy_think_then_rank

    import copy

    base, tok = model_tok
    model = copy.deepcopy(base)   # weights x20: a random model whose greedy traces differ from row to row
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "norm" not in name:
                p.mul_(20)
    trie = SIDTrie.build(CATALOGUE, tok)
    histories = (CATALOGUE[:2], CATALOGUE[3:6], CATALOGUE[1:2], CATALOGUE[:7])
    prompts = [chat_prompt(tok, sid_history_prompt(h, thinking=True)) for h in histories]
    heads = [tok(f"{p}<think>\n", add_special_tokens=False)["input_ids"] for p in prompts]
    ids, mask = encode_left_padded(tok, [f"{p}<think>\n" for p in prompts])
    sid_ids = [i for t, i in tok.get_vocab().items() if TOKEN_RE.fullmatch(t)]
    close, eos = tok.convert_tokens_to_ids(THINK_CLOSE), tok.eos_token_id

    def greedy():
        return model.generate(input_ids=ids, attention_mask=mask, max_new_tokens=6, do_sample=False,
                              pad_token_id=tok.pad_token_id, eos_token_id=[close, eos],
                              suppress_tokens=sid_ids)[:, ids.size(1):].tolist()
    if favourite:   # after a token row 0 writes second and row 3 writes fourth, the favourite token wins
        plain = greedy()
        after = torch.tensor(sorted({plain[0][1], plain[3][3]} - set(plain[1])))
        fav = tok.convert_tokens_to_ids(favourite)

        def forward(*args, **kw):
            out = type(model).forward(model, *args, **kw)
            out.logits[torch.isin(kw["input_ids"][:, -1], after), -1, fav] = 1e4
            return out
        model.forward = forward
    try:
        run = dict(max_new_tokens=6, progress=False, max_sid_tokens=0)
        texts = [t[0] for t in generate_reasoning(model, tok, prompts, **run)]
        got = greedy_think_then_rank(model, tok, prompts, trie, 4, batch_size=3, **run)
        contexts = []
        for head, row in zip(heads, greedy()):
            cut = next((j for j, t in enumerate(row) if t in (close, eos, tok.pad_token_id)), len(row))
            closed = cut < len(row) and row[cut] == close
            tail = f"\n\n" if closed else f"\n{THINK_CLOSE}\n\n"
            contexts.append(head + row[:cut + closed] + tok(tail, add_special_tokens=False)["input_ids"])
        expected = rank_sid_ids(model, contexts, tok.pad_token_id, trie, 4, progress=False)
    finally:
        model.__dict__.pop("forward", None)
    assert len({t.text for t in texts}) > 1
    assert [(t.text, t.tokens, t.forced) for t, _ in got] == [(t.text, t.tokens, t.forced) for t in texts]
    assert texts[1].tokens == 6 and texts[1].forced
    if favourite:
        short = [t for t in texts if t.tokens < 6]   # traces of 2 and 4 tokens beside the forced ones
        assert len({t.tokens for t in texts}) == 3 and all(t.forced == (favourite != THINK_CLOSE) for t in short)
    _assert_same_ranking([r for _, r in got], expected)


def test_reasoning_samples_rank_by_mean_probability_over_sampled_traces(model_tok):
    """K sampled traces, each followed by the SID search; every SID is scored by log of the mean
    over the K traces of p(SID | trace) (0 outside a trace's beams), the same draws as sampling the
    traces directly with the same seed."""
    import math

    model, tok = model_tok
    trie = SIDTrie.build(CATALOGUE, tok)
    prompts = [chat_prompt(tok, sid_history_prompt(h, thinking=True)) for h in (CATALOGUE[:2], CATALOGUE[3:6])]
    torch.manual_seed(3)
    sampled = generate_reasoning(model, tok, prompts, max_new_tokens=6, num_return_sequences=4, do_sample=True,
                                 progress=False)
    torch.manual_seed(3)
    merged = think_then_rank(model, tok, prompts, trie, 4, max_new_tokens=6, progress=False, reasoning_samples=4)
    for (top, ranked), ts in zip(merged, sampled):
        per_trace = rank_sids(model, tok, [t.context for t in ts], trie, 4, progress=False)
        mass: dict[str, float] = {}
        for sids in per_trace:
            for sid, score in sids:
                mass[sid] = mass.get(sid, 0.0) + math.exp(score) / len(ts)
        best = sorted(mass.items(), key=lambda kv: -kv[1])[:4]
        assert [s for s, _ in ranked] == [s for s, _ in best]
        assert [x for _, x in ranked] == pytest.approx([math.log(p) for _, p in best], abs=1e-4)
        # the trace shown is the one that gives the top SID its highest probability
        top_sid = ranked[0][0]
        assert dict(per_trace[[t.text for t in ts].index(top.text)])[top_sid] == pytest.approx(
            max(dict(r).get(top_sid, float("-inf")) for r in per_trace), abs=1e-4)
    with pytest.raises(ValueError, match="exclusive"):
        think_then_rank(model, tok, prompts, trie, 4, 2, max_new_tokens=6, progress=False, reasoning_samples=4)


def test_reasoning_samples_and_beams_are_exclusive_in_configs():
    from pydantic import ValidationError

    from sidreasoner_core.evaluation.config import EvaluateConfig
    from sidreasoner_core.serving.config import ServingConfig

    assert EvaluateConfig(reasoning_samples=8).reasoning_samples == 8
    for cls in (EvaluateConfig, ServingConfig):
        with pytest.raises(ValidationError, match="exclusive"):
            cls(reasoning_samples=8, reasoning_beams=2)
