"""Shadow challengers scored by a process of their own, from the decisions in the audit store.

Run as ``python -m safetyml.scoring.shadow`` (a serving worker starts it when a policy file declares a
shadow challenger: :class:`RunnerKeeper`), or in process with :meth:`ShadowRunner.catch_up`.

Why a separate process: scoring the challenger in a thread of the serving worker added p99 +2.89 ms at
concurrency 8 on the medium preset (bar: 1 ms): work in the worker beside the responses (a ``py-spy --gil``
profile gave that thread 2.8 % of the worker's GIL time). This process runs under Linux's ``SCHED_IDLE``
policy (``nice 19`` where that is refused): it only gets a core no other thread wants, and a waking
request thread preempts it at once. Measured, that was not enough (p99 +2.84 ms while it scored during
the load), so it also waits for a quiet moment (:class:`Pacer`: fewer than 20 new decisions a second)
unless it is 100,000 decisions or 5 minutes behind, and catches up after the burst. While the service it
follows runs, it leaves SQLite's WAL checkpoints (and their ``fsync``) to the workers' shippers.

What it does: it reads the decisions in the order they were stored (the SQLite ``rowid``; SQLite has one
writer at a time, so rowids appear in commit order and a cursor never skips a row committed later), and for
each decision of a market and task whose policy declares a shadow challenger (sampled by the sticky hash
when ``share`` < 1) scores the challenger on the decision's **stored feature snapshot** — the served
decision's own point-in-time features, the ones replay uses; the worker records there the features the
market's shadow challengers need (:meth:`~safetyml.scoring.challengers.ChallengerSet.snapshot_names`). The
scores and the new cursor are written in **one transaction**, so:

- **nothing is lost**: a decision reaches the store from its journal before this process can read it, and a
  runner killed at any point resumes from the cursor of its last commit (a batch it had not committed is
  scored again; a score written twice would be kept once);
- **"no audited decision missing its challenger score"** holds once it has caught up (:meth:`lag` is 0 and
  the workers' journals are shipped): every decision stored before the cursor that the policy sends to a
  shadow challenger has that challenger's score, or was counted as *unscoreable* (its snapshot lacks a
  feature the challenger needs: the worker that decided could not load that challenger; logged as an error,
  and the challenger report counts it as missing).

The cursor starts, the first time, at the end of the decisions already stored (:func:`init_cursor`, which
a serving worker calls before it takes traffic), so a service's decisions are all after it; it persists
across restarts. One runner per ``SAFETYML_HOME`` (an ``flock``); it follows a service (``--watch PID``) and,
once that is gone, drains what is left and exits. Its state (challengers loaded or why not, cursor, lag,
counts) is in ``SAFETYML_HOME/shadow/status.json``, shown in ``/metadata``. The cursor needs the SQLite
store's ``rowid``; on PostgreSQL (no commit-ordered column on ``decisions``) the runner refuses to start
with a clear error.
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import json
import logging
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from safetyml.errors import SafetymlError
from safetyml.scoring.challengers import (
    INSERT_SQLITE,
    RETRY_SECONDS,
    SCORES_SCHEMA,
    ChallengerSet,
    LoadedChallenger,
    ShadowJob,
    load_challengers,
    route,
    score_job,
)
from safetyml.scoring.side_tables import SideSchema, SideTables

if TYPE_CHECKING:
    from safetyml.scoring.policies import PolicySet

log = logging.getLogger(__name__)

BATCH = 2000  # decisions read per transaction
POLL_SECONDS = 0.5  # sleep when caught up
QUIET_SECONDS = 3.0  # after the watched service is gone: exit once nothing new arrived for this long
DRAIN_SECONDS = 600.0  # ... or after this long (the cursor keeps the rest for the next start)
STATUS_EVERY = 1.0
# Pacing: while more than BUSY_RATE new decisions a second arrive, the service is busy and the runner waits,
# unless it is MAX_LAG decisions or MAX_DELAY seconds behind (then it works anyway: bounded staleness).
BUSY_RATE = 20.0
MAX_LAG = 100_000
MAX_DELAY = 300.0
NICE = 19
RUNNER_DIR = "shadow"  # under SAFETYML_HOME: runner.lock, status.json, runner.log
CURSOR = "shadow"

_CURSOR_TABLE = """
CREATE TABLE IF NOT EXISTS challenger_cursor (
    name TEXT PRIMARY KEY,
    position BIGINT NOT NULL,
    updated_at TEXT NOT NULL
);
"""
_SCHEMA = SideSchema(
    "challenger scores", sqlite=SCORES_SCHEMA.sqlite + _CURSOR_TABLE, postgres=SCORES_SCHEMA.postgres
)


class ShadowRunnerError(SafetymlError, RuntimeError):
    """The shadow runner cannot work on this audit store."""


def runner_dir() -> Path:
    from safetyml import paths

    return paths.home() / RUNNER_DIR


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="microseconds")


def _open(path: Path | None) -> SideTables:
    tables = SideTables(path, _SCHEMA)
    if tables.postgres:
        tables.close()
        raise ShadowRunnerError(
            f"the shadow runner reads decisions in commit order by SQLite's rowid; the audit store "
            f"{tables.shown()} is PostgreSQL, where decisions have no commit-ordered column"
        )
    return tables


def init_cursor(path: Path | None = None) -> int:
    """Start the cursor at the end of the decisions stored so far, unless it exists; returns its position."""
    with _open(path) as tables:
        with tables.transaction() as cursor:
            cursor.execute(
                "INSERT OR IGNORE INTO challenger_cursor SELECT ?, COALESCE(MAX(rowid), 0), ? FROM decisions",
                (CURSOR, _now()),
            )
        return int(tables.rows("SELECT position FROM challenger_cursor WHERE name = ?", (CURSOR,))[0][0])


def sticky_keys(task: str, subject_id: str) -> dict[str, str]:
    """The sticky keys of a decision from its subject (trips: ``rider/merchant``; merchants: the id)."""
    if task == "merchant_credit":
        return {"merchant_id": subject_id}
    rider, _, merchant = subject_id.partition("/")
    return {"rider_id": rider, "merchant_id": merchant}


def _registry_champions() -> dict[str, tuple[str, str]]:
    from safetyml import tracking
    from safetyml.tasks import TASKS
    from safetyml.training.config import load_training_config

    out = {}
    for task in TASKS:
        name = load_training_config(task).registered_model_name
        ref = tracking.get_alias(name, "champion")
        if ref is not None:
            out[str(task)] = (name, str(ref.version))
    return out


@dataclass
class Pacer:
    """When to score: after a burst rather than during it.

    Measured on the medium preset, the runner scoring *while* the service answered at concurrency 8 cost
    p99 +2.8 to +3.8 ms (under ``SCHED_IDLE`` or ``nice 19``): work on the same two cores at the same time,
    whatever its priority. So while decisions arrive faster than ``busy_rate`` a second the runner waits,
    and catches up when the rate drops, or once it is ``max_lag`` decisions or ``max_delay`` seconds
    behind (under load that lasts longer than that it works during the load, at that cost)."""

    busy_rate: float = BUSY_RATE
    max_lag: int = MAX_LAG
    max_delay: float = MAX_DELAY
    rate: float = 0.0  # decisions a second arriving, between the last two looks
    behind_since: float | None = None
    _head: int | None = None
    _at: float = 0.0

    def work_now(self, now: float, head: int, position: int) -> bool:
        """Whether to score now, given the newest stored rowid (``head``) and the cursor (``position``)."""
        if self._head is not None and now > self._at:
            self.rate = (head - self._head) / (now - self._at)
        self._head, self._at = head, now
        if head <= position:
            self.behind_since = None
            return False
        if self.behind_since is None:
            self.behind_since = now
        too_far = head - position >= self.max_lag or now - self.behind_since >= self.max_delay
        return self.rate < self.busy_rate or too_far


class ShadowRunner:
    """Scores shadow challengers on stored decisions after a durable cursor (see the module docstring)."""

    def __init__(
        self,
        path: Path | None = None,
        policies: PolicySet | None = None,
        batch: int = BATCH,
        champions: dict[str, tuple[str, str]] | None = None,
        pacer: Pacer | None = None,
    ):
        """``champions``: task -> (name, version) serving now, so a challenger alias that points at the
        champion is skipped as the workers skip it (default: read from the registry)."""
        from safetyml.scoring.policies import load_policies

        self._tables = _open(path)
        self.policies = policies if policies is not None else load_policies()
        self.batch = batch
        self.pacer = pacer if pacer is not None else Pacer()
        self._champions = champions
        self.challengers: ChallengerSet = ChallengerSet()
        self._next_retry = 0.0
        self.scored = self.unscoreable = self.decisions = 0
        self.position = self._position()
        self.load()

    # --------------------------------------------------------------------------- challengers
    def load(self) -> None:
        """Load the policies' challengers; those that fail are retried by :meth:`retry_due`."""
        champions = self._champions if self._champions is not None else _registry_champions()
        previous = self.challengers if self.challengers.loaded or self.challengers.errors else None
        self.challengers = load_challengers(self.policies, champions, previous=previous)
        self._next_retry = time.monotonic() + RETRY_SECONDS

    def retry_due(self) -> None:
        if self.challengers.errors and time.monotonic() >= self._next_retry:
            self.load()

    # --------------------------------------------------------------------------- cursor
    def _position(self) -> int:
        found = self._tables.rows("SELECT position FROM challenger_cursor WHERE name = ?", (CURSOR,))
        return int(found[0][0]) if found else init_cursor(self._path())

    def _path(self) -> Path:
        return Path(self._tables.where)

    def head(self) -> int:
        """The newest stored decision's rowid."""
        return int(self._tables.rows("SELECT COALESCE(MAX(rowid), 0) FROM decisions")[0][0])

    def lag(self) -> int:
        """Decisions stored after the cursor (not yet looked at)."""
        found = self._tables.rows("SELECT COUNT(*) FROM decisions WHERE rowid > ?", (self.position,))
        return int(found[0][0])

    # --------------------------------------------------------------------------- work
    def step(self) -> int:
        """Score the shadow challengers of up to ``batch`` decisions after the cursor and move it, in one
        transaction. Returns how many decisions were read (0: caught up)."""
        found = self._tables.rows(
            "SELECT rowid, decision_id, task, market, subject_id, features FROM decisions "
            "WHERE rowid > ? ORDER BY rowid LIMIT ?",
            (self.position, self.batch),
        )
        if not found:
            return 0
        jobs: dict[str, ShadowJob] = {}
        unscoreable = 0
        lacking: tuple[str, str] | None = None
        for _, decision_id, task, market, subject_id, features in found:
            entries = self.challengers.entries.get((market, task))
            if not entries:
                continue
            shadows = route(entries, task, sticky_keys(task, subject_id))[1]
            if not shadows:
                continue
            snapshot = json.loads(features)
            usable = [c for c in shadows if _has_features(c, snapshot)]
            if len(usable) < len(shadows):
                unscoreable += len(shadows) - len(usable)
                lacking = (decision_id, ", ".join(c.spec for c in shadows if c not in usable))
            if usable:
                job = jobs.setdefault(task, ShadowJob(task, [], []))
                job.inputs.append(snapshot)  # type: ignore[union-attr]
                policy = self.policies.for_market(market)
                job.items.append((len(job.inputs) - 1, decision_id, policy, usable, []))
        if lacking is not None:  # one line per batch, not per decision
            log.error(
                "%d decisions without a challenger score: their snapshots lack features of the challenger "
                "(was it loaded by the worker that decided?), e.g. decision %s for %s",
                unscoreable,
                *lacking,
            )
        rows = [row for job in jobs.values() for row in score_job(job)]
        last = int(found[-1][0])
        with self._tables.transaction() as cursor:
            cursor.executemany(INSERT_SQLITE, rows)
            cursor.execute(
                "UPDATE challenger_cursor SET position = ?, updated_at = ? WHERE name = ?",
                (last, _now(), CURSOR),
            )
        self.position = last
        self.decisions += len(found)
        self.scored += len(rows)
        self.unscoreable += unscoreable
        return len(found)

    def catch_up(self, timeout: float = 600.0) -> int:
        """Step until nothing is left after the cursor; returns how many decisions were read."""
        deadline = time.monotonic() + timeout
        total = 0
        while (n := self.step()) and time.monotonic() < deadline:
            total += n
        return total

    def status(self) -> dict[str, Any]:
        return {
            "pid": os.getpid(),
            "updated_at": _now(),
            "challengers": self.challengers.versions(),
            "cursor": self.position,
            "lag": self.lag(),
            "decisions_read": self.decisions,
            "scores_written": self.scored,
            "unscoreable": self.unscoreable,
            "arrivals_per_second": round(self.pacer.rate, 1),
            "waiting_for_a_quiet_moment": self.pacer.rate >= self.pacer.busy_rate,
        }

    def checkpoints(self, on: bool) -> None:
        """Let this connection run WAL checkpoints (each ``fsync``s) or leave them to the other writers."""
        self._tables.rows(f"PRAGMA wal_autocheckpoint = {1000 if on else 0}")

    def close(self) -> None:
        self._tables.close()

    def run(self, watch_pid: int | None = None, status_file: Path | None = None) -> None:
        """Work until ``watch_pid`` is gone (forever without one), then drain and return."""
        quiet_since: float | None = None
        gone_at: float | None = None
        next_status = 0.0
        self.checkpoints(watch_pid is None)  # the service's shippers checkpoint while it runs
        while True:
            self.retry_due()
            now = time.monotonic()
            if gone_at is None and watch_pid is not None and not _alive(watch_pid):
                gone_at = now
                self.checkpoints(True)
                log.info("service %d is gone: draining what is left, then stopping", watch_pid)
            paced = self.pacer.work_now(now, self.head(), self.position)
            n = self.step() if gone_at is not None or paced else 0
            if status_file is not None and (now >= next_status or n == 0):
                _write_json(status_file, self.status())
                next_status = now + STATUS_EVERY
            if n:
                quiet_since = None
                continue
            quiet_since = quiet_since if quiet_since is not None else now
            if gone_at is not None and (now - quiet_since >= QUIET_SECONDS or now - gone_at >= DRAIN_SECONDS):
                return
            time.sleep(POLL_SECONDS)


