"""Capacity policy: which counters a request touches, what it is estimated to use, and the
admission arithmetic (DESIGN.md 2.10). Pure: no Django, no I/O; the stores apply it atomically.

Invariants:
- Windows are fixed calendar periods in UTC (a week starts Monday 00:00); `lifetime` never ends.
- A counter is one scope (API key, resource or connection) x period x dimension value x window.
  Every limit entry of a scope with the same period and dimension shares that counter, so its
  figures are counted once however many limits read them.
- Amounts are integers: requests, tokens, and cost in nano-USD (exact under addition; a Lua
  number holds them exactly up to about 9 million dollars per window).
- Admission rejects when `used + 1 > requests`, `used + estimate > tokens` or
  `used + estimated cost > costUsd`, where `used` includes the live reservations of requests
  still running, so concurrent requests cannot all pass on one reading.
- A limit with a dimension counts at most `max_values` distinct values per window: every value's
  counter is listed in the limit's index (`values_key`), which the stores update in the same
  atomic step as the counter; a request that would add one more value is refused (`VALUES`),
  values already in the index go on as before. Reads list a limit's values from its index.
"""

from __future__ import annotations

import calendar
import hashlib
import ipaddress
import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from gateway.core.limits import CapacityLimit, Metric

UNKNOWN_DIMENSION_VALUE = "unknown"
"""The counter of requests that lack the metadata field a limit is keyed by."""
MAX_KEY_LENGTH = 250
"""Counter keys are stored in a 255-character column by the database store."""


@dataclass(frozen=True, slots=True)
class Scope:
    kind: str
    """`api_key`, `resource` or `connection`."""
    name: str
    environment: str = ""
    """The environment's store tag (DESIGN.md 2.15): key `ci` of `dev` and of `prod` count apart.
    Empty for `default/default`, whose keys are those of before environments existed."""

    @property
    def label(self) -> str:
        return {"api_key": "API key", "resource": "Resource", "connection": "Connection"}[self.kind] + f" '{self.name}'"

    @property
    def tag(self) -> str:
        kind = {"api_key": "k", "resource": "r", "connection": "c"}[self.kind]
        # An environment's tag is a hex id, which no scope kind letter spells: no key of one
        # environment can be another's.
        return f"{self.environment}:{kind}:{self.name}" if self.environment else f"{kind}:{self.name}"


@dataclass(frozen=True, slots=True)
class Counter:
    """One counter a request is checked against and counted in, with the tightest of its limits."""

    key: str
    scope: Scope
    limits: tuple[CapacityLimit, ...]
    window_end: int | None
    """Unix seconds when the window ends; None for `lifetime`."""
    dimension_value: str = ""
    values_key: str = ""
    """The index of the values of this counter's limit and window (empty: no dimension)."""
    max_values: int | None = None
    """At most this many values in that index (None: no bound)."""
    max_requests: int | None = field(init=False)
    max_tokens: int | None = field(init=False)
    max_cost_nanos: int | None = field(init=False)
    """The tightest of the limits, read several times per request: worked out once."""

    def __post_init__(self) -> None:
        object.__setattr__(self, "max_requests", _tightest(limit.requests for limit in self.limits))
        object.__setattr__(self, "max_tokens", _tightest(limit.tokens for limit in self.limits))
        object.__setattr__(self, "max_cost_nanos", _tightest(limit.cost_nanos for limit in self.limits))


def _tightest(values: Iterable[int | None]) -> int | None:
    known = [value for value in values if value is not None]
    return min(known) if known else None


@dataclass(frozen=True, slots=True)
class Used:
    """A counter's figures in its current window: counted plus reserved by running requests."""

    requests: int = 0
    tokens: int = 0
    cost_nanos: int = 0


@dataclass(frozen=True, slots=True)
class Estimate:
    tokens: int = 0
    cost_nanos: int = 0


_FIXED_SECONDS = {"minute": 60, "hour": 3600, "day": 86400}
_MONDAY_OFFSET = 3 * 86400
"""1970-01-01 was a Thursday: Unix time plus three days counts weeks from a Monday."""


