"""Durability of the decision audit log: kill -9 loses no acknowledged decision, ids are never replaced,
a store that is down keeps decisions in the journal until it is back, and the journal is bounded."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path

import pytest

from safetyml.scoring.audit import (
    AuditLog,
    AuditUnavailableError,
    DuplicateDecisionError,
    SQLiteAuditStore,
    _line,
    _row,
    get_decision,
    journal_dir,
    read_decisions,
)


def _decision(i: int, decision_id: str | None = None, action: str = "allow") -> dict:
    return {
        "decision_id": decision_id or str(uuid.uuid4()),
        "decided_at": datetime(2026, 11, 1, 12, tzinfo=UTC),
        "task": "incident_risk",
        "subject_id": f"r{i}/m{i}",
        "market": "BR",
        "model_name": "m",
        "model_version": "3",
        "policy_version": "BR@1",
        "probability": i / 10_000,
        "risk_tier": "low",
        "action": action,
        "cold_start": False,
        "features": {"x": i, "pad": "p" * 500},
        "reasons": [],
        "request": {"rider_id": f"r{i}"},
    }


@contextmanager
def store_locked(path: Path) -> Iterator[None]:
    """The store is down for writers: another connection holds SQLite's write lock."""
    AuditLog(path, scan_every=0.1).close()  # the schema exists
    conn = sqlite3.connect(str(path), isolation_level=None)
    conn.execute("BEGIN EXCLUSIVE")
    try:
        yield
    finally:
        conn.execute("ROLLBACK")
        conn.close()


# A worker: answers decisions one request at a time (batch() returns = the decision is durable = the
# client may see its id) and prints each answered id; the parent kills it with SIGKILL mid-stream.
WORKER = """
import sys, uuid, datetime
from safetyml.scoring.audit import AuditLog
log = AuditLog(sys.argv[1], store_timeout=0.05, scan_every=0.2)
i = 0
while True:
    ids = [str(uuid.uuid4()) for _ in range(1 + i % 3)]
    with log.batch():
        for d in ids:
            log.record({'decision_id': d, 'decided_at': datetime.datetime.now(datetime.UTC),
                        'task': 'incident_risk', 'subject_id': 'r', 'model_version': '1',
                        'policy_version': 'p', 'probability': 0.1, 'action': 'allow',
                        'features': {'pad': 'x' * 800}})
    print(' '.join(ids), flush=True)
    i += 1
"""


def _run_and_kill(path: Path, answered_before_kill: int) -> set[str]:
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1] / "src")}
    proc = subprocess.Popen(
        [sys.executable, "-c", WORKER, str(path)], stdout=subprocess.PIPE, text=True, env=env
    )
    answered: set[str] = set()
    try:
        assert proc.stdout is not None
        while len(answered) < answered_before_kill:
            line = proc.stdout.readline()
            assert line, f"worker died early with code {proc.poll()}"
            answered.update(line.split())
        os.kill(proc.pid, signal.SIGKILL)
        rest, _ = proc.communicate(timeout=30)  # ids printed before the kill landed were answered too
        answered.update(rest.split())
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == -signal.SIGKILL
    return answered


@pytest.mark.parametrize("store_up", [True, False], ids=["shipping-while-killed", "store-down-when-killed"])
def test_kill_9_of_a_worker_loses_no_answered_decision(tmp_path: Path, store_up: bool) -> None:
    path = tmp_path / "audit.sqlite"
    if store_up:
        answered = _run_and_kill(path, 600)
    else:
        with store_locked(path):
            answered = _run_and_kill(path, 600)
            assert read_decisions(path=path).empty  # nothing reached the store: all must come from replay
    left = list(journal_dir(path).glob("*.journal"))
    assert len(left) == 1, left  # the dead worker's journal is left
    log = AuditLog(path)  # the replacement worker replays what the dead one left
    log.flush()
    deadline = time.monotonic() + 30
    while list(journal_dir(path).glob("*.journal")) != [log._journal.path] and time.monotonic() < deadline:
        time.sleep(0.05)
    log.close()
    stored = read_decisions(path=path)
    missing = answered - set(stored["decision_id"])
    assert not missing, f"{len(missing)} of {len(answered)} answered decisions missing: {sorted(missing)[:5]}"
    assert stored["decision_id"].is_unique
    assert log.conflicts() == []
    assert not list(journal_dir(path).glob("*.journal"))  # replayed journals are removed


def test_a_decision_id_that_exists_is_refused_never_replaced(tmp_path: Path) -> None:
    path = tmp_path / "audit.sqlite"
    log = AuditLog(path)
    first = _decision(1, action="allow")
    log.record(first)
    log.record(_decision(2, decision_id=first["decision_id"], action="block"))  # same id, other content
    log.flush()
    assert get_decision(first["decision_id"], path)["action"] == "allow"  # the first one stands
    conflicts = log.conflicts()
    assert len(conflicts) == 1 and conflicts[0]["decision_id"] == first["decision_id"]
    assert "UNIQUE" in conflicts[0]["reason"] and '"block"' in conflicts[0]["record"]
    assert log.written == 1 and log.queue_depth() == 0
    log.close()
    store = SQLiteAuditStore(path)
    with pytest.raises(DuplicateDecisionError, match="UNIQUE"):  # the store's own insert refuses too
        store.insert([_row(_decision(3, decision_id=first["decision_id"]))])
    store.close()
    assert len(read_decisions(path=path)) == 1