def _has_features(challenger: LoadedChallenger, snapshot: dict[str, Any]) -> bool:
    return all(name in snapshot for name in challenger.model.features)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _write_json(path: Path, value: dict[str, Any]) -> None:
    tmp = path.with_suffix(f".{os.getpid()}.tmp")
    tmp.write_text(json.dumps(value))
    os.replace(tmp, path)


def read_status() -> dict[str, Any] | None:
    """The running (or last) shadow runner's status, or None if none ever ran under this home."""
    try:
        return json.loads((runner_dir() / "status.json").read_text())
    except (OSError, ValueError):
        return None


@contextlib.contextmanager
def _runner_lock(folder: Path, block: bool = False) -> Iterator[bool]:
    """Hold the runner lock of ``folder`` while inside; yields False if another process holds it."""
    folder.mkdir(parents=True, exist_ok=True)
    fd = os.open(folder / "runner.lock", os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | (0 if block else fcntl.LOCK_NB))
        except BlockingIOError:
            yield False
            return
        yield True
    finally:
        os.close(fd)  # closing the descriptor releases the lock


def runner_running(folder: Path | None = None) -> bool:
    """Whether a shadow runner holds the lock of this home."""
    with _runner_lock(folder or runner_dir()) as free:
        return not free


class RunnerKeeper:
    """Keeps one shadow runner process alive for a service: a worker calls :meth:`ensure` at start-up and
    every few seconds; the first to find the lock free starts one (a second one started in a race finds
    the lock taken and exits)."""

    def __init__(self, watch_pid: int, folder: Path | None = None):
        self.watch_pid = watch_pid
        self.folder = folder or runner_dir()
        self._child: subprocess.Popen[bytes] | None = None
        self.started = 0

    def ensure(self) -> bool:
        """Start a runner unless one is running; True if this call started one."""
        if self._child is not None:
            if self._child.poll() is None:
                # ours is alive: running, or still importing before it takes the lock (checking only the
                # lock here started a second runner, which then exited, whenever start-up took > one tick)
                return False
            self._child = None  # reaped
        if runner_running(self.folder):
            return False
        self.folder.mkdir(parents=True, exist_ok=True)
        with (self.folder / "runner.log").open("ab") as out:
            self._child = subprocess.Popen(  # noqa: S603 - our own module, no shell
                [sys.executable, "-m", "safetyml.scoring.shadow", "--watch", str(self.watch_pid)],
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,  # a Ctrl-C of the service does not cut a batch: it drains instead
                close_fds=True,
            )
        self.started += 1
        log.info("shadow runner started (pid %d) for service %d", self._child.pid, self.watch_pid)
        return True


