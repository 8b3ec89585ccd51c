"""The observability pages (DESIGN.md 2.12): `/metrics` in Prometheus text, and the usage
dashboard at `/admin/dashboard/`, drawn from the rollups (`dashboard.py`) as server-rendered SVG
(`charts.py`).

Invariants: `/metrics` answers loopback clients, or a bearer token when `VMX_METRICS_TOKEN` is
set; the dashboard answers staff who may read the audit somewhere, since every figure links to its
records, and totals only the environments where they may (DESIGN.md 2.15: superusers see all).
"""

from __future__ import annotations

import ipaddress
import math
import secrets
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlencode

from asgiref.sync import sync_to_async
from django.conf import settings
from django.contrib import admin
from django.core.exceptions import PermissionDenied
from django.http import HttpRequest, HttpResponse
from django.template.response import TemplateResponse
from django.urls import reverse
from django.utils.safestring import SafeString, mark_safe

from connections.tenancy import environments_permitted, records_permitted
from gateway.core.addresses import forwarded_client_address
from gateway.observability.charts import Layer, bars_svg, lines_svg
from gateway.observability.dashboard import (
    DEFAULT_PERIOD,
    FILTERS,
    PERIODS,
    TOP_BY,
    Bucket,
    Dashboard,
    TopRow,
    dashboard_read,
)
from gateway.observability.metrics import CONTENT_TYPE as METRICS_CONTENT_TYPE
from gateway.observability.metrics import metrics_text


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
        # The one client-address rule (VMX_TRUSTED_PROXIES): behind a proxy on this host, the
        # client it forwards is judged, not the proxy's loopback address.
        address = forwarded_client_address(
            peer=request.META.get("REMOTE_ADDR"),
            forwarded_for=request.META.get("HTTP_X_FORWARDED_FOR"),
            trusted_proxies=settings.VMX_TRUSTED_PROXIES,
        )
        return ipaddress.ip_address(address or "").is_loopback
    except ValueError:
        return False


FILTER_LABELS = {
    "workspace": "Workspace",
    "environment": "Environment",
    "resource": "Resource",
    "api_key": "API key",
    "connection": "Connection",
    "model": "Model",
}
TOP_LABELS = {"resource": "Resources", "api_key": "API keys", "model": "Models", "environment": "Environments"}
AUDIT_READ = "gateway.view_auditrecord"


@dataclass(frozen=True, slots=True)
class Chart:
    title: str
    svg: SafeString
    legend: list[tuple[str, str]]
    """(name, css) per layer."""


def dashboard_view(request: HttpRequest) -> HttpResponse:
    """`/admin/dashboard/`: staff only (the admin's own login), and only those who may read the
    audit somewhere, whose records every figure links to; the figures count only the environments
    where they may."""
    user = request.user
    if not user.has_perm(AUDIT_READ):
        raise PermissionDenied
    period = PERIODS.get(request.GET.get("period", ""), PERIODS[DEFAULT_PERIOD])
    filters = {name: request.GET.get(name, "")[:300] for name in FILTERS}
    dashboard = dashboard_read(
        period=period,
        filters=filters,
        permitted=lambda rollups: records_permitted(user, rollups, AUDIT_READ),
        environments=list(environments_permitted(user, AUDIT_READ).values_list("workspace__name", "name")),
    )
    audit_url = reverse("admin:gateway_auditrecord_changelist")

    def link(query: dict[str, str]) -> str:
        return f"{audit_url}?{urlencode(query)}"

    total = dashboard.total
    context = {
        **admin.site.each_context(request),
        "title": "Usage dashboard",
        "dashboard": dashboard,
        "periods": [
            (p.key, p.label, "?" + urlencode({"period": p.key, **{k: v for k, v in filters.items() if v}}))
            for p in PERIODS.values()
        ],
        "filter_fields": [
            (name, FILTER_LABELS[name], dashboard.options[name], dashboard.filters[name]) for name in FILTERS
        ],
        "figures": _figures(total),
        "total_link": link(dashboard.audit_filters(start=dashboard.start, end=dashboard.end)),
        "charts": _charts(dashboard, link),
        "tops": [
            (
                TOP_LABELS[dimension],
                _top_rows(dashboard.top_by_requests[dimension], link),
                _top_rows(dashboard.top_by_cost[dimension], link),
            )
            for dimension in TOP_BY
        ],
    }
    return TemplateResponse(request, "admin/dashboard.html", context)


