"""Merchant-credit decisions labelled with their matured outcome in the challenger report: the training
label (a credit event within the horizon after the decision's as_of), maturity within the credit data,
merchants already in default left out, one row per merchant-month; the paired gate on those rows."""

from __future__ import annotations

import json
import uuid
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from safetyml.scoring.challenger_report import challenger_report, label_credit_decisions
from safetyml.tables import Tables

END = pd.Timestamp("2026-06-30", tz="UTC")  # the credit data's last movement


def _tables(events: dict[str, str], merchants: list[str]) -> Tables:
    empty = pd.DataFrame()
    return Tables(
        riders=empty,
        merchants=pd.DataFrame({"merchant_id": merchants}),
        trips=pd.DataFrame({"requested_at": [END - pd.Timedelta(days=3)]}),
        incidents=pd.DataFrame({"trip_id": [], "severity": []}),
        merchant_ledger=pd.DataFrame({"merchant_id": ["M1"], "event_at": [END]}),
        credit_events=pd.DataFrame(
            {
                "merchant_id": list(events),
                "event_at": pd.to_datetime(list(events.values()), utc=True),
                "kind": "default",
            }
        ),
    )


def test_credit_labels_follow_the_training_label_at_the_decision_time() -> None:
    events = {
        "M1": "2026-03-01",  # 45 days after as_of: a default within the horizon
        "M2": "2026-05-01",  # 106 days after: outside the 90-day horizon
        "M3": "2026-01-10",  # before as_of: already in default, not a credit decision any more
        "M5": "2026-05-10",  # but its decision is too recent: the horizon reaches past the data
        "M6": "2026-04-01",  # decided without as_of: decided_at counts (59 days)
        "M7": "2026-04-15",  # exactly as_of + 90 days: inside (as in training, the end is included)
        "M8": "2026-01-15",  # exactly at as_of: already happened
    }
    rows = [
        ("M1", "2026-01-15"),
        ("M2", "2026-01-15"),
        ("M3", "2026-01-15"),
        ("M4", "2026-01-15"),  # never defaults: 0
        ("M5", "2026-04-10"),
        ("M6", None),
        ("M7", "2026-01-15"),
        ("M8", "2026-01-15"),
        ("M9", "2026-04-05"),  # no event, but immature (90 days after reaches past 2026-06-30)
    ]
    pairs = pd.DataFrame(
        {
            "request": [
                json.dumps({"merchant_id": m, "as_of": a and f"{a}T00:00:00+00:00"}) for m, a in rows
            ],
            "decided_at": pd.to_datetime(["2026-02-01"] * len(rows), utc=True),
        }
    )
    labels = label_credit_decisions(pairs, _tables(events, [m for m, _ in rows]), horizon_days=90)
    got = dict(zip([m for m, _ in rows], labels["label"], strict=True))
    expected = {"M1": 1, "M2": 0, "M3": None, "M4": 0, "M5": None, "M6": 1, "M7": 1, "M8": None, "M9": None}
    for merchant, label in expected.items():
        if label is None:
            assert np.isnan(got[merchant]), merchant
        else:
            assert got[merchant] == label, merchant
    assert labels["key"].tolist()[:2] == ["M1|2026-01", "M2|2026-01"]
    assert labels["key"].tolist()[5] == "M6|2026-02"


