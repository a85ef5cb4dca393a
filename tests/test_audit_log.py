"""Decision audit log: durable journal shipped to the store, nothing lost on close, show and export.

Crash, duplicate and store-down behaviour: tests/test_audit_durability.py."""

from __future__ import annotations

import subprocess
import sys
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from safetyml.scoring.audit import (
    AuditLog,
    AuditUnavailableError,
    export_decisions,
    get_decision,
    read_decisions,
)


def _decision(i: int, when: datetime) -> dict:
    return {
        "decision_id": str(uuid.uuid4()),
        "decided_at": when,
        "task": "incident_risk",
        "subject_id": f"r{i}/m{i}",
        "market": "BR",
        "model_name": "safetyml-incident-risk",
        "model_version": "3",
        "policy_version": "BR@2026.11.2",
        "probability": np.float64(i / 1000),
        "risk_tier": "low",
        "action": "allow",
        "cold_start": i % 2 == 0,
        "features": {"rider_trips_30d": np.int64(i), "rain": None, "speed": float("nan")},
        "reasons": [{"feature": "rider_trips_30d", "value": i, "contribution_logodds": 0.1, "text": "x"}],
        "request": {"rider_id": f"r{i}"},
    }


def test_batches_commit_together_and_close_loses_nothing(tmp_path: Path) -> None:
    log = AuditLog(tmp_path / "audit.sqlite")
    now = datetime.now(UTC)
    decisions = [_decision(i, now + timedelta(microseconds=i)) for i in range(2000)]
    for start in range(0, 2000, 100):
        with log.batch():
            for d in decisions[start : start + 100]:
                log.record(d)
    log.close()
    assert log.written == 2000
    frame = read_decisions(path=tmp_path / "audit.sqlite")
    assert set(frame["decision_id"]) == {d["decision_id"] for d in decisions}
    with pytest.raises(AuditUnavailableError, match="closed"):
        log.record(decisions[0])
    assert not list((tmp_path / "audit.sqlite.journals").glob("*.journal"))  # shipped, then removed


def test_get_decision_round_trips_values(tmp_path: Path) -> None:
    path = tmp_path / "audit.sqlite"
    log = AuditLog(path)
    d = _decision(7, datetime(2026, 11, 1, 12, tzinfo=UTC))
    log.record(d)
    log.flush()
    got = get_decision(d["decision_id"], path)
    log.close()
    assert got is not None
    assert got["probability"] == pytest.approx(0.007)
    assert got["features"] == {"rider_trips_30d": 7, "rain": None, "speed": None}
    assert got["reasons"][0]["feature"] == "rider_trips_30d"
    assert got["cold_start"] is False
    assert got["policy_version"] == "BR@2026.11.2"
    assert get_decision("nope", path) is None


def test_export_since_filters_by_time(tmp_path: Path) -> None:
    path = tmp_path / "audit.sqlite"
    log = AuditLog(path)
    base = datetime(2026, 11, 1, tzinfo=UTC)
    for i in range(10):
        log.record(_decision(i, base + timedelta(hours=i)))
    log.close()
    out = tmp_path / "export.parquet"
    count = export_decisions(out, since=base + timedelta(hours=6), path=path)
    frame = pd.read_parquet(out)
    assert count == len(frame) == 4
    assert (frame["decided_at"] >= pd.Timestamp(base + timedelta(hours=6))).all()


def test_decisions_cli_show_and_export(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from safetyml.cli import app

    monkeypatch.setenv("SAFETYML_HOME", str(tmp_path))
    log = AuditLog()
    d = _decision(3, datetime(2026, 11, 2, tzinfo=UTC))
    log.record(d)
    log.close()
    runner = CliRunner()
    shown = runner.invoke(app, ["decisions", "show", d["decision_id"], "--json"])
    assert shown.exit_code == 0, shown.output
    assert "BR@2026.11.2" in shown.output and "rider_trips_30d" in shown.output
    missing = runner.invoke(app, ["decisions", "show", "no-such-id"])
    assert missing.exit_code == 2
    out = tmp_path / "d.parquet"
    exported = runner.invoke(app, ["decisions", "export", "--since", "2026-11-01", "--out", str(out)])
    assert exported.exit_code == 0, exported.output
    assert pd.read_parquet(out)["decision_id"].tolist() == [d["decision_id"]]


def test_queued_decisions_are_written_at_interpreter_exit(tmp_path: Path) -> None:
    """A process that records and exits without close() still writes everything (atexit drain)."""
    path = tmp_path / "audit.sqlite"
    code = (
        "import uuid, datetime\n"
        "from safetyml.scoring.audit import AuditLog\n"
        f"log = AuditLog({str(path)!r})\n"
        "for i in range(300):\n"
        "    log.record({'decision_id': str(uuid.uuid4()), 'decided_at': datetime.datetime.now(datetime.UTC),"
        " 'task': 'incident_risk', 'subject_id': 'r', 'model_version': '1', 'policy_version': 'p',"
        " 'probability': 0.1, 'action': 'allow'})\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)
    assert len(read_decisions(path=path)) == 300


def test_the_fast_serialiser_gives_exactly_what_jsonable_gives() -> None:
    """The audit's response-path serialiser against safetyml.values.jsonable on the awkward values."""
    from safetyml.scoring.audit import _plain
    from safetyml.values import jsonable

    awkward = {
        "f": 1.5,
        "nan": float("nan"),
        "inf": float("-inf"),
        "np_float": np.float32(2.5),
        "np_int": np.int64(7),
        "np_bool": np.bool_(True),
        "na": pd.NA,
        "nat": pd.NaT,
        "ts": pd.Timestamp("2026-01-01T00:00:00Z"),
        "dt": datetime(2026, 1, 1, tzinfo=UTC),
        "nested": [{"v": np.float64("nan"), 3: "x"}, (1, 2)],
        "arr": np.array([1.0, np.nan]),
        4: None,
        "s": "text",
        "b": False,
    }
    assert _plain(awkward) == jsonable(awkward)
