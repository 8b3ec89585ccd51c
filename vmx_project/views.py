"""The project's own pages: the landing page, and Django's 404 and 500 handlers, which answer in
the shape the path calls for (`gateway.v1.renderers.error_shape`) and never as an HTML page
outside the admin."""

from __future__ import annotations

from django.http import HttpRequest, HttpResponse, HttpResponseBase
from django.shortcuts import render
from django.views import defaults
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_safe

import vmx_project
from gateway.core.errors import GatewayError, NotFoundError
from gateway.v1.renderers import ErrorShape, error_response, error_shape


def page_not_found(request: HttpRequest, exception: Exception | None = None) -> HttpResponseBase:
    """The admin's own page under /admin/, DRF's shape under /api/ (the management API), and
    JSON in OpenAI's shape for anything else an API client could have meant (`/V1/...`,
    `//v1/...`, a typo) (DESIGN.md 2.11, 2.13)."""
    if error_shape(request.path) is ErrorShape.ADMIN:
        return defaults.page_not_found(request, exception)
    if error_shape(request.path) is ErrorShape.MANAGEMENT:
        message = f"Unknown URL: {request.method} {request.path}"
    else:
        message = f"Unknown request URL: {request.method} {request.path}."
    return error_response(NotFoundError(message, code="unknown_url"), path=request.path)


def server_error(request: HttpRequest) -> HttpResponseBase:
    """JSON outside the admin (the error itself is in the log, not here)."""
    if error_shape(request.path) is ErrorShape.ADMIN:
        return defaults.server_error(request)
    error = GatewayError("The gateway failed to process the request; see its log.", code="internal_error")
    return error_response(error, path=request.path)


@csrf_exempt  # nothing to protect, and a POST here should get a 405, not the CSRF failure page
@require_safe
def landing_page(request: HttpRequest) -> HttpResponse:
    """`/`: what this server is, for a person who opened it in a browser."""
    context = {"version": vmx_project.__version__, "base_url": request.build_absolute_uri("/").rstrip("/")}
    return render(request, "landing.html", context)
