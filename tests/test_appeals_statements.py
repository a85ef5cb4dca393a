"""Statements of reasons: every action of every market, in the market's language, at most four reasons."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from safetyml import paths
from safetyml.scoring.policies import ACTIONS, PolicyError, load_policies, load_policy
from safetyml.scoring.statements import statement_of_reasons
from safetyml.tasks import TASKS

SHIPPED = paths.project_dir() / "serving" / "policies"
LANGUAGE = {"BR": "pt-BR", "MX": "es-MX", "default": "en"}
APPEAL_WORD = {"pt-BR": "contestar", "es-MX": "apelar", "en": "appeal"}


def _groups(task: str) -> list[str]:
    from safetyml.features.definitions import load_feature_set

    return sorted({str(d.group or d.name) for d in load_feature_set().for_task(task)})


def _decision(market: str, task: str, action: str, reasons: list[dict]) -> dict:
    return {
        "decision_id": str(uuid.uuid4()),
        "decided_at": datetime(2026, 11, 30, 21, 5, tzinfo=UTC),
        "task": task,
        "market": None if market == "default" else market,
        "action": action,
        "reasons": reasons,
    }


@pytest.mark.parametrize("market", ["BR", "MX", "default"])
def test_every_action_of_every_market_has_a_statement_in_its_language(market: str) -> None:
    policies = load_policies(SHIPPED)
    groups = {task: _groups(task) for task in TASKS}
    seen = set()
    for task in TASKS:
        reasons = (
            [  # six reasons up, one down: at most four principal reasons, strongest first
                {
                    "feature": g,
                    "group": g,
                    "direction": "up",
                    "contribution_logodds": 1.0 - i / 10,
                    "text": f"t{i}",
                }
                for i, g in enumerate(groups[task][:6])
            ]
            + [{"feature": "x", "group": groups[task][-1], "direction": "down", "contribution_logodds": -2.0}]
        )
        for action in ACTIONS:
            decision = _decision(market, task, action, reasons)
            statement = statement_of_reasons(decision, policies)
            text = statement.render()
            assert statement.language == LANGUAGE[market]
            assert 1 <= len(statement.reasons) <= 4
            assert (
                decision["decision_id"] in statement.heading and decision["decision_id"] in statement.appeal
            )
            assert APPEAL_WORD[statement.language] in statement.appeal
            assert "{" not in text and "}" not in text
            seen.add(statement.action)
            if market == "default":  # English: the reason codes' own sentences
                assert statement.reasons == ["t0", "t1", "t2", "t3"]
    assert len(seen) == len(TASKS) * len(ACTIONS)  # each action of each task reads differently


@pytest.mark.parametrize("market", ["BR", "MX"])
def test_every_reason_group_has_its_own_phrase(market: str) -> None:
    statement = load_policies(SHIPPED).for_market(market).statement
    catch_all = statement.reasons[""]
    for task in TASKS:
        for group in _groups(task):
            assert statement.reason_text({"group": group}) != catch_all, f"{market}: no phrase for {group}"


def test_specific_prefix_wins_and_duplicates_fold() -> None:
    statement = load_policies(SHIPPED).for_market("BR").statement
    assert statement.reason_text({"group": "rider_incident_rate"}) == "a taxa de incidentes nas suas entregas"
    assert (
        statement.reason_text({"group": "rider_incidents"})
        == "incidentes de segurança recentes nas suas entregas"
    )
    groups = ("pickup_zone_incident_rate", "pickup_ring_incidents")
    reasons = [{"group": g, "contribution_logodds": 1.0} for g in groups]
    out = statement_of_reasons(_decision("BR", "incident_risk", "block", reasons), load_policies(SHIPPED))
    assert out.reasons == ["incidentes registrados perto do local de retirada"]


def test_incomplete_statement_is_refused_naming_the_field(tmp_path: Path) -> None:
    raw = yaml.safe_load((SHIPPED / "MX.yaml").read_text())
    del raw["statement"]["actions"]["merchant_credit"]["block"]
    (tmp_path / "MX.yaml").write_text(yaml.safe_dump(raw, allow_unicode=True))
    with pytest.raises(PolicyError, match=r"(?s)MX.yaml.*statement.*merchant_credit: no text for block"):
        load_policy(tmp_path / "MX.yaml")
    raw = yaml.safe_load((SHIPPED / "MX.yaml").read_text())
    raw["statement"]["appeal"] = "appeal {case_number}"
    (tmp_path / "MX.yaml").write_text(yaml.safe_dump(raw, allow_unicode=True))
    with pytest.raises(PolicyError, match="placeholder 'case_number' is not one of decision_id"):
        load_policy(tmp_path / "MX.yaml")


def test_cli_show_statement(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from safetyml.cli import app
    from safetyml.scoring.audit import AuditLog

    monkeypatch.setenv("SAFETYML_HOME", str(tmp_path))
    d = _decision(
        "BR", "incident_risk", "step_up_verification", [{"group": "trip_rain", "feature": "trip_rain"}]
    )
    d |= {
        "subject_id": "R1/M1",
        "model_name": "m",
        "model_version": "1",
        "policy_version": "BR@2026.12.1",
        "probability": 0.05,
        "cold_start": False,
        "features": {},
        "request": {},
    }
    log = AuditLog(fsync=False)
    log.record(d)
    log.close()
    out = CliRunner().invoke(app, ["decisions", "show", d["decision_id"], "--statement"])
    assert out.exit_code == 0, out.output
    assert "statement of reasons (pt-BR)" in out.output
    assert (
        "precisamos confirmar a sua identidade" in out.output
        and "1. chuva no momento do pedido" in out.output
    )
