"""Reads of the audit: records for `vmx_audit` and the API's `audit/`, totals for `vmx_usage` and `usage/`."""

from __future__ import annotations

import re
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from typing import Any

from django.db.models import Q, QuerySet, Sum
from django.utils import timezone

from gateway.audit.rollups import TOKEN_FIELDS
from gateway.models import AuditRecord, UsageRollup

USAGE_FIELDS = TOKEN_FIELDS
"""The audit record's token counts (2.9), as the rollups sum them."""
USAGE_GROUPS = ("resource", "model", "api_key", "connection", "environment")
"""`environment` groups by workspace and environment: its rows' value is `workspace/environment`."""
_SINCE = re.compile(r"^(\d+)\s*([smhdw])$")
_UNIT = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days", "w": "weeks"}


def since_parse(text: str) -> datetime:
    """`90s`, `15m`, `1h`, `7d`, `2w` ago, or an ISO date/time."""
    match = _SINCE.match(text.strip())
    try:
        if match:
            return timezone.now() - timedelta(**{_UNIT[match.group(2)]: int(match.group(1))})
        moment = datetime.fromisoformat(text.strip())
        moment = moment if moment.tzinfo else timezone.make_aware(moment)
        moment.astimezone(UTC)  # year 9999 west of UTC does not exist in UTC
        return moment
    except (ValueError, OverflowError):
        raise ValueError(f"cannot read '{text}' as a duration (e.g. 1h, 30m, 7d) or an ISO date") from None


AUDIT_FILTERS = (
    "request_id",
    "correlation_id",
    "workspace",
    "environment",
    "resource",
    "api_key",
    "endpoint",
    "status_code",
)


def audit_records_filter(
    *,
    since: datetime | None = None,
    until: datetime | None = None,
    filters: Mapping[str, str | int | None],
    records: QuerySet[AuditRecord] | None = None,
) -> QuerySet[AuditRecord]:
    """Records in [since, until), newest first. `filters` are exact matches on AUDIT_FILTERS;
    an empty or None value does not filter. `records` narrows where to look (the environments a
    user may read: `connections.tenancy.records_permitted`); default: every record."""
    unknown = set(filters) - set(AUDIT_FILTERS)
    if unknown:
        raise ValueError(f"cannot filter the audit by {sorted(unknown)[0]}")
    records = AuditRecord.objects.all() if records is None else records
    if since is not None:
        records = records.filter(created_at__gte=since)
    if until is not None:
        records = records.filter(created_at__lt=until)
    records = records.filter(**{name: value for name, value in filters.items() if value not in ("", None)})
    return records.order_by("-created_at", "-id")


def audit_records_list(*, since: datetime | None = None, limit: int = 100, **filters: str) -> QuerySet[AuditRecord]:
    """Newest first, at most `limit`. `filters` are exact matches on AUDIT_FILTERS."""
    return audit_records_filter(since=since, filters=filters)[:limit]


def audit_record_as_dict(record: AuditRecord) -> dict[str, Any]:
    """The `vmx_audit --format jsonl` object (DESIGN.md 2.9)."""
    return {
        "request_id": record.request_id,
        "created_at": record.created_at.isoformat().replace("+00:00", "Z"),
        "endpoint": record.endpoint,
        "stream": record.stream,
        "workspace": record.workspace,
        "environment": record.environment,
        "api_key": record.api_key,
        "resource": record.resource,
        "correlation_id": record.correlation_id or None,
        "metadata": record.metadata,
        "source_ip": record.source_ip,
        "status_code": record.status_code,
        "error_type": record.error_type or None,
        "error_message": record.error_message or None,
        "duration_ms": record.duration_ms,
        "ttft_ms": record.ttft_ms,
        "connection": record.connection or None,
        "model": record.model or None,
        "attempts": record.attempts,
        "usage": {name: getattr(record, name) for name in USAGE_FIELDS},
        "cost_usd": record.cost_usd,
    }


def usage_totals(
    *,
    since: datetime,
    by: str,
    until: datetime | None = None,
    workspace: str | None = None,
    environment: str | None = None,
    rollups: QuerySet[UsageRollup] | None = None,
) -> list[dict[str, Any]]:
    """Per value of `by`: requests, errors (status >= 400), tokens by kind and cost, most tokens first.

    Read from the per-minute rollups, never the audit table, so any period answers at once; `since`
    and `until` count to the minute (a record of 10:43:20 is in a period since 10:43:27).
    `workspace` and `environment` (names) narrow it; `rollups` narrows where to look (the
    environments a user may read); default: every environment.
    """
    if by not in USAGE_GROUPS:
        raise ValueError(f"--by must be one of {', '.join(USAGE_GROUPS)}")
    rollups = UsageRollup.objects.all() if rollups is None else rollups
    rollups = rollups.filter(minute__gte=since.replace(second=0, microsecond=0))
    if until is not None:
        rollups = rollups.filter(minute__lt=until.replace(second=0, microsecond=0))
    if workspace:
        rollups = rollups.filter(workspace=workspace)
    if environment:
        rollups = rollups.filter(environment=environment)
    columns = ("workspace", "environment") if by == "environment" else (by,)
    rows = (
        rollups.values(*columns)
        .annotate(
            requests_sum=Sum("requests"),
            errors=Sum("requests", filter=Q(status_class__gte=4), default=0),
            cost_sum=Sum("cost_usd"),
            priced_sum=Sum("priced"),
            **{f"{name}_sum": Sum(name) for name in USAGE_FIELDS},
        )
        .order_by("-total_tokens_sum", *columns)
    )
    return [
        {
            by: f"{row['workspace']}/{row['environment']}" if by == "environment" else row[by],
            "requests": row["requests_sum"],
            "errors": row["errors"],
            # A group none of whose records had a known cost keeps None: unknown is not free.
            "cost_usd": row["cost_sum"] if row["priced_sum"] else None,
            **{name: row[f"{name}_sum"] or 0 for name in USAGE_FIELDS},
        }
        for row in rows
    ]
