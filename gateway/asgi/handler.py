"""Django's ASGI handler with a lean path for the `/v1/` API, and bodies read safely everywhere.

Django's own request cycle costs more than the gateway's work: per request it enters an asgiref
`ThreadSensitiveContext` and sends `request_started` / `request_finished`, whose synchronous
receivers each hop to a freshly started thread, then runs the admin's middleware. None of that
serves `/v1/`: those views are async, authenticate by API key (no sessions, CSRF or messages) and
touch no ORM in steady state. So `/v1/` requests are resolved and dispatched directly; everything
else (admin, health) takes Django's full path.

Invariants (DESIGN.md 2.4, 2.13):
- Bodies are read into memory, never spooled to disk, and only up to `VMX_MAX_BODY_BYTES`: a
  body that declares more, or a chunked one that crosses it while arriving, gets 413 at once.
- On `/v1/` the order is: host (400), key (401, before a byte of the body is read), size (413),
  then the view's own checks. The errors are JSON in the shape of the view the path resolves to.
- The gateway speaks HTTP only: a WebSocket handshake, as an HTTP request asking to upgrade or as
  a `websocket` connection, gets 426 in the path's shape (404 for an unknown `/v1/` path).
- A client disconnect cancels the view (its streams close their upstream in `finally`). When the
  server's graceful timeout runs out, open requests are ended with the endpoint's error instead.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
from typing import Any

from django.conf import settings
from django.core.exceptions import RequestAborted
from django.core.handlers.asgi import ASGIHandler
from django.http import HttpRequest, HttpResponseBase
from django.http.request import split_domain_port, validate_host
from django.urls import get_resolver

from gateway.audit.entry import AuditEntry
from gateway.core.errors import (
    AuthenticationError,
    GatewayError,
    InvalidRequestError,
    RequestTooLargeError,
    UpgradeRequiredError,
)
from gateway.services.envelope import envelope_headers
from gateway.services.shutdown import shutdown_force
from gateway.v1.auth import authenticate, authentication_failed, client_address
from gateway.v1.renderers import error_response, openai_error_response, request_id_new
from gateway.v1.views import GatewayAPIView

API_PREFIX = "/v1/"
BODY_METHODS = frozenset({"POST", "PUT", "PATCH"})
SHUTDOWN_GRACE_SECONDS = 1.0
"""How long a request cancelled at the end of the graceful timeout has to send its error."""
OTHER_MAX_BODY_BYTES = 2 * 1024 * 1024
"""Bodies off /v1/ (admin forms, health) are small and read before anyone is authenticated."""

_in_flight: set[asyncio.Task[Any]] = set()


async def requests_drained(seconds: float) -> None:
    """Wait (at most `seconds`) for the /v1/ requests still running, so that what they audit on
    the way out is queued before the audit's last flush (the server cancels them, then shuts down
    at once)."""
    pending = [task for task in _in_flight if not task.done()]
    if pending:
        await asyncio.wait(pending, timeout=seconds)


class BodyTooLargeError(Exception):
    def __init__(self, size: int, limit: int, *, declared: bool) -> None:
        super().__init__(size)
        self.size, self.limit, self.declared = size, limit, declared

    def error(self) -> RequestTooLargeError:
        if self.declared:
            return RequestTooLargeError(
                f"The request body is {self.size} bytes; this gateway accepts at most {self.limit}."
            )
        return RequestTooLargeError(
            f"The request body is larger than {self.limit} bytes, the most this gateway accepts."
        )


async def body_read(receive: Any, *, limit: int, declared: int | None) -> bytes:
    """The whole body, in memory; `BodyTooLargeError` as soon as it is known to exceed `limit`."""
    if declared is not None and declared > limit:
        raise BodyTooLargeError(declared, limit, declared=True)
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise RequestAborted
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            raise BodyTooLargeError(size, limit, declared=False)
        if chunk:
            chunks.append(chunk)
        if not message.get("more_body", False):
            return chunks[0] if len(chunks) == 1 else b"".join(chunks)


def _declared_length(headers: list[tuple[bytes, bytes]]) -> int | None:
    for name, value in headers:
        if name == b"content-length":
            try:
                return int(value)
            except ValueError:
                return None
    return None


def _host_allowed(host: str) -> bool:
    domain, _ = split_domain_port(host)
    allowed = settings.ALLOWED_HOSTS
    if settings.DEBUG and not allowed:
        allowed = [".localhost", "127.0.0.1", "[::1]"]
    return bool(domain) and validate_host(domain, allowed)


class GatewayASGIHandler(ASGIHandler):
    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "http" and scope["path"].startswith(API_PREFIX):
            await self.handle_api(scope, receive, send)
            return
        if scope["type"] == "websocket":
            await self.handle_websocket(scope, receive, send)
            return
        await super().__call__(scope, receive, send)

    # -- WebSocket handshakes (a server with a WebSocket library routes them here) ------------------

    async def handle_websocket(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        """Refused with the HTTP answer an upgrade request gets from the views (426 in the path's
        error shape; 404 for an unknown `/v1/` path), so the client falls back to HTTP. Where the
        server cannot send an HTTP answer to a handshake, the connection is closed unaccepted
        (the server answers 403)."""
        if (await receive())["type"] != "websocket.connect":
            return
        if "websocket.http.response" not in scope.get("extensions", {}):
            await send({"type": "websocket.close", "code": 1008})  # policy violation
            return
        path, request_id = scope["path"], request_id_new()
        view_class: type[GatewayAPIView] | None = None
        if path.startswith(API_PREFIX):  # the URLconf ends with a /v1/ catch-all
            view_class = getattr(get_resolver().resolve(path).func, "view_class", None)
        if view_class is not None:
            response = view_class.exception_handler(view_class.get_websocket_error(path), request_id=request_id)
        else:
            response = error_response(UpgradeRequiredError(path), path=path, request_id=request_id)
        response["x-vmx-request-id"] = request_id
        response["content-length"] = str(len(response.content))
        headers = [(name.lower().encode("latin-1"), value.encode("latin-1")) for name, value in response.items()]
        await send({"type": "websocket.http.response.start", "status": response.status_code, "headers": headers})
        await send({"type": "websocket.http.response.body", "body": response.content})

    # -- Django's path (admin, health): the same bounded, in-memory body ---------------------------

    async def handle(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        try:
            await super().handle(scope, receive, send)
        except BodyTooLargeError as exc:  # raised by read_body, before Django did anything else
            response = error_response(exc.error(), path=scope["path"])
            response["connection"] = "close"
            response["content-length"] = str(len(response.content))
            await self.send_response(response, send)

    async def read_body(self, receive: Any) -> io.BytesIO:
        # Django spools bodies over FILE_UPLOAD_MAX_MEMORY_SIZE to a temporary file and reads them
        # whole before any check: a client could fill the disk. Read in memory, up to the limit.
        limit = min(int(settings.VMX_MAX_BODY_BYTES), OTHER_MAX_BODY_BYTES)
        body = await body_read(receive, limit=limit, declared=None)
        return io.BytesIO(body)

    # -- /v1/ ---------------------------------------------------------------------------------------

    async def handle_api(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        task = asyncio.current_task()
        if task is not None:
            _in_flight.add(task)
            task.add_done_callback(_in_flight.discard)
        match = get_resolver().resolve(scope["path"])  # the URLconf ends with a /v1/ catch-all
        view_class: type[GatewayAPIView] | None = getattr(match.func, "view_class", None)
        headers = {name.decode("latin-1"): value.decode("latin-1") for name, value in scope["headers"]}
        try:
            if not _host_allowed(headers.get("host", "")):
                raise InvalidRequestError("Invalid Host header: it is not in DJANGO_ALLOWED_HOSTS.", code="bad_host")
            auth = None
            if scope["method"] in BODY_METHODS:
                # The key first: a client without one never gets to send its body (DESIGN.md 2.13).
                tenant = (
                    (match.kwargs["workspace"], match.kwargs["environment"]) if "workspace" in match.kwargs else None
                )
                try:
                    auth = await authenticate(headers, tenant=tenant)
                except AuthenticationError as exc:
                    authentication_failed(source_ip=_client_address(scope, headers), path=scope["path"], error=exc)
                    raise
            try:
                limit = int(settings.VMX_MAX_BODY_BYTES)
                body = await body_read(receive, limit=limit, declared=_declared_length(scope["headers"]))
            except BodyTooLargeError as exc:
                error = exc.error()
                if auth is not None:
                    error.headers["x-vmx-environment"] = auth[0].environment.label
                if auth is not None and view_class is not None and view_class.audit_endpoint:
                    error.headers["x-vmx-request-id"] = request_id = request_id_new()
                    correlation_id, metadata = envelope_headers(headers)  # the body is never read
                    entry = AuditEntry(
                        request_id=request_id,
                        endpoint=view_class.audit_endpoint,
                        workspace=auth[0].environment.workspace,
                        environment=auth[0].environment.name,
                        api_key=auth[1].name,
                        correlation_id=correlation_id,
                        metadata=metadata,
                        source_ip=_client_address(scope, headers),
                    )
                    if correlation_id:
                        error.headers["x-vmx-correlation-id"] = correlation_id
                    entry.finish_error(error)
                raise error from None
        except RequestAborted:
            return
        except GatewayError as error:
            handler = view_class.exception_handler if view_class is not None else openai_error_response
            response = handler(error, request_id=error.headers.get("x-vmx-request-id") or request_id_new())
            # The body may be unread: it must not be taken for the next request on this connection.
            response["connection"] = "close"
            response["content-length"] = str(len(response.content))
            await self.send_response(response, send)
            return
        request, error_response = self.create_request(scope, io.BytesIO(body))
        if request is None:
            assert error_response is not None  # Django returns one or the other
            await self.send_response(error_response, send)
            return
        request.vmx_auth = auth  # type: ignore[attr-defined]  # the view need not authenticate again
        await self._serve_until_disconnect(request, match, receive, send)

    async def _serve_until_disconnect(self, request: HttpRequest, match: Any, receive: Any, send: Any) -> None:
        # As Django's handle(): whichever finishes first, the response or a client disconnect,
        # and a disconnect cancels the view (its streams close their upstream in `finally`).
        request.resolver_match = match

        async def respond() -> None:
            response: HttpResponseBase = await match.func(request, *match.args, **match.kwargs)
            with contextlib.suppress(asyncio.CancelledError):  # the client went away mid-send
                await self.send_response(response, send)

        listener = asyncio.create_task(self.listen_for_disconnect(receive))
        responder = asyncio.create_task(respond())
        try:
            await asyncio.wait([listener, responder], return_when=asyncio.FIRST_COMPLETED)
        except asyncio.CancelledError:
            # The server's graceful timeout ran out: let the request end as the endpoint ends a
            # failure (an error event for streams), and be audited, before the worker exits.
            shutdown_force()
            listener.cancel()
            responder.cancel()
            with contextlib.suppress(asyncio.CancelledError, TimeoutError, RequestAborted):
                await asyncio.wait_for(responder, SHUTDOWN_GRACE_SECONDS)
            raise
        for task in (listener, responder):
            if task.done():
                with contextlib.suppress(RequestAborted):
                    task.result()
            else:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError, RequestAborted):
                    await task


def _client_address(scope: dict[str, Any], headers: dict[str, str]) -> str | None:
    client = scope.get("client")
    return client_address(peer=client[0] if client else None, forwarded_for=headers.get("x-forwarded-for"))
