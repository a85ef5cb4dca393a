"""Promotion: the first model becomes champion; a worse challenger is kept out unless forced (reason kept)."""

from __future__ import annotations

import shutil

import pytest

from safetyml.training.promote import decide
from tests.fixtures_training import safetyml_env, train_fast

pytestmark = pytest.mark.slow


def test_rule_allows_a_small_loss_only():
    assert decide(0.80, 0.80, 0.005)
    assert decide(0.796, 0.80, 0.005)
    assert not decide(0.79, 0.80, 0.005)
    assert decide(0.70, 0.80, 0.2)


def test_promotion_flow(trained_home, tmp_path):
    """On a private copy of trained_home (v1 = champion), a weak v2 is rejected, then forced in."""
    from safetyml import tracking
    from safetyml.training.promote import promote

    name = "safetyml-merchant-credit"
    home = tmp_path / "home"
    shutil.copytree(trained_home.home, home)
    small_data_dir = trained_home.data_dir
    with safetyml_env(home):
        assert trained_home.results["merchant_credit"].promoted
        assert tracking.get_alias(name, "champion").version == "1"
        assert tracking.version_tags(name, "1")["promotion.decision"] == "promoted"

        # a deliberately weak challenger: one uninformative feature
        weak = train_fast(
            "merchant_credit",
            small_data_dir,
            trials=1,
            config_overrides={"features": {"include": ["merchant_sales_7d"]}},
        )
        assert weak.model_version == "2" and not weak.promoted
        assert tracking.get_alias(name, "challenger").version == "2"
        assert tracking.get_alias(name, "champion").version == "1"

        decision = promote("merchant_credit")  # data folder taken from the challenger's run
        assert decision.champion_value - decision.challenger_value > decision.margin
        assert not decision.promoted
        assert tracking.get_alias(name, "champion").version == "1"
        tags = tracking.version_tags(name, "2")
        assert tags["promotion.decision"] == "rejected"
        assert float(tags["promotion.champion_value"]) == pytest.approx(decision.champion_value)

        with pytest.raises(ValueError, match="reason"):
            promote("merchant_credit", force=True)
        forced = promote(
            "merchant_credit", small_data_dir, force=True, reason="policy asked for the simpler model"
        )
        assert forced.promoted and forced.forced
        assert tracking.get_alias(name, "champion").version == "2"
        tags = tracking.version_tags(name, "2")
        assert tags["promotion.decision"] == "promoted"
        assert "policy asked for the simpler model" in tags["promotion.reason"]
        assert tracking.version_tags(name, "1")["replaced_by"] == "2"
        assert promote("merchant_credit").reason == "challenger is already the champion"
