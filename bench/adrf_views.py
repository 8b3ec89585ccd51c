"""Bench only (`bench/adrf_point.py`): `POST /v1/chat/completions` served by an adrf APIView.

Imported by the gateway processes of configurations B, C and D as their URLconf (settings module
`adrf_settings`, with `.tools/adrf` and `bench/` on PYTHONPATH). Neither adrf nor Django REST
framework is a dependency of the gateway: they are installed into `.tools/adrf` for the bench.

The endpoint work is the project's own, reused from `gateway.views.ChatCompletionsView` (key
checked at the edge, body size and parse, envelope, route, capacity lookup, upstream call, audit);
only the view layer is REST framework's:

- B: `adrf.views.APIView` as shipped. Its `async_dispatch` wraps the request (`AsyncRequest`:
  parsers, authenticators, content negotiator), runs `initial()` (format suffix, content
  negotiation, versioning, authentication, permissions, throttles) through `sync_to_async`, awaits
  `post()`, then `finalize_response()`.
- C: the same view with an async `initial()` awaited on the event loop (no thread hop) that does only
  what a `/v1/` request needs: authentication and permissions; no content negotiation, versioning
  or throttles.
- D (optional): B with an async authenticator, which adrf runs with `async_to_sync` from the
  thread of `initial()`.

To make B as cheap as REST framework allows, the authenticator is synchronous and returns what
the lean ASGI path already checked before reading the body (`request.vmx_auth`, as our view uses
it); renderers and parsers are JSON only (`adrf_settings`). The body is parsed by the gateway's
own parser (orjson), not by `request.data`.
"""

from __future__ import annotations

import os
from typing import Any

from adrf.views import APIView
from asgiref.sync import async_to_sync
from django.http import HttpRequest, HttpResponseBase
from django.urls import path

from connections.entities import ApiKeyInfo, EnvironmentSnapshot
from gateway.core.errors import GatewayError
from gateway.v1.auth import authenticate
from gateway.v1.renderers import request_id_new
from gateway.v1.views import ChatCompletionsView
from vmx_project import urls as project_urls


class GatewayKeyUser:
    """`request.user` of a request authenticated by a gateway API key."""

    is_authenticated = True
    is_anonymous = False

    def __init__(self, api_key: ApiKeyInfo) -> None:
        self.api_key = api_key
        self.username = api_key.name


class GatewayKeyAuthentication:
    """A REST framework authentication class (duck-typed): the gateway API key."""

    def authenticate(self, request: Any) -> tuple[GatewayKeyUser, tuple[EnvironmentSnapshot, ApiKeyInfo]]:
        checked: tuple[EnvironmentSnapshot, ApiKeyInfo] | None = getattr(request._request, "vmx_auth", None)
        if checked is None:  # not checked at the edge (a GET); B runs initial() in a worker thread
            checked = async_to_sync(authenticate)(request._request.headers)
        return GatewayKeyUser(checked[1]), checked

    def authenticate_header(self, request: Any) -> str:
        return "Bearer"


class AsyncGatewayKeyAuthentication(GatewayKeyAuthentication):
    """The same, as an async authenticator: adrf calls it with `async_to_sync` from the thread that
    runs `initial()`, so it runs on the event loop (a second hop), as gateway.v1.auth.authenticate is async."""

    async def authenticate(  # type: ignore[override]
        self, request: Any
    ) -> tuple[GatewayKeyUser, tuple[EnvironmentSnapshot, ApiKeyInfo]]:
        checked: tuple[EnvironmentSnapshot, ApiKeyInfo] | None = getattr(request._request, "vmx_auth", None)
        if checked is None:
            checked = await authenticate(request._request.headers)
        return GatewayKeyUser(checked[1]), checked


class HasGatewayKey:
    """A REST framework permission class (duck-typed): the request carries a valid key."""

    def has_permission(self, request: Any, view: Any) -> bool:
        return request.auth is not None

    def has_object_permission(self, request: Any, view: Any, obj: Any) -> bool:
        return True


