"""Reads for the admin's dashboard (DESIGN.md 2.12): usage over time and the top resources, keys,
models and environments, from the rollups only, never the audit table.

Invariants:
- A period is a whole number of buckets ending with the bucket that holds "now": the last
  hour is 60 one-minute buckets read from the per-minute rollups, the last day and week buckets
  of whole hours read from the per-hour rollups, the last 30 days whole days read from the
  per-day rollups. So a page reads at most 168 rows per combination of dimensions, however
  busy the gateway. The totals are the sums of the buckets drawn: a chart and the figures
  above it always agree.
- Every bucket and every top row carries the audit changelist filters that list exactly the
  records it counts (its time range, the filters in force, and for errors, status >= 400).
- Buckets are aligned in UTC; labels are in the current time zone.
- Tenancy (DESIGN.md 2.15): every figure, chart, top row and menu is drawn from the rollups the
  caller's `permitted` leaves (the environments the reader may view), then narrowed by the chosen
  workspace and environment, then by the other filters. A workspace or environment the reader may
  not view adds nothing anywhere: filtering by one shows an empty page, exactly as one that does
  not exist. The workspace and environment menus list the environments passed in (those the
  reader may view) and those seen in the permitted rollups of the period.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from django.db.models import Q, QuerySet, Sum
from django.utils import timezone

from gateway.audit.rollups import BUCKETS, percentile
from gateway.models import DailyUsageRollup, HourlyUsageRollup, RollupSums, UsageRollup

TENANT_FILTERS = ("workspace", "environment")
"""Names, as the rollups and the audit record keep them; their menus list the reader's environments."""
TRAFFIC_FILTERS = ("resource", "api_key", "connection", "model")
"""Their menus list the values seen in the period (within the chosen workspace and environment)."""
FILTERS = TENANT_FILTERS + TRAFFIC_FILTERS
"""What the dashboard filters by: dimensions of the rollups and fields of the audit record."""
TOP_BY = ("resource", "api_key", "model", "environment")
"""The top lists; `environment` rows are `workspace/environment`."""
TOP_ROWS = 10
MENU_OPTIONS = 100
"""At most this many values per filter menu: the most requested in the period (and the chosen one)."""
SERIES_TOKENS = ("input_tokens", "cached_tokens", "output_tokens", "reasoning_tokens")
_EPOCH = datetime(2000, 1, 3, tzinfo=UTC)
"""A Monday at midnight UTC: buckets are counted from here."""


@dataclass(frozen=True, slots=True)
class Period:
    key: str
    label: str
    span: timedelta
    step: timedelta
    model: type[RollupSums]
    time_field: str
    label_format: str
    step_label: str


PERIODS: dict[str, Period] = {
    period.key: period
    for period in (
        Period("1h", "Last hour", timedelta(hours=1), timedelta(minutes=1), UsageRollup, "minute", "%H:%M", "minute"),
        Period(
            "24h", "Last 24 hours", timedelta(hours=24), timedelta(hours=1), HourlyUsageRollup, "hour", "%H:%M", "hour"
        ),
        Period(
            "7d", "Last 7 days", timedelta(days=7), timedelta(hours=3), HourlyUsageRollup, "hour", "%a %H:%M", "3 hours"
        ),
        Period("30d", "Last 30 days", timedelta(days=30), timedelta(days=1), DailyUsageRollup, "day", "%b %d", "day"),
    )
}
DEFAULT_PERIOD = "24h"


@dataclass(slots=True)
class Bucket:
    start: datetime
    end: datetime
    requests: int = 0
    errors: int = 0
    tokens: dict[str, int] = field(default_factory=lambda: dict.fromkeys(SERIES_TOKENS, 0))
    cost_usd: float = 0.0
    priced: int = 0
    latency: list[int] = field(default_factory=lambda: [0] * BUCKETS)
    ttft: list[int] = field(default_factory=lambda: [0] * BUCKETS)

    def add(self, row: Mapping[str, Any]) -> None:
        self.requests += row["requests"] or 0
        self.errors += row["errors"] or 0
        for name in SERIES_TOKENS:
            self.tokens[name] += row[name] or 0
        self.cost_usd += row["cost_usd"] or 0.0
        self.priced += row["priced"] or 0
        for index in range(BUCKETS):
            self.latency[index] += row[f"latency_{index:02d}"] or 0
            self.ttft[index] += row[f"ttft_{index:02d}"] or 0

    def merge(self, other: Bucket) -> None:
        self.requests += other.requests
        self.errors += other.errors
        for name in SERIES_TOKENS:
            self.tokens[name] += other.tokens[name]
        self.cost_usd += other.cost_usd
        self.priced += other.priced
        self.latency = [a + b for a, b in zip(self.latency, other.latency, strict=True)]
        self.ttft = [a + b for a, b in zip(self.ttft, other.ttft, strict=True)]

    @property
    def error_rate(self) -> float | None:
        return self.errors / self.requests if self.requests else None

    @property
    def cost(self) -> float | None:
        """The known cost; None when no request of the bucket had one (unknown is not free)."""
        return self.cost_usd if self.priced else None

    def latency_ms(self, fraction: float) -> float | None:
        return percentile(self.latency, fraction)

    def ttft_ms(self, fraction: float) -> float | None:
        return percentile(self.ttft, fraction)


