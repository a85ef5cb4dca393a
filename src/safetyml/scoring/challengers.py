"""Challengers beside the champion, declared per market in the policy files (``challengers:``).

- **shadow**: the challenger scores a (``share`` of) request(s) *off the response path*, in a process of
  its own, on the decision's stored feature snapshot; its answer is never served, only recorded.
- **canary**: the challenger *serves* a sticky ``share`` of requests: a request goes to it when a hash of
  its ``sticky_key`` (the rider or merchant id) falls in the challenger's slice, so one rider always meets
  the same model, in every worker and after restarts (BLAKE2b, not Python's per-process salted ``hash``).

Either way both scores are recorded: the served one in the decision, the other one (the shadow
challenger's, or for a canary decision the champion's) in the ``challenger_scores`` table of the audit
store, keyed by decision id (for a canary, with the champion's features beyond the snapshot), so the
pair can be compared and replayed (:mod:`safetyml.scoring.challenger_report`).

Where the shadow score is computed: **not in the serving worker**. Scoring it in a background thread of the
worker (batched, one LightGBM call per wake-up) added p99 +2.89 ms at concurrency 8 on the medium preset
(bar: 1 ms): that thread's Python work (the matrix built from row dicts, the records, the SQLite writes)
holds the GIL the request threads wait for, and its CPU competes with responses on saturated cores. So the
worker only records, in the decision's audited feature snapshot, the few features its market's shadow
challengers use beyond the served model's (:meth:`ChallengerSet.snapshot_names`), and a separate process at
the lowest CPU priority (:mod:`safetyml.scoring.shadow`) scores the challengers from the stored snapshots —
the served decision's own point-in-time features — and writes ``challenger_scores``; it yields the CPU to
responses under load and catches up after, with a durable cursor (nothing lost when it is killed).

In this module: the declarations resolved to loaded models (:func:`load_challengers`, retried for those
that failed), sticky routing (:func:`route`), batch scoring of shadows on snapshots (:func:`score_job`,
used by the shadow process) and :class:`ShadowLog`, the worker's background writer of the answers it
already knows (the champion's score of a canary decision: no model call).
"""

from __future__ import annotations

import atexit
import contextlib
import hashlib
import json
import logging
import queue
import threading
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from safetyml.scoring.model_inputs import fast_matrix, predict_frame, predict_matrix
from safetyml.scoring.policies import Challenger, PolicySet, task_of_model
from safetyml.scoring.side_tables import SideSchema, SideTables

if TYPE_CHECKING:
    import pandas as pd

    from safetyml.model import RiskModel
    from safetyml.scoring.policies import Policy

log = logging.getLogger(__name__)

MAX_QUEUE = 50_000  # shadow jobs (one per scored batch) waiting; beyond, jobs are dropped and counted
ROLE_CHALLENGER, ROLE_CHAMPION = "challenger", "champion"
# The shadow thread wakes at most every BATCH_WAIT seconds and scores what gathered in one LightGBM call per
# challenger: each wake-up takes the GIL from the request threads, so fewer, larger ones cost them less.
BATCH_WAIT = 0.05
MAX_BATCH_JOBS = 1024
RETRY_SECONDS = 5.0  # challengers that failed to load are tried again this often (worker and shadow process)

_TABLE = """
CREATE TABLE IF NOT EXISTS challenger_scores (
    decision_id TEXT NOT NULL,
    role TEXT NOT NULL CHECK (role IN ('challenger', 'champion')),
    mode TEXT NOT NULL CHECK (mode IN ('shadow', 'canary')),
    task TEXT NOT NULL,
    market TEXT,
    spec TEXT NOT NULL,
    model_name TEXT NOT NULL,
    model_version TEXT NOT NULL,
    probability DOUBLE PRECISION NOT NULL,
    risk_tier TEXT NOT NULL,
    action TEXT NOT NULL,
    policy_version TEXT NOT NULL,
    extra_features TEXT NOT NULL,
    scored_at TEXT NOT NULL,
    PRIMARY KEY (decision_id, model_name, model_version)
);
"""
SCORES_SCHEMA = SideSchema("challenger scores", sqlite=_TABLE, postgres=_TABLE)
_COLUMNS = (
    "decision_id",
    "role",
    "mode",
    "task",
    "market",
    "spec",
    "model_name",
    "model_version",
    "probability",
    "risk_tier",
    "action",
    "policy_version",
    "extra_features",
    "scored_at",
)
_INSERT = f"INSERT INTO challenger_scores ({', '.join(_COLUMNS)}) VALUES ({', '.join('?' for _ in _COLUMNS)})"
INSERT_SQLITE = _INSERT.replace("INSERT", "INSERT OR IGNORE", 1)  # a score written twice is kept once
INSERT_POSTGRES = _INSERT + " ON CONFLICT DO NOTHING"


