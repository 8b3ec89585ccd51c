"""HTTP views. The `/v1/` views are thin: authenticate, check, hand over to an endpoint service.

`GatewayAPIView` is a small async APIView in the spirit of Django REST framework's: every policy
is an overridable `get_…()` hook, errors are `GatewayError`s carrying their status, and one
exception handler per response shape renders them. It deliberately does no content negotiation:
`/v1/` views ignore `Accept` and never answer 406 (Codex sends `Accept: text/event-stream`).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import ipaddress
import logging
import secrets
from collections.abc import Awaitable, Callable
from typing import Any, ClassVar, cast

import orjson
from asgiref.sync import sync_to_async
from django.conf import settings
from django.core.cache import cache
from django.core.exceptions import RequestDataTooBig
from django.db import connection
from django.http import HttpRequest, HttpResponse, HttpResponseBase, JsonResponse, StreamingHttpResponse
from django.shortcuts import render
from django.views import View, defaults
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_safe

import vmx_project
from connections.entities import ApiKeyInfo, ConfigSnapshot
from connections.selectors import aconfig_snapshot, config_snapshot_age
from gateway.addresses import client_address
from gateway.audit import AuditEntry
from gateway.auth import authenticate, authentication_failed
from gateway.capacity.gate import CapacityGate, LegCapacity, capacity_gate_open
from gateway.converters.responses_to_anthropic import anthropic_error_type
from gateway.errors import (
    AuthenticationError,
    GatewayError,
    MethodNotAllowedError,
    NotFoundError,
    RequestTooLargeError,
    UpstreamStatusError,
    UpstreamStreamError,
)
from gateway.metrics import CONTENT_TYPE as METRICS_CONTENT_TYPE
from gateway.metrics import metrics_text
from gateway.services.envelope import Envelope, envelope_extract, request_body_parse
from gateway.services.messages import MESSAGES, count_tokens
from gateway.services.passthrough import CHAT_COMPLETIONS, RESPONSES, GatewayResult, PassthroughEndpoint
from gateway.services.routing import Route, leg_timeout, route_resolve
from gateway.services.shutdown import shutdown_error, shutdown_forced
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


def anthropic_status_and_type(error: GatewayError) -> tuple[int, str]:
    """The HTTP status and Anthropic error type a `/v1/messages` client gets (spec 4.1, 4.2)."""
    if isinstance(error, UpstreamStatusError):
        return anthropic_error_type(status=error.upstream_status, code=error.code)
    if isinstance(error, UpstreamStreamError) and error.code:
        return anthropic_error_type(code=error.code)
    return error.status_code, error.anthropic_type


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
    audit_endpoint: ClassVar[str | None] = None
    """The audit's endpoint name for requests of this view; None for views that are not audited."""

    @classmethod
    def as_view(cls, **initkwargs: Any) -> Callable[..., Any]:
        # API clients authenticate with keys, never cookies: CSRF does not apply (as in DRF).
        return csrf_exempt(super().as_view(**initkwargs))

    def get_exception_handler(self) -> Callable[..., HttpResponse]:
        return type(self).exception_handler

    def get_max_body_bytes(self) -> int:
        return int(settings.VMX_MAX_BODY_BYTES)

    def get_audit_outcome(self, error: GatewayError) -> tuple[int, str]:
        """The status and error type the client gets for `error`, as the audit records them."""
        return error.status_code, error.code or error.openai_type

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
        except asyncio.CancelledError:
            if not shutdown_forced():
                raise  # the client left: nobody to answer
            response = self.get_exception_handler()(shutdown_error(), request_id=request_id)
        except Exception:
            logger.exception("unexpected error in %s (request %s)", request.path, request_id)
            internal = GatewayError("The gateway failed to process the request; see its log.", code="internal_error")
            response = self.get_exception_handler()(internal, request_id=request_id)
        response["x-vmx-request-id"] = request_id
        return response

    async def authenticate(self, request: HttpRequest) -> tuple[ConfigSnapshot, ApiKeyInfo]:
        checked = getattr(request, "vmx_auth", None)  # the edge checked the key before the body
        if checked is not None:
            return cast(tuple[ConfigSnapshot, ApiKeyInfo], checked)
        try:
            return await authenticate(request.headers)
        except AuthenticationError as exc:
            authentication_failed(source_ip=request.META.get("REMOTE_ADDR"), path=request.path, error=exc)
            raise

    def audit_entry(self, request: HttpRequest, *, snapshot: ConfigSnapshot, api_key: ApiKeyInfo) -> AuditEntry:
        assert self.audit_endpoint is not None
        return AuditEntry(
            request_id=self.request_id,
            endpoint=self.audit_endpoint,
            api_key=api_key.name,
            source_ip=self.get_client_address(request),
            prices=snapshot.prices,
        )

    def get_client_address(self, request: HttpRequest) -> str | None:
        return client_address(
            peer=request.META.get("REMOTE_ADDR") or None, forwarded_for=request.META.get("HTTP_X_FORWARDED_FOR")
        )

    def get_capacity_gate(
        self,
        *,
        snapshot: ConfigSnapshot,
        api_key: ApiKeyInfo,
        route: Route,
        body: dict[str, Any],
        envelope: Envelope,
        audit: AuditEntry,
    ) -> CapacityGate | None:
        """The request's limits (DESIGN.md 2.10); None, at the cost of three lookups, when it has none."""
        resource = snapshot.resources.get(route.resource)
        resource_limits = resource.capacity if resource is not None else ()
        if not api_key.capacity and not resource_limits and not snapshot.connection_capacity:
            return None
        legs = [
            LegCapacity(
                connection=leg.connection.name,
                model=leg.entry.model,
                limits=snapshot.connection_capacity.get(leg.connection.name, ()),
                longest_seconds=leg_timeout(leg=leg, envelope=envelope) * (leg.entry.max_retries + 1),
            )
            for leg in route.legs
        ]
        return capacity_gate_open(
            api_key=api_key.name,
            api_key_limits=api_key.capacity,
            resource=resource.name if resource is not None else None,
            resource_limits=resource_limits,
            legs=legs,
            body=body,
            source_ip=audit.source_ip,
            metadata=envelope.metadata,
            prices=snapshot.prices,
            fail_closed=settings.VMX_CAPACITY_FAIL_CLOSED,
            plan_key=(snapshot.revision, api_key.name, route.resource),
        )

    def envelope_and_route(
        self,
        request: HttpRequest,
        snapshot: ConfigSnapshot,
        api_key: ApiKeyInfo,
        audit: AuditEntry,
        *,
        required: tuple[str, ...] = (),
        capacity: bool = True,
    ) -> tuple[dict[str, Any], Envelope, Route]:
        """The checks after authentication, in DESIGN.md 2.4's order: size, body, resource, scope;
        then the request's limits, which the route checks before its first leg (2.10).
        The audit entry learns what is known as soon as it is known, so a rejection is audited too."""
        self.check_body_size(request)
        body = request_body_parse(self.read_body(request), required=required)
        audit.resource = str(body["model"])[:300]
        envelope = envelope_extract(body, request.headers)
        audit.correlation_id, audit.metadata = envelope.correlation_id, envelope.metadata
        if settings.VMX_AUDIT_BODIES:
            audit.request_body = body
        route = route_resolve(snapshot=snapshot, api_key=api_key, model=body["model"])
        gate = (
            self.get_capacity_gate(
                snapshot=snapshot, api_key=api_key, route=route, body=body, envelope=envelope, audit=audit
            )
            if capacity
            else None
        )
        if gate is not None:
            route = dataclasses.replace(route, capacity=gate)
            audit.on_finish = gate.settle
        return body, envelope, route

    async def audited(self, audit: AuditEntry, call: Awaitable[HttpResponseBase]) -> HttpResponseBase:
        """Await `call`; whatever ends it early (a rejection, an upstream failure, the client
        leaving before a non-stream answer, shutdown) is recorded in `audit` (DESIGN.md 2.13)."""
        try:
            return await call
        except GatewayError as error:
            status, error_type = self.get_audit_outcome(error)
            audit.finish(status_code=status, error_type=error_type, error_message=error.message)
            error.headers.setdefault("x-vmx-attempts", str(len(audit.attempts)))
            if audit.correlation_id:
                error.headers.setdefault("x-vmx-correlation-id", audit.correlation_id)
            raise
        except Exception as exc:  # a bug: the client gets a 500 (dispatch), the audit says so
            audit.finish(status_code=500, error_type="internal_error", error_message=type(exc).__name__)
            raise
        except asyncio.CancelledError:
            if shutdown_forced():
                audit.finish_error(shutdown_error())
            else:
                audit.finish(
                    status_code=499,
                    error_type="client_disconnected",
                    error_message="the client closed the connection before the answer",
                )
            raise

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
        audit = self.audit_entry(request, snapshot=snapshot, api_key=api_key)
        return await self.audited(audit, self._serve(request, snapshot, api_key, audit))

    async def _serve(
        self, request: HttpRequest, snapshot: ConfigSnapshot, api_key: ApiKeyInfo, audit: AuditEntry
    ) -> HttpResponseBase:
        body, envelope, route = self.envelope_and_route(request, snapshot, api_key, audit)
        audit.resource, audit.resource_known = route.resource, True
        headers = {"x-vmx-correlation-id": envelope.correlation_id} if envelope.correlation_id else {}
        result = await self.get_endpoint().serve(
            route=route, body=body, envelope=envelope, audit=audit, headers=headers
        )
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
    audit_endpoint = CHAT_COMPLETIONS.name


