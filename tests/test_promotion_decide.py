"""The promotion rule: champion moves only on a win by more than the margin; the first model
becomes champion; SASRec can be required; the config refuses a metric it cannot compute."""
import pytest

from sidreasoner_core.config import ConfigError
from sidreasoner_core.promotion import Decision, PromoteConfig, decide


def m(r10: float) -> dict:
    return {"recall@10": r10, "ndcg@10": r10 / 2}


def test_win_by_more_than_the_margin_promotes():
    cfg = PromoteConfig(margin=0.01)
    ok, reason = decide(cfg, m(0.22), m(0.20), m(0.15), "3")
    assert ok and "beats champion v3's 0.2000 by 0.0200 > margin 0.01" in reason


@pytest.mark.parametrize("cand", [0.205, 0.21, 0.19])
def test_a_win_within_the_margin_or_a_loss_keeps_the_champion(cand):
    ok, reason = decide(PromoteConfig(margin=0.01), m(cand), m(0.20), None, "3")
    assert not ok and "does not beat champion v3's 0.2000 by more than the margin 0.01" in reason


def test_first_model_becomes_champion_unless_sasrec_is_required_and_not_beaten():
    assert decide(PromoteConfig(), m(0.01), None, m(0.15))[0]
    ok, reason = decide(PromoteConfig(require_beat_sasrec=True), m(0.01), None, m(0.15))
    assert not ok and "does not beat SASRec's 0.1500" in reason


def test_decision_tags_and_markdown():
    d = Decision(False, "why", "recall@10", m(0.1), m(0.2), "1", m(0.15), 0.005, 123, version="2")
    tags = d.tags()
    assert tags["promotion.decision"] == "kept as candidate" and tags["promotion.champion"] == "0.2000"
    md = d.markdown()
    assert "| candidate (v2) | 0.1000 | 0.0500 |" in md and "| champion (v1) | 0.2000 | 0.1000 |" in md
    assert "**Reason:** why" in md


def test_config_refuses_unknown_metric():
    with pytest.raises(ConfigError, match="metric"):
        PromoteConfig.build({"metric": "mrr"})
    with pytest.raises(ConfigError, match="margin"):
        PromoteConfig.build({"margin": -1})