@dataclass(frozen=True)
class LoadedChallenger:
    """A challenger of the policy files with its model loaded from the registry."""

    spec: str  # <registered model>@<alias or version>
    task: str
    model: RiskModel
    name: str
    version: str


@dataclass(frozen=True)
class ChallengerSet:
    """The loaded challenger models and, per market and task, the policy entries that use them."""

    loaded: dict[str, LoadedChallenger] = field(default_factory=dict)
    errors: dict[str, str] = field(default_factory=dict)  # spec -> why it could not be loaded
    entries: dict[tuple[str, str], tuple[tuple[Challenger, LoadedChallenger], ...]] = field(
        default_factory=dict
    )

    def __bool__(self) -> bool:
        return bool(self.entries)

    def for_policy(self, policy: Policy, task: str) -> tuple[tuple[Challenger, LoadedChallenger], ...]:
        return self.entries.get((policy.market, task), ())

    attempts: int = 1  # how many times the failed ones were tried (retried in the background)
    _names: dict[tuple[str, str, int], list[str]] = field(default_factory=dict, compare=False, repr=False)

    def versions(self) -> dict[str, str]:
        """spec -> loaded version (or the load error and that it is being retried), for /metadata."""
        out = {spec: f"v{c.version}" for spec, c in self.loaded.items()}
        retry = f" (tried {self.attempts} times; retrying every {RETRY_SECONDS:g} s)"
        out.update({spec: f"not loaded: {why}{retry}" for spec, why in self.errors.items()})
        return out

    def shadow_specs(self) -> list[str]:
        """The loaded challengers some market runs in shadow mode."""
        pairs = [pair for pairs in self.entries.values() for pair in pairs]
        return sorted({loaded.spec for challenger, loaded in pairs if challenger.mode == "shadow"})

    def snapshot_names(self, market: str, task: str, served: RiskModel) -> list[str]:
        """The features a decision of ``market``/``task`` served by ``served`` records in its snapshot: the
        served model's, then those its market's shadow challengers use beyond them (so the shadow process
        can score them from the stored snapshot). Computed once per (market, task, served model)."""
        key = (market, task, id(served))
        names = self._names.get(key)
        if names is None:
            names = list(served.features)
            have = set(names)
            for challenger, loaded in self.entries.get((market, task), ()):
                if challenger.mode == "shadow":
                    names += [f for f in loaded.model.features if f not in have]
                    have.update(loaded.model.features)
            self._names[key] = names
        return names


def resolve(spec: str) -> tuple[str, str]:
    """``name@alias`` or ``name@<version number>`` -> (name, version) in the registry."""
    from safetyml import tracking

    name, ref = spec.split("@", 1)
    if ref.isdigit():
        return name, ref
    found = tracking.get_alias(name, ref)
    if found is None:
        raise LookupError(f"registered model {name!r} has no alias {ref!r}")
    return name, str(found.version)


def load_challengers(
    policies: PolicySet,
    champions: dict[str, tuple[str, str]] | None = None,
    previous: ChallengerSet | None = None,
) -> ChallengerSet:
    """Load every challenger the policy files name (once per spec). One that cannot be loaded is logged
    and left out (the service still serves the champion) and reported in ``errors``; so is one that is
    the very version serving as champion (``champions``: task -> (name, version)), which has nothing to add.
    ``previous``: an earlier attempt whose loaded models are kept (a retry loads only what failed).
    """
    from safetyml import tracking

    loaded: dict[str, LoadedChallenger] = dict(previous.loaded) if previous is not None else {}
    errors: dict[str, str] = {}
    entries: dict[tuple[str, str], list[tuple[Challenger, LoadedChallenger]]] = {}
    for market, policy in sorted(policies.policies.items()):
        for challenger in policy.challengers:
            spec = challenger.model
            if spec not in loaded and spec not in errors:
                try:
                    name, version = resolve(spec)
                    task = task_of_model(name)
                    if (champions or {}).get(str(task)) == (name, version):
                        raise LookupError(f"{spec} is v{version}, the champion itself; nothing to compare")
                    loaded[spec] = LoadedChallenger(
                        spec, str(task), tracking.load_model_version(name, version), name, version
                    )
                except Exception as exc:  # noqa: BLE001 - a challenger must never stop the champion
                    errors[spec] = str(exc)
                    if previous is None or previous.errors.get(spec) != str(exc):  # log each new reason once
                        log.warning("challenger %s of market %s not loaded (retrying): %s", spec, market, exc)
            if spec in loaded:
                entries.setdefault((market, loaded[spec].task), []).append((challenger, loaded[spec]))
    attempts = previous.attempts + 1 if previous is not None and previous.errors else 1
    return ChallengerSet(loaded, errors, {key: tuple(value) for key, value in entries.items()}, attempts)


