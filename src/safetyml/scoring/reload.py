"""Keeping a scorer loaded in a long-running service, without BentoML: load, reload and follow reloads.

:class:`ScorerHost` loads the scorer *before* the worker takes traffic (BentoML builds the service object
during the worker's start-up, before it accepts connections), so a worker that replaces a killed one
serves no 503s; if the champions or the online store are not there yet, it keeps retrying in the background
and the service stays unready meanwhile. After loading it freezes the loaded objects out of the garbage
collector's reach (:func:`tune_gc`). It reloads on ``SIGHUP`` or on request, and coordinates the workers of
one service through small files: the worker that gets a reload request writes
``SAFETYML_HOME/serving_reload.json``; the others look at its signature (one ``os.stat``) at most once a
second on their next request, and reload the same alias in the background. Replicas on other machines
share no file: every worker also *polls the registry* for the champion alias (every
``SAFETYML_SERVE_POLL_SECONDS``, 30 by default, with ±20 % jitter so a fleet does not hit MLflow in step)
and reloads when a task's champion version changed. :class:`WorkerBoard` lets ``/readyz`` say 200 only
when every worker of the service can score.
"""

from __future__ import annotations

import contextlib
import fcntl
import gc
import json
import logging
import os
import random
import signal
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from safetyml.scoring.scorer import NotReadyError, ReloadError, Scorer

if TYPE_CHECKING:
    from safetyml.scoring.audit import AuditLog
    from safetyml.scoring.shadow import RunnerKeeper

log = logging.getLogger("safetyml.serving")

RELOAD_FILE = "serving_reload.json"  # under SAFETYML_HOME
RUN_DIR = "serving_run"  # under SAFETYML_HOME: one folder per running service, one lock file per ready worker
RETRY_SECONDS = 5.0
FOLLOW_EVERY = 1.0  # seconds between checks of the reload file
POLL_SECONDS = 30.0  # seconds between looks at the registry's champion alias (0: never)
POLL_JITTER = 0.2  # each wait is POLL_SECONDS times a factor drawn in [0.8, 1.2]
# Young-generation threshold: with ~1 ms of work per request, the default (700 allocations) ran a collection
# every few requests; 20,000 keeps collections rare and short. Older generations keep their defaults.
GC_THRESHOLD = (20_000, 10, 10)
# Freeze again after this many requests of a worker: the worker keeps building after its models are loaded
# (BentoML's ASGI app, imports on the first requests), and with only the load-time freeze the full
# collections of a serving worker took 80-165 ms each (7 in 25 s at concurrency 8: the p99). gc.freeze() is a
# list splice, so it costs nothing on the request that does it.
REFREEZE_AFTER = frozenset({1, 100, 1_000, 10_000})


def tune_gc() -> None:
    """Collect once, then freeze everything alive (modules, models, the store) into the permanent generation.

    Why: after loading, ~330k tracked objects made each full collection take 330-370 ms in a worker (the tail
    latency of the service); frozen objects are never scanned again, so a full collection only walks what
    requests allocated since.
    """
    gc.collect()
    gc.freeze()
    gc.set_threshold(*GC_THRESHOLD)


class WorkerBoard:
    """Which workers of one service can score: a file per ready worker, held with ``flock`` while it lives.

    The folder is per service (named after the workers' parent, BentoML's arbiter), so a killed worker's
    lock disappears with it and its file is swept by the next reader.
    """

    def __init__(self, folder: Path, expected: int):
        self.folder = Path(folder)
        self.expected = expected
        self._fd: int | None = None

    @classmethod
    def for_service(cls, expected: int) -> WorkerBoard:
        from safetyml import paths

        return cls(paths.home() / RUN_DIR / str(os.getppid()), expected)

    def mark_ready(self) -> None:
        """Say this worker can score (idempotent)."""
        if self._fd is not None:
            return
        self.folder.mkdir(parents=True, exist_ok=True)
        tmp = self.folder / f".{os.getpid()}.new"
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        os.replace(tmp, self.folder / f"{os.getpid()}.ready")
        self._fd = fd

    def ready_workers(self) -> int:
        """How many workers hold their ready file; files of dead workers are removed."""
        count = 0
        for path in self.folder.glob("*.ready"):
            if path.name == f"{os.getpid()}.ready":
                count += self._fd is not None
                continue
            try:
                fd = os.open(path, os.O_RDONLY)
            except FileNotFoundError:
                continue
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                count += 1  # its worker is alive and ready
            else:
                with contextlib.suppress(FileNotFoundError):
                    path.unlink()  # its worker died
            finally:
                os.close(fd)
        return count

    def all_ready(self) -> bool:
        return self.ready_workers() >= self.expected

    def close(self) -> None:
        if self._fd is not None:
            with contextlib.suppress(FileNotFoundError):
                (self.folder / f"{os.getpid()}.ready").unlink()
            os.close(self._fd)
            self._fd = None


