"""The real-time scoring service: a thin BentoML shell over :class:`safetyml.scoring.Scorer`.

Start it with ``safetyml serve`` (or ``bentoml serve serving.service:SafetyScoring`` from the project
folder). Routes: ``POST /score_trip``, ``/score_merchant``, ``/score_trips``, ``/score_merchants``,
``/reload`` (all need ``Authorization: Bearer $SAFETYML_API_TOKEN`` when a token is set), ``GET /healthz``,
``/readyz`` (503 until both champions and the online store are loaded) and ``/metadata``.
"""

from __future__ import annotations

import contextlib
import hmac
import json
import logging
import os
import signal
import sys
import threading
import time
from pathlib import Path
from typing import Any

try:  # in a bento the safetyml source ships beside serving/ instead of being installed
    import safetyml  # noqa: F401
except ImportError:  # pragma: no cover - only inside a built bento
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

import bentoml
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from safetyml.api_schemas import (
    MerchantBatchRequest,
    MerchantBatchResponse,
    MerchantScoreRequest,
    MerchantScoreResponse,
    ReloadRequest,
    ReloadResponse,
    TripBatchRequest,
    TripBatchResponse,
    TripScoreRequest,
    TripScoreResponse,
)
from safetyml.policies import load_policies

log = logging.getLogger("safetyml.serving")


def _setup_logging() -> None:
    """BentoML configures only its own loggers; give safetyml's an INFO handler in the same style."""
    root = logging.getLogger("safetyml")
    if not root.handlers:
        handler = logging.StreamHandler()
        handler.setFormatter(
            logging.Formatter("%(asctime)s [%(levelname)s] [%(name)s] %(message)s", "%Y-%m-%dT%H:%M:%S%z")
        )
        root.addHandler(handler)
        root.setLevel(logging.INFO)
        root.propagate = False


class _QuietValidationErrors(logging.Filter):
    """Bad requests get a 400 naming the field; do not also log them as server errors with a traceback."""

    def filter(self, record: logging.LogRecord) -> bool:
        from pydantic import ValidationError

        exc = record.exc_info[1] if record.exc_info else None
        return not isinstance(exc, ValidationError)


_setup_logging()
logging.getLogger("bentoml._internal.server.http_app").addFilter(_QuietValidationErrors())

TOKEN_ENV = "SAFETYML_API_TOKEN"
WORKERS_ENV = "SAFETYML_SERVE_WORKERS"
THREADS_ENV = "SAFETYML_SERVE_THREADS"
# Deny by default: every route needs the token except probes, metrics, metadata and the docs page.
OPEN_PATHS = frozenset(
    {"/healthz", "/livez", "/readyz", "/metrics", "/metadata", "/schema.json", "/docs.json", "/"}
)
OPEN_PREFIXES = ("/static_content/", "/assets/")
RETRY_SECONDS = 5.0
RELOAD_FILE = "serving_reload.json"  # under SAFETYML_HOME: tells sibling workers to reload too
FOLLOW_EVERY = 1.0  # seconds between checks of that file (one os.stat)

# Fail at import (so `bentoml serve` exits at start-up) when a policy file is invalid.
load_policies()

_TOKEN = os.environ.get(TOKEN_ENV) or None
HOST_ENV = "SAFETYML_HOST"
# Loopback unless a token is set and SAFETYML_HOST asks for more (e.g. 0.0.0.0 inside a container).
_HTTP: dict[str, Any] = {"host": os.environ.get(HOST_ENV, "127.0.0.1") if _TOKEN else "127.0.0.1"}
_CURRENT: dict[str, Any] = {}  # the service instance of this worker, for the /metadata app


class BearerAuth:
    """ASGI middleware: all but the open routes need ``Authorization: Bearer <token>`` (401 otherwise)."""

    def __init__(self, app: Any, token: str | None = None):
        self.app = app
        self.token = token.encode() if token else None

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        path = scope.get("path", "")
        if (
            self.token is not None
            and scope["type"] == "http"
            and path not in OPEN_PATHS
            and not path.startswith(OPEN_PREFIXES)
        ):
            header = b""
            for name, value in scope.get("headers", []):
                if name == b"authorization":
                    header = value
                    break
            scheme, _, supplied = header.partition(b" ")
            if scheme.lower() != b"bearer" or not hmac.compare_digest(supplied.strip(), self.token):
                body = json.dumps(
                    {
                        "error": "unauthorized",
                        "detail": f"send the header 'Authorization: Bearer <{TOKEN_ENV}>'",
                    }
                ).encode()
                await send(
                    {
                        "type": "http.response.start",
                        "status": 401,
                        "headers": [
                            (b"content-type", b"application/json"),
                            (b"content-length", str(len(body)).encode()),
                            (b"www-authenticate", b'Bearer realm="safetyml"'),
                        ],
                    }
                )
                await send({"type": "http.response.body", "body": body})
                return
        await self.app(scope, receive, send)