@dataclass(frozen=True, slots=True)
class TopRow:
    name: str
    requests: int
    errors: int
    total_tokens: int
    cost_usd: float | None
    audit_filters: dict[str, str]


@dataclass(frozen=True, slots=True)
class Dashboard:
    period: Period
    filters: dict[str, str]
    start: datetime
    end: datetime
    buckets: list[Bucket]
    total: Bucket
    top_by_requests: dict[str, list[TopRow]]
    top_by_cost: dict[str, list[TopRow]]
    options: dict[str, list[str]]
    """The values each filter can take in the period (the chosen one always among them)."""

    def bucket_label(self, bucket: Bucket) -> str:
        local = timezone.localtime(bucket.start)
        label = local.strftime(self.period.label_format)
        if "%H" not in self.period.label_format and (local.hour, local.minute) != (0, 0):
            label += local.strftime(" %H:%M")  # a UTC day seen from another time zone
        return label

    def audit_filters(self, *, start: datetime, end: datetime, errors: bool = False) -> dict[str, str]:
        """The audit changelist's query for the records of [start, end) under the filters in force."""
        query = {
            "created_at__gte": start.isoformat(),
            "created_at__lt": end.isoformat(),
            **{name: value for name, value in self.filters.items() if value},
        }
        if errors:
            query["status_code__gte"] = "400"
        return query


def period_bounds(*, period: Period, now: datetime) -> tuple[datetime, datetime]:
    """[start, end): whole buckets, the last one holding `now`."""
    steps = (now - _EPOCH) // period.step
    end = _EPOCH + (steps + 1) * period.step
    return end - period.span, end


Narrowing = Callable[[QuerySet[Any]], QuerySet[Any]]
"""Rollups in, the reader's rollups out (`connections.tenancy.records_permitted`)."""