def sticky_bucket(task: str, key: str) -> float:
    """A uniform number in [0, 1) from the sticky key: the same key always lands in the same bucket."""
    digest = hashlib.blake2b(f"{task}|{key}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") / 2.0**64


def route(
    entries: tuple[tuple[Challenger, LoadedChallenger], ...], task: str, keys: dict[str, str]
) -> tuple[LoadedChallenger | None, list[LoadedChallenger]]:
    """(the canary challenger that serves this request or None, the shadow challengers that score it).

    Canaries of a task take consecutive slices of [0, 1) in file order (canaries keyed on the same field
    never overlap; with different keys the first match wins); a shadow challenger with a share below 1
    mirrors the requests whose bucket (salted by its spec) falls below its share.
    """
    serve, shadows = None, []
    start = 0.0
    for challenger, loaded in entries:
        key = str(keys.get(challenger.sticky_key, ""))
        if challenger.mode == "canary":  # canaries on the same key never overlap; first match wins
            if serve is None and start <= sticky_bucket(task, key) < start + challenger.share:
                serve = loaded
            start += challenger.share
        elif challenger.share >= 1.0 or sticky_bucket(f"{task}|{challenger.model}", key) < challenger.share:
            shadows.append(loaded)
    return serve, shadows


@dataclass
class ShadowJob:
    """Challenger scores to write for a batch of decisions.

    ``inputs`` holds the feature snapshot of each item: a list of row dicts (the stored snapshots the
    shadow process reads, or a request's rows) or a DataFrame. Items are (row index, decision id, policy,
    shadows, others): the shadow challengers to score on that row, and already-known answers (role, mode,
    spec, name, version, probability, extra features), e.g. the champion's score of a canary decision.
    """

    task: str
    inputs: list[dict[str, Any]] | pd.DataFrame
    items: list[tuple[int, str, Policy, list[LoadedChallenger], list[tuple[Any, ...]]]]


class ShadowLog:
    """Writes already-known challenger-table records (a canary decision's champion side) from a background
    thread of the worker, batched: the request thread only hands the tuple over (``put_nowait``)."""

    def __init__(self, path: Path, max_queue: int = MAX_QUEUE, batch_wait: float = BATCH_WAIT):
        self.path = Path(path)
        self.batch_wait = batch_wait
        self._tables = SideTables(self.path, SCORES_SCHEMA)  # the audit store: SQLite or PostgreSQL
        self._insert = INSERT_POSTGRES if self._tables.postgres else INSERT_SQLITE
        self._queue: queue.Queue[ShadowJob | None] = queue.Queue(maxsize=max_queue)
        self.submitted = self.written = self.dropped = 0
        self.failed = 0
        self.cpu_seconds = 0.0  # the shadow thread's own CPU: what the challenger costs the machine
        self.wakeups = 0
        self._lock = threading.Lock()
        self._idle = threading.Condition(self._lock)
        self._thread = threading.Thread(target=self._loop, name="safetyml-shadow", daemon=True)
        self._thread.start()
        self._closed = False
        atexit.register(self.close)  # a normal stop writes what is queued

    def submit(self, job: ShadowJob) -> None:
        """Hand a job to the background thread; never blocks (a full queue drops and counts the job)."""
        with self._lock:
            self.submitted += 1
        try:
            self._queue.put_nowait(job)
        except queue.Full:
            with self._lock:
                self.dropped += 1
            log.error(
                "shadow queue full (%d jobs): challenger scores of %d decisions dropped",
                self._queue.qsize(),
                len(job.items),
            )

    def stats(self) -> dict[str, float]:
        return {
            "submitted": self.submitted,
            "written": self.written,
            "dropped": self.dropped,
            "failed": self.failed,
            "queued": self._queue.qsize(),
            "wakeups": self.wakeups,
            "cpu_ms_per_job": round(self.cpu_seconds * 1000 / max(self.written, 1), 4),
        }

    def _loop(self) -> None:
        while True:
            job = self._queue.get()
            if job is None:
                return
            if self.batch_wait > 0:  # let a few requests' jobs gather: fewer, vectorised wake-ups
                time.sleep(self.batch_wait)
            jobs = [job]
            with contextlib.suppress(queue.Empty):  # take what is waiting: one transaction for all
                while len(jobs) < MAX_BATCH_JOBS:
                    nxt = self._queue.get_nowait()
                    if nxt is None:
                        self._queue.put(None)
                        break
                    jobs.append(nxt)
            cpu0 = time.thread_time()
            try:
                rows = [row for j in merge_jobs(jobs) for row in score_job(j)]
                with self._tables.transaction() as cursor:
                    cursor.executemany(self._insert, rows)
            except Exception:  # noqa: BLE001 - a shadow failure must not stop the thread
                log.exception("shadow scoring failed for %d jobs", len(jobs))
                with self._lock:
                    self.failed += len(jobs)
            with self._idle:
                self.written += len(jobs)
                self.cpu_seconds += time.thread_time() - cpu0
                self.wakeups += 1
                self._idle.notify_all()

    def flush(self, timeout: float = 30.0) -> None:
        """Wait until every job submitted so far is written (or dropped/failed)."""
        deadline = time.monotonic() + timeout
        with self._idle:
            while self.written + self.dropped < self.submitted:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise TimeoutError(f"shadow log {self.path}: {self._queue.qsize()} jobs still queued")
                self._idle.wait(min(left, 0.2))

    def close(self, timeout: float = 30.0) -> None:
        """Write what is queued (up to ``timeout``), stop the thread; safe to call twice."""
        if self._closed:
            return
        self._closed = True
        with contextlib.suppress(TimeoutError):
            self.flush(timeout)
        self._queue.put(None)
        self._thread.join(timeout)
        self._tables.close()


