"""Appeals and challenger scores on PostgreSQL (SAFETYML_AUDIT_URL), beside the decisions: the same
records, the same refusals and the same overturn rates as the SQLite store for the same decisions."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pandas as pd
import pytest
from typer.testing import CliRunner

from safetyml.envvars import environment
from safetyml.scoring.appeals import AppealError, all_overturn_rates, read_appeals, record_appeal
from tests.test_appeals_outcomes import T0, _decision, _store

pytestmark = pytest.mark.slow  # a real PostgreSQL server

# market, action, model version, outcome of the first review, outcome of a second review (None: none)
PLAN = [
    ("BR", "block", "3", "upheld", "overturned"),
    ("BR", "block", "3", "overturned", None),
    ("BR", "block", "4", "overturned", None),
    ("BR", "manual_review", "4", "upheld", None),
    ("MX", "block", "4", "upheld", "upheld"),
    ("MX", "manual_review", "4", "overturned", None),
    ("MX", "step_up_verification", "3", "upheld", None),
]


def _fresh_database(server) -> str:
    """A new empty database on the session's server: each test sees only its own records."""
    import uuid

    import psycopg

    name = f"t_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(server.url, autocommit=True) as conn:
        conn.execute(f"CREATE DATABASE {name}")
    return server.url.rsplit("/", 1)[0] + f"/{name}"


def _record(decisions: list[dict], home: Path, url: str | None) -> tuple[pd.DataFrame, dict]:
    """Record the plan's decisions and appeals in one store; the appeals read back and the rates."""
    with environment({"SAFETYML_AUDIT_URL": url}):
        path = _store(home, decisions)
        for n, (d, (*_, first, second)) in enumerate(zip(decisions, PLAN, strict=True)):
            record_appeal(d["decision_id"], first, "ana", "first", path=path, now=T0 + timedelta(hours=n))
            if second:
                later = T0 + timedelta(days=1, hours=n)
                record_appeal(d["decision_id"], second, "bruno", "second", path=path, now=later)
        with pytest.raises(AppealError, match=r"reviewer 'R1' is already recorded .* rider_id"):
            record_appeal(decisions[1]["decision_id"], "upheld", "R1", "self-review", path=path)
        with pytest.raises(AppealError, match="reviewer of appeal"):
            record_appeal(decisions[0]["decision_id"], "upheld", " BRUNO ", "third instance", path=path)
        every = read_appeals(path, latest_only=False)
        return every, all_overturn_rates(path)


def test_appeals_live_beside_the_decisions_on_postgres_with_the_same_rates_as_sqlite(
    postgres, tmp_path: Path
) -> None:
    import psycopg

    decisions = [_decision(i, m, a, v) for i, (m, a, v, *_) in enumerate(PLAN)]
    (tmp_path / "sqlite").mkdir()
    (tmp_path / "pg").mkdir()
    on_sqlite = _record(decisions, tmp_path / "sqlite", None)
    url = _fresh_database(postgres)
    on_postgres = _record(decisions, tmp_path / "pg", url)
    assert not (tmp_path / "pg" / "audit.sqlite").exists()  # neither decisions nor appeals went to SQLite

    # the same appeals (ids are random per store), in the same order, with the same decision fields
    drop = lambda f: f.drop(columns="appeal_id")  # noqa: E731
    pd.testing.assert_frame_equal(drop(on_sqlite[0]), drop(on_postgres[0]))
    assert len(on_postgres[0]) == 9
    # the overturn rates per policy, model version and market (and every other grouping) agree
    assert on_sqlite[1].keys() == on_postgres[1].keys()
    for by in on_sqlite[1]:
        pd.testing.assert_frame_equal(on_sqlite[1][by], on_postgres[1][by], check_dtype=False)
    market = on_postgres[1]["market"].set_index("market")
    assert market.loc["BR", ["appeals", "overturned"]].tolist() == [4, 3]  # the second review stands
    assert market.loc["MX", ["appeals", "overturned"]].tolist() == [3, 1]
    version = on_postgres[1]["model_version"].set_index("model_version")
    assert version.loc["3", ["appeals", "overturned"]].tolist() == [3, 2]
    policy = on_postgres[1]["policy_version"].set_index("policy_version")
    assert policy.loc["MX@2026.12.1", "overturn_rate"] == pytest.approx(1 / 3)

    # the append-only rule holds in PostgreSQL too: UPDATE, DELETE and TRUNCATE are refused
    with psycopg.connect(url, autocommit=True) as conn:
        for statement in ("UPDATE appeals SET outcome = 'upheld'", "DELETE FROM appeals", "TRUNCATE appeals"):
            with pytest.raises(psycopg.errors.RaiseException, match="append-only"):
                conn.execute(statement)
        with pytest.raises(psycopg.errors.CheckViolation):
            conn.execute(
                "INSERT INTO appeals (appeal_id, decision_id, outcome, reviewer, note, recorded_at, task, "
                "action, policy_version, model_version, reason_codes) "
                "VALUES ('x', 'y', 'maybe', 'r', 'n', 't', 'k', 'a', 'p', 'v', '[]')"
            )
        count = conn.execute("SELECT count(*) FROM appeals").fetchone()[0]
    assert count == 9


