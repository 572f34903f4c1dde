"""Direct mode on a Qwen3-style chat template: a trained answer `SID` is rendered as
`<think>\n\n</think>\n\nSID`, so the direct-mode prompt must end with that empty think block."""
import pytest

from sidreasoner_core import prompts
from sidreasoner_core.models import _tiny_tokenizer

# The behaviour of Qwen3's template that matters here (written for this test, not Qwen's file): the
# answer after the last user turn gets a think block (empty without reasoning); the generation prompt
# gets an empty one when thinking is off.
QWEN3_STYLE = (
    "{% for m in messages %}"
    "{% if m.role == 'assistant' and loop.last %}"
    "{{ '<|im_start|>assistant\\n<think>\\n' + (m.reasoning_content or '') + '\\n</think>\\n\\n' + m.content + '<|im_end|>\\n' }}"
    "{% else %}{{ '<|im_start|>' + m.role + '\\n' + m.content + '<|im_end|>\\n' }}{% endif %}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}"
    "{% if enable_thinking is defined and enable_thinking is false %}{{ '<think>\\n\\n</think>\\n\\n' }}{% endif %}"
    "{% endif %}")


@pytest.fixture
def qwen3_tokenizer():
    tok = _tiny_tokenizer()
    tok.chat_template = QWEN3_STYLE
    return tok


def test_direct_prompt_is_what_training_put_before_the_sid(qwen3_tokenizer):
    from sidreasoner_core.training.sft import tokenize_record

    user = prompts.sid_history_prompt(["<a_1><b_2><c_3>"])
    sid = "<a_4><b_5><c_6>"
    ids, mask = tokenize_record({"prompt": [{"role": "user", "content": user}], "completion": sid}, qwen3_tokenizer)
    trained = qwen3_tokenizer.decode([i for i, m in zip(ids, mask) if m])
    assert trained.startswith("<think>\n\n</think>\n\n" + sid)  # what the model learns to emit
    direct = prompts.direct_prompt(qwen3_tokenizer, user)
    assert direct.endswith("<|im_start|>assistant\n<think>\n\n</think>\n\n")
    assert qwen3_tokenizer.decode(ids).startswith(direct + sid)
    # the bare generation prompt would make the model start a think block where the SID belongs
    assert not prompts.chat_prompt(qwen3_tokenizer, user).endswith("</think>\n\n")


def test_chatml_direct_prompt_is_the_generation_prompt():
    tok = _tiny_tokenizer()
    assert prompts.direct_prompt(tok, "hi") == prompts.chat_prompt(tok, "hi")


def test_template_that_drops_the_answer_is_refused(qwen3_tokenizer):
    qwen3_tokenizer.chat_template = "{% for m in messages %}{{ m.role }}{% endfor %}"
    with pytest.raises(ValueError, match="dropped the assistant answer"):
        prompts.direct_prompt(qwen3_tokenizer, "hi")


def test_ranking_prompts_direct_mode_uses_it(qwen3_tokenizer):
    history = [["<a_1><b_2><c_3>"]]
    direct, = prompts.ranking_prompts(qwen3_tokenizer, history, thinking=False)
    thinking, = prompts.ranking_prompts(qwen3_tokenizer, history, thinking=True)
    assert direct.endswith("<think>\n\n</think>\n\n")
    assert thinking.endswith("<|im_start|>assistant\n")  # thinking mode writes its own think block


def test_served_direct_mode_ranks_from_the_prompt_evaluation_scored(qwen3_tokenizer, monkeypatch):
    """The served model (and the promotion gate, which scores through it) sees in direct mode the
    prompt training put before a bare SID, as evaluation does; it once got the bare generation prompt."""
    from sidreasoner_core.decoding import constrained
    from sidreasoner_core.serving.config import ServingConfig
    from sidreasoner_core.serving.recommender import Recommender

    seen = []
    monkeypatch.setattr(constrained, "rank_sids", lambda model, tok, texts, *a, **k: seen.extend(texts) or [[] for _ in texts])
    rec = object.__new__(Recommender)  # no weights needed: the prompts are under test
    rec.model, rec.tokenizer, rec.config, rec.trie = None, qwen3_tokenizer, ServingConfig(), None
    rec.sid_by_item = {"7": "<a_1><b_2><c_3>"}
    rec.rank([["7"]], 10, "direct")
    assert seen == prompts.ranking_prompts(qwen3_tokenizer, [["<a_1><b_2><c_3>"]], thinking=False)
    assert seen[0].endswith("<think>\n\n</think>\n\n")
