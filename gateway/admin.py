"""Audit records and the upstream rate limits seen, in the admin: read-only. (The usage
dashboard, linked from the admin's index, is `gateway.observability.views.dashboard_view`.)

Both belong to environments (DESIGN.md 2.15): a user lists the rows of the environments where it
may read them (`connections.tenancy`), and the filters offer those environments only, and only
the names of resources and keys configured there.
"""

from __future__ import annotations

import json
import uuid
from typing import Any

from django.contrib import admin, messages
from django.db.models import QuerySet
from django.http import HttpRequest
from django.utils.html import format_html

from connections.admin.tenancy import EnvironmentListFilter, WorkspaceListFilter
from connections.models import Environment
from connections.tenancy import environments_permitted, grants_get, records_permitted
from gateway.audit.rollups import UNKNOWN_RESOURCE
from gateway.audit.selectors import USAGE_FIELDS
from gateway.capacity.learned import upstream_limit_clear
from gateway.models import AuditRecord, UpstreamRateLimit

AUDIT_VIEW = "gateway.view_auditrecord"
AUDIT_DELETE = "gateway.delete_auditrecord"
LIMITS_VIEW = "gateway.view_upstreamratelimit"
LIMITS_CLEAR = ("gateway.change_upstreamratelimit", "gateway.delete_upstreamratelimit")
"""Clearing a learned mark: an editor's role grants change; the model permission delete did before."""


def _environments(request: HttpRequest, perm: str) -> list[Environment]:
    """The environments where the request's user holds `perm`, read once per request."""
    cache: dict[str, list[Environment]] = request.__dict__.setdefault("_vmx_record_environments", {})
    if perm not in cache:
        cache[perm] = list(environments_permitted(request.user, perm))
    return cache[perm]


def _store_tag(environment: Environment) -> str:
    """What an upstream limit row keeps of its environment (empty for default/default)."""
    return "" if environment.is_default else environment.pk.hex


_labels: dict[str, str] = {}
"""Store tag → `ws/env`. Names are fixed once created, so a label once read stays right."""


def _environment_label(tag: str) -> str:
    if not tag:
        return "default/default"
    if tag not in _labels:
        try:
            environment = Environment.objects.select_related("workspace").filter(pk=uuid.UUID(tag)).first()
        except ValueError:
            environment = None
        if environment is None:
            return "(deleted environment)"
        _labels[tag] = environment.label
    return _labels[tag]


class RecordWorkspaceFilter(WorkspaceListFilter):
    workspace_lookup = "workspace"


class RecordEnvironmentFilter(EnvironmentListFilter):
    workspace_lookup = "workspace"
    environment_lookup = "environment"


