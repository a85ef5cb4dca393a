"""Challengers through the real Scorer: shadow on the same snapshot, sticky canary, both scores audited,
the report and promotion's paired-bootstrap gate on shadow decisions.

The challenger is registered as version 2 from version 1's artifacts, so it is the same model under another
version: a shadow score (computed by the shadow runner from the stored snapshot) must then equal the
champion's exactly, and a canary decision must replay with version 2.
"""

from __future__ import annotations

import shutil
from typing import Any

import pandas as pd
import pytest
import yaml

from safetyml import paths

pytestmark = pytest.mark.slow
NAME = "safetyml-incident-risk"


@pytest.fixture(scope="module")
def shadow_run(trained_home: Any, tmp_path_factory: pytest.TempPathFactory) -> Any:
    from safetyml import tracking
    from safetyml.features.definitions import load_feature_set
    from safetyml.features.online import OnlineStore, materialize
    from safetyml.scoring.audit import AuditLog
    from safetyml.scoring.challenger_report import trip_requests
    from safetyml.scoring.scorer import Scorer
    from safetyml.scoring.shadow import ShadowRunner
    from safetyml.tables import load_tables
    from tests.fixtures_training import safetyml_env

    root = tmp_path_factory.mktemp("challengers")
    home = root / "home"
    shutil.copytree(trained_home.home, home)
    policies = root / "policies"
    shutil.copytree(paths.project_dir() / "serving" / "policies", policies)
    for market, entry in {
        "BR": {"model": f"{NAME}@challenger", "mode": "shadow"},
        "MX": {"model": f"{NAME}@challenger", "mode": "canary", "share": 0.3, "sticky_key": "rider_id"},
    }.items():
        raw = yaml.safe_load((policies / f"{market}.yaml").read_text())
        raw["challengers"] = [entry]
        (policies / f"{market}.yaml").write_text(yaml.safe_dump(raw, allow_unicode=True))
    tables = load_tables(trained_home.data_dir)
    with safetyml_env(home):
        source = tracking._client().get_model_version(NAME, "1")
        assert tracking.register(source.source, NAME, source.run_id, {"copy_of": "1"}) == "2"
        materialize(tables, load_feature_set(), store=OnlineStore.open())
        audit = AuditLog(fsync=False)
        scorer = Scorer.from_registry(audit=audit, policies_dir=policies)
        end = tables.trips["requested_at"].max() - pd.Timedelta(days=8)  # labels mature (7-day lag)
        trips = tables.trips[tables.trips["requested_at"] < end].sample(1800, random_state=5)
        requests = trip_requests(trips)
        responses = scorer.score_trips(requests[:300]) + [scorer.score_trip(r) for r in requests[300:]]
        again = [scorer.score_trip(r) for r in requests[:200]]  # the same riders later: sticky routes
        audit.flush()
        scorer.shadow.flush()  # the champion's side of the canary decisions, written by the worker
        runner = ShadowRunner(policies=scorer.policies)  # the shadow process's work, here in process
        runner.catch_up()
        runner.close()
        yield {
            "home": home,
            "tables": tables,
            "scorer": scorer,
            "responses": responses,
            "again": again,
            "requests": requests,
        }
        audit.close()
        scorer.shadow.close()


def test_shadow_and_canary_decisions_have_both_scores(shadow_run: dict) -> None:
    from safetyml.scoring.audit import read_decisions
    from safetyml.scoring.challengers import read_challenger_scores

    home = shadow_run["home"]
    decisions = read_decisions(path=home / "audit.sqlite").set_index("decision_id")
    scores = read_challenger_scores(home / "audit.sqlite").set_index("decision_id")
    assert shadow_run["scorer"].shadow.stats()["dropped"] == 0
    br = decisions[decisions["market"] == "BR"]
    assert len(br) > 100 and set(br["model_version"]) == {"1"}  # shadow never serves
    shadow = scores.loc[br.index]  # every BR decision has its shadow score ...
    assert (shadow["role"] == "challenger").all() and (shadow["model_version"] == "2").all()
    assert (shadow["probability"] == br["probability"]).all()  # ... on the very same snapshot (same model)
    assert (shadow["action"] == br["action"]).all()
    mx = decisions[decisions["market"] == "MX"]
    served = mx[mx["model_version"] == "2"]
    assert 0.15 < len(served) / len(mx) < 0.45  # share 0.3 of riders (sticky by rider, small sample)
    champion_side = scores.loc[served.index]
    assert (champion_side["role"] == "champion").all() and (champion_side["model_version"] == "1").all()
    assert not scores.index.isin(mx[mx["model_version"] == "1"].index).any()  # no canary: nothing extra


def test_canary_routes_are_sticky_and_replay_with_their_version(shadow_run: dict) -> None:
    from safetyml.scoring.audit import get_decision
    from safetyml.scoring.replay import Replayer
    from tests.fixtures_training import safetyml_env

    first = {r.rider_id: r.model_version for r in shadow_run["responses"][:200] if r.market == "MX"}
    later = {r.rider_id: r.model_version for r in shadow_run["again"] if r.market == "MX"}
    assert first and first == later
    canary = [r for r in shadow_run["responses"] if r.model_version == "2"]
    with safetyml_env(shadow_run["home"]):
        replayer = Replayer()
        for response in canary[:20]:
            result = replayer.replay(get_decision(response.decision_id))
            assert (
                result.replayed.model_version == "2" and result.score_identical and result.reasons_identical
            )


def test_report_and_promotion_use_the_shadow_decisions(shadow_run: dict) -> None:
    from safetyml import tracking
    from safetyml.scoring.challenger_report import challenger_report
    from safetyml.training.promote import promote
    from tests.fixtures_training import safetyml_env

    with safetyml_env(shadow_run["home"]):
        report = challenger_report("incident_risk", tables=shadow_run["tables"], n_boot=200)
        assert report.missing == 0 and set(report.coverage["market"]) == {"BR", "MX"}
        assert report.swaps.empty and (report.agreement["same_action"] == 1.0).all()  # same model
        assert report.pairs["label"].notna().all() and report.bootstrap is not None
        assert report.bootstrap.ci_low == report.bootstrap.ci_high == 0.0 and report.gate
        decision = promote("incident_risk", tables=shadow_run["tables"])
        assert decision.evidence == "shadow" and decision.promoted
        assert "paired bootstrap CI [+0.0000, +0.0000]" in decision.reason
        tags = tracking.version_tags(NAME, "2")
        assert tags["promotion.evidence"] == "shadow" and float(tags["promotion.ci_low"]) == 0.0
        assert tracking.get_alias(NAME, "champion").version == "2"
