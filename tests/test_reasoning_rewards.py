"""Reward functions of paper §3.3.2: stepwise prefix + validity, parsed after </think>."""
from __future__ import annotations

import pytest

from sidreasoner_core.reasoning import rewards as R
from sidreasoner_core.sid import Catalogue

CAT = Catalogue({"i1": "<a_1><b_2><c_3>", "i2": "<a_1><b_2><c_4>", "i3": "<a_1><b_5><c_3>", "i4": "<a_7><b_2><c_3>"})
TARGET = "<a_1><b_2><c_3>"


def total(text: str, target: str = TARGET, **kw) -> float:
    return R.sid_reward(["p"], [text], catalogue=CAT, target_sid=[target], **kw)[0]


def think(answer: str, reasoning: str = "the user likes tools") -> str:
    return f"<think>\n{reasoning}\n</think>\n\n{answer}"


def test_exact_match_is_1_1():
    assert total(think(TARGET)) == pytest.approx(1.1)
    assert total(think(TARGET) + "<|im_end|>") == pytest.approx(1.1)


@pytest.mark.parametrize("answer,expected", [
    ("<a_1><b_5><c_3>", 0.25 + 0.1),   # level a only (catalogue item)
    ("<a_1><b_2><c_4>", 0.5 + 0.1),    # a + b (catalogue item)
    ("<a_7><b_2><c_3>", 0.0 + 0.1),    # wrong first level: b, c matching do not count
    ("<a_1><b_9><c_9>", 0.25),         # a only, not in the catalogue
    ("<a_9><b_9><c_9>", 0.0),          # wrong and invalid
])
def test_partial_and_wrong(answer, expected):
    assert total(think(answer)) == pytest.approx(expected)


def test_missing_think_close_is_zero():
    assert total(TARGET) == 0.0
    assert total("<think>\nI think " + TARGET) == 0.0


def test_text_after_sid_ignored_unless_strict():
    text = think(TARGET + " is my recommendation.")
    assert total(text) == pytest.approx(1.1)
    assert total(text, strict=True) == 0.0


def test_text_before_sid_is_unparsable():
    assert total(think("I recommend " + TARGET)) == 0.0


def test_several_sids():
    # separated: the first one counts
    assert total(think("<a_7><b_2><c_3>, " + TARGET)) == pytest.approx(0.1)
    assert total(think(TARGET + ", <a_7><b_2><c_3>")) == pytest.approx(1.1)
    # glued into one run of six tokens: not one SID
    assert total(think(TARGET + "<a_7><b_2><c_3>")) == 0.0


@pytest.mark.parametrize("answer", [
    "<a_1><c_2><b_3>",   # levels out of order
    "<a_01><b_2><c_3>",  # leading zero
    "<a_1><b_2>",        # too short
    "<a_1> <b_2> <c_3>",  # spaces break the token run
    "<a_1><b_2><c_x>",   # not a token
    "",
])
def test_malformed_is_zero(answer):
    assert total(think(answer)) == 0.0


def test_reasoning_in_think_does_not_count():
    # a SID inside the reasoning is not the answer
    assert total(f"<think>\nmaybe {TARGET}\n</think>\n\n<a_9><b_9><c_9>") == 0.0


def test_prefix_fraction_variant():
    f = lambda a: R.prefix_reward(["p"], [think(a)], rule="prefix_fraction", target_sid=[TARGET])[0]  # noqa: E731
    assert f("<a_1><b_5><c_3>") == pytest.approx(1 / 3)
    assert f("<a_1><b_2><c_4>") == pytest.approx(2 / 3)
    assert f(TARGET) == 1.0
    assert total(think("<a_1><b_2><c_4>"), rule="prefix_fraction") == pytest.approx(2 / 3 + 0.1)


def test_deeper_sid_stepwise():
    assert R.rule_score(3, 4) == 0.5 and R.rule_score(4, 4) == 1.0 and R.rule_score(1, 4) == 0.25
    with pytest.raises(ValueError, match="unknown reward rule"):
        R.rule_score(1, 3, rule="nope")


def test_conversational_completions_and_batch():
    completions = [[{"role": "assistant", "content": think(TARGET)}], [{"role": "assistant", "content": "no"}]]
    got = R.sid_reward(["p", "p"], completions, catalogue=CAT, target_sid=[TARGET, TARGET])
    assert got == pytest.approx([1.1, 0.0])


def test_trl_reward_functions_and_metrics():
    funcs, weights = R.reward_functions(CAT, format_weight=0.1)
    assert weights == [1.0, 0.1]
    logged = {}
    texts = [think(TARGET, "a b c"), think("<a_9><b_9><c_9>", "a"), "rambling"]
    kwargs = dict(target_sid=[TARGET] * 3, log_metric=lambda k, v: logged.setdefault(k, v), trainer_state=None)
    parts = [f(["p"] * 3, texts, None, **kwargs) for f in funcs]
    assert parts[0] == [1.0, 0.0, 0.0] and parts[1] == [1.0, 0.0, 0.0]
    assert logged["sid/valid_share"] == pytest.approx(1 / 3)
    assert logged["sid/parsed_share"] == pytest.approx(2 / 3)
    assert logged["reasoning/words"] == pytest.approx((3 + 1 + 1) / 3)


def test_missing_target_column_is_clear():
    with pytest.raises(KeyError, match="target_sid"):
        R.prefix_reward(["p"], [think(TARGET)])
