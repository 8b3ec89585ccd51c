"""HTTP views. The `/v1/` views are thin: authenticate, check, hand over to an endpoint service.

`GatewayAPIView` is a small async APIView in the spirit of Django REST framework's: every policy
is an overridable `get_…()` hook, errors are `GatewayError`s carrying their status, and one
exception handler per response shape renders them. It deliberately does no content negotiation:
`/v1/` views ignore `Accept` and never answer 406 (Codex sends `Accept: text/event-stream`).
"""

from __future__ import annotations

import logging
import secrets
from collections.abc import Awaitable, Callable
from typing import Any, ClassVar

import orjson
from asgiref.sync import sync_to_async
from django.conf import settings
from django.core.cache import cache
from django.core.exceptions import RequestDataTooBig
from django.db import connection
from django.http import HttpRequest, HttpResponse, HttpResponseBase, JsonResponse, StreamingHttpResponse
from django.views import View
from django.views.decorators.csrf import csrf_exempt

from connections.entities import ApiKeyInfo, ConfigSnapshot
from gateway.audit import AuditEntry
from gateway.auth import authenticate
from gateway.errors import (
    GatewayError,
    InvalidRequestError,
    MethodNotAllowedError,
    NotFoundError,
    RequestTooLargeError,
    UpstreamStatusError,
    anthropic_status_and_type,
)
from gateway.services.envelope import Envelope, envelope_extract, request_body_parse
from gateway.services.messages import MESSAGES, count_tokens
from gateway.services.passthrough import CHAT_COMPLETIONS, RESPONSES, GatewayResult, PassthroughEndpoint
from gateway.services.routing import Route, route_resolve
from gateway.sse import SSE_HEADERS

logger = logging.getLogger("vmx.gateway")

JSON = "application/json"


def request_id_new() -> str:
    return "req_" + secrets.token_hex(12)


def openai_exception_handler(error: GatewayError, *, request_id: str) -> HttpResponse:
    response = HttpResponse(error.openai_body(), status=error.status_code, content_type=JSON)
    for name, value in error.headers.items():
        response[name] = value
    response["x-vmx-request-id"] = request_id
    return response


def anthropic_exception_handler(error: GatewayError, *, request_id: str) -> HttpResponse:
    """Anthropic's error shape and status/type pairs (spec 4.1, 4.2)."""
    status, kind = anthropic_status_and_type(error)
    headers = dict(error.headers)
    if isinstance(error, UpstreamStatusError) and error.upstream_status == 429 and error.code == "insufficient_quota":
        headers["x-should-retry"] = "false"  # retrying cannot help: the account is out of credit
    body = orjson.dumps({"type": "error", "error": {"type": kind, "message": error.message}, "request_id": request_id})
    response = HttpResponse(body, status=status, content_type=JSON)
    for name, value in headers.items():
        response[name] = value
    response["request-id"] = request_id
    response["x-vmx-request-id"] = request_id
    return response