class ResponsesView(PassthroughView):
    endpoint = RESPONSES
    audit_endpoint = RESPONSES.name


class AnthropicAPIView(GatewayAPIView):
    exception_handler = staticmethod(anthropic_exception_handler)

    def get_audit_outcome(self, error: GatewayError) -> tuple[int, str]:
        status, kind = anthropic_status_and_type(error)  # what the client gets is what is audited
        return status, error.code or kind


class MessagesView(AnthropicAPIView):
    """`POST /v1/messages` (also `?beta=true`; any `anthropic-version` / `anthropic-beta`)."""

    audit_endpoint = MESSAGES.name

    async def post(self, request: HttpRequest) -> HttpResponseBase:
        snapshot, api_key = await self.authenticate(request)
        audit = self.audit_entry(request, snapshot=snapshot, api_key=api_key)
        return await self.audited(audit, self._serve(request, snapshot, api_key, audit))

    async def _serve(
        self, request: HttpRequest, snapshot: ConfigSnapshot, api_key: ApiKeyInfo, audit: AuditEntry
    ) -> HttpResponseBase:
        body, envelope, route = self.envelope_and_route(
            request, snapshot, api_key, audit, required=("max_tokens", "messages")
        )
        audit.resource, audit.resource_known = route.resource, True
        headers = {"x-vmx-correlation-id": envelope.correlation_id} if envelope.correlation_id else {}
        try:
            result = await MESSAGES.serve(
                route=route, body=body, envelope=envelope, audit=audit, headers=headers, request_id=self.request_id
            )
        except GatewayError as error:
            error.headers.update(headers)
            raise
        return result_response(result)