class AdrfChatCompletionsView(APIView, ChatCompletionsView):  # type: ignore[misc]  # adrf is untyped
    """B: adrf's APIView (dispatch, request wrapper, initial(), finalize_response) around the
    project's chat completions work."""

    authentication_classes = [GatewayKeyAuthentication]
    permission_classes = [HasGatewayKey]
    throttle_classes: list[Any] = []

    def initialize_request(self, request: HttpRequest, *args: Any, **kwargs: Any) -> Any:
        self.request_id = request_id_new()
        return super().initialize_request(request, *args, **kwargs)

    async def post(self, request: Any) -> HttpResponseBase:
        snapshot, api_key = request.auth  # set by GatewayKeyAuthentication in initial()
        audit = self.audit_entry(request, snapshot=snapshot, api_key=api_key)
        return await self.audited(audit, self._serve(request, snapshot, api_key, audit))

    def handle_exception(self, exc: Exception) -> HttpResponseBase:
        if isinstance(exc, GatewayError):  # the gateway's errors keep their OpenAI shape
            return type(self).exception_handler(exc, request_id=self.request_id)
        response: HttpResponseBase = super().handle_exception(exc)
        return response

    def finalize_response(self, request: Any, response: HttpResponseBase, *args: Any, **kwargs: Any) -> Any:
        response = super().finalize_response(request, response, *args, **kwargs)
        response["x-vmx-request-id"] = self.request_id
        return response


class AdrfAsyncInitialChatCompletionsView(AdrfChatCompletionsView):
    """C: B with an async `initial()` awaited on the event loop that authenticates and checks
    permissions only."""

    async def initial(self, request: Any, *args: Any, **kwargs: Any) -> None:
        self.format_kwarg = None  # /v1/ has no format suffixes, no content negotiation, no versions
        if getattr(request._request, "vmx_auth", None) is None:  # not checked at the edge
            request._request.vmx_auth = await ChatCompletionsView.authenticate(self, request._request)
        self.perform_authentication(request)
        self.check_permissions(request)
        # no check_throttles(): capacity limits are the gateway's own (DESIGN.md 2.10)

    async def async_dispatch(self, request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponseBase:
        self.args, self.kwargs = args, kwargs
        wrapped = self.initialize_request(request, *args, **kwargs)
        self.request = wrapped
        self.headers = self.default_response_headers
        try:
            await self.initial(wrapped, *args, **kwargs)
            method = wrapped.method.lower()
            handler = getattr(self, method, None) if method in self.http_method_names else None
            response = await (handler or self._not_allowed)(wrapped, *args, **kwargs)
        except Exception as exc:
            response = self.handle_exception(exc)
        finalized: HttpResponseBase = self.finalize_response(wrapped, response, *args, **kwargs)
        self.response = finalized
        return finalized

    async def _not_allowed(self, request: Any, *args: Any, **kwargs: Any) -> HttpResponseBase:
        self.http_method_not_allowed(request, *args, **kwargs)  # raises MethodNotAllowed
        raise AssertionError("unreachable")


class AdrfAsyncAuthChatCompletionsView(AdrfChatCompletionsView):
    """D (optional): B with the async authenticator."""

    authentication_classes = [AsyncGatewayKeyAuthentication]


VIEWS = {"B": AdrfChatCompletionsView, "C": AdrfAsyncInitialChatCompletionsView, "D": AdrfAsyncAuthChatCompletionsView}
VIEW = VIEWS[os.environ.get("BENCH_ADRF_VIEW", "B")]

handler404 = project_urls.handler404

# The project's URLconf, with this view's route ahead of its own chat completions route.
urlpatterns = [path("v1/chat/completions", VIEW.as_view(), name="chat-completions"), *project_urls.urlpatterns]
