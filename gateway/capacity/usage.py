"""How much of a limit's current window is used, as the admin shows it next to the limit.

Reads the store directly (synchronously): this is for people looking at a page, never for the
request path. Figures include what running requests have reserved.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime

from gateway.capacity.policy import NANOS_PER_USD, CapacityLimit, Scope, Used, counter_key_prefix, window
from gateway.capacity.stores import StoreUnavailableError, capacity_store

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


def capacity_usage_text(*, scope_kind: str, scope_name: str, limit: CapacityLimit) -> str:
    """`12 / 60 requests (window ends 06:00 UTC)`; per dimension, the busiest values."""
    now = time.time()
    start, end = window(limit.period, now)
    prefix = counter_key_prefix(Scope(scope_kind, scope_name), limit, start)
    try:
        found = capacity_store().used(key_prefix=prefix, limit=BUSIEST_SHOWN if limit.dimension else 1)
    except StoreUnavailableError as exc:
        return f"unavailable ({exc})"
    ends = "" if end is None else f" (window ends {datetime.fromtimestamp(end, UTC):%Y-%m-%d %H:%M} UTC)"
    if not limit.dimension:
        used = found[0][1] if found else Used()
        return _figures(limit, used) + ends
    if not found:
        return "nothing used yet" + ends
    busiest = "; ".join(f"{key[len(prefix) :]!r}: {_figures(limit, used)}" for key, used in found)
    return f"busiest: {busiest}{ends}"