class CountTokensView(AnthropicAPIView):
    """`POST /v1/messages/count_tokens`: the upstream's count, else an estimate (DESIGN.md 2.4)."""

    async def post(self, request: HttpRequest) -> HttpResponseBase:
        snapshot, api_key = await self.authenticate(request)
        scratch = AuditEntry(request_id=self.request_id, endpoint="messages")  # not a model call: not audited
        body, envelope, route = self.envelope_and_route(
            request, snapshot, api_key, scratch, required=("messages",), capacity=False
        )
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


MANAGEMENT_API_PREFIX = "/api/"


def page_not_found(request: HttpRequest, exception: Exception | None = None) -> HttpResponseBase:
    """Django's 404 handler: the admin's own page under /admin/, DRF's shape under /api/ (the
    management API), and JSON in OpenAI's shape for anything else an API client could have meant
    (`/V1/...`, `//v1/...`, a typo) (DESIGN.md 2.11, 2.13)."""
    if request.path.startswith("/admin/"):
        return defaults.page_not_found(request, exception)
    if request.path.startswith(MANAGEMENT_API_PREFIX):
        return JsonResponse({"detail": f"Unknown URL: {request.method} {request.path}"}, status=404)
    error = NotFoundError(f"Unknown request URL: {request.method} {request.path}.", code="unknown_url")
    return openai_exception_handler(error, request_id=request_id_new())


