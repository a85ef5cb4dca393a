"""Bearer-token authentication for the scoring service, as plain ASGI middleware (no BentoML needed).

Deny by default: with a token set, every route needs ``Authorization: Bearer <token>`` except the probes,
metrics, metadata and the docs page; the token is compared in constant time.
"""

from __future__ import annotations

import hmac
import json
from collections.abc import Awaitable, Callable, Iterable, MutableMapping
from typing import Any

from safetyml import envvars

Scope = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[MutableMapping[str, Any]]]
Send = Callable[[MutableMapping[str, Any]], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

OPEN_PATHS = frozenset(
    {"/healthz", "/livez", "/readyz", "/metrics", "/metadata", "/schema.json", "/docs.json", "/"}
)
OPEN_PREFIXES = ("/static_content/", "/assets/")
UNAUTHORIZED_BODY = json.dumps(
    {"error": "unauthorized", "detail": f"send the header 'Authorization: Bearer <{envvars.API_TOKEN}>'"}
).encode()


def is_open(path: str) -> bool:
    """Whether ``path`` is served without a token (probes, metrics, metadata, docs)."""
    return path in OPEN_PATHS or path.startswith(OPEN_PREFIXES)


def authorized(headers: Iterable[tuple[bytes, bytes]], token: bytes) -> bool:
    """Whether the raw ASGI ``headers`` carry ``Authorization: Bearer <token>`` (scheme case-insensitive)."""
    header = b""
    for name, value in headers:
        if name == b"authorization":
            header = value
            break
    scheme, _, supplied = header.partition(b" ")
    return scheme.lower() == b"bearer" and hmac.compare_digest(supplied.strip(), token)


class BearerAuth:
    """ASGI middleware: all but the open routes need ``Authorization: Bearer <token>`` (401 otherwise).

    With ``token=None`` every request passes (the service then stays bound to loopback).
    """

    def __init__(self, app: ASGIApp, token: str | None = None):
        self.app = app
        self.token = token.encode() if token else None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if (
            self.token is not None
            and scope["type"] == "http"
            and not is_open(scope.get("path", ""))
            and not authorized(scope.get("headers", []), self.token)
        ):
            await send(
                {
                    "type": "http.response.start",
                    "status": 401,
                    "headers": [
                        (b"content-type", b"application/json"),
                        (b"content-length", str(len(UNAUTHORIZED_BODY)).encode()),
                        (b"www-authenticate", b'Bearer realm="safetyml"'),
                    ],
                }
            )
            await send({"type": "http.response.body", "body": UNAUTHORIZED_BODY})
            return
        await self.app(scope, receive, send)


__all__ = ["OPEN_PATHS", "OPEN_PREFIXES", "BearerAuth", "authorized", "is_open"]
