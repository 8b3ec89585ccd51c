"""Django's ASGI handler with a lean path for the `/v1/` API.

Django's own request cycle costs more than the gateway's work: per request it enters an asgiref
`ThreadSensitiveContext` and sends `request_started` / `request_finished`, whose synchronous
receivers each hop to a freshly started thread, then runs the admin's middleware. None of that
serves `/v1/`: those views are async, authenticate by API key (no sessions, CSRF or messages) and
touch no ORM in steady state. So `/v1/` requests are resolved and dispatched directly; everything
else (admin, health) takes Django's full path. Kept the same: body reading and its limits, the
`ASGIRequest`, URL resolution through the project's URLconf, response sending, and cancelling the
view when the client disconnects (which closes upstream streams).
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

from django.core.exceptions import RequestAborted
from django.core.handlers.asgi import ASGIHandler
from django.http import HttpRequest, HttpResponseBase
from django.urls import get_resolver

API_PREFIX = "/v1/"


class GatewayASGIHandler(ASGIHandler):
    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "http" and scope["path"].startswith(API_PREFIX):
            await self.handle_api(scope, receive, send)
            return
        await super().__call__(scope, receive, send)

    async def handle_api(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        try:
            body_file = await self.read_body(receive)
        except RequestAborted:
            return
        try:
            request, error_response = self.create_request(scope, body_file)
            if request is None:
                assert error_response is not None  # Django returns one or the other
                await self.send_response(error_response, send)
                return
            await self._serve_until_disconnect(request, receive, send)
        finally:
            body_file.close()

    async def _serve_until_disconnect(self, request: HttpRequest, receive: Any, send: Any) -> None:
        # As Django's handle(): whichever finishes first, the response or a client disconnect,
        # and a disconnect cancels the view (its streams close their upstream in `finally`).
        async def respond() -> None:
            response = await self.api_response(request)
            with contextlib.suppress(asyncio.CancelledError):  # the client went away mid-send
                await self.send_response(response, send)

        listener = asyncio.create_task(self.listen_for_disconnect(receive))
        responder = asyncio.create_task(respond())
        await asyncio.wait([listener, responder], return_when=asyncio.FIRST_COMPLETED)
        for task in (listener, responder):
            if task.done():
                with contextlib.suppress(RequestAborted):
                    task.result()
            else:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError, RequestAborted):
                    await task

    async def api_response(self, request: HttpRequest) -> HttpResponseBase:
        match = get_resolver().resolve(request.path_info)  # the URLconf ends with a /v1/ catch-all
        request.resolver_match = match
        response: HttpResponseBase = await match.func(request, *match.args, **match.kwargs)
        return response
