"""Overturn rates reach monitoring: the ``overturn_rate`` indicator of monitoring/default.yaml is built
from the appeals beside the audit log, per market, day of review and policy/model version."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pandas as pd
import pytest

from safetyml.scoring.appeals import record_appeal
from tests.test_appeals_outcomes import T0, _decision, _store


def test_overturn_rate_indicator_is_built_from_recorded_appeals(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from safetyml.monitoring.config import for_market, load_configs
    from safetyml.monitoring.indicators import MarketInputs, build_series
    from safetyml.monitoring.run import _appeals

    monkeypatch.setenv("SAFETYML_HOME", str(tmp_path))
    monkeypatch.delenv("SAFETYML_AUDIT_URL", raising=False)
    # day 1: BR v3 2 of 3 overturned, BR v4 0 of 1; day 2: BR v3 1 of 1 (and one re-review of day 1's upheld
    # v3 decision, now overturned: the latest outcome counts, on its own day); MX v3 1 of 2 on day 1
    plan = [
        ("BR", "3", 0, "overturned"),
        ("BR", "3", 0, "overturned"),
        ("BR", "3", 0, "upheld"),
        ("BR", "4", 0, "upheld"),
        ("BR", "3", 1, "overturned"),
        ("MX", "3", 0, "overturned"),
        ("MX", "3", 0, "upheld"),
        ("BR", "3", -30, "overturned"),  # before the monitored history: left out
    ]
    decisions = [_decision(i, market, version=v) for i, (market, v, _, _) in enumerate(plan)]
    path = _store(tmp_path, decisions)
    for n, (d, (_, _, day, outcome)) in enumerate(zip(decisions, plan, strict=True)):
        when = T0 + timedelta(days=day, minutes=n)
        record_appeal(d["decision_id"], outcome, "ana", "review", path=path, now=when)
    again = T0 + timedelta(days=1)
    record_appeal(decisions[2]["decision_id"], "overturned", "bruno", "second", path=path, now=again)

    appeals = _appeals(pd.Timestamp(T0) - pd.Timedelta(days=7))
    assert len(appeals) == 7  # the latest outcome per decision, since the history start

    configs = load_configs()
    indicator = for_market(configs, None).indicator("overturn_rate")  # wired: the shipped config has it
    assert indicator.kind == "overturn_rate"
    assert all(for_market(configs, m).indicator("overturn_rate") for m in ("BR", "MX"))
    empty = pd.DataFrame(columns=["requested_at", "city"])
    series = {}
    for market in ("BR", "MX"):
        inputs = MarketInputs(
            market=market,
            as_of=pd.Timestamp(T0) + pd.Timedelta(days=2),
            trips=empty,
            incidents=empty,
            appeals=appeals[appeals["market"] == market],
        )
        series[market] = build_series(indicator, inputs).set_index(["time", "model_version"])
    br, mx = series["BR"], series["MX"]
    day1, day2 = pd.Timestamp(T0).floor("D"), pd.Timestamp(T0).floor("D") + pd.Timedelta(days=1)
    # day 1, BR v3: the re-reviewed decision moved to day 2, so 2 of 2 overturned on day 1
    assert br.loc[(day1, "3"), ["value", "n"]].tolist() == [1.0, 2]
    assert br.loc[(day1, "4"), ["value", "n"]].tolist() == [0.0, 1]
    assert br.loc[(day2, "3"), ["value", "n"]].tolist() == [1.0, 2]
    assert mx.loc[(day1, "3"), ["value", "n"]].tolist() == [0.5, 2]
    assert (br["series"].str.contains("task=incident_risk,policy_version=BR@2026.12.1,model_version=")).all()
    assert (br["noise_sd"] > 0).all()
