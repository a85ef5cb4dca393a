"""What the scoring service does at start-up and answers without a model call, outside BentoML."""

from __future__ import annotations

import logging
from typing import Any

from safetyml import envvars
from safetyml.envvars import ServeSettings
from safetyml.scoring.policies import load_policies
from safetyml.scoring.reload import ScorerHost

log = logging.getLogger("safetyml.serving")


class _QuietValidationErrors(logging.Filter):
    """Bad requests get a 400 naming the field; do not also log them as server errors with a traceback."""

    def filter(self, record: logging.LogRecord) -> bool:
        from pydantic import ValidationError

        exc = record.exc_info[1] if record.exc_info else None
        return not isinstance(exc, ValidationError)


def setup_logging() -> None:
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
    logging.getLogger("bentoml._internal.server.http_app").addFilter(_QuietValidationErrors())


def prepare(settings: ServeSettings) -> None:
    """Logging, then the policies: an invalid policy file raises here, so ``bentoml serve`` exits at start."""
    setup_logging()
    load_policies()
    if settings.token is None:
        log.warning(
            "%s is not set: the service is UNAUTHENTICATED and must stay bound to 127.0.0.1",
            envvars.API_TOKEN,
        )


def service_options(settings: ServeSettings) -> dict[str, Any]:
    """The ``@bentoml.service`` options that cost time on every request: the access log (off unless asked)
    and OpenTelemetry. BentoML always installs its OpenTelemetry middleware; with a sampling rate of 0 it
    still builds a (non-recording) span per request, so every URL is excluded from it instead (measured in
    docs/serving.md#speed)."""
    tracing: dict[str, Any] = {"sample_rate": settings.trace_rate}
    if settings.trace_rate == 0:
        tracing["excluded_urls"] = [".*"]
    return {"logging": {"access": {"enabled": settings.access_log}}, "tracing": tracing}


def require_request_bodies(service: Any) -> None:
    """Publish every API's request body as ``required`` in the OpenAPI document (BentoML leaves it out, so a
    fuzzer or client generator may think an empty POST is valid; the service answers it 415/400).

    BentoML builds the document from each ``APIMethod.openapi_request()``; the methods are slotted attrs
    objects, so each one's class is swapped for a subclass that adds the flag.
    """
    from _bentoml_sdk.method import APIMethod

    class _BodyRequired(APIMethod):  # type: ignore[misc,type-arg]
        __slots__ = ()

        def openapi_request(self) -> dict[str, Any]:
            return {**super().openapi_request(), "required": True}

    for api in service.apis.values():
        if type(api) is APIMethod:
            api.__class__ = _BodyRequired


def metadata_answer(host: ScorerHost | None, settings: ServeSettings) -> tuple[int, dict[str, Any]]:
    """``GET /metadata``: status and body (versions of models, features, store and policies; or 503)."""
    if host is None or host.scorer is None:
        return 503, {"error": "not ready", "detail": getattr(host, "load_error", None)}
    meta = host.scorer.metadata()
    meta["authenticated"] = settings.token is not None
    return 200, meta


__all__ = ["metadata_answer", "prepare", "require_request_bodies", "service_options", "setup_logging"]


def metadata_app(hosts: dict[str, ScorerHost], settings: ServeSettings) -> Any:
    """The Starlette app answering ``GET /metadata`` from this worker's scorer host (``hosts["host"]``,
    set once the service class has started it)."""
    from starlette.applications import Starlette
    from starlette.responses import JSONResponse
    from starlette.routing import Route

    def answer(_: Any) -> JSONResponse:
        status, body = metadata_answer(hosts.get("host"), settings)
        return JSONResponse(body, status_code=status)

    return Starlette(routes=[Route("/metadata", answer, methods=["GET"])])
