"""Training configs: the shipped YAMLs validate; bad values fail naming the field; overrides merge deeply."""

from __future__ import annotations

import pytest

from safetyml.training.config import TrainingConfigError, load_training_config, merge_overrides


@pytest.mark.parametrize("task", ["incident_risk", "merchant_credit"])
def test_shipped_configs_validate(task):
    cfg = load_training_config(task)
    assert cfg.task == task
    assert cfg.registered_model_name
    assert cfg.split.gap_days > 0  # label maturity: a gap before valid and test
    assert set(cfg.calibration.methods) <= {"isotonic", "platt", "none"}
    assert cfg.primary_metric == {"incident_risk": "pr_auc", "merchant_credit": "roc_auc"}[task]


def test_credit_config_has_the_pdo_defaults():
    cs = load_training_config("merchant_credit").credit_score
    assert (cs.base_points, cs.base_odds, cs.pdo) == (600, 50, 20)
    assert load_training_config("merchant_credit").split.gap_days == 90


def test_bad_override_names_the_field():
    with pytest.raises(TrainingConfigError, match=r"split\.test_days"):
        load_training_config("incident_risk", {"split": {"test_days": 0}})
    with pytest.raises(TrainingConfigError, match=r"tuning\.search_space\.num_leaves"):
        load_training_config(
            "incident_risk",
            {"tuning": {"search_space": {"num_leaves": {"type": "int", "low": 9, "high": 3}}}},
        )
    with pytest.raises(TrainingConfigError, match="unknown_field"):
        load_training_config("incident_risk", {"unknown_field": 1})
    with pytest.raises(TrainingConfigError, match="grade cut-offs"):
        load_training_config("merchant_credit", {"credit_score": {"grades": {"A": 500, "B": 600}}})


def test_overrides_merge_deeply_and_change_the_fingerprint():
    merged = merge_overrides({"a": {"b": 1, "c": 2}, "d": [1]}, {"a": {"b": 5}, "d": [2]})
    assert merged == {"a": {"b": 5, "c": 2}, "d": [2]}
    base = load_training_config("incident_risk")
    changed = load_training_config("incident_risk", {"lightgbm": {"num_leaves": 7}})
    assert changed.lightgbm["num_leaves"] == 7
    assert changed.lightgbm["objective"] == base.lightgbm["objective"]
    assert changed.fingerprint() != base.fingerprint()
