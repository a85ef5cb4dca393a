"""Keeping a scorer loaded in a long-running service, without BentoML: load, reload and follow reloads.

:class:`ScorerHost` loads the scorer in a background thread (retrying until the champions and the online
store are there, so the service starts and stays unready meanwhile), reloads on ``SIGHUP`` or on request,
and coordinates the workers of one service through a small file: the worker that gets a reload request
writes ``SAFETYML_HOME/serving_reload.json``; the others look at its signature (one ``os.stat``) at most
once a second on their next request, and reload the same alias in the background.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import signal
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from safetyml.scoring.scorer import NotReadyError, ReloadError, Scorer

if TYPE_CHECKING:
    from safetyml.scoring.audit import AuditLog

log = logging.getLogger("safetyml.serving")

RELOAD_FILE = "serving_reload.json"  # under SAFETYML_HOME
RETRY_SECONDS = 5.0
FOLLOW_EVERY = 1.0  # seconds between checks of the reload file


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
    ):
        self._load = load
        self.audit = audit
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

    @classmethod
    def for_service(cls) -> ScorerHost:
        """The service's host: champions from the MLflow registry, the audit log and the reload file under
        ``SAFETYML_HOME``."""
        from safetyml import paths
        from safetyml.scoring.audit import AuditLog

        audit = AuditLog()
        return cls(
            lambda: Scorer.from_registry(alias="champion", audit=audit),
            paths.home() / RELOAD_FILE,
            audit=audit,
        )

    # ---------------------------------------------------------------------------------- lifecycle
    def start(self, handle_sighup: bool = True) -> ScorerHost:
        """Start loading in the background; with ``handle_sighup``, SIGHUP reloads the champions."""
        self._loader = threading.Thread(target=self.load_until_ready, name="safetyml-loader", daemon=True)
        self._loader.start()
        if handle_sighup:
            with contextlib.suppress(ValueError, AttributeError):  # not the main thread, or no SIGHUP here
                signal.signal(signal.SIGHUP, self._on_sighup)
        return self

    def load_until_ready(self) -> None:
        """Load the scorer, retrying every ``retry_seconds`` until it is ready or :meth:`stop` is called."""
        while not self._stop.is_set():
            try:
                scorer = self._load()
                ok, why = scorer.ready()
                if not ok:
                    raise RuntimeError(why)
                self.scorer = scorer
                self.load_error = None
                log.info("scorer ready: %s", scorer.metadata())
                return
            except Exception as exc:  # registry or store not there yet: stay unready and retry
                self.load_error = f"{type(exc).__name__}: {exc}"
                log.warning("scorer not ready (%s); retrying in %.0f s", self.load_error, self.retry_seconds)
                self._stop.wait(self.retry_seconds)

    def stop(self) -> None:
        """Stop the loader's retries."""
        self._stop.set()

    def close(self) -> None:
        """Stop, and flush the audit log so no decision is lost on a normal stop."""
        self.stop()
        if self.audit is not None:
            self.audit.close()

    def is_ready(self) -> bool:
        return self.scorer is not None and self.scorer.ready()[0]

    def ready_scorer(self) -> Scorer:
        """The scorer, after following a sibling's announced reload; NotReadyError while not loaded."""
        scorer = self.scorer
        if scorer is None:
            raise NotReadyError(f"scorer not ready: {self.load_error}")
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


__all__ = ["RELOAD_FILE", "ScorerHost"]