def lower_priority(nice: int = NICE) -> str:
    """Put this process under ``SCHED_IDLE`` (Linux: runs only on a core nothing else wants, preempted at
    once by a waking normal thread) and ``nice``; says which it got."""
    os.nice(nice)
    try:
        os.sched_setscheduler(0, os.SCHED_IDLE, os.sched_param(0))  # type: ignore[attr-defined]
    except (AttributeError, OSError) as exc:
        log.warning("SCHED_IDLE refused (%s); running at nice %d only", exc, nice)
        return f"nice {nice}"
    return f"SCHED_IDLE, nice {nice}"


def main(argv: list[str] | None = None) -> int:
    """``python -m safetyml.scoring.shadow [--watch PID] [--audit PATH] [--batch N]``: the runner, under
    SCHED_IDLE (exits at once, status 0, when another runner of this home is running)."""
    parser = argparse.ArgumentParser(description="Score shadow challengers from the audit store.")
    parser.add_argument("--watch", type=int, default=None, help="drain and stop once this process is gone")
    parser.add_argument("--audit", type=Path, default=None, help="audit store (default: SAFETYML_HOME's)")
    parser.add_argument("--nice", type=int, default=NICE)
    parser.add_argument("--batch", type=int, default=BATCH, help="decisions per transaction")
    args = parser.parse_args(argv)
    from safetyml.scoring.startup import setup_logging

    setup_logging()
    priority = lower_priority(args.nice)
    folder = runner_dir()
    with _runner_lock(folder) as mine:
        if not mine:
            log.info("another shadow runner holds %s; exiting", folder / "runner.lock")
            return 0
        runner = ShadowRunner(args.audit, batch=args.batch)
        loaded = runner.challengers.versions()
        log.info(
            "shadow runner %d (%s): cursor %d, challengers %s", os.getpid(), priority, runner.position, loaded
        )
        try:
            runner.run(args.watch, folder / "status.json")
        finally:
            with contextlib.suppress(Exception):
                _write_json(folder / "status.json", runner.status())
            runner.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