def window(period: str, now: float) -> tuple[int, int | None]:
    """The current window of `period` at Unix time `now`: (start, end) in Unix seconds."""
    # Unix time has no leap seconds, so minutes, hours, days and weeks are plain arithmetic.
    length = _FIXED_SECONDS.get(period)
    if length is not None:
        start = int(now // length * length)
        return start, start + length
    if period == "week":
        start = int((now + _MONDAY_OFFSET) // 604800 * 604800 - _MONDAY_OFFSET)
        return start, start + 604800
    if period == "lifetime":
        return 0, None
    if period != "month":
        raise ValueError(f"unknown period {period!r}")
    # Whole seconds: fromtimestamp rounds microseconds, and could round into the next month.
    moment = datetime.fromtimestamp(math.floor(now), UTC)
    first = moment.replace(day=1, hour=0, minute=0, second=0, microsecond=0)
    days = calendar.monthrange(first.year, first.month)[1]
    return int(first.timestamp()), int((first + timedelta(days=days)).timestamp())


def dimension_value(limit: CapacityLimit, *, source_ip: str | None, metadata: Mapping[str, str]) -> str:
    if limit.dimension == "source-ip":
        return _client_network(source_ip) if source_ip else UNKNOWN_DIMENSION_VALUE
    if limit.dimension == "metadata":
        return metadata.get(limit.dimension_field) or UNKNOWN_DIMENSION_VALUE
    return ""


IPV6_CLIENT_PREFIX = 64
"""An IPv6 client is counted by its /64: one subscriber holds a whole /64 and could otherwise
make a counter (and a key) per address."""


def _client_network(address: str) -> str:
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return address
    if ip.version == 6:
        if ip.ipv4_mapped is not None:
            return str(ip.ipv4_mapped)
        return str(ipaddress.ip_network(f"{ip}/{IPV6_CLIENT_PREFIX}", strict=False))
    return str(ip)


KEY_PREFIX = "vmx:{cap}:"
"""Every counter key starts so: one Redis hash tag, one namespace (`reservations_key` is another)."""


def counter_key_prefix(scope: Scope, limit: CapacityLimit, window_start: int) -> str:
    """Everything in a counter's key but its dimension value (the admin lists by it).

    The metadata field is escaped so that no field and value pair can spell another's key."""
    field = limit.dimension_field.replace("%", "%25").replace("=", "%3D")
    dimension = {"": "all", "source-ip": "ip", "metadata": "m." + field}[limit.dimension]
    return f"{KEY_PREFIX}{scope.tag}:{limit.period}:{window_start}:{dimension}="


def reservations_key(counter_key: str) -> str:
    """Where a counter's running reservations are kept: a namespace no counter key can reach,
    whatever value a client puts at the end of its counter's key."""
    return "vmx:{cap}:reservations:" + counter_key.removeprefix(KEY_PREFIX)


def counter_key(scope: Scope, limit: CapacityLimit, window_start: int, value: str) -> str:
    return _bounded(counter_key_prefix(scope, limit, window_start) + value)


def values_key(scope: Scope, limit: CapacityLimit, window_start: int) -> str:
    """Where the values of a limit with a dimension are indexed, for one window: a namespace of its
    own, like the reservations'."""
    return _bounded("vmx:{cap}:values:" + counter_key_prefix(scope, limit, window_start).removeprefix(KEY_PREFIX))


def _bounded(key: str) -> str:
    if len(key) > MAX_KEY_LENGTH:  # long names or values: still one distinct key each
        key = key[:180] + "#" + hashlib.sha256(key.encode()).hexdigest()[:40]
    return key


def counters_for(
    scope: Scope,
    limits: Iterable[CapacityLimit],
    *,
    now: float,
    source_ip: str | None,
    metadata: Mapping[str, str],
    max_values: int | None = None,
) -> list[Counter]:
    """The counters `limits` of `scope` put on this request, limits on one counter merged."""
    grouped: dict[str, tuple[list[CapacityLimit], int | None, str, str]] = {}
    for limit in limits:
        start, end = window(limit.period, now)
        value = dimension_value(limit, source_ip=source_ip, metadata=metadata)
        key = counter_key(scope, limit, start, value)
        index = values_key(scope, limit, start) if limit.dimension else ""
        grouped.setdefault(key, ([], end, value, index))[0].append(limit)
    return [
        Counter(
            key=key,
            scope=scope,
            limits=tuple(found),
            window_end=end,
            dimension_value=value,
            values_key=index,
            max_values=max_values if index else None,
        )
        for key, (found, end, value, index) in grouped.items()
    ]


def exceeded(counter: Counter, used: Used, estimate: Estimate) -> Metric:
    """Which of the counter's limits this request would cross (empty: it fits)."""
    crossed = Metric(0)
    if (limit := counter.max_requests) is not None and used.requests + 1 > limit:
        crossed |= Metric.REQUESTS
    if (limit := counter.max_tokens) is not None and used.tokens + estimate.tokens > limit:
        crossed |= Metric.TOKENS
    if (limit := counter.max_cost_nanos) is not None and used.cost_nanos + estimate.cost_nanos > limit:
        crossed |= Metric.COST
    return crossed


def retry_after_seconds(window_end: int | None, now: float) -> int | None:
    """Seconds until the window ends (ceil, at least 1); None for `lifetime`: waiting cannot help."""
    if window_end is None:
        return None
    return max(1, math.ceil(window_end - now))


def values_exceeded(counter: Counter, *, tracked: int, known: bool) -> Metric:
    """`VALUES` when the counter's value is not yet among its limit's `tracked` values and no more fit."""
    if counter.max_values is not None and not known and tracked >= counter.max_values:
        return Metric.VALUES
    return Metric(0)


def limit_crossed(counter: Counter, crossed: Metric) -> tuple[CapacityLimit, Metric]:
    """The limit entry and metric to name in the error: cost first (a budget), then tokens, requests."""
    for metric, attribute in ((Metric.COST, "cost_usd"), (Metric.TOKENS, "tokens"), (Metric.REQUESTS, "requests")):
        if metric in crossed:
            candidates = [limit for limit in counter.limits if getattr(limit, attribute) is not None]
            return min(candidates, key=lambda limit: getattr(limit, attribute)), metric
    raise ValueError("no limit was crossed")


def exceeded_message(counter: Counter, crossed: Metric) -> str:
    """`API key 'ci' reached its limit of 60 requests per minute` (with the value when per dimension)."""
    if crossed == Metric.VALUES:
        limit = counter.limits[0]
        of = "source IP" if limit.dimension == "source-ip" else f"metadata '{limit.dimension_field}'"
        period = "in total" if limit.period == "lifetime" else f"per {limit.period}"
        return (
            f"{counter.scope.label} reached its limit of {counter.max_values:,} distinct values of {of} {period}"
            f" ({counter.dimension_value!r} would be one more; values already counted are still served)"
        )
    limit, metric = limit_crossed(counter, crossed & ~Metric.VALUES)
    value = f" for {counter.dimension_value!r}" if limit.dimension else ""
    if metric is Metric.COST:
        return f"{counter.scope.label} reached its budget of {limit.describe(metric)}{value}"
    return f"{counter.scope.label} reached its limit of {limit.describe(metric)}{value}"


# ------------------------------------------------------------------------------------------------
# Estimates at admission (replaced by the real usage when the request ends).

OUTPUT_LIMIT_FIELDS = ("max_tokens", "max_completion_tokens", "max_output_tokens")
MAX_ESTIMATE_TOKENS = 2**31 - 1
"""A client's `max_tokens` is its own to choose: keep the counters' integers far from overflow."""
_NOT_TEXT_KEYS = frozenset({"model", "vmx", "data", "image_url", "file_data", "b64_json", "image"})
"""Fields whose strings are not text the model reads as tokens (ids, inline base64 payloads).

Payloads are recognised by the field that holds them, never by what a string looks like: a
prompt is the client's to write, and one that starts like a data URL is still read as text."""


def text_characters(value: Any) -> int:
    """Characters of the request's text: every string in it but identifiers and inline payloads."""
    total = 0
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, str):
            total += len(item)
        elif isinstance(item, dict):
            stack.extend(v for k, v in item.items() if k not in _NOT_TEXT_KEYS)
        elif isinstance(item, list):
            stack.extend(item)
    return total


def estimated_tokens(body: Mapping[str, Any]) -> tuple[int, int]:
    """(input, output) tokens expected of `body`, the body as it goes upstream (envelope removed,
    `defaultArgs` and `providerArgs` merged, converted on `/v1/messages`): input text characters
    / 4, output the request's own maximum."""
    input_tokens = math.ceil(text_characters(body) / 4)
    output_tokens = 0
    for name in OUTPUT_LIMIT_FIELDS:
        value = body.get(name)
        if isinstance(value, int) and not isinstance(value, bool) and value > 0:
            output_tokens = min(value, MAX_ESTIMATE_TOKENS)
            break
    return min(input_tokens, MAX_ESTIMATE_TOKENS), output_tokens
