"""Audit records and the upstream rate limits seen, in the admin: read-only. (The usage
dashboard, linked from the admin's index, is `gateway.observability.views.dashboard_view`.)"""

from __future__ import annotations

import json
from typing import Any

from django.contrib import admin
from django.db.models import QuerySet
from django.http import HttpRequest
from django.utils.html import format_html

from gateway.audit.rollups import UNKNOWN_RESOURCE
from gateway.audit.selectors import USAGE_FIELDS
from gateway.capacity.learned import upstream_limit_clear
from gateway.models import AuditRecord, UpstreamRateLimit


class ConfiguredNameFilter(admin.SimpleListFilter):
    """A filter whose choices are the configured objects' names, never a DISTINCT over the audit
    table (millions of rows, and names a client invented). Any value in the URL still filters
    exactly, so the dashboard's links work for names no longer configured."""

    model_label = ""

    def get_names(self) -> list[str]:
        from django.apps import apps

        model = apps.get_model(self.model_label)
        return list(model._default_manager.order_by("name").values_list("name", flat=True)[:200])

    def lookups(self, request: HttpRequest, model_admin: Any) -> list[tuple[str, str]]:
        return [(name, name) for name in self.get_names()]

    def queryset(self, request: HttpRequest, queryset: QuerySet[AuditRecord]) -> QuerySet[AuditRecord]:
        value = self.value()
        return queryset if value is None else queryset.filter(**{str(self.parameter_name): value})


class ResourceFilter(ConfiguredNameFilter):
    title = "resource"
    parameter_name = "resource"
    model_label = "connections.AIResource"

    def lookups(self, request: HttpRequest, model_admin: Any) -> list[tuple[str, str]]:
        return [*super().lookups(request, model_admin), (UNKNOWN_RESOURCE, "(unknown names)")]

    def queryset(self, request: HttpRequest, queryset: QuerySet[AuditRecord]) -> QuerySet[AuditRecord]:
        if self.value() == UNKNOWN_RESOURCE:  # what the rollups and the dashboard count as `(unknown)`
            return queryset.filter(resource_known=False)
        return super().queryset(request, queryset)


class ApiKeyFilter(ConfiguredNameFilter):
    title = "API key"
    parameter_name = "api_key"
    model_label = "connections.APIKey"


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
    # Fixed choices only: no filter reads the distinct values of the audit table.
    list_filter = ["endpoint", "stream", ResourceFilter, ApiKeyFilter, "created_at"]
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
    workers every few seconds. Deleting a row only forgets what was seen; the action clears the
    mark itself, so requests go to that connection x model again on every worker."""

    actions = ["clear_learned_marks"]

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

    @admin.action(description="Clear the learned mark (send requests to it again)", permissions=["delete"])
    def clear_learned_marks(self, request: HttpRequest, queryset: QuerySet[UpstreamRateLimit]) -> None:
        rows = list(queryset.values_list("connection", "model"))
        for connection, model in rows:
            upstream_limit_clear(connection=connection, model=model)
        self.message_user(request, f"Cleared {len(rows)} learned upstream limit(s).")

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
