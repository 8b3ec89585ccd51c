"""Admin hardening: the Content-Security-Policy header and django-axes' hooks (settings.py).

The header comes from a few lines here rather than the django-csp package: the policy is fixed
(the admin needs no inline script or style, so no nonces), and Django 6.0 ships the same thing.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from asgiref.sync import iscoroutinefunction
from axes.helpers import get_cool_off
from django.conf import settings
from django.contrib import admin
from django.http import HttpRequest, HttpResponse, HttpResponseBase
from django.shortcuts import render
from django.utils.decorators import sync_and_async_middleware

from gateway.core.errors import InvalidRequestError
from gateway.v1.renderers import error_response

CSP_HEADER = "Content-Security-Policy"

SyncGetResponse = Callable[[HttpRequest], HttpResponseBase]
AsyncGetResponse = Callable[[HttpRequest], Awaitable[HttpResponseBase]]


def csp_header_value(policy: dict[str, list[str]]) -> str:
    return "; ".join(" ".join([directive, *sources]) for directive, sources in policy.items())


@sync_and_async_middleware
def content_security_policy(get_response: Any) -> Any:
    """Add settings.SECURE_CSP to every response that has no policy of its own.

    Both flavours, so the admin's async request path (ASGI) keeps running without a thread hop.
    """
    value = csp_header_value(settings.SECURE_CSP)

    if iscoroutinefunction(get_response):
        async_get_response: AsyncGetResponse = get_response

        async def async_middleware(request: HttpRequest) -> HttpResponseBase:
            response = await async_get_response(request)
            response.setdefault(CSP_HEADER, value)
            return response

        return async_middleware

    sync_get_response: SyncGetResponse = get_response

    def middleware(request: HttpRequest) -> HttpResponseBase:
        response = sync_get_response(request)
        response.setdefault(CSP_HEADER, value)
        return response

    return middleware


@sync_and_async_middleware
def query_nul_refused(get_response: Any) -> Any:
    """Answer 400 to a query string holding a NUL character, before any view runs.

    PostgreSQL refuses NUL in any text, so an admin list or API filter on such a value was a 500;
    no stored value holds one (the audit writer and the services clean them out), so it could
    never match anything. The answer takes the path's shape (gateway.v1.renderers): DRF's under
    the API, plain text in the admin.
    """

    def refused(request: HttpRequest) -> HttpResponseBase | None:
        if not any("\x00" in key or "\x00" in value for key, values in request.GET.lists() for value in values):
            return None
        error = InvalidRequestError("Query parameters cannot contain NUL characters.")
        return error_response(error, path=request.path)

    if iscoroutinefunction(get_response):
        async_get_response: AsyncGetResponse = get_response

        async def async_middleware(request: HttpRequest) -> HttpResponseBase:
            return refused(request) or await async_get_response(request)

        return async_middleware

    sync_get_response: SyncGetResponse = get_response

    def middleware(request: HttpRequest) -> HttpResponseBase:
        return refused(request) or sync_get_response(request)

    return middleware


def client_address(request: HttpRequest) -> str | None:
    """The address django-axes counts failures against: the gateway's one client-address rule
    (`VMX_TRUSTED_PROXIES`, gateway/core/addresses.py)."""
    from django.conf import settings

    from gateway.core.addresses import forwarded_client_address

    return forwarded_client_address(
        peer=request.META.get("REMOTE_ADDR"),
        forwarded_for=request.META.get("HTTP_X_FORWARDED_FOR"),
        trusted_proxies=settings.VMX_TRUSTED_PROXIES,
    )


def lockout_response(request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
    """The page a locked-out login gets instead of the login form: an admin page saying why.

    django-axes passes (request, original_response, credentials) from its sync path but
    (request, credentials) from its async one, so the rest is accepted and not used.
    """
    cool_off = get_cool_off(request)
    minutes = round(cool_off.total_seconds() / 60) if cool_off else None
    context = {
        **admin.site.each_context(request),
        "title": "Too many failed logins",
        "failure_limit": settings.AXES_FAILURE_LIMIT,
        "cool_off_minutes": minutes,
    }
    return render(request, "admin/login_locked_out.html", context, status=429)