def test_challenger_scores_and_the_appeal_cli_use_postgres(
    postgres, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from safetyml.cli import app
    from safetyml.scoring.challengers import ShadowJob, ShadowLog, read_challenger_scores
    from safetyml.scoring.policies import load_policies

    policy = load_policies().for_market("BR")
    decisions = [_decision(i + 100) for i in range(3)]
    frames = []
    pg_url = _fresh_database(postgres)
    for home, url in ((tmp_path / "sqlite", None), (tmp_path / "pg", pg_url)):
        home.mkdir()
        with environment({"SAFETYML_AUDIT_URL": url}):
            path = _store(home, decisions)
            shadow = ShadowLog(path, batch_wait=0)
            known = [("champion", "canary", "safetyml-incident-risk@7", "safetyml-incident-risk", "7")]
            items = [
                (0, d["decision_id"], policy, [], [(*known[0], 0.1 * (n + 1), {"x": n})])
                for n, d in enumerate(decisions)
            ]
            shadow.submit(ShadowJob("incident_risk", [], items))
            shadow.submit(ShadowJob("incident_risk", [], items[:1]))  # written twice: kept once
            shadow.flush()
            shadow.close()
            frames.append(read_challenger_scores(path).drop(columns="scored_at"))
    sort = lambda f: f.sort_values("decision_id").reset_index(drop=True)  # noqa: E731
    pd.testing.assert_frame_equal(sort(frames[0]), sort(frames[1]))
    by_id = frames[1].set_index("decision_id")
    assert len(by_id) == 3
    for n, d in enumerate(decisions):
        assert by_id.loc[d["decision_id"], "extra_features"] == {"x": n}
        assert by_id.loc[d["decision_id"], "probability"] == pytest.approx(0.1 * (n + 1), abs=0)

    monkeypatch.setenv("SAFETYML_HOME", str(tmp_path / "pg"))
    monkeypatch.setenv("SAFETYML_AUDIT_URL", pg_url)
    runner = CliRunner()
    d = decisions[0]
    base = ["decisions", "appeal", d["decision_id"], "--outcome", "overturned", "--note", "wrong zone"]
    refused = runner.invoke(app, [*base, "--reviewer", "R100"])
    assert refused.exit_code == 2 and "already recorded on decision" in refused.output
    done = runner.invoke(app, [*base, "--reviewer", "carla"])
    assert done.exit_code == 0, done.output
    shown = runner.invoke(app, ["decisions", "show", d["decision_id"]])
    assert shown.exit_code == 0, shown.output
    assert "overturned by carla — wrong zone" in shown.output
    assert not (tmp_path / "pg" / "audit.sqlite").exists()