def test_store_down_keeps_decisions_in_the_journal_and_ships_them_when_back(tmp_path: Path) -> None:
    path = tmp_path / "audit.sqlite"
    with store_locked(path):
        log = AuditLog(path, store_timeout=0.05, scan_every=0.1)
        decisions = [_decision(i) for i in range(150)]
        with log.batch():
            for d in decisions:
                log.record(d)  # returns: durable in the journal although the store is down
        time.sleep(0.5)
        assert log.queue_depth() == 150
        assert log.store_error is not None and "locked" in log.store_error
        assert read_decisions(path=path).empty
        waiting = get_decision(decisions[7]["decision_id"], path)  # an appeal can already find it
        assert waiting is not None and waiting["features"]["x"] == 7
        with pytest.raises(TimeoutError, match="safe in the journal"):
            log.flush(timeout=0.3)
    log.flush(timeout=30)  # the store is back
    assert log.queue_depth() == 0 and log.store_error is None
    assert set(read_decisions(path=path)["decision_id"]) == {d["decision_id"] for d in decisions}
    log.close()


def test_a_full_backlog_refuses_new_decisions_instead_of_dropping_them(tmp_path: Path) -> None:
    path = tmp_path / "audit.sqlite"
    with store_locked(path):
        log = AuditLog(path, store_timeout=0.05, max_backlog=20, put_timeout=0.3)
        for i in range(20):
            log.record(_decision(i))
        started = time.monotonic()
        with pytest.raises(AuditUnavailableError, match="not yet shipped"):
            log.record(_decision(99))
        assert time.monotonic() - started >= 0.3  # it waited for room first (back-pressure)
        assert log.queue_depth() == 20
    log.close()
    assert len(read_decisions(path=path)) == 20


def test_a_block_that_fails_records_nothing(tmp_path: Path) -> None:
    path = tmp_path / "audit.sqlite"
    log = AuditLog(path)
    with pytest.raises(RuntimeError), log.batch():
        log.record(_decision(1))
        raise RuntimeError("scoring failed: no response, so no decision")
    with pytest.raises(ValueError, match="malformed.*decision_id"):
        log.record({"decision_id": "x"})
    log.close()
    assert read_decisions(path=path).empty


def test_replay_skips_a_torn_last_line_and_corrupt_lines(tmp_path: Path) -> None:
    path = tmp_path / "audit.sqlite"
    folder = journal_dir(path)
    folder.mkdir(parents=True)
    good = [_decision(i) for i in range(3)]
    lines = [_line(_row(d)) for d in good]
    corrupt = lines[1].replace(b'"BR"', b'"XX"')  # CRC no longer matches
    torn = _line(_row(_decision(9)))[:-40]  # the crash came mid-write: never acknowledged
    (folder / "dead-1-1.journal").write_bytes(lines[0] + corrupt + lines[2] + torn)
    log = AuditLog(path)
    log.flush()
    deadline = time.monotonic() + 10
    while (folder / "dead-1-1.journal").exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    log.close()
    stored = set(read_decisions(path=path)["decision_id"])
    assert stored == {good[0]["decision_id"], good[2]["decision_id"]}


def test_rotated_journals_are_shipped_and_removed(tmp_path: Path) -> None:
    path = tmp_path / "audit.sqlite"
    log = AuditLog(path, rotate_bytes=20_000, scan_every=0.1, fsync=False)
    decisions = [_decision(i) for i in range(300)]  # ~1 kB each: about 15 journals
    for start in range(0, 300, 10):
        with log.batch():
            for d in decisions[start : start + 10]:
                log.record(d)
    log.flush()
    assert log.queue_depth() == 0
    log.close()
    assert set(read_decisions(path=path)["decision_id"]) == {d["decision_id"] for d in decisions}
    assert not list(journal_dir(path).glob("*.journal"))


def test_concurrent_callers_share_commits_and_lose_nothing(tmp_path: Path) -> None:
    """8 threads recording at once (the service's worker threads): every decision durable and shipped once."""
    import threading

    path = tmp_path / "audit.sqlite"
    log = AuditLog(path, fsync=True)
    per_thread = [[_decision(i) for i in range(k * 1000, k * 1000 + 60)] for k in range(8)]

    def caller(decisions: list[dict]) -> None:
        for d in decisions:
            with log.batch():
                log.record(d)

    threads = [threading.Thread(target=caller, args=(ds,)) for ds in per_thread]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    log.flush()
    assert log.stats()["durable"] == log.stats()["accepted"] == 480
    log.close()
    stored = read_decisions(path=path)["decision_id"]
    assert stored.is_unique and set(stored) == {d["decision_id"] for ds in per_thread for d in ds}


def test_shipping_gathers_many_commits_into_one_store_transaction(tmp_path: Path) -> None:
    """200 commits in quick succession reach the store in a few transactions (the shipper waits SHIP_EVERY
    for decisions to gather), and flush does not wait for that interval."""
    import time

    from safetyml.scoring.audit import SHIP_EVERY

    log = AuditLog(tmp_path / "audit.sqlite", fsync=False)
    log.flush()
    ships: list[int] = []
    real_ship = log.store.ship

    def counting_ship(journal: str, rows: list, new_offset: int) -> int:
        ships.append(len(rows))
        return real_ship(journal, rows, new_offset)

    log.store.ship = counting_ship
    started = time.monotonic()
    for i in range(200):
        log.record(_decision(50_000 + i))  # one commit each
    committing = time.monotonic() - started
    flushing = time.monotonic()
    log.flush()
    assert time.monotonic() - flushing < SHIP_EVERY + 0.5
    assert sum(ships) == 200
    assert len(ships) <= 2 + committing / SHIP_EVERY, (len(ships), committing)  # not one per commit
    log.close()
