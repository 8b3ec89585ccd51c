"""ASGI guard: refuse an oversized `/v1/` body from its Content-Length, before anyone reads it.

Django's ASGI handler reads the whole body (spooling to disk) before any view runs, so the
view's own check would come after a 1 GB upload had been taken in. The check order of
DESIGN.md 2.4 is kept: a request without a valid key gets 401, not 413.
"""

from __future__ import annotations

import secrets
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from django.conf import settings

from gateway.auth import authenticate
from gateway.errors import GatewayError, RequestTooLargeError

Scope = dict[str, Any]
Receive = Callable[[], Awaitable[Mapping[str, Any]]]
Send = Callable[[Mapping[str, Any]], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]


class BodyLimitGuard:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["path"].startswith("/v1/"):
            length = _content_length(scope["headers"])
            limit = int(settings.VMX_MAX_BODY_BYTES)
            if length > limit:
                await self._refuse(scope, send, length, limit)
                return
        await self.app(scope, receive, send)

    async def _refuse(self, scope: Scope, send: Send, length: int, limit: int) -> None:
        headers = {name.decode("latin-1").lower(): value.decode("latin-1") for name, value in scope["headers"]}
        error: GatewayError
        try:
            await authenticate(headers)
            error = RequestTooLargeError(f"The request body is {length} bytes; this gateway accepts at most {limit}.")
        except GatewayError as exc:
            error = exc
        request_id = "req_" + secrets.token_hex(12)
        anthropic = scope["path"].startswith("/v1/messages")
        body = error.anthropic_body(request_id) if anthropic else error.openai_body()
        response_headers = [
            (b"content-type", b"application/json"),
            (b"content-length", str(len(body)).encode()),
            (b"x-vmx-request-id", request_id.encode()),
            # The unread body must not be taken for the next request on this connection.
            (b"connection", b"close"),
        ]
        await send({"type": "http.response.start", "status": error.status_code, "headers": response_headers})
        await send({"type": "http.response.body", "body": body})


def _content_length(headers: list[tuple[bytes, bytes]]) -> int:
    for name, value in headers:
        if name.lower() == b"content-length":
            try:
                return int(value)
            except ValueError:
                return 0
    return 0