def merge_jobs(jobs: list[ShadowJob]) -> list[ShadowJob]:
    """Jobs whose inputs are row lists (trips) joined into one per task, so each challenger scores them in
    one call; frame jobs (merchants) stay as they are."""
    merged: dict[str, ShadowJob] = {}
    out: list[ShadowJob] = []
    for job in jobs:
        if not isinstance(job.inputs, list):
            out.append(job)
            continue
        into = merged.setdefault(job.task, ShadowJob(job.task, [], []))
        offset = len(into.inputs)
        into.inputs.extend(job.inputs)  # type: ignore[union-attr]
        into.items.extend((index + offset, *rest) for index, *rest in job.items)
    return out + list(merged.values())


def score_job(job: ShadowJob) -> list[tuple[Any, ...]]:
    """The challenger_scores rows of one job: each shadow challenger scored on the items' snapshots (one
    LightGBM call per challenger), plus the already-known other scores. A snapshot holds every feature
    its shadow challengers need (:meth:`ChallengerSet.snapshot_names`): a shadow score has no extra ones."""
    now = datetime.now(UTC).isoformat(timespec="microseconds")
    out: list[tuple[Any, ...]] = []
    by_model: dict[str, tuple[LoadedChallenger, list[int]]] = {}
    for n, (_, _, _, shadows, _) in enumerate(job.items):
        for loaded in shadows:
            by_model.setdefault(loaded.spec, (loaded, []))[1].append(n)
    for loaded, members in by_model.values():
        probability = _predict(loaded.model, job.inputs, [job.items[n][0] for n in members])
        for n, p in zip(members, probability.tolist(), strict=True):
            _, decision_id, policy, _, _ = job.items[n]
            known = (ROLE_CHALLENGER, "shadow", loaded.spec, loaded.name, loaded.version, p)
            out.append(_record(job.task, decision_id, policy, known, {}, now))
    for _, decision_id, policy, _, others in job.items:
        out.extend(_record(job.task, decision_id, policy, known[:6], known[6], now) for known in others)
    return out


def _record(
    task: str, decision_id: str, policy: Policy, known: tuple[Any, ...], extra: dict[str, Any], now: str
) -> tuple[Any, ...]:
    from safetyml.scoring.audit import _dumps

    role, mode, spec, name, version, probability = known[:6]
    tier, action = policy.decide_one(task, float(probability))
    return (
        decision_id, role, mode, task, policy.market, spec, name, str(version), float(probability),
        tier, action, policy.label, _dumps(extra), now,
    )  # fmt: skip


def _predict(model: RiskModel, inputs: list[dict[str, Any]] | pd.DataFrame, rows: list[int]):
    if isinstance(inputs, list):
        return predict_matrix(model, fast_matrix(model, [inputs[i] for i in rows]))
    return predict_frame(model, inputs.iloc[rows])


def read_challenger_scores(path: Path | None = None) -> pd.DataFrame:
    """Every recorded challenger/champion score (the non-served side of each decision)."""
    import pandas as pd

    with SideTables(path, SCORES_SCHEMA) as tables:
        rows = tables.rows(f"SELECT {', '.join(_COLUMNS)} FROM challenger_scores")
    frame = pd.DataFrame.from_records(rows, columns=list(_COLUMNS))
    frame["probability"] = frame["probability"].astype("float64")
    frame["extra_features"] = [json.loads(v) for v in frame["extra_features"]]
    return frame
