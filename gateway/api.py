"""The management API over what the gateway records (DESIGN.md 2.11): audit, usage and the
current capacity counters. Read-only.

Invariants: the audit reads as `vmx_audit --format jsonl` writes it (one shape for a record
everywhere); pages are cursor-based, so records arriving while a client pages never repeat or
skip one; a bad filter is a 400 naming it, never an empty page.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from typing import Any

from django.core.exceptions import ValidationError as DjangoValidationError
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, extend_schema, extend_schema_view, inline_serializer
from rest_framework import serializers
from rest_framework.exceptions import NotFound
from rest_framework.pagination import CursorPagination, LimitOffsetPagination
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView
from rest_framework.viewsets import ReadOnlyModelViewSet

from connections.api.base import DELETE, VIEW, ServiceUnavailableError, model_permissions
from connections.config_export import capacity_entry_export
from connections.models import CapacityEntry
from connections.tenancy import records_permitted
from gateway.audit.selectors import (
    USAGE_FIELDS,
    USAGE_GROUPS,
    audit_record_as_dict,
    audit_records_filter,
    since_parse,
    usage_totals,
)
from gateway.capacity.learned import upstream_limit_clear
from gateway.capacity.policy import Used
from gateway.capacity.stores import StoreUnavailableError
from gateway.capacity.usage import capacity_window_usage
from gateway.core.jsonchecks import has_unstorable_characters
from gateway.core.limits import NANOS_PER_USD
from gateway.models import AuditRecord, UpstreamRateLimit, UsageRollup

logger = logging.getLogger("vmx.api")


def _moment(request: Request, name: str) -> datetime | None:
    text = request.query_params.get(name, "").strip()
    if not text:
        return None
    try:
        return since_parse(text)
    except ValueError as exc:
        raise serializers.ValidationError({name: [str(exc)]}) from exc


def _iso(seconds: int | None) -> str | None:
    return None if seconds is None else datetime.fromtimestamp(seconds, UTC).isoformat().replace("+00:00", "Z")


# ---------------------------------------------------------------------------------------------
# Audit


class AuditRecordSerializer(serializers.Serializer[AuditRecord]):
    """An audit record (DESIGN.md 2.9), as `vmx_audit --format jsonl` prints it."""

    request_id = serializers.CharField()
    created_at = serializers.DateTimeField()
    endpoint = serializers.ChoiceField(choices=AuditRecord.Endpoint.choices)
    stream = serializers.BooleanField()
    workspace = serializers.CharField()
    environment = serializers.CharField()
    api_key = serializers.CharField()
    resource = serializers.CharField()
    correlation_id = serializers.CharField(allow_null=True)
    metadata = serializers.DictField(child=serializers.CharField())
    source_ip = serializers.IPAddressField(allow_null=True)
    status_code = serializers.IntegerField()
    error_type = serializers.CharField(allow_null=True)
    error_message = serializers.CharField(allow_null=True)
    duration_ms = serializers.FloatField()
    ttft_ms = serializers.FloatField(allow_null=True)
    connection = serializers.CharField(allow_null=True)
    model = serializers.CharField(allow_null=True)
    attempts = serializers.ListField(child=serializers.DictField())
    usage = inline_serializer(name="AuditUsage", fields={name: serializers.IntegerField() for name in USAGE_FIELDS})
    cost_usd = serializers.FloatField(allow_null=True)

    def to_representation(self, instance: AuditRecord) -> dict[str, Any]:
        return audit_record_as_dict(instance)


class AuditPagination(CursorPagination):
    ordering = ("-created_at", "-id")
    page_size = 100
    page_size_query_param = "limit"
    max_page_size = 1000

    def get_ordering(self, request: Request, queryset: Any, view: Any) -> tuple[str, ...]:
        # `after`: in the order records were written (the auto id, assigned at insert), so a
        # record written late with an older `created_at` (a long stream) is still ahead of a
        # consumer that remembers the last record it read.
        if request.query_params.get("after"):
            return ("id",)
        return tuple(self.ordering)

    def paginate_queryset(self, queryset: Any, request: Request, view: Any = None) -> Any:
        # A cursor is opaque but not signed: one whose position is not a date fails in the query.
        try:
            return super().paginate_queryset(queryset, request, view)
        except (DjangoValidationError, ValueError, OverflowError):
            raise NotFound(self.invalid_cursor_message) from None


_AUDIT_FILTERS = [
    OpenApiParameter("since", str, description="e.g. 1h, 30m, 7d, or an ISO date-time"),
    OpenApiParameter("until", str, description="as since; records before this moment"),
    OpenApiParameter("resource", str),
    OpenApiParameter("api_key", str, description="The key's name."),
    OpenApiParameter("endpoint", str, enum=[value for value, _ in AuditRecord.Endpoint.choices]),
    OpenApiParameter("status_code", int),
    OpenApiParameter("correlation_id", str),
    OpenApiParameter(
        "after",
        str,
        description="A request id: the records written after it, oldest written first (incremental reading).",
    ),
]


@extend_schema_view(
    list=extend_schema(
        summary="Audit records, newest first (with `after`: oldest written first)", parameters=_AUDIT_FILTERS
    ),
    retrieve=extend_schema(summary="One audit record by request id"),
)
class AuditViewSet(ReadOnlyModelViewSet[AuditRecord]):
    queryset = AuditRecord.objects.all()
    serializer_class = AuditRecordSerializer
    pagination_class = AuditPagination
    lookup_field = "request_id"
    lookup_value_regex = "[^/]+"

    def get_queryset(self) -> Any:
        # Only the environments the user may read (DESIGN.md 2.15): model permissions grant the
        # records of workspace `default`, roles those of their environments.
        readable = records_permitted(self.request.user, AuditRecord.objects.all())
        if self.action != "list":
            return readable
        params = self.request.query_params
        status_code: int | None = None
        if params.get("status_code", "").strip():
            try:
                status_code = int(params["status_code"])
            except ValueError:
                raise serializers.ValidationError({"status_code": ["must be an HTTP status, e.g. 429"]}) from None
        endpoint = params.get("endpoint", "")
        if endpoint and endpoint not in AuditRecord.Endpoint.values:
            choices = ", ".join(AuditRecord.Endpoint.values)
            raise serializers.ValidationError({"endpoint": [f"must be one of {choices}"]})
        records = self.get_records_filtered(params, status_code=status_code, endpoint=endpoint, records=readable)
        after = params.get("after", "").strip()
        if after:
            last = None
            if "\x00" not in after:  # PostgreSQL refuses NUL in text: no record has it anyway
                last = AuditRecord.objects.filter(request_id=after).values_list("pk", flat=True).first()
            if last is None:
                raise serializers.ValidationError({"after": [f"no audit record has request id {after!r}"]})
            records = records.filter(pk__gt=last)
        return records

    def get_records_filtered(self, params: Any, *, status_code: int | None, endpoint: str, records: Any) -> Any:
        return audit_records_filter(
            since=_moment(self.request, "since"),
            until=_moment(self.request, "until"),
            records=records,
            filters={
                "workspace": params.get("workspace", ""),
                "environment": params.get("environment", ""),
                "resource": params.get("resource", ""),
                "api_key": params.get("api_key", ""),
                "endpoint": endpoint,
                "status_code": status_code,
                "correlation_id": params.get("correlation_id", ""),
            },
        )


# ---------------------------------------------------------------------------------------------
# Usage

USAGE_PAGE = 100
USAGE_PAGE_MAX = 1000

# Built inline (a class attribute named `errors` would hide the serializer's own `errors`), once,
# so both uses below are one schema component.
UsageRowSerializer: type[serializers.Serializer[Any]] = type(
    inline_serializer(
        name="UsageRow",
        fields={
            "key": serializers.CharField(allow_null=True, help_text="The value of `by` (null: none recorded)."),
            "requests": serializers.IntegerField(),
            "errors": serializers.IntegerField(help_text="Answers with status >= 400."),
            **{name: serializers.IntegerField() for name in USAGE_FIELDS},
            "cost_usd": serializers.FloatField(allow_null=True, help_text="null: no record of the group had a price."),
        },
    )
)


class UsageSerializer(serializers.Serializer[Any]):
    since = serializers.DateTimeField()
    until = serializers.DateTimeField(allow_null=True)
    by = serializers.ChoiceField(choices=USAGE_GROUPS)
    count = serializers.IntegerField(help_text="Groups in the period (`results` holds at most `limit`).")
    next = serializers.CharField(allow_null=True, help_text="The next page's URL; null on the last.")
    results = UsageRowSerializer(many=True)
    total = UsageRowSerializer(help_text="Over every group, not only this page.")


class UsageView(APIView):
    """Token totals and cost from the audit, grouped (what `vmx_usage` prints)."""

    def get_required_permissions(self, request: Request) -> list[str]:
        return model_permissions([AuditRecord], VIEW)

    @extend_schema(
        summary="Requests, errors, tokens by kind and cost, grouped",
        parameters=[
            OpenApiParameter("since", str, description="e.g. 1h, 24h, 7d, or an ISO date-time (default 24h)"),
            OpenApiParameter("until", str, description="as since (default: now)"),
            OpenApiParameter("by", str, enum=list(USAGE_GROUPS), description="default resource"),
            OpenApiParameter(
                "limit", int, description=f"groups per page (default {USAGE_PAGE}, at most {USAGE_PAGE_MAX})"
            ),
            OpenApiParameter("offset", int, description="groups to skip (default 0)"),
        ],
        responses=UsageSerializer,
    )
    def get(self, request: Request) -> Response:
        by = request.query_params.get("by", "resource")
        if by not in USAGE_GROUPS:
            raise serializers.ValidationError({"by": [f"must be one of {', '.join(USAGE_GROUPS)}"]})
        since = _moment(request, "since") or since_parse("24h")
        until = _moment(request, "until")
        rows = usage_rows(
            since=since,
            until=until,
            by=by,
            rollups=records_permitted(request.user, UsageRollup.objects.all()),
            workspace=request.query_params.get("workspace", ""),
            environment=request.query_params.get("environment", ""),
        )
        total: dict[str, Any] = {"key": None, "requests": 0, "errors": 0, **dict.fromkeys(USAGE_FIELDS, 0)}
        cost: float | None = None
        for row in rows:
            for name in ("requests", "errors", *USAGE_FIELDS):
                total[name] += row[name]
            if row["cost_usd"] is not None:
                cost = (cost or 0.0) + row["cost_usd"]
        total["cost_usd"] = cost
        paginator = PagePagination()
        page = paginator.paginate_queryset(rows, request) or []
        return Response(
            {
                "since": since.isoformat().replace("+00:00", "Z"),
                "until": until.isoformat().replace("+00:00", "Z") if until else None,
                "by": by,
                "count": paginator.count,
                "next": paginator.get_next_link(),
                "results": page,
                "total": total,
            }
        )


def usage_rows(
    *,
    since: datetime,
    until: datetime | None,
    by: str,
    rollups: Any = None,
    workspace: str = "",
    environment: str = "",
) -> list[dict[str, Any]]:
    """`rollups`: where to look (the environments the caller may read); `workspace` and
    `environment` (names) narrow it further."""
    return [
        {"key": row[by] or None, **{k: v for k, v in row.items() if k != by}}
        for row in usage_totals(
            since=since,
            until=until,
            by=by,
            rollups=rollups,
            workspace=workspace or None,
            environment=environment or None,
        )
    ]


# ---------------------------------------------------------------------------------------------
# Capacity


CAPACITY_SCOPES = {"connection": "connection", "resource": "resource", "api_key": "apiKey"}


def _used(used: Used) -> dict[str, Any]:
    return {"requests": used.requests, "tokens": used.tokens, "costUsd": used.cost_nanos / NANOS_PER_USD}


class PagePagination(LimitOffsetPagination):
    """Pages of usage groups, limits or learned upstream limits: `?limit=` (default 100, at most
    1000), `?offset=`."""

    default_limit = USAGE_PAGE
    max_limit = USAGE_PAGE_MAX


UPSTREAM_LIMITS_SHOWN = 100
"""`capacity/` shows the most recently seen learned limits; `capacity/upstream-limits/` pages them all."""


class CapacityView(APIView):
    """Every capacity limit with what its current window has used (reservations of running
    requests included), read from the same store the gateway counts in, a page of limits at a
    time; and, for users who may see them, the upstream rate limits the workers learned most
    recently (`upstreamLimits`; all of them, paged, at `capacity/upstream-limits/`)."""

    pagination_class = PagePagination

    def get_required_permissions(self, request: Request) -> list[str]:
        return model_permissions([CapacityEntry], VIEW)

    @extend_schema(
        summary="Current capacity counters against each limit",
        parameters=[
            OpenApiParameter("top", int, description="Busiest values shown per limit with a dimension (default 10)"),
            OpenApiParameter("limit", int, description="Limits per page (default 100, at most 1000)"),
            OpenApiParameter("offset", int, description="Limits to skip"),
        ],
        responses={200: OpenApiTypes.OBJECT},
    )
    def get(self, request: Request) -> Response:
        try:
            top = int(request.query_params.get("top", "10"))
        except ValueError:
            raise serializers.ValidationError({"top": ["must be a whole number"]}) from None
        top = max(1, min(top, 100))
        entries = CapacityEntry.objects.select_related("connection", "resource", "api_key").order_by(
            "connection__name", "resource__name", "api_key__name", "position", "id"
        )
        paginator = self.pagination_class()
        page = paginator.paginate_queryset(entries, request, view=self) or []
        results = [self.get_limit_item(entry, top=top) for entry in page]
        response = paginator.get_paginated_response(results)
        if request.user.has_perm("gateway.view_upstreamratelimit"):
            recent = UpstreamRateLimit.objects.order_by("-seen_at", "connection", "model")[: UPSTREAM_LIMITS_SHOWN + 1]
            rows = list(recent)
            response.data["upstreamLimits"] = [_upstream_limit(row) for row in rows[:UPSTREAM_LIMITS_SHOWN]]
            response.data["upstreamLimitsNext"] = (
                request.build_absolute_uri(f"upstream-limits/?offset={UPSTREAM_LIMITS_SHOWN}")
                if len(rows) > UPSTREAM_LIMITS_SHOWN
                else None
            )
        return response

    def get_limit_item(self, entry: CapacityEntry, *, top: int) -> dict[str, Any]:
        kind = entry.scope_kind
        owner = getattr(entry, kind)
        limit = entry.limit_get()
        item: dict[str, Any] = {
            "scope": CAPACITY_SCOPES[kind],
            "name": owner.name,
            "limit": capacity_entry_export(entry),
        }
        try:
            usage = capacity_window_usage(scope_kind=kind, scope_name=owner.name, limit=limit, top=top)
        except StoreUnavailableError:
            # The store's own message can name hosts and users: it goes to the log only.
            logger.warning("capacity/: the counters cannot be read", exc_info=True)
            raise ServiceUnavailableError("The capacity counters cannot be read; see the gateway's log.") from None
        item["window"] = {"start": _iso(usage.start), "end": _iso(usage.end)}
        if usage.used is not None:
            item["used"] = _used(usage.used)
        else:
            item["busiest"] = [{"value": value, "used": _used(used)} for value, used in usage.values]
            item["values"] = usage.values_count
        return item


class UpstreamLimitsView(APIView):
    """The last `x-ratelimit-*` headers each connection x model sent, paged, most recently seen first."""

    pagination_class = PagePagination

    def get_required_permissions(self, request: Request) -> list[str]:
        return model_permissions([UpstreamRateLimit], VIEW)

    @extend_schema(
        summary="Upstream rate limits learned from the upstreams' headers",
        parameters=[
            OpenApiParameter("limit", int, description="Rows per page (default 100, at most 1000)"),
            OpenApiParameter("offset", int, description="Rows to skip"),
        ],
        responses={200: OpenApiTypes.OBJECT},
    )
    def get(self, request: Request) -> Response:
        paginator = self.pagination_class()
        rows = UpstreamRateLimit.objects.order_by("-seen_at", "connection", "model")
        page = paginator.paginate_queryset(rows, request, view=self) or []
        return paginator.get_paginated_response([_upstream_limit(row) for row in page])


class UpstreamLimitView(APIView):
    """One connection x model the upstream said is exhausted: DELETE clears the mark on every
    worker (requests go to it again at once), keeping the last figures seen."""

    def get_required_permissions(self, request: Request) -> list[str]:
        return model_permissions([UpstreamRateLimit], DELETE if request.method == "DELETE" else VIEW)

    @extend_schema(summary="Clear a learned upstream limit", responses={204: None})
    def delete(self, request: Request, connection: str, model: str) -> Response:
        # A NUL from the path (`%00`) can name nothing stored, and PostgreSQL refuses it in text.
        unstorable = has_unstorable_characters(connection) or has_unstorable_characters(model)
        if unstorable or not upstream_limit_clear(connection=connection, model=model):
            raise NotFound(f"Nothing was learned of {connection}/{model}.")
        return Response(status=204)


def _upstream_limit(row: UpstreamRateLimit) -> dict[str, Any]:
    """The last `x-ratelimit-*` headers a connection x model sent, as the admin lists them."""
    return {
        "connection": row.connection,
        "model": row.model,
        "limitRequests": row.limit_requests,
        "remainingRequests": row.remaining_requests,
        "resetRequests": row.reset_requests or None,
        "limitTokens": row.limit_tokens,
        "remainingTokens": row.remaining_tokens,
        "resetTokens": row.reset_tokens or None,
        "exhaustedUntil": row.exhausted_until.isoformat().replace("+00:00", "Z") if row.exhausted_until else None,
        "seenAt": row.seen_at.isoformat().replace("+00:00", "Z"),
    }
