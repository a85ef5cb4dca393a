"""Replay: every decision of a load run, replayed from its stored snapshot with the version it names,
gives exactly the recorded score and reasons; today's champion is shown beside it."""

from __future__ import annotations

import math
import shutil
from typing import Any

import pytest
from typer.testing import CliRunner

from safetyml.scoring.schemas import MerchantScoreRequest

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def load_run(trained_home: Any, tmp_path_factory: pytest.TempPathFactory) -> Any:
    """A copy of trained_home with a materialized store; 150 trips and 31 merchants scored through the real
    Scorer with the audit log (unknown ids, missing coordinates, explain on and off included)."""
    from safetyml.features.definitions import load_feature_set
    from safetyml.features.online import OnlineStore, materialize
    from safetyml.scoring.audit import AuditLog
    from safetyml.scoring.scorer import Scorer
    from safetyml.tables import load_tables
    from tests.fixtures_training import safetyml_env
    from tests.test_scoring_scorer import _requests

    home = tmp_path_factory.mktemp("replay") / "home"
    shutil.copytree(trained_home.home, home)
    tables = load_tables(trained_home.data_dir)
    with safetyml_env(home):
        materialize(tables, load_feature_set(), store=OnlineStore.open())
        audit = AuditLog(fsync=False)
        scorer = Scorer.from_registry(audit=audit)
        trips = _requests(tables, 150, seed=21)
        for i, request in enumerate(trips):
            if i % 10 == 0:
                trips[i] = request.model_copy(update={"explain": False})
        ids = [r.decision_id for r in scorer.score_trips(trips[:50])]  # one batch
        ids += [scorer.score_trip(r).decision_id for r in trips[50:]]
        merchants = [*tables.merchants["merchant_id"].sample(30, random_state=4), "M_UNSEEN"]
        ids += [
            r.decision_id
            for r in scorer.score_merchants([MerchantScoreRequest(merchant_id=m) for m in merchants])
        ]
        audit.close()
        yield {"home": home, "ids": ids, "versions": scorer.model_versions}


def test_every_decision_of_a_load_run_replays_exactly(load_run: dict) -> None:
    from safetyml.scoring.audit import get_decision
    from safetyml.scoring.replay import Replayer
    from tests.fixtures_training import safetyml_env

    with safetyml_env(load_run["home"]):
        replayer = Replayer()
        results = [replayer.replay(get_decision(i)) for i in load_run["ids"]]
    assert len(results) == 181
    assert {r.decision["task"] for r in results} == {"incident_risk", "merchant_credit"}
    assert sum(bool(r.decision["reasons"]) for r in results) > 150  # explain=False decisions have none
    for r in results:
        d = r.decision
        assert r.replayed.probability == d["probability"], d["decision_id"]  # exactly, not approximately
        assert r.replayed.model_version == d["model_version"]
        assert r.reasons_identical, (d["reasons"], r.replayed.reasons)
        assert r.action_identical and not r.policy_changed
        if d["task"] == "merchant_credit":
            assert r.replayed.credit_score == d["credit_score"]
        # today's champion is the same version here, so it must agree exactly too
        assert r.champion is not None and r.champion.probability == d["probability"]
    quiet = [
        r for r in results if not r.reasons_requested
    ]  # explain=False: nothing recorded, replay explains
    assert len(quiet) == 15 and all(not r.decision["reasons"] and r.replayed.reasons for r in quiet)


def test_replay_notices_a_changed_snapshot_and_an_unknown_version(load_run: dict) -> None:
    from safetyml.scoring.audit import get_decision
    from safetyml.scoring.replay import Replayer
    from tests.fixtures_training import safetyml_env

    with safetyml_env(load_run["home"]):
        replayer = Replayer()
        decisions = [get_decision(i) for i in load_run["ids"][:60]]
        decision = next(
            d
            for d in decisions
            if d["reasons"]
            and isinstance(d["features"][d["reasons"][0]["feature"]], float)
            and math.isfinite(d["features"][d["reasons"][0]["feature"]])  # a missing value stays missing
        )
        top = decision["reasons"][0]["feature"]
        # the strongest reason pushed far to either side: one side crosses the splits it went through
        # (a value already beyond every threshold on one side gives the same score there)
        value = decision["features"][top]
        replays = []
        for extreme in (abs(value) * 3 + 1e6, -abs(value) * 3 - 1e6):
            decision["features"][top] = extreme
            replays.append(replayer.replay(decision, with_champion=False))
        changed = next((r for r in replays if not r.score_identical), replays[0])
        assert not changed.score_identical and not changed.reasons_identical and changed.champion is None
        decision["model_version"] = "999"
        with pytest.raises(LookupError, match="version 999 named on the decision"):
            replayer.replay(decision)


def test_cli_replay_prints_the_comparison(load_run: dict, monkeypatch: pytest.MonkeyPatch) -> None:
    import json

    from safetyml.cli import app

    monkeypatch.setenv("SAFETYML_HOME", str(load_run["home"]))
    runner = CliRunner()
    out = runner.invoke(app, ["decisions", "replay", load_run["ids"][0]])
    assert out.exit_code == 0, out.output
    assert "score: identical; reasons: identical" in out.output and "today's champion" in out.output
    raw = runner.invoke(app, ["decisions", "replay", load_run["ids"][-1], "--json"])
    assert raw.exit_code == 0, raw.output
    payload = json.loads(raw.output)
    assert (
        payload["score_identical"]
        and payload["replayed"]["credit_score"] == payload["recorded"]["credit_score"]
    )
    missing = runner.invoke(app, ["decisions", "replay", "no-such-id"])
    assert missing.exit_code == 2 and "no decision 'no-such-id'" in missing.output
