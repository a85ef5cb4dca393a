"""HTTP around the scorer, without BentoML: the one error → status map, and the limits on request bodies.

:class:`RequestLimits` is ASGI middleware in front of BentoML's routes. Every POST must be
``Content-Type: application/json`` (415 otherwise, so a ``text/plain`` or ``multipart`` body is never
parsed), at most :data:`MAX_BODY_BYTES` (413 from ``Content-Length`` before reading, or as soon as a chunked
body passes the cap), valid JSON without NaN/Infinity or duplicate keys (400 naming the key: with duplicate
keys "the last one wins" would let two parties read one request differently), and with at most
:data:`~safetyml.scoring.schemas.MAX_BATCH` ``items`` (413). The body is parsed once here with the standard
library (a few µs for a trip) and handed on unchanged.
"""

from __future__ import annotations

import json
from typing import Any

from safetyml.errors import SafetymlError
from safetyml.features.online_redis import StoreUnavailableError
from safetyml.scoring.audit import AuditUnavailableError
from safetyml.scoring.auth import ASGIApp, Receive, Scope, Send
from safetyml.scoring.schemas import MAX_BATCH
from safetyml.scoring.scorer import AsOfError, NotReadyError, ReloadError

MAX_BODY_BYTES = 1024 * 1024  # 1 MiB: a full batch of 1,000 trips is about 350 kB
_BODY_METHODS = frozenset({"POST", "PUT", "PATCH"})

STATUS: dict[type[SafetymlError], int] = {
    NotReadyError: 503,  # no model or store yet: callers retry
    AsOfError: 422,  # a well-formed request the store cannot answer
    ReloadError: 409,  # the alias could not be loaded; the previous models keep serving
    AuditUnavailableError: 503,  # the decision could not be made durable: no id is handed out
    StoreUnavailableError: 503,  # the online store (Redis) cannot be reached: callers retry
}
"""Error class → HTTP status; any other SafetymlError is a 500."""


def error_response(exc: SafetymlError) -> tuple[int, dict[str, Any]]:
    """The status and JSON body for ``exc``: ``{"error": message}``, plus ``field`` if the error names one."""
    status = next((code for kind, code in STATUS.items() if isinstance(exc, kind)), 500)
    body: dict[str, Any] = {"error": str(exc)}
    field = getattr(exc, "field", None)
    if field:
        body["field"] = field
    return status, body


class BodyError(SafetymlError, ValueError):
    """A request body refused before validation; ``status`` is its HTTP status."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status


def _pairs(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in pairs:
        if key in out:
            raise BodyError(400, f"duplicate JSON key {key!r}: each field may appear once")
        out[key] = value
    return out


def _no_constant(name: str) -> Any:
    raise BodyError(400, f"{name} is not valid JSON")


def check_json(body: bytes, max_items: int = MAX_BATCH) -> Any:
    """Parse a request body strictly; raises BodyError (400 bad JSON or duplicate key, 413 too many items)."""
    try:
        value = json.loads(body, object_pairs_hook=_pairs, parse_constant=_no_constant)
    except BodyError:
        raise
    except (ValueError, RecursionError) as exc:
        raise BodyError(400, f"the body is not valid JSON: {exc}") from None
    items = value.get("items") if isinstance(value, dict) else None
    if isinstance(items, list) and len(items) > max_items:
        raise BodyError(413, f"items: {len(items)} items; at most {max_items} per request")
    return value


def check_headers(headers: list[tuple[bytes, bytes]], max_body: int = MAX_BODY_BYTES) -> None:
    """Content-Type must be application/json and a declared Content-Length within the cap."""
    content_type = b""
    length = None
    for name, value in headers:
        if name == b"content-type":
            content_type = value
        elif name == b"content-length":
            length = value
    media = content_type.split(b";", 1)[0].strip().lower()
    if media != b"application/json":
        shown = media.decode("latin-1") or "none"
        raise BodyError(415, f"Content-Type must be application/json (got {shown})")
    if length is not None:
        try:
            declared = int(length)
        except ValueError:
            raise BodyError(400, "Content-Length is not a number") from None
        if declared > max_body:
            raise BodyError(413, f"body of {declared:,} bytes; at most {max_body:,} bytes per request")


async def _reply(send: Send, status: int, message: str) -> None:
    body = json.dumps({"error": message}).encode()
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
                (b"connection", b"close"),  # the rest of a refused body is not read
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})


class RequestLimits:
    """ASGI middleware: Content-Type, body size, strict JSON and batch size of every request with a body."""

    def __init__(self, app: ASGIApp, max_body: int = MAX_BODY_BYTES, max_items: int = MAX_BATCH):
        self.app = app
        self.max_body = max_body
        self.max_items = max_items

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope.get("method") not in _BODY_METHODS:
            await self.app(scope, receive, send)
            return
        try:
            check_headers(scope.get("headers", []), self.max_body)
            chunks: list[bytes] = []
            size = 0
            while True:
                message = await receive()
                if message["type"] == "http.disconnect":
                    return
                chunk = message.get("body", b"")
                size += len(chunk)
                if size > self.max_body:
                    raise BodyError(413, f"body over {self.max_body:,} bytes; at most that per request")
                chunks.append(chunk)
                if not message.get("more_body", False):
                    break
            body = b"".join(chunks)
            check_json(body, self.max_items)
        except BodyError as exc:
            await _reply(send, exc.status, str(exc))
            return
        delivered = False

        async def replay() -> Any:
            nonlocal delivered
            if not delivered:
                delivered = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        await self.app(scope, replay, send)


__all__ = [
    "MAX_BODY_BYTES",
    "STATUS",
    "BodyError",
    "RequestLimits",
    "check_headers",
    "check_json",
    "error_response",
]
