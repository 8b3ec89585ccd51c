"""Audit records and the upstream rate limits seen, in the admin: read-only; and the usage
dashboard (DESIGN.md 2.12), drawn from the rollups."""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlencode

from django.contrib import admin
from django.core.exceptions import PermissionDenied
from django.http import HttpRequest, HttpResponse
from django.template.response import TemplateResponse
from django.urls import reverse
from django.utils.html import format_html
from django.utils.safestring import SafeString, mark_safe

from gateway.charts import Layer, bars_svg, lines_svg
from gateway.dashboard import DEFAULT_PERIOD, FILTERS, PERIODS, TOP_BY, Bucket, Dashboard, TopRow, dashboard_read
from gateway.models import AuditRecord, UpstreamRateLimit
from gateway.selectors import USAGE_FIELDS


@admin.register(AuditRecord)
class AuditRecordAdmin(admin.ModelAdmin[AuditRecord]):
    list_display = [
        "created_at",
        "endpoint",
        "stream",
        "resource",
        "api_key",
        "status_code",
        "model",
        "connection",
        "total_tokens",
        "cost_usd",
        "duration_ms",
        "correlation_id",
    ]
    list_filter = ["endpoint", "status_code", "stream", "resource", "api_key", "created_at"]
    search_fields = ["request_id", "correlation_id", "resource", "api_key", "model", "error_message"]
    date_hierarchy = "created_at"
    list_per_page = 100
    show_full_result_count = False  # COUNT(*) over a large audit table is slow
    fieldsets = [
        (
            None,
            {
                "fields": [
                    "request_id",
                    "created_at",
                    "endpoint",
                    "stream",
                    "status_code",
                    "error_type",
                    "error_message",
                ]
            },
        ),
        ("Who", {"fields": ["api_key", "resource", "correlation_id", "metadata_pretty", "source_ip"]}),
        ("Upstream", {"fields": ["connection", "model", "attempts_pretty", "duration_ms", "ttft_ms"]}),
        ("Usage (tokens) and cost (USD)", {"fields": [*USAGE_FIELDS, "cost_usd"]}),
        ("Bodies", {"fields": ["request_body_pretty", "response_body_pretty"], "classes": ["collapse"]}),
    ]

    def get_readonly_fields(self, request: HttpRequest, obj: AuditRecord | None = None) -> Any:
        return [name for _, options in self.fieldsets for name in options["fields"]]

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: AuditRecord | None = None) -> bool:
        return False

    @admin.display(description="Metadata")
    def metadata_pretty(self, obj: AuditRecord) -> str:
        return _pretty(obj.metadata)

    @admin.display(description="Attempts")
    def attempts_pretty(self, obj: AuditRecord) -> str:
        return _pretty(obj.attempts)

    @admin.display(description="Request body")
    def request_body_pretty(self, obj: AuditRecord) -> str:
        return _pretty(obj.request_body) if obj.request_body is not None else "not stored (VMX_AUDIT_BODIES is off)"

    @admin.display(description="Response body")
    def response_body_pretty(self, obj: AuditRecord) -> str:
        return _pretty(obj.response_body) if obj.response_body is not None else "not stored"


@admin.register(UpstreamRateLimit)
class UpstreamRateLimitAdmin(admin.ModelAdmin[UpstreamRateLimit]):
    """The last `x-ratelimit-*` headers each connection x model sent (DESIGN.md 2.10), saved by the
    workers every few seconds. Deleting a row only forgets what was seen."""

    list_display = [
        "connection",
        "model",
        "requests_left",
        "reset_requests",
        "tokens_left",
        "reset_tokens",
        "exhausted_until",
        "seen_at",
    ]
    list_filter = ["connection"]
    search_fields = ["connection", "model"]
    ordering = ["connection", "model"]

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: UpstreamRateLimit | None = None) -> bool:
        return False

    @admin.display(description="Requests left")
    def requests_left(self, obj: UpstreamRateLimit) -> str:
        return _of(obj.remaining_requests, obj.limit_requests)

    @admin.display(description="Tokens left")
    def tokens_left(self, obj: UpstreamRateLimit) -> str:
        return _of(obj.remaining_tokens, obj.limit_tokens)


def _of(remaining: int | None, limit: int | None) -> str:
    if remaining is None:
        return "-"
    return f"{remaining:,} of {limit:,}" if limit is not None else f"{remaining:,}"


def _pretty(value: Any) -> str:
    return format_html("<pre>{}</pre>", json.dumps(value, indent=2, ensure_ascii=False))


# The dashboard -----------------------------------------------------------------------------------

FILTER_LABELS = {"resource": "Resource", "api_key": "API key", "connection": "Connection", "model": "Model"}
TOP_LABELS = {"resource": "Resources", "api_key": "API keys", "model": "Models"}


@dataclass(frozen=True, slots=True)
class Chart:
    title: str
    svg: SafeString
    legend: list[tuple[str, str]]
    """(name, css) per layer."""


def dashboard_view(request: HttpRequest) -> HttpResponse:
    """`/admin/dashboard/`: staff only (the admin's own login), and only those who may read the
    audit, whose records every figure links to."""
    if not request.user.has_perm("gateway.view_auditrecord"):
        raise PermissionDenied
    period = PERIODS.get(request.GET.get("period", ""), PERIODS[DEFAULT_PERIOD])
    filters = {name: request.GET.get(name, "")[:300] for name in FILTERS}
    dashboard = dashboard_read(period=period, filters=filters)
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