def _record_credit_run(path: Path, n: int, seed: int) -> Tables:
    """``n`` merchants decided (twice each, in the same month) with a champion that ranks their true risk
    and a shadow challenger that is noise; their credit events drawn from the true risk."""
    from safetyml.scoring.audit import AuditLog
    from safetyml.scoring.challengers import ShadowJob, ShadowLog
    from safetyml.scoring.policies import load_policies

    rng = np.random.default_rng(seed)
    risk = rng.uniform(0.0, 0.8, n)
    defaults = rng.uniform(size=n) < risk
    merchants = [f"M{i:04d}" for i in range(n)]
    as_of = pd.Timestamp("2026-02-01", tz="UTC")
    events = {m: str((as_of + pd.Timedelta(days=int(d))).date()) for m, d in zip(
        merchants, rng.integers(1, 90, n), strict=True) if defaults[merchants.index(m)]}  # fmt: skip
    champion = np.clip(risk + rng.normal(0, 0.05, n), 0.001, 0.999)
    challenger = rng.uniform(0.01, 0.8, n)
    policy = load_policies().for_market("BR")
    log = AuditLog(path, fsync=False)
    shadow = ShadowLog(path, batch_wait=0)
    for repeat in range(2):  # the same merchants again a week later: one merchant-month each
        decided = as_of + pd.Timedelta(days=7 * repeat, hours=1)
        decisions = [
            {
                "decision_id": str(uuid.uuid4()),
                "decided_at": decided.to_pydatetime(),
                "task": "merchant_credit",
                "subject_id": m,
                "market": "BR",
                "model_name": "safetyml-merchant-credit",
                "model_version": "1",
                "policy_version": policy.label,
                "probability": float(p),
                "credit_score": 600.0,
                "grade": "C",
                "risk_tier": policy.decide_one("merchant_credit", float(p))[0],
                "action": policy.decide_one("merchant_credit", float(p))[1],
                "cold_start": False,
                "features": {},
                "reasons": [],
                "request": {"merchant_id": m, "as_of": decided.isoformat(), "explain": False},
            }
            for m, p in zip(merchants, champion, strict=True)
        ]
        log.record_many(decisions)
        known = (
            "challenger",
            "shadow",
            "safetyml-merchant-credit@challenger",
            "safetyml-merchant-credit",
            "2",
        )
        items = [(0, d["decision_id"], policy, [], [(*known, float(q), {})])
                 for d, q in zip(decisions, challenger, strict=True)]  # fmt: skip
        shadow.submit(ShadowJob("merchant_credit", [], items))
    shadow.flush()
    shadow.close()
    log.close()
    return _tables(events, merchants)


def test_credit_report_labels_matured_decisions_and_gates_a_worse_challenger(tmp_path: Path) -> None:
    from safetyml.scoring.challenger_report import paired_bootstrap

    path = tmp_path / "audit.sqlite"
    tables = _record_credit_run(path, n=400, seed=3)
    report = challenger_report("merchant_credit", path=path, tables=tables, n_boot=300, seed=1)
    assert report.missing == 0 and len(report.pairs) == 800
    assert report.label_note.startswith("400 merchant-months labelled")
    # the second decisions repeat the first ones' merchant-month, except for merchants whose default fell in
    # the week between: those are no longer a credit decision (not labelled)
    second = pd.Timestamp("2026-02-08 01:00", tz="UTC")
    gone = int((tables.credit_events["event_at"] <= second).sum())
    assert 0 < gone < 150
    assert f"{400 - gone} repeat decisions of the same merchant-months left out" in report.label_note
    boot = report.bootstrap
    assert boot is not None and boot.metric == "roc_auc" and boot.rows == 400
    assert boot.positives == len(tables.credit_events)
    assert boot.champion > 0.75 and 0.35 < boot.challenger < 0.65  # noise ranks at chance
    assert report.gate is False and boot.ci_high < 0  # the noisy challenger is refused
    rows = report.pairs[report.pairs["label"].notna()].drop_duplicates("label_key").sort_values("label_key")
    swapped = paired_bootstrap(
        rows["label"].to_numpy(), rows["p_challenger"].to_numpy(), rows["p_champion"].to_numpy(), "roc_auc",
        n_boot=300, seed=1,
    )  # fmt: skip
    assert swapped.passes(report.margin)  # the better one, as challenger, is allowed
    assert swapped.ci_low == pytest.approx(-boot.ci_high) and swapped.ci_high == pytest.approx(-boot.ci_low)