def _metadata(_: Request) -> JSONResponse:
    service = _CURRENT.get("service")
    if service is None or service.scorer is None:
        return JSONResponse(
            {"error": "not ready", "detail": getattr(service, "load_error", None)}, status_code=503
        )
    meta = service.scorer.metadata()
    meta["authenticated"] = _TOKEN is not None
    return JSONResponse(meta)


metadata_app = Starlette(routes=[Route("/metadata", _metadata, methods=["GET"])])


def _error(status: int, message: str, field: str | None = None) -> JSONResponse:
    body: dict[str, Any] = {"error": message}
    if field:
        body["field"] = field
    return JSONResponse(body, status_code=status)


@bentoml.service(
    name="safetyml",
    http=_HTTP,
    workers=int(os.environ.get(WORKERS_ENV, "1")),
    threads=int(os.environ.get(THREADS_ENV, "4")),
    traffic={"timeout": 30},
)
@bentoml.asgi_app(metadata_app, path="/")
class SafetyScoring:
    """Loads the champions, the online store and the policies; every decision goes to the audit log."""

    def __init__(self) -> None:
        from safetyml.audit import AuditLog

        if _TOKEN is None:
            log.warning(
                "%s is not set: the service is UNAUTHENTICATED and must stay bound to 127.0.0.1", TOKEN_ENV
            )
        from safetyml import paths

        self.audit = AuditLog()
        self._reload_file = paths.home() / RELOAD_FILE
        self._seen = self._reload_signature()
        self._next_check = 0.0
        self.scorer: Any = None
        self.load_error: str | None = "loading"
        self._stop = threading.Event()
        self._loader = threading.Thread(target=self._load_until_ready, name="safetyml-loader", daemon=True)
        self._loader.start()
        _CURRENT["service"] = self
        with contextlib.suppress(ValueError, AttributeError):  # not the main thread, or no SIGHUP here
            signal.signal(signal.SIGHUP, self._on_sighup)

    # ---------------------------------------------------------------------------------- lifecycle
    def _load_until_ready(self) -> None:
        from safetyml.scoring import Scorer

        while not self._stop.is_set():
            try:
                scorer = Scorer.from_registry(alias="champion", audit=self.audit)
                ok, why = scorer.ready()
                if not ok:
                    raise RuntimeError(why)
                self.scorer = scorer
                self.load_error = None
                log.info("scorer ready: %s", scorer.metadata())
                return
            except Exception as exc:  # registry or store not there yet: stay unready and retry
                self.load_error = f"{type(exc).__name__}: {exc}"
                log.warning("scorer not ready (%s); retrying in %.0f s", self.load_error, RETRY_SECONDS)
                self._stop.wait(RETRY_SECONDS)

    def _on_sighup(self, *_: Any) -> None:
        threading.Thread(target=self._reload_quietly, name="safetyml-sighup-reload", daemon=True).start()

    def _reload_quietly(self, alias: str = "champion", announce: bool = True) -> None:
        try:
            if self.scorer is not None:
                versions = self.scorer.reload(alias)
                log.info("worker %d: models reloaded (%s): %s", os.getpid(), alias, versions)
                if announce:
                    self._announce_reload(alias, versions)
        except Exception:
            log.exception("reload of %s failed; the previous models stay in use", alias)

    # With several workers, a reload request reaches one of them; it writes RELOAD_FILE and the others,
    # which look at the file's signature at most once a second, reload the same alias in the background.
    def _reload_signature(self) -> tuple[int, int] | None:
        try:
            stat = os.stat(self._reload_file)
        except OSError:
            return None
        return (stat.st_mtime_ns, stat.st_size)

    def _announce_reload(self, alias: str, versions: dict[str, str]) -> None:
        order = {"alias": alias, "versions": versions, "pid": os.getpid(), "at": time.time()}
        tmp = self._reload_file.with_suffix(f".{os.getpid()}.tmp")
        tmp.write_text(json.dumps(order))
        os.replace(tmp, self._reload_file)
        self._seen = self._reload_signature()

    def _follow_reloads(self) -> None:
        now = time.monotonic()
        if now < self._next_check:
            return
        self._next_check = now + FOLLOW_EVERY
        signature = self._reload_signature()
        if signature == self._seen:
            return
        self._seen = signature
        try:
            order = json.loads(self._reload_file.read_text())
        except (OSError, ValueError):
            return
        if order.get("pid") != os.getpid() and order.get("versions") != self.scorer.model_versions:
            threading.Thread(
                target=self._reload_quietly, args=(str(order.get("alias", "champion")), False), daemon=True
            ).start()

    def _ready_scorer(self) -> Any:
        scorer = self.scorer
        if scorer is not None:
            self._follow_reloads()
        return scorer

    def __is_ready__(self) -> bool:
        return self.scorer is not None and self.scorer.ready()[0]

    @bentoml.on_shutdown
    def close(self) -> None:
        """Flush the audit log so no decision is lost on a normal stop."""
        self._stop.set()
        self.audit.close()

    # ---------------------------------------------------------------------------------- scoring
    def _not_ready(self) -> JSONResponse:
        return _error(503, f"scorer not ready: {self.load_error}")

    @bentoml.api(input_spec=TripScoreRequest)
    def score_trip(self, **fields: Any) -> TripScoreResponse:
        """Score one trip at dispatch time: probability, risk tier, action, reasons, versions, decision_id."""
        scorer = self._ready_scorer()
        if scorer is None:
            return self._not_ready()  # type: ignore[return-value]
        return scorer.score_trip(TripScoreRequest.model_construct(**fields))

    @bentoml.api(input_spec=TripBatchRequest)
    def score_trips(self, items: list[TripScoreRequest]) -> TripBatchResponse:
        """Score up to 1,000 trips in one call."""
        scorer = self._ready_scorer()
        if scorer is None:
            return self._not_ready()  # type: ignore[return-value]
        return TripBatchResponse(items=scorer.score_trips(list(items)))

    @bentoml.api(input_spec=MerchantScoreRequest)
    def score_merchant(self, **fields: Any) -> MerchantScoreResponse:
        """Score one merchant: probability of default, credit score, grade, reasons, action."""
        from safetyml.scoring import AsOfError

        scorer = self._ready_scorer()
        if scorer is None:
            return self._not_ready()  # type: ignore[return-value]
        try:
            return scorer.score_merchant(MerchantScoreRequest.model_construct(**fields))
        except AsOfError as exc:
            return _error(422, str(exc).replace("items[0].", ""), field="as_of")  # type: ignore[return-value]

    @bentoml.api(input_spec=MerchantBatchRequest)
    def score_merchants(self, items: list[MerchantScoreRequest]) -> MerchantBatchResponse:
        """Score up to 1,000 merchants in one call."""
        from safetyml.scoring import AsOfError

        scorer = self._ready_scorer()
        if scorer is None:
            return self._not_ready()  # type: ignore[return-value]
        try:
            return MerchantBatchResponse(items=scorer.score_merchants(list(items)))
        except AsOfError as exc:
            return _error(422, str(exc), field="as_of")  # type: ignore[return-value]

    @bentoml.api(input_spec=ReloadRequest)
    def reload(self, alias: str = "champion") -> ReloadResponse:
        """Load the models under ``alias`` and swap them in without dropping requests in flight."""
        if self.scorer is None:
            return self._not_ready()  # type: ignore[return-value]
        previous = self.scorer.model_versions
        started = time.perf_counter()
        try:
            versions = self.scorer.reload(alias)
        except Exception as exc:  # e.g. no model under that alias: keep serving the old one
            log.warning("reload(%s) failed: %s", alias, exc)
            return _error(409, f"reload failed, previous models kept: {exc}", field="alias")  # type: ignore[return-value]
        log.info(
            "worker %d: models reloaded (%s) in %.2f s: %s",
            os.getpid(),
            alias,
            time.perf_counter() - started,
            versions,
        )
        self._announce_reload(alias, versions)
        return ReloadResponse(model_versions=versions, previous_versions=previous)


SafetyScoring.add_asgi_middleware(BearerAuth, token=_TOKEN)