class GatewayAPIView(View):
    """Base for `/v1/` views: JSON errors in one shape, request id on every answer."""

    http_method_names = ["get", "post"]
    exception_handler: ClassVar[Callable[..., HttpResponse]] = staticmethod(openai_exception_handler)

    @classmethod
    def as_view(cls, **initkwargs: Any) -> Callable[..., Any]:
        # API clients authenticate with keys, never cookies: CSRF does not apply (as in DRF).
        return csrf_exempt(super().as_view(**initkwargs))

    def get_exception_handler(self) -> Callable[..., HttpResponse]:
        return type(self).exception_handler

    def get_max_body_bytes(self) -> int:
        return int(settings.VMX_MAX_BODY_BYTES)

    async def dispatch(self, request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponseBase:  # type: ignore[override]
        request_id = request_id_new()
        self.request_id = request_id
        try:
            handler = getattr(self, request.method.lower(), None) if request.method else None
            if request.method not in ("GET", "POST") or handler is None:
                raise MethodNotAllowedError(f"{request.method} is not allowed on {request.path}.")
            response: HttpResponseBase = await handler(request, *args, **kwargs)
        except GatewayError as error:
            response = self.get_exception_handler()(error, request_id=request_id)
        except Exception:
            logger.exception("unexpected error in %s (request %s)", request.path, request_id)
            internal = GatewayError("The gateway failed to process the request; see its log.", code="internal_error")
            response = self.get_exception_handler()(internal, request_id=request_id)
        response["x-vmx-request-id"] = request_id
        return response

    async def authenticate(self, request: HttpRequest) -> tuple[ConfigSnapshot, ApiKeyInfo]:
        return await authenticate(request.headers)

    def envelope_and_route(
        self, request: HttpRequest, snapshot: ConfigSnapshot, api_key: ApiKeyInfo, *, required: tuple[str, ...] = ()
    ) -> tuple[dict[str, Any], Envelope, Route]:
        """The checks after authentication, in DESIGN.md 2.4's order: size, body, resource, scope."""
        self.check_body_size(request)
        body = request_body_parse(self.read_body(request), required=required)
        envelope = envelope_extract(body, request.headers)
        return body, envelope, route_resolve(snapshot=snapshot, api_key=api_key, model=body["model"])

    def audit_entry(
        self,
        request: HttpRequest,
        *,
        endpoint: str,
        api_key: ApiKeyInfo,
        route: Route,
        envelope: Envelope,
        body: dict[str, Any],
    ) -> AuditEntry:
        return AuditEntry(
            request_id=self.request_id,
            endpoint=endpoint,
            api_key=api_key.name,
            resource=route.resource,
            correlation_id=envelope.correlation_id,
            metadata=envelope.metadata,
            source_ip=request.META.get("REMOTE_ADDR") or None,
            request_body=body if settings.VMX_AUDIT_BODIES else None,
        )

    def check_body_size(self, request: HttpRequest) -> None:
        """413 from Content-Length, before the body is touched (DESIGN.md 2.4)."""
        limit = self.get_max_body_bytes()
        try:
            length = int(request.META.get("CONTENT_LENGTH") or 0)
        except ValueError:
            length = 0
        if length > limit:
            raise RequestTooLargeError(f"The request body is {length} bytes; this gateway accepts at most {limit}.")

    def read_body(self, request: HttpRequest) -> bytes:
        try:
            return request.body
        except RequestDataTooBig:  # a chunked body with no Content-Length, over the limit
            raise RequestTooLargeError(f"The request body is larger than {self.get_max_body_bytes()} bytes.") from None


class PassthroughView(GatewayAPIView):
    endpoint: ClassVar[PassthroughEndpoint]

    def get_endpoint(self) -> PassthroughEndpoint:
        return self.endpoint

    async def post(self, request: HttpRequest) -> HttpResponseBase:
        snapshot, api_key = await self.authenticate(request)
        body, envelope, route = self.envelope_and_route(request, snapshot, api_key)
        endpoint = self.get_endpoint()
        audit = self.audit_entry(
            request, endpoint=endpoint.name, api_key=api_key, route=route, envelope=envelope, body=body
        )
        headers = {"x-vmx-correlation-id": envelope.correlation_id} if envelope.correlation_id else {}
        try:
            result = await endpoint.serve(route=route, body=body, envelope=envelope, audit=audit, headers=headers)
        except GatewayError as error:
            audit.finish_error(error)
            error.headers.setdefault("x-vmx-attempts", str(len(audit.attempts)))
            if envelope.correlation_id:
                error.headers.setdefault("x-vmx-correlation-id", envelope.correlation_id)
            raise
        return result_response(result)


def result_response(result: GatewayResult) -> HttpResponseBase:
    if result.stream is not None:
        response: HttpResponseBase = StreamingHttpResponse(
            result.stream, status=result.status, content_type="text/event-stream; charset=utf-8"
        )
        for name, value in SSE_HEADERS.items():
            response[name] = value
    else:
        response = HttpResponse(result.body, status=result.status, content_type=JSON)
    for name, value in result.headers.items():
        response[name] = value
    return response


class ChatCompletionsView(PassthroughView):
    endpoint = CHAT_COMPLETIONS


class ResponsesView(PassthroughView):
    endpoint = RESPONSES


class AnthropicAPIView(GatewayAPIView):
    exception_handler = staticmethod(anthropic_exception_handler)


class MessagesView(AnthropicAPIView):
    """`POST /v1/messages` (also `?beta=true`; any `anthropic-version` / `anthropic-beta`)."""

    async def post(self, request: HttpRequest) -> HttpResponseBase:
        snapshot, api_key = await self.authenticate(request)
        body, envelope, route = self.envelope_and_route(request, snapshot, api_key, required=("max_tokens", "messages"))
        audit = self.audit_entry(
            request, endpoint="messages", api_key=api_key, route=route, envelope=envelope, body=body
        )
        headers = {"x-vmx-correlation-id": envelope.correlation_id} if envelope.correlation_id else {}
        try:
            result = await MESSAGES.serve(
                route=route, body=body, envelope=envelope, audit=audit, headers=headers, request_id=self.request_id
            )
        except GatewayError as error:
            status, kind = anthropic_status_and_type(error)  # what the client gets is what is audited
            audit.finish(status_code=status, error_type=error.code or kind, error_message=error.message)
            error.headers.setdefault("x-vmx-attempts", str(len(audit.attempts)))
            error.headers.update(headers)
            raise
        return result_response(result)


class CountTokensView(AnthropicAPIView):
    """`POST /v1/messages/count_tokens`: the upstream's count, else an estimate (DESIGN.md 2.4)."""

    async def post(self, request: HttpRequest) -> HttpResponseBase:
        snapshot, api_key = await self.authenticate(request)
        body, envelope, route = self.envelope_and_route(request, snapshot, api_key, required=("messages",))
        scratch = AuditEntry(request_id=self.request_id, endpoint="messages")  # not a model call: not audited
        tokens, estimated = await count_tokens(route=route, body=body, envelope=envelope, audit=scratch)
        response = JsonResponse({"input_tokens": tokens})
        if estimated:
            response["x-vmx-estimate"] = "true"
        response["request-id"] = self.request_id
        return response


class ModelsView(GatewayAPIView):
    async def get(self, request: HttpRequest) -> HttpResponseBase:
        snapshot, api_key = await self.authenticate(request)
        data = [
            {"id": name, "object": "model", "created": resource.created, "owned_by": "vmx"}
            for name, resource in sorted(snapshot.resources.items())
            if resource.enabled and api_key.allows(name)
        ]
        return JsonResponse({"object": "list", "data": data})


class NotFoundView(GatewayAPIView):
    """Any other `/v1/` path: a JSON 404, never Django's HTML page."""

    async def _not_found(self, request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponseBase:
        raise NotFoundError(f"Unknown request URL: {request.method} {request.path}.", code="unknown_url")

    get = post = _not_found


# ------------------------------------------------------------------------------------------------
# Health


async def healthz(request: HttpRequest) -> JsonResponse:
    """The process is alive. Touches nothing, so a database outage never restarts workers."""
    return JsonResponse({"status": "ok"})


def _database_ping() -> None:
    with connection.cursor() as cursor:
        cursor.execute("SELECT 1")


async def _check(probe: Callable[[], Awaitable[Any]]) -> str:
    try:
        await probe()
    except Exception as exc:  # any failure means not ready; the name says which
        return f"error: {type(exc).__name__}"
    return "ok"


async def readyz(request: HttpRequest) -> JsonResponse:
    """The database and the cache answer; 503 with the failing parts otherwise."""

    async def cache_probe() -> None:
        await cache.aset("vmx:readyz", "1", timeout=5)
        if await cache.aget("vmx:readyz") != "1":
            raise InvalidRequestError("value not stored")

    checks = {"database": await _check(sync_to_async(_database_ping)), "cache": await _check(cache_probe)}
    ready = all(value == "ok" for value in checks.values())
    return JsonResponse({"status": "ok" if ready else "unavailable", "checks": checks}, status=200 if ready else 503)
