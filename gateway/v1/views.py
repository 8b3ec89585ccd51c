"""The `/v1/` views: thin. Authenticate, check the request, hand it to an endpoint service.

`GatewayAPIView` is a small async APIView in the spirit of Django REST framework's: every policy
is an overridable `get_…()` hook, errors are `GatewayError`s carrying their status, and one
renderer per response shape (`gateway.v1.renderers`) answers them. It deliberately does no content
negotiation: `/v1/` views ignore `Accept` and never answer 406 (Codex sends
`Accept: text/event-stream`). Why not DRF itself: docs/architecture.md.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Any, ClassVar, cast

from django.conf import settings
from django.core.exceptions import RequestDataTooBig
from django.http import HttpRequest, HttpResponse, HttpResponseBase, JsonResponse, StreamingHttpResponse
from django.views import View
from django.views.decorators.csrf import csrf_exempt

from connections.entities import ApiKeyInfo, EnvironmentSnapshot
from gateway.audit.entry import AuditEntry
from gateway.core.errors import (
    AuthenticationError,
    GatewayError,
    MethodNotAllowedError,
    NotFoundError,
    RequestTooLargeError,
    UpgradeRequiredError,
    anthropic_status_and_type,
)
from gateway.core.sse import SSE_HEADERS
from gateway.services.admission import EndpointRequest, EndpointService
from gateway.services.envelope import envelope_extract, envelope_headers, request_body_parse
from gateway.services.messages import COUNT_TOKENS, MESSAGES
from gateway.services.passthrough import CHAT_COMPLETIONS, RESPONSES
from gateway.services.routing import route_resolve
from gateway.services.shutdown import shutdown_error, shutdown_forced
from gateway.services.upstream import GatewayResult
from gateway.v1.auth import authenticate, authentication_failed, client_address
from gateway.v1.renderers import JSON, anthropic_error_response, openai_error_response, request_id_new

logger = logging.getLogger("vmx.gateway")


class GatewayAPIView(View):
    """Base for `/v1/` views: JSON errors in one shape, request id on every answer."""

    http_method_names = ["get", "post"]
    exception_handler: ClassVar[Callable[..., HttpResponse]] = staticmethod(openai_error_response)
    audit_endpoint: ClassVar[str | None] = None
    """The audit's endpoint name for requests of this view; None for views that are not audited."""
    tenant: tuple[str, str] | None = None
    """The workspace and environment segments of a tenant path (`/v1/completion/{ws}/{env}/…`)."""
    environment_label: str | None = None
    """`workspace/environment` of a recognised key: every answer to it says so."""
    envelope_read = False
    """The request's envelope was read (`request_check`): the audit has its correlation id and
    metadata. A rejection before that is audited with what the `x-vmx-*` headers said."""

    @classmethod
    def as_view(cls, **initkwargs: Any) -> Callable[..., Any]:
        # API clients authenticate with keys, never cookies: CSRF does not apply (as in DRF).
        return csrf_exempt(super().as_view(**initkwargs))

    def get_exception_handler(self) -> Callable[..., HttpResponse]:
        return type(self).exception_handler

    @classmethod
    def get_websocket_error(cls, path: str) -> GatewayError:
        """The answer to a WebSocket handshake on this view's path, as an HTTP request asking to
        upgrade or as the server's `websocket` connection (`gateway.asgi.handler`): 426."""
        return UpgradeRequiredError(path)

    def get_max_body_bytes(self) -> int:
        return int(settings.VMX_MAX_BODY_BYTES)

    def get_audit_outcome(self, error: GatewayError) -> tuple[int, str]:
        """The status and error type the client gets for `error`, as the audit records them."""
        return error.status_code, error.code or error.openai_type

    async def dispatch(self, request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponseBase:  # type: ignore[override]
        request_id = request_id_new()
        self.request_id = request_id
        if "workspace" in kwargs:
            self.tenant = (kwargs.pop("workspace"), kwargs.pop("environment"))
        try:
            if "websocket" in request.headers.get("upgrade", "").lower():
                raise self.get_websocket_error(request.path)
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
        if self.environment_label is not None:
            response["x-vmx-environment"] = self.environment_label
        return response

    async def authenticate(self, request: HttpRequest) -> tuple[EnvironmentSnapshot, ApiKeyInfo]:
        checked = getattr(request, "vmx_auth", None)  # the edge checked the key before the body
        if checked is None:
            try:
                checked = await authenticate(request.headers, tenant=self.tenant)
            except AuthenticationError as exc:
                authentication_failed(source_ip=request.META.get("REMOTE_ADDR"), path=request.path, error=exc)
                raise
        snapshot, api_key = cast(tuple[EnvironmentSnapshot, ApiKeyInfo], checked)
        self.environment_label = snapshot.environment.label
        return snapshot, api_key

    def audit_entry(self, request: HttpRequest, *, snapshot: EnvironmentSnapshot, api_key: ApiKeyInfo) -> AuditEntry:
        assert self.audit_endpoint is not None
        return AuditEntry(
            request_id=self.request_id,
            endpoint=self.audit_endpoint,
            workspace=snapshot.environment.workspace,
            environment=snapshot.environment.name,
            api_key=api_key.name,
            source_ip=self.get_client_address(request),
            prices=snapshot.prices,
        )

    def get_client_address(self, request: HttpRequest) -> str | None:
        return client_address(
            peer=request.META.get("REMOTE_ADDR") or None, forwarded_for=request.META.get("HTTP_X_FORWARDED_FOR")
        )

    def request_check(
        self,
        request: HttpRequest,
        snapshot: EnvironmentSnapshot,
        api_key: ApiKeyInfo,
        audit: AuditEntry,
        *,
        required: tuple[str, ...] = (),
    ) -> EndpointRequest:
        """The checks after authentication, in DESIGN.md 2.4's order: size, body, resource, scope.
        The audit entry learns what is known as soon as it is known, so a rejection is audited too.
        What passes is handed to an endpoint service, which admits it through the limits (2.10)."""
        self.check_body_size(request)
        body = request_body_parse(self.read_body(request), required=required)
        audit.resource = str(body["model"])[:300]
        envelope = envelope_extract(body, request.headers)
        audit.correlation_id, audit.metadata = envelope.correlation_id, envelope.metadata
        self.envelope_read = True
        if settings.VMX_AUDIT_BODIES:
            audit.request_body = body
        route = route_resolve(snapshot=snapshot, api_key=api_key, model=body["model"])
        headers = {"x-vmx-correlation-id": envelope.correlation_id} if envelope.correlation_id else {}
        return EndpointRequest(
            snapshot=snapshot,
            api_key=api_key,
            body=body,
            envelope=envelope,
            route=route,
            audit=audit,
            request_id=self.request_id,
            headers=headers,
        )

    async def audited(self, audit: AuditEntry, call: Awaitable[HttpResponseBase]) -> HttpResponseBase:
        """Await `call`; whatever ends it early (a rejection, an upstream failure, the client
        leaving before a non-stream answer, shutdown) is recorded in `audit` (DESIGN.md 2.13)."""
        try:
            return await call
        except GatewayError as error:
            if not self.envelope_read:  # refused before the envelope: what its headers said
                audit.correlation_id, audit.metadata = envelope_headers(self.request.headers)
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


class EndpointView(GatewayAPIView):
    """A `/v1/` view in front of one endpoint service: every request it serves is audited."""

    service: ClassVar[EndpointService]
    required_fields: ClassVar[tuple[str, ...]] = ()
    """Body fields the endpoint requires besides `model` (a 400 names the first one missing)."""

    def get_service(self) -> EndpointService:
        return self.service

    async def post(self, request: HttpRequest) -> HttpResponseBase:
        snapshot, api_key = await self.authenticate(request)
        audit = self.audit_entry(request, snapshot=snapshot, api_key=api_key)
        return await self.audited(audit, self._serve(request, snapshot, api_key, audit))

    async def _serve(
        self, request: HttpRequest, snapshot: EnvironmentSnapshot, api_key: ApiKeyInfo, audit: AuditEntry
    ) -> HttpResponseBase:
        checked = self.request_check(request, snapshot, api_key, audit, required=self.required_fields)
        audit.resource, audit.resource_known, audit.direct = checked.route.resource, True, checked.route.direct
        return result_response(await self.get_service().serve(checked))


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


class ChatCompletionsView(EndpointView):
    service = CHAT_COMPLETIONS
    audit_endpoint = CHAT_COMPLETIONS.name


class ResponsesView(EndpointView):
    service = RESPONSES
    audit_endpoint = RESPONSES.name


class AnthropicAPIView(GatewayAPIView):
    exception_handler = staticmethod(anthropic_error_response)

    def get_audit_outcome(self, error: GatewayError) -> tuple[int, str]:
        status, kind = anthropic_status_and_type(error)  # what the client gets is what is audited
        return status, error.code or kind


class MessagesView(EndpointView, AnthropicAPIView):
    """`POST /v1/messages` (also `?beta=true`; any `anthropic-version` / `anthropic-beta`)."""

    service = MESSAGES
    audit_endpoint = MESSAGES.name
    required_fields = ("max_tokens", "messages")


class CountTokensView(EndpointView, AnthropicAPIView):
    """`POST /v1/messages/count_tokens`: the upstream's count, else an estimate (DESIGN.md 2.4)."""

    service = COUNT_TOKENS
    audit_endpoint = COUNT_TOKENS.name
    required_fields = ("messages",)


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

    @classmethod
    def get_websocket_error(cls, path: str) -> GatewayError:
        return NotFoundError(f"Unknown request URL: GET {path}.", code="unknown_url")

    get = post = _not_found
