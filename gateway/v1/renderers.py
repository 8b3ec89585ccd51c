"""Error answers: one renderer per response shape, and the one rule that picks a shape for a path.

The shapes (DESIGN.md 2.8, 2.11): OpenAI's error object for the client endpoints and anything an
API client could have meant (`/V1/...`, a typo); Anthropic's on `/v1/messages`; Django REST
framework's `{"detail": ...}` under `/api/`; plain text under `/admin/`, whose own pages Django
renders where it has one (404, 500). A `/v1/` view knows its shape and renders it itself; the
rule serves wherever no view has run yet: the edge (413, 408), the middleware, the 404 and 500
handlers.

Invariant: every answer names its request id (`x-vmx-request-id`) where it has one, and messages
never carry secrets (the error tree's messages never do).
"""

from __future__ import annotations

import secrets
from enum import StrEnum

from django.http import HttpResponse, JsonResponse

from gateway.core.errors import GatewayError, anthropic_status_and_type

JSON = "application/json"
MANAGEMENT_API_PREFIX = "/api/"
ADMIN_PREFIX = "/admin/"
ANTHROPIC_PREFIX = "/v1/messages"


class ErrorShape(StrEnum):
    OPENAI = "openai"
    ANTHROPIC = "anthropic"
    MANAGEMENT = "management"
    """Django REST framework's, as the rest of the management API answers."""
    ADMIN = "admin"


def error_shape(path: str) -> ErrorShape:
    """The shape of an error answered on `path` when no view has chosen one."""
    if path.startswith(ADMIN_PREFIX):
        return ErrorShape.ADMIN
    if path.startswith(MANAGEMENT_API_PREFIX):
        return ErrorShape.MANAGEMENT
    if path.startswith(ANTHROPIC_PREFIX):
        return ErrorShape.ANTHROPIC
    return ErrorShape.OPENAI


def request_id_new() -> str:
    return "req_" + secrets.token_hex(12)


def openai_error_response(error: GatewayError, *, request_id: str) -> HttpResponse:
    response = HttpResponse(error.openai_body(), status=error.status_code, content_type=JSON)
    for name, value in error.headers.items():
        response[name] = value
    response["x-vmx-request-id"] = request_id
    return response


def anthropic_error_response(error: GatewayError, *, request_id: str) -> HttpResponse:
    """Anthropic's error shape and status/type pairs (spec 4.1, 4.2)."""
    status, _ = anthropic_status_and_type(error)
    response = HttpResponse(error.anthropic_body(request_id), status=status, content_type=JSON)
    for name, value in error.anthropic_headers().items():
        response[name] = value
    response["request-id"] = request_id
    response["x-vmx-request-id"] = request_id
    return response


def management_error_response(error: GatewayError) -> HttpResponse:
    return JsonResponse({"detail": error.message}, status=error.status_code)


def admin_error_response(error: GatewayError) -> HttpResponse:
    return HttpResponse(error.message, status=error.status_code, content_type="text/plain; charset=utf-8")


def error_response(error: GatewayError, *, path: str, request_id: str | None = None) -> HttpResponse:
    """`error` in the shape `path` calls for (`error_shape`)."""
    shape = error_shape(path)
    if shape is ErrorShape.ADMIN:
        return admin_error_response(error)
    if shape is ErrorShape.MANAGEMENT:
        return management_error_response(error)
    request_id = request_id or request_id_new()
    if shape is ErrorShape.ANTHROPIC:
        return anthropic_error_response(error, request_id=request_id)
    return openai_error_response(error, request_id=request_id)
