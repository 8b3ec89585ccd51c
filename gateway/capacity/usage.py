"""How much of a limit's current window is used, as the admin shows it next to the limit.

Reads the store directly (synchronously): this is for people looking at a page, never for the
request path. Figures include what running requests have reserved.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from datetime import UTC, datetime

from gateway.capacity.policy import Scope, Used, counter_key, counter_key_prefix, values_key, window
from gateway.capacity.stores import StoreUnavailableError, capacity_store
from gateway.core.limits import NANOS_PER_USD, CapacityLimit

BUSIEST_SHOWN = 3


def _figures(limit: CapacityLimit, used: Used) -> str:
    parts = []
    if limit.requests is not None:
        parts.append(f"{used.requests:,} / {limit.requests:,} requests")
    if limit.tokens is not None:
        parts.append(f"{used.tokens:,} / {limit.tokens:,} tokens")
    if limit.cost_usd is not None:
        parts.append(f"${used.cost_nanos / NANOS_PER_USD:,.4f} / ${limit.cost_usd:,.2f}")
    return ", ".join(parts)


@dataclass(frozen=True, slots=True)
class WindowUsage:
    """A limit's current window and what is used in it: the whole scope's figures, or for a
    limit with a dimension the busiest values' (at most `top`, busiest first) and how many
    values it counts."""

    start: int
    end: int | None
    used: Used | None
    values: list[tuple[str, Used]]
    values_count: int = 0


def capacity_window_usage(
    *, scope_kind: str, scope_name: str, limit: CapacityLimit, top: int = 1, environment: str = ""
) -> WindowUsage:
    """Raises `StoreUnavailableError` when the counters cannot be read. `environment` is the
    scope's environment store tag (`EnvironmentInfo.store_tag`)."""
    start, end = window(limit.period, time.time())
    scope = Scope(scope_kind, scope_name, environment)
    store = capacity_store()
    if not limit.dimension:
        found = store.used(key=counter_key(scope, limit, start, ""), limit=1)
        return WindowUsage(start, end, found[0][1] if found else Used(), [])
    prefix = counter_key_prefix(scope, limit, start)
    index = values_key(scope, limit, start)
    found = store.used(values_key=index, limit=max(top, 1))
    values = [(key.removeprefix(prefix), used) for key, used in found]
    return WindowUsage(start, end, None, values, store.values_count(values_key=index))


def capacity_usage_text(*, scope_kind: str, scope_name: str, limit: CapacityLimit, environment: str = "") -> str:
    """`12 / 60 requests (window ends 06:00 UTC)`; per dimension, the busiest values."""
    try:
        usage = capacity_window_usage(
            scope_kind=scope_kind, scope_name=scope_name, limit=limit, top=BUSIEST_SHOWN, environment=environment
        )
    except StoreUnavailableError as exc:
        return f"unavailable ({exc})"
    ends = "" if usage.end is None else f" (window ends {datetime.fromtimestamp(usage.end, UTC):%Y-%m-%d %H:%M} UTC)"
    if usage.used is not None:
        return _figures(limit, usage.used) + ends
    if not usage.values:
        return "nothing used yet" + ends
    busiest = "; ".join(f"{value!r}: {_figures(limit, used)}" for value, used in usage.values)
    return f"{usage.values_count:,} values; busiest: {busiest}{ends}"