class ConfiguredNameFilter(admin.SimpleListFilter):
    """A filter whose choices are the configured objects' names, never a DISTINCT over the audit
    table (millions of rows, and names a client invented). Any value in the URL still filters
    exactly, so the dashboard's links work for names no longer configured."""

    model_label = ""

    def get_names(self, request: HttpRequest) -> list[str]:
        from django.apps import apps

        # Only names of the environments whose records the user reads: no other tenant's.
        model = apps.get_model(self.model_label)
        names = model._default_manager.filter(environment__in=_environments(request, AUDIT_VIEW))
        return list(names.order_by("name").values_list("name", flat=True).distinct()[:200])

    def lookups(self, request: HttpRequest, model_admin: Any) -> list[tuple[str, str]]:
        return [(name, name) for name in self.get_names(request)]

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
        "workspace",
        "environment",
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
    list_filter = [
        RecordWorkspaceFilter,
        RecordEnvironmentFilter,
        "endpoint",
        "stream",
        ResourceFilter,
        ApiKeyFilter,
        "created_at",
    ]
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
        (
            "Who",
            {
                "fields": [
                    *["workspace", "environment", "api_key", "resource"],
                    *["correlation_id", "metadata_pretty", "source_ip"],
                ]
            },
        ),
        ("Upstream", {"fields": ["connection", "model", "attempts_pretty", "duration_ms", "ttft_ms"]}),
        ("Usage (tokens) and cost (USD)", {"fields": [*USAGE_FIELDS, "cost_usd"]}),
        ("Bodies", {"fields": ["request_body_pretty", "response_body_pretty"], "classes": ["collapse"]}),
    ]

    def get_readonly_fields(self, request: HttpRequest, obj: AuditRecord | None = None) -> Any:
        return [name for _, options in self.fieldsets for name in options["fields"]]

    def get_queryset(self, request: HttpRequest) -> QuerySet[AuditRecord]:
        return records_permitted(request.user, super().get_queryset(request), AUDIT_VIEW)

    def environments_listed(self, request: HttpRequest) -> list[Environment]:
        return _environments(request, AUDIT_VIEW)

    def has_delete_permission(self, request: HttpRequest, obj: AuditRecord | None = None) -> bool:
        if obj is None or (grants_get(request.user).superuser and request.user.is_active):
            return super().has_delete_permission(request, obj)
        where = {(e.workspace.name, e.name) for e in _environments(request, AUDIT_DELETE)}
        return (obj.workspace, obj.environment) in where

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
        "environment_label",
        "connection",
        "model",
        "requests_left",
        "reset_requests",
        "tokens_left",
        "reset_tokens",
        "exhausted_until",
        "seen_at",
    ]
    list_filter = ["connection"]  # its choices come from get_queryset: this user's rows only
    search_fields = ["connection", "model"]
    ordering = ["connection", "model"]

    def get_list_filter(self, request: HttpRequest) -> Any:
        return [UpstreamEnvironmentFilter, *self.list_filter]

    def get_fields(self, request: HttpRequest, obj: UpstreamRateLimit | None = None) -> Any:
        fields = super().get_fields(request, obj)
        return ["environment_label", *[name for name in fields if name not in ("environment", "environment_label")]]

    def get_readonly_fields(self, request: HttpRequest, obj: UpstreamRateLimit | None = None) -> Any:
        return ["environment_label", *super().get_readonly_fields(request, obj)]

    def get_queryset(self, request: HttpRequest) -> QuerySet[UpstreamRateLimit]:
        queryset = super().get_queryset(request)
        if grants_get(request.user).superuser and request.user.is_active:
            return queryset
        return queryset.filter(environment__in=[_store_tag(e) for e in _environments(request, LIMITS_VIEW)])

    def environments_listed(self, request: HttpRequest) -> list[Environment]:
        return _environments(request, LIMITS_VIEW)

    def _tags(self, request: HttpRequest, perms: tuple[str, ...]) -> set[str]:
        return {_store_tag(e) for perm in perms for e in _environments(request, perm)}

    def has_delete_permission(self, request: HttpRequest, obj: UpstreamRateLimit | None = None) -> bool:
        if obj is None or (grants_get(request.user).superuser and request.user.is_active):
            return super().has_delete_permission(request, obj)
        return obj.environment in self._tags(request, ("gateway.delete_upstreamratelimit",))

    def has_clear_permission(self, request: HttpRequest) -> bool:
        return any(request.user.has_perm(perm) for perm in LIMITS_CLEAR)

    @admin.display(description="Environment")
    def environment_label(self, obj: UpstreamRateLimit) -> str:
        return _environment_label(obj.environment)

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: UpstreamRateLimit | None = None) -> bool:
        return False

    @admin.action(description="Clear the learned mark (send requests to it again)", permissions=["clear"])
    def clear_learned_marks(self, request: HttpRequest, queryset: QuerySet[UpstreamRateLimit]) -> None:
        if not (grants_get(request.user).superuser and request.user.is_active):
            queryset = queryset.filter(environment__in=self._tags(request, LIMITS_CLEAR))
        rows = list(queryset.values_list("environment", "connection", "model"))
        for environment, connection, model in rows:
            upstream_limit_clear(connection=connection, model=model, environment=environment)
        level = messages.SUCCESS if rows else messages.WARNING
        self.message_user(request, f"Cleared {len(rows)} learned upstream limit(s).", level)

    @admin.display(description="Requests left")
    def requests_left(self, obj: UpstreamRateLimit) -> str:
        return _of(obj.remaining_requests, obj.limit_requests)

    @admin.display(description="Tokens left")
    def tokens_left(self, obj: UpstreamRateLimit) -> str:
        return _of(obj.remaining_tokens, obj.limit_tokens)


class UpstreamEnvironmentFilter(EnvironmentListFilter):
    """Rows keep their environment's store tag; the filter reads `ws/env` as everywhere."""

    def queryset(self, request: HttpRequest, queryset: QuerySet[Any]) -> QuerySet[Any]:
        value = self.value()
        if value is None:
            return queryset
        workspace, _, name = str(value).rpartition("/")
        tags = [
            _store_tag(e)
            for e in _environments(request, LIMITS_VIEW)
            if e.name == name and workspace in ("", e.workspace.name)
        ]
        return queryset.filter(environment__in=tags)


def _of(remaining: int | None, limit: int | None) -> str:
    if remaining is None:
        return "-"
    return f"{remaining:,} of {limit:,}" if limit is not None else f"{remaining:,}"


def _pretty(value: Any) -> str:
    return format_html("<pre>{}</pre>", json.dumps(value, indent=2, ensure_ascii=False))