def _figures(total: Bucket) -> list[tuple[str, str, str]]:
    """(label, value, detail) of the period's totals."""
    tokens = {name: _count(value) for name, value in total.tokens.items()}
    priced = "" if total.priced == total.requests else f"known for {total.priced:,} of {total.requests:,} requests"
    return [
        ("Requests", f"{total.requests:,}", ""),
        ("Error rate", _percent(total.error_rate), f"{total.errors:,} errors"),
        ("Input tokens", tokens["input_tokens"], f"{tokens['cached_tokens']} cached"),
        ("Output tokens", tokens["output_tokens"], f"{tokens['reasoning_tokens']} reasoning"),
        ("Cost", _usd(total.cost), priced),
        ("Latency p50 / p95", f"{_ms(total.latency_ms(0.5))} / {_ms(total.latency_ms(0.95))}", ""),
        ("Time to first token p50 / p95", f"{_ms(total.ttft_ms(0.5))} / {_ms(total.ttft_ms(0.95))}", ""),
    ]


def _charts(dashboard: Dashboard, link: Callable[[dict[str, str]], str]) -> list[Chart]:
    buckets = dashboard.buckets
    labels = [dashboard.bucket_label(bucket) for bucket in buckets]
    links = [link(dashboard.audit_filters(start=b.start, end=b.end)) for b in buckets]
    error_links = [link(dashboard.audit_filters(start=b.start, end=b.end, errors=True)) for b in buckets]
    quantiles = [("p50", 0.5), ("p95", 0.95)]

    def chart(title: str, draw: Callable[..., str], layers: list[Layer], text: Any, to: Any) -> Chart:
        svg = draw(title=title, labels=labels, layers=layers, value_text=text, links=to)
        # charts.py escapes every text it places in the markup.
        return Chart(title, mark_safe(svg), [(layer.name, layer.css) for layer in layers])  # noqa: S308

    return [
        chart(
            "Requests",
            bars_svg,
            [
                Layer("succeeded", "ok", [b.requests - b.errors for b in buckets]),
                Layer("failed", "error", [b.errors for b in buckets]),
            ],
            _count,
            links,
        ),
        chart(
            "Error rate",
            lines_svg,
            [Layer("error rate", "error", [b.error_rate for b in buckets])],
            _percent,
            error_links,
        ),
        chart(
            "Tokens",
            lines_svg,
            [
                Layer("input", "input", [b.tokens["input_tokens"] for b in buckets]),
                Layer("cached", "cached", [b.tokens["cached_tokens"] for b in buckets]),
                Layer("output", "output", [b.tokens["output_tokens"] for b in buckets]),
                Layer("reasoning", "reasoning", [b.tokens["reasoning_tokens"] for b in buckets]),
            ],
            _count,
            links,
        ),
        chart("Cost (USD)", bars_svg, [Layer("cost", "cost", [b.cost for b in buckets])], _usd, links),
        *(
            chart(title, lines_svg, [Layer(p, p, [read(b, q) for b in buckets]) for p, q in quantiles], _ms, links)
            for title, read in [("Latency", Bucket.latency_ms), ("Time to first token", Bucket.ttft_ms)]
        ),
    ]


def _top_rows(rows: list[TopRow], link: Callable[[dict[str, str]], str]) -> list[dict[str, Any]]:
    most_requests = max((row.requests for row in rows), default=0) or 1
    most_cost = max((row.cost_usd or 0.0 for row in rows), default=0.0) or 1.0
    return [
        {
            "name": row.name or "(none)",
            "link": link(row.audit_filters),
            "requests": f"{row.requests:,}",
            "errors": f"{row.errors:,}",
            "tokens": _count(row.total_tokens),
            "cost": _usd(row.cost_usd),
            # Bar lengths in percent, drawn as SVG attributes (the CSP allows no inline style).
            "requests_bar": round(100 * row.requests / most_requests, 1),
            "cost_bar": round(100 * (row.cost_usd or 0.0) / most_cost, 1),
        }
        for row in rows
    ]


def _count(value: float) -> str:
    """Three significant digits and a suffix: 999, 1.2k, 35.4M (999,999 is 1M, not 1e+03k)."""
    for size, suffix in ((1e9, "B"), (1e6, "M"), (1e3, "k")):
        if abs(value) >= size * 0.9995:
            return f"{value / size:.3g}{suffix}"
    return f"{value:.3g}" if value % 1 else f"{int(value)}"


def _usd(value: float | None) -> str:
    if value is None:
        return "unknown"
    if value == 0:
        return "$0"
    if abs(value) >= 1:
        return f"${value:,.2f}"
    # Two significant digits, never an exponent: $0.000025, not $2.46e-05.
    return f"${value:.{max(2, 1 - math.floor(math.log10(abs(value))))}f}"


def _ms(value: float | None) -> str:
    if value is None:
        return "-"
    if value < 999.5:
        return f"{value:.0f} ms"
    return f"{value / 1000:.3g} s" if value < 999_500 else f"{value / 1000:,.0f} s"


def _percent(value: float | None) -> str:
    return "-" if value is None else f"{100 * value:.3g} %"