def dashboard_read(
    *,
    period: Period,
    filters: Mapping[str, str],
    now: datetime | None = None,
    permitted: Narrowing | None = None,
    environments: Sequence[tuple[str, str]] = (),
) -> Dashboard:
    """Everything the dashboard shows for `period` under `filters` (exact matches on FILTERS).

    `permitted` narrows the rollups to what the reader may view (default: everything);
    `environments` are the (workspace, environment) names the reader may view, for the menus."""
    chosen = {name: str(filters.get(name) or "") for name in FILTERS}
    start, end = period_bounds(period=period, now=now or timezone.now())
    readable = period.model._default_manager.all()
    if permitted is not None:
        readable = permitted(readable)
    # The period first, then workspace and environment: the order of the rollups' unique index.
    in_period = readable.filter(**{f"{period.time_field}__gte": start, f"{period.time_field}__lt": end})
    in_tenant = in_period.filter(**{name: chosen[name] for name in TENANT_FILTERS if chosen[name]})
    rows = in_tenant.filter(**{name: chosen[name] for name in TRAFFIC_FILTERS if chosen[name]})

    buckets = [Bucket(start=start + i * period.step, end=start + (i + 1) * period.step) for i in range(_count(period))]
    sums = {
        "requests": Sum("requests"),
        "errors": Sum("requests", filter=Q(status_class__gte=4)),
        **{name: Sum(name) for name in SERIES_TOKENS},
        "cost_usd": Sum("cost_usd"),
        "priced": Sum("priced"),
        **{f"latency_{i:02d}": Sum(f"latency_{i:02d}") for i in range(BUCKETS)},
        **{f"ttft_{i:02d}": Sum(f"ttft_{i:02d}") for i in range(BUCKETS)},
    }
    # Sums per stored minute or hour, then added into the chart's buckets here: portable across
    # databases (no date arithmetic in SQL) and at most a few hundred rows.
    for row in rows.values(period.time_field).annotate(**_renamed(sums)).order_by():
        moment: datetime = row[period.time_field]
        index = int((moment - start) // period.step)
        if 0 <= index < len(buckets):
            buckets[index].add(_unrenamed(row))
    total = Bucket(start=start, end=end)
    for bucket in buckets:
        total.merge(bucket)

    # One grouped read gives the top lists and, when nothing is filtered, the filters' choices.
    groups = list(
        rows.values(*FILTERS)
        .annotate(
            requests__sum=Sum("requests"),
            errors__sum=Sum("requests", filter=Q(status_class__gte=4)),
            total_tokens__sum=Sum("total_tokens"),
            cost_usd__sum=Sum("cost_usd"),
            priced__sum=Sum("priced"),
        )
        .order_by()
    )
    # The traffic menus list what the chosen workspace and environment saw in the period.
    unfiltered = (
        groups
        if not any(chosen[name] for name in TRAFFIC_FILTERS)
        else list(in_tenant.values(*FILTERS).annotate(requests__sum=Sum("requests")).order_by())
    )
    dashboard = Dashboard(
        period=period,
        filters=chosen,
        start=start,
        end=end,
        buckets=buckets,
        total=total,
        top_by_requests={},
        top_by_cost={},
        options={**_options(unfiltered, chosen), **_tenant_options(environments, unfiltered, chosen)},
    )
    for dimension in TOP_BY:
        top = _top(groups, dimension, dashboard)
        dashboard.top_by_requests[dimension] = sorted(top, key=lambda r: (-r.requests, r.name))[:TOP_ROWS]
        priced = [row for row in top if row.cost_usd is not None]
        dashboard.top_by_cost[dimension] = sorted(priced, key=lambda r: (-(r.cost_usd or 0.0), r.name))[:TOP_ROWS]
    return dashboard


def _count(period: Period) -> int:
    return int(period.span // period.step)


def _renamed(sums: Mapping[str, Any]) -> dict[str, Any]:
    # An annotation may not share a model field's name.
    return {f"{name}__sum": aggregate for name, aggregate in sums.items()}


def _unrenamed(row: Mapping[str, Any]) -> dict[str, Any]:
    return {name.removesuffix("__sum"): value for name, value in row.items()}


def _top(groups: list[dict[str, Any]], dimension: str, dashboard: Dashboard) -> list[TopRow]:
    """The groups' sums per value of `dimension` (`environment`: per workspace and environment)."""
    sums: dict[str, list[Any]] = {}
    links: dict[str, dict[str, str]] = {}
    for group in groups:
        if dimension == "environment":
            name = f"{group['workspace']}/{group['environment']}"
            links[name] = {"workspace": group["workspace"], "environment": group["environment"]}
        else:
            name = group[dimension]
            links[name] = {dimension: name}
        total = sums.setdefault(name, [0, 0, 0, 0.0, 0])
        total[0] += group["requests__sum"] or 0
        total[1] += group["errors__sum"] or 0
        total[2] += group["total_tokens__sum"] or 0
        total[3] += group["cost_usd__sum"] or 0.0
        total[4] += group["priced__sum"] or 0
    base = dashboard.audit_filters(start=dashboard.start, end=dashboard.end)
    return [
        TopRow(
            name=name,
            requests=requests,
            errors=errors,
            total_tokens=tokens,
            cost_usd=cost if priced else None,
            audit_filters={**base, **links[name]},
        )
        for name, (requests, errors, tokens, cost, priced) in sums.items()
    ]


def _options(groups: Iterable[Mapping[str, Any]], chosen: Mapping[str, str]) -> dict[str, list[str]]:
    requests: dict[str, dict[str, int]] = {name: {} for name in TRAFFIC_FILTERS}
    for group in groups:
        for name in TRAFFIC_FILTERS:
            if group[name]:
                counted = requests[name]
                counted[group[name]] = counted.get(group[name], 0) + (group.get("requests__sum") or 0)
    options = {}
    for name, counted in requests.items():
        busiest = sorted(counted, key=lambda value: (-counted[value], value))[:MENU_OPTIONS]
        if chosen.get(name) and chosen[name] not in busiest:
            busiest.append(chosen[name])
        options[name] = sorted(busiest)
    return options


def _tenant_options(
    environments: Iterable[tuple[str, str]], groups: Iterable[Mapping[str, Any]], chosen: Mapping[str, str]
) -> dict[str, list[str]]:
    """The workspace menu: every workspace of the reader's environments; the environment menu:
    the names of those environments (of the chosen workspace only, when one is chosen). A chosen
    value stays shown, whatever it names: it is the reader's own text, and its page is empty."""
    pairs = set(environments) | {(group["workspace"], group["environment"]) for group in groups}
    workspaces = {workspace for workspace, _ in pairs}
    names = {name for workspace, name in pairs if not chosen.get("workspace") or workspace == chosen["workspace"]}
    for name, values in (("workspace", workspaces), ("environment", names)):
        if chosen.get(name):
            values.add(chosen[name])
    return {"workspace": sorted(workspaces), "environment": sorted(names)}
