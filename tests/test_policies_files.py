"""Policies: the shipped files load, bands map probabilities to actions, invalid files fail clearly."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import yaml
from typer.testing import CliRunner

from safetyml import paths
from safetyml.scoring.policies import ACTIONS, PolicyError, load_policies, load_policy

SHIPPED = paths.project_dir() / "serving" / "policies"


def test_shipped_policies_cover_markets_and_tasks() -> None:
    policies = load_policies(SHIPPED)
    assert {"BR", "MX", "default"} <= set(policies.policies)
    for policy in policies.policies.values():
        assert policy.version
        for task in ("incident_risk", "merchant_credit"):
            bands = policy.tasks[task].bands
            assert bands[-1].upper == 1.0
            assert all(band.action in ACTIONS for band in bands)


def test_market_comes_from_city_and_unknown_falls_back_to_default() -> None:
    policies = load_policies(SHIPPED)
    assert policies.for_city("sao_paulo").market == "BR"
    assert policies.for_city("mexico_city").market == "MX"
    assert policies.for_city("atlantis").market == "default"
    assert policies.for_city(None).market == "default"


def test_bands_are_half_open_and_vectorised_matches_scalar() -> None:
    policy = load_policies(SHIPPED).for_market("BR")
    bands = policy.tasks["incident_risk"].bands
    first, second = bands[0], bands[1]
    assert policy.decide_one("incident_risk", np.nextafter(first.upper, 0)) == (first.tier, first.action)
    assert policy.decide_one("incident_risk", first.upper) == (second.tier, second.action)
    assert policy.decide_one("incident_risk", 1.0) == (bands[-1].tier, bands[-1].action)
    grid = np.random.default_rng(3).uniform(0, 1, 500)
    tiers, actions = policy.decide("incident_risk", grid)
    expected = [policy.decide_one("incident_risk", float(p)) for p in grid]
    assert list(zip(tiers, actions, strict=True)) == expected


def _broken_copy(tmp_path: Path, edit) -> Path:
    folder = tmp_path / "policies"
    shutil.copytree(SHIPPED, folder)
    raw = yaml.safe_load((folder / "BR.yaml").read_text())
    edit(raw)
    (folder / "BR.yaml").write_text(yaml.safe_dump(raw))
    return folder


@pytest.mark.parametrize(
    ("edit", "field", "words"),
    [
        (
            lambda r: r["tasks"]["incident_risk"]["bands"][2].update(action="shoot"),
            "tasks.incident_risk.bands.2.action",
            "allow",
        ),
        (
            lambda r: r["tasks"]["merchant_credit"]["bands"][-1].update(upper=0.9),
            "tasks.merchant_credit.bands",
            "upper: 1.0",
        ),
        (
            lambda r: r["tasks"]["incident_risk"]["bands"].reverse(),
            "tasks.incident_risk.bands",
            "strictly increase",
        ),
        (lambda r: r.pop("version"), "version", "Field required"),
        (lambda r: r["tasks"].pop("merchant_credit"), "(top level)", "merchant_credit"),
        (lambda r: r.update(market="MX"), "market", "named for 'BR'"),
    ],
)
def test_invalid_policy_names_file_and_field(tmp_path: Path, edit, field: str, words: str) -> None:
    folder = _broken_copy(tmp_path, edit)
    with pytest.raises(PolicyError) as info:
        load_policies(folder)
    message = str(info.value)
    assert str(folder / "BR.yaml") in message
    assert field in message
    assert words in message


def test_missing_default_is_refused(tmp_path: Path) -> None:
    folder = tmp_path / "p"
    folder.mkdir()
    shutil.copy(SHIPPED / "BR.yaml", folder / "BR.yaml")
    with pytest.raises(PolicyError, match="default.yaml"):
        load_policies(folder)
    assert load_policy(folder / "BR.yaml").market == "BR"


def test_serve_refuses_to_start_with_invalid_policy(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from safetyml.cli import app

    folder = _broken_copy(tmp_path, lambda r: r["tasks"]["incident_risk"]["bands"][0].update(upper=-1))
    monkeypatch.setenv("SAFETYML_POLICIES", str(folder))
    monkeypatch.setenv("SAFETYML_HOME", str(tmp_path / "home"))
    result = CliRunner().invoke(app, ["serve", "--port", "0"])
    assert result.exit_code == 2
    assert "BR.yaml" in result.output and "tasks.incident_risk.bands.0.upper" in result.output


def test_serve_refuses_public_host_without_token(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from safetyml.cli import app

    monkeypatch.delenv("SAFETYML_API_TOKEN", raising=False)
    monkeypatch.setenv("SAFETYML_HOME", str(tmp_path / "home"))
    result = CliRunner().invoke(app, ["serve", "--host", "0.0.0.0"])
    assert result.exit_code == 2
    assert "SAFETYML_API_TOKEN" in result.output
