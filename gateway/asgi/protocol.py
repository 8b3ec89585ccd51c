"""uvicorn's httptools protocol with a deadline on the client's request (VMX_CLIENT_TIMEOUT).

uvicorn only times out a kept-alive connection that is idle after a response. A client that sends
nothing, half its headers or half its body keeps its socket (and, once its headers are in, a
waiting request) for as long as it likes, so slow or stalled clients pile up by the thousand.
Here a timer is armed when a connection is made and when the next request on a kept-alive
connection begins (its first bytes), and cancelled when the request is complete: one
`call_later` and one cancel per request, nothing per byte. When it fires:

- nothing received: the connection is closed (there is no request to answer);
- headers incomplete: a bare `408 Request Timeout` with `connection: close`, then closed;
- body incomplete, no response yet: a 408 in the caller's protocol shape (Anthropic on
  /v1/messages, OpenAI elsewhere), then closed, and the waiting app is told the client
  disconnected: Django's body read ends in RequestAborted and nothing more is written;
- a response already started (the app answered without the rest of the body): closed.

Time the server takes is not held against the client: while an earlier response on the same
connection is still going out (pipelining) or reading is paused by flow control, the deadline is
pushed back a full period. Once a request is complete the timer is off, however long the
response takes; idleness after it is uvicorn's keep-alive timeout.
"""

from __future__ import annotations

import asyncio
from asyncio import TimerHandle
from typing import Any

from django.conf import settings
from uvicorn.config import Config
from uvicorn.protocols.http.httptools_impl import STATUS_LINE, HttpToolsProtocol
from uvicorn.protocols.utils import get_client_addr, get_path_with_query_string
from uvicorn.server import ServerState

from gateway.core.errors import InvalidRequestError
from gateway.v1.renderers import error_response


class GatewayHttpToolsProtocol(HttpToolsProtocol):
    def __init__(
        self,
        config: Config,
        server_state: ServerState,
        app_state: dict[str, Any],
        _loop: asyncio.AbstractEventLoop | None = None,
    ) -> None:
        super().__init__(config, server_state, app_state, _loop)
        # Read per connection, not at import: the worker class (and so this module) is imported by
        # the gunicorn master, before the ASGI app has configured Django in the worker.
        self.client_timeout = float(settings.VMX_CLIENT_TIMEOUT)
        self.request_timer: TimerHandle | None = None
        self.request_begun = False
        self.request_headers_complete = False

    # Arming and disarming, on the connection's and the parser's own events.

    def connection_made(  # type: ignore[override]  # as the base: it needs a Transport
        self, transport: asyncio.Transport
    ) -> None:
        super().connection_made(transport)
        self._arm()

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        super().connection_lost(exc)

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self.request_begun = True
        self.request_headers_complete = False
        # The first request keeps the clock started at connect: trickling in one byte late must
        # not buy a fresh period.
        if self.request_timer is None:
            self._arm()

    def on_headers_complete(self) -> None:
        self.request_headers_complete = True
        super().on_headers_complete()

    def on_message_complete(self) -> None:
        self._disarm()
        self.request_begun = False
        super().on_message_complete()

    def handle_websocket_upgrade(self) -> None:
        # The transport passes to the WebSocket protocol, which keeps its own time.
        self._disarm()
        super().handle_websocket_upgrade()

    def _arm(self) -> None:
        if self.client_timeout > 0:
            self.request_timer = self.loop.call_later(self.client_timeout, self._request_timed_out)

    def _disarm(self) -> None:
        if self.request_timer is not None:
            self.request_timer.cancel()
            self.request_timer = None

    # The deadline.

    def _request_timed_out(self) -> None:
        self.request_timer = None
        if self.transport.is_closing():
            return
        if self._server_is_behind():
            self._arm()
            return
        if not self.request_begun:
            self.transport.close()
        elif not self.request_headers_complete:
            self._write_408(b"text/plain; charset=utf-8", b"Request Timeout", [])
            self.transport.close()
        elif self.cycle is None or self.cycle.response_started:  # None: an upgrade took the request
            self.transport.close()
        else:
            self._refuse_incomplete_body()

    def _server_is_behind(self) -> bool:
        """Whether the client is waiting on us rather than we on it."""
        if self.flow.read_paused:  # a pipelined request queued, or the app not reading the body
            return True
        if not self.request_headers_complete:
            # `cycle` is still the previous request's: is its response still going out?
            return self.cycle is not None and not self.cycle.response_complete
        return bool(self.pipeline)  # this request waits behind an earlier one's response

    def _refuse_incomplete_body(self) -> None:
        cycle = self.cycle
        scope = cycle.scope
        error = InvalidRequestError(
            f"The request body did not arrive in full within {self.client_timeout:g} s.", code="request_timeout"
        )
        # In the shape the path calls for; any other status or header the renderer sets is not ours:
        # this answer is a 408 that closes the connection.
        response = error_response(error, path=scope["path"])
        extra = [(b"x-vmx-request-id", response["x-vmx-request-id"].encode())] if "x-vmx-request-id" in response else []
        self._write_408(response["content-type"].encode(), response.content, extra)
        if self.access_log:
            self.access_logger.info(
                '%s - "%s %s HTTP/%s" %d',
                get_client_addr(scope),
                scope["method"],
                get_path_with_query_string(scope),
                scope["http_version"],
                408,
            )
        # As if the client had gone: the app's pending receive() returns http.disconnect (Django
        # raises RequestAborted and returns without answering), any later send() is dropped, and
        # uvicorn, seeing the disconnect, neither logs an error nor sends its own 500.
        cycle.disconnected = True
        cycle.message_event.set()
        self.transport.close()

    def _write_408(self, content_type: bytes, body: bytes, extra: list[tuple[bytes, bytes]]) -> None:
        content = [STATUS_LINE[408]]
        for name, value in [
            *self.server_state.default_headers,
            (b"content-type", content_type),
            (b"content-length", str(len(body)).encode()),
            *extra,
            (b"connection", b"close"),
        ]:
            content += [name, b": ", value, b"\r\n"]
        content += [b"\r\n", body]
        self.transport.write(b"".join(content))