def server_error(request: HttpRequest) -> HttpResponseBase:
    """Django's 500 handler: JSON outside the admin (the error itself is in the log, not here)."""
    if request.path.startswith("/admin/"):
        return defaults.server_error(request)
    message = "The gateway failed to process the request; see its log."
    if request.path.startswith(MANAGEMENT_API_PREFIX):
        return JsonResponse({"detail": message}, status=500)
    error = GatewayError(message, code="internal_error")
    return openai_exception_handler(error, request_id=request_id_new())


@csrf_exempt  # nothing to protect, and a POST here should get a 405, not the CSRF failure page
@require_safe
def landing_page(request: HttpRequest) -> HttpResponse:
    """`/`: what this server is, for a person who opened it in a browser."""
    context = {"version": vmx_project.__version__, "base_url": request.build_absolute_uri("/").rstrip("/")}
    return render(request, "landing.html", context)


# ------------------------------------------------------------------------------------------------
# Health


async def healthz(request: HttpRequest) -> JsonResponse:
    """The process is alive. Touches nothing, so a database outage never restarts workers."""
    return JsonResponse({"status": "ok"})


async def metrics_view(request: HttpRequest) -> HttpResponse:
    """`GET /metrics` (DESIGN.md 2.12): Prometheus text, summed over this instance's workers. For
    loopback clients, or anyone with `Authorization: Bearer $VMX_METRICS_TOKEN` when that is set."""
    if not metrics_allowed(request):
        return HttpResponse(
            "Forbidden: /metrics answers loopback clients, or a bearer token when VMX_METRICS_TOKEN is set.\n",
            status=403,
            content_type="text/plain; charset=utf-8",
        )
    # The workers' files are read from disk: off the event loop.
    body = await sync_to_async(metrics_text, thread_sensitive=False)()
    return HttpResponse(body, content_type=METRICS_CONTENT_TYPE)


def metrics_allowed(request: HttpRequest) -> bool:
    token = settings.VMX_METRICS_TOKEN
    if token:
        scheme, _, presented = request.headers.get("authorization", "").partition(" ")
        if scheme.lower() == "bearer" and secrets.compare_digest(presented.strip().encode(), token.encode()):
            return True
    try:
        return ipaddress.ip_address(request.META.get("REMOTE_ADDR") or "").is_loopback
    except ValueError:
        return False


READY_MAX_CONFIG_AGE = 30.0
"""A worker whose configuration was last read longer ago than this cannot vouch for it."""
PROBE_TIMEOUT = 2.0


def _database_ping() -> None:
    with connection.cursor() as cursor:
        cursor.execute("SELECT 1")


async def _state(probe: Callable[[], Awaitable[Any]]) -> str:
    try:
        await asyncio.wait_for(probe(), PROBE_TIMEOUT)
    except Exception:  # any failure or a hang: that dependency is down right now
        return "down"
    return "ok"


async def readyz(request: HttpRequest) -> JsonResponse:
    """200 while this worker can serve: its configuration is loaded and was read within the last
    30 s (DESIGN.md 2.13). A blink of the database or cache does not pull a serving instance out of
    the load balancer; the body says how each dependency answers right now."""

    async def cache_probe() -> None:
        await cache.aset("vmx:readyz", "1", timeout=5)
        await cache.aget("vmx:readyz")

    with contextlib.suppress(Exception):  # outside a server nothing refreshes it in the background
        await aconfig_snapshot()
    age = config_snapshot_age()
    configuration = "ok" if age is not None and age <= READY_MAX_CONFIG_AGE else "down"
    checks = {
        "configuration": configuration,
        "database": await _state(sync_to_async(_database_ping)),
        "cache": await _state(cache_probe),
    }
    ready = configuration == "ok"
    body: dict[str, Any] = {"status": "ok" if ready else "unavailable", "checks": checks}
    if age is not None:
        body["configuration_age_seconds"] = round(age, 1)
    return JsonResponse(body, status=200 if ready else 503)