class ScorerHost:
    """Owns this worker's scorer: loads it, swaps models on reload, and tells/follows sibling workers."""

    def __init__(
        self,
        load: Callable[[], Scorer],
        reload_file: Path,
        *,
        retry_seconds: float = RETRY_SECONDS,
        follow_every: float = FOLLOW_EVERY,
        worker_id: int | None = None,
        audit: AuditLog | None = None,
        board: WorkerBoard | None = None,
        champions: Callable[[dict[str, str]], dict[str, str]] | None = None,
        poll_seconds: float = 0.0,
        keeper: RunnerKeeper | None = None,
    ):
        """``champions``: given {task: registered model name}, the registry's champion version of each (the
        poller's question; None or ``poll_seconds=0``: no polling). ``keeper``: starts (and restarts) the
        shadow runner process when the policies declare a shadow challenger."""
        self._load = load
        self.keeper = keeper
        self.audit = audit
        self.board = board
        self.champions = champions
        self.poll_seconds = poll_seconds
        self._seen_champions: dict[str, str] | None = None  # the registry's answer at the last poll
        self._rng = random.Random()
        self.reload_file = Path(reload_file)
        self.retry_seconds = retry_seconds
        self.follow_every = follow_every
        self.worker_id = os.getpid() if worker_id is None else worker_id
        self.scorer: Scorer | None = None
        self.load_error: str | None = "loading"
        self._seen = self._signature()
        self._next_check = 0.0
        self._stop = threading.Event()
        self._loader: threading.Thread | None = None
        self.served = 0  # requests that got the scorer (re-freezes the GC at REFREEZE_AFTER)

    @classmethod
    def for_service(cls, workers: int = 1) -> ScorerHost:
        """The service's host: champions from the MLflow registry, the audit log and the reload file under
        ``SAFETYML_HOME``; ``workers``: how many workers the service runs (all must be ready for /readyz)."""
        from safetyml import paths
        from safetyml.scoring.audit import AuditLog
        from safetyml.scoring.shadow import RunnerKeeper

        audit = AuditLog()
        return cls(
            lambda: Scorer.from_registry(alias="champion", audit=audit),
            paths.home() / RELOAD_FILE,
            audit=audit,
            board=WorkerBoard.for_service(workers),
            champions=registry_champions,
            poll_seconds=poll_seconds(),
            keeper=RunnerKeeper(os.getppid()),  # follows the service's arbiter: drains and stops after it
        )

    # ---------------------------------------------------------------------------------- lifecycle
    def start(self, handle_sighup: bool = True, first_load_here: bool = True) -> ScorerHost:
        """Load; with ``first_load_here`` the first attempt runs now, in the caller (the worker's start-up,
        before it takes traffic), and only retries run in the background. With ``handle_sighup``, SIGHUP
        reloads the champions."""
        if not (first_load_here and self._try_load()):
            self._loader = threading.Thread(target=self.load_until_ready, name="safetyml-loader", daemon=True)
            self._loader.start()
        if self.champions is not None and self.poll_seconds > 0:
            threading.Thread(target=self._poll_loop, name="safetyml-champion-poll", daemon=True).start()
        threading.Thread(target=self._challenger_loop, name="safetyml-challengers", daemon=True).start()
        if handle_sighup:
            with contextlib.suppress(ValueError, AttributeError):  # not the main thread, or no SIGHUP here
                signal.signal(signal.SIGHUP, self._on_sighup)
        return self

    def _try_load(self) -> bool:
        try:
            scorer = self._load()
            ok, why = scorer.ready()
            if not ok:
                raise RuntimeError(why)
        except Exception as exc:  # registry or store not there yet: stay unready and retry
            self.load_error = f"{type(exc).__name__}: {exc}"
            log.warning("scorer not ready (%s); retrying in %.0f s", self.load_error, self.retry_seconds)
            return False
        if self._runs_shadows(scorer):
            self.keeper.ensure()  # type: ignore[union-attr]
        self.scorer = scorer
        self.load_error = None
        if self._seen_champions is None:
            self._seen_champions = scorer.model_versions  # loaded as the champions
        tune_gc()
        if self.board is not None:
            self.board.mark_ready()
        log.info("scorer ready: %s", scorer.metadata())
        return True

    def look_after_challengers(self) -> None:
        """Retry challengers that failed to load (so a worker does not serve without them for long; they show
        in /metadata meanwhile) and restart the shadow runner if it is gone. Errors are logged."""
        scorer = self.scorer
        if scorer is None:
            return
        try:
            scorer.retry_challengers()
        except Exception:
            log.exception("retrying the challengers failed; trying again in %.0f s", self.retry_seconds)
        try:  # on its own: a challenger that cannot load must not stop the runner being kept alive
            if self._runs_shadows(scorer):
                self.keeper.ensure()  # type: ignore[union-attr]
        except Exception:
            log.exception("keeping the shadow runner failed; trying again in %.0f s", self.retry_seconds)

    def _runs_shadows(self, scorer: Scorer) -> bool:
        """Whether this host keeps a shadow runner: it has a keeper, the policies declare a shadow
        challenger, the scorer started the runner's cursor (not possible on PostgreSQL) and
        ``SAFETYML_SHADOW_RUNNER`` is not ``0`` (the runner is then started by someone else)."""
        from safetyml import envvars

        return (
            self.keeper is not None
            and scorer.audit is not None
            and scorer.declares_shadows()
            and scorer.shadow_error is None
            and os.environ.get(envvars.SHADOW_RUNNER, "1") != "0"
        )

    def _challenger_loop(self) -> None:
        while not self._stop.wait(self.retry_seconds):
            self.look_after_challengers()

    def load_until_ready(self) -> None:
        """Load the scorer, retrying every ``retry_seconds`` until it is ready or :meth:`stop` is called."""
        while not self._stop.is_set() and not self._try_load():
            self._stop.wait(self.retry_seconds)

    def stop(self) -> None:
        """Stop the loader's retries."""
        self._stop.set()

    def close(self) -> None:
        """Stop, and flush the audit log so no decision is lost on a normal stop."""
        self.stop()
        if self.board is not None:
            self.board.close()
        if self.audit is not None:
            self.audit.close()

    def is_ready(self) -> bool:
        """This worker can score and (with a board) so can all the service's other workers."""
        if self.scorer is None or not self.scorer.ready()[0]:
            return False
        return self.board is None or self.board.all_ready()

    def ready_scorer(self) -> Scorer:
        """The scorer, after following a sibling's announced reload; NotReadyError while not loaded."""
        scorer = self.scorer
        if scorer is None:
            raise NotReadyError(f"scorer not ready: {self.load_error}")
        self.served += 1
        if self.served in REFREEZE_AFTER:
            gc.freeze()  # what the worker built since loading: out of the collector's reach
        self.follow_reloads()
        return scorer

    # ---------------------------------------------------------------------------------- reloads
    def reload(self, alias: str = "champion") -> dict[str, dict[str, str]]:
        """Swap in the models under ``alias`` and tell the other workers.

        Returns ``{"model_versions": new, "previous_versions": old}``.

        Raises ReloadError (the previous models stay in use) when the alias cannot be loaded.
        """
        scorer = self.ready_scorer()
        previous = scorer.model_versions
        started = time.perf_counter()
        try:
            versions = scorer.reload(alias)
        except Exception as exc:  # e.g. no model under that alias: keep serving the old one
            log.warning("reload(%s) failed: %s", alias, exc)
            raise ReloadError(f"reload failed, previous models kept: {exc}") from exc
        log.info(
            "worker %d: models reloaded (%s) in %.2f s: %s",
            self.worker_id,
            alias,
            time.perf_counter() - started,
            versions,
        )
        self.announce(alias, versions)
        return {"model_versions": versions, "previous_versions": previous}

    def reload_quietly(self, alias: str = "champion", announce: bool = True) -> None:
        """Reload in the background (SIGHUP, a sibling's order); a failure is logged, never raised."""
        try:
            if self.scorer is not None:
                versions = self.scorer.reload(alias)
                log.info("worker %d: models reloaded (%s): %s", self.worker_id, alias, versions)
                if announce:
                    self.announce(alias, versions)
        except Exception:
            log.exception("reload of %s failed; the previous models stay in use", alias)

    def poll_champions(self) -> bool:
        """Reload the champions (here, now) if the registry's champion of some task changed since the last
        look; True if it reloaded. Comparing with the last look, not with what is served, keeps an explicit
        ``/reload`` of another alias in place until the next promotion. Registry errors are logged."""
        scorer = self.scorer
        if scorer is None or self.champions is None:
            return False
        try:
            wanted = self.champions(dict(scorer.bundle.names))
        except Exception:
            log.exception("could not read the champion aliases from the registry; models unchanged")
            return False
        previous, self._seen_champions = self._seen_champions, wanted
        if previous is None or wanted == previous:
            return False
        log.info("worker %d: registry champion changed %s -> %s; reloading", self.worker_id, previous, wanted)
        self.reload_quietly("champion", announce=False)
        return True

    def next_poll_wait(self) -> float:
        """Seconds until the next poll: ``poll_seconds`` with ±20 % jitter."""
        return self.poll_seconds * self._rng.uniform(1 - POLL_JITTER, 1 + POLL_JITTER)

    def _poll_loop(self) -> None:
        while not self._stop.wait(self.next_poll_wait()):
            self.poll_champions()

    def _on_sighup(self, *_: Any) -> None:
        threading.Thread(target=self.reload_quietly, name="safetyml-sighup-reload", daemon=True).start()

    def _signature(self) -> tuple[int, int] | None:
        try:
            stat = os.stat(self.reload_file)
        except OSError:
            return None
        return (stat.st_mtime_ns, stat.st_size)

    def announce(self, alias: str, versions: dict[str, str]) -> None:
        """Write the reload order (atomically) for the other workers."""
        order = {"alias": alias, "versions": versions, "pid": self.worker_id, "at": time.time()}
        tmp = self.reload_file.with_suffix(f".{self.worker_id}.tmp")
        tmp.write_text(json.dumps(order))
        os.replace(tmp, self.reload_file)
        self._seen = self._signature()

    def follow_reloads(self, background: bool = True) -> bool:
        """Reload if another worker announced versions this one does not serve; True if a reload started."""
        now = time.monotonic()
        if now < self._next_check or self.scorer is None:
            return False
        self._next_check = now + self.follow_every
        signature = self._signature()
        if signature == self._seen:
            return False
        self._seen = signature
        try:
            order = json.loads(self.reload_file.read_text())
        except (OSError, ValueError):
            return False
        if order.get("pid") == self.worker_id or order.get("versions") == self.scorer.model_versions:
            return False
        args = (str(order.get("alias", "champion")), False)
        if background:
            threading.Thread(target=self.reload_quietly, args=args, daemon=True).start()
        else:
            self.reload_quietly(*args)
        return True


def registry_champions(names: dict[str, str]) -> dict[str, str]:
    """{task: version} of the champion alias of each registered model name (tasks without one: left out)."""
    from safetyml import tracking

    out = {}
    for task, name in names.items():
        ref = tracking.get_alias(name, "champion")
        if ref is not None:
            out[task] = str(ref.version)
    return out


def poll_seconds() -> float:
    """``SAFETYML_SERVE_POLL_SECONDS`` (default 30; 0 turns polling off)."""
    from safetyml import envvars

    raw = os.environ.get(envvars.SERVE_POLL_SECONDS) or str(POLL_SECONDS)
    try:
        value = float(raw)
    except ValueError:
        value = -1.0
    if value < 0:
        raise ValueError(f"environment variable {envvars.SERVE_POLL_SECONDS}={raw!r}: expected seconds >= 0")
    return value


__all__ = [
    "RELOAD_FILE",
    "RUN_DIR",
    "ScorerHost",
    "WorkerBoard",
    "poll_seconds",
    "registry_champions",
    "tune_gc",
]
