"""The shape of a capacity limit (DESIGN.md 2.10): what the configuration stores and the request
path checks. Pure: no Django. The configuration builds `CapacityLimit`s; `gateway.capacity.policy`
turns them into counters.

Amounts are integers where they are counted: requests, tokens, and cost in nano-USD (exact under
addition; a Lua number holds them exactly up to about 9 million dollars per window).
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import IntFlag

PERIODS = ("minute", "hour", "day", "week", "month", "lifetime")
DIMENSIONS = ("", "source-ip", "metadata")
"""`""` counts the scope as a whole; the others give each client address or metadata value a counter."""
NANOS_PER_USD = 1_000_000_000


class Metric(IntFlag):
    REQUESTS = 1
    TOKENS = 2
    COST = 4
    VALUES = 8
    """A limit per dimension value already tracks as many values as it may (a new one is refused)."""


@dataclass(frozen=True, slots=True)
class CapacityLimit:
    """One configured limit entry (disabled entries never reach the request path)."""

    period: str
    requests: int | None = None
    tokens: int | None = None
    cost_usd: float | None = None
    dimension: str = ""
    """`""` (the scope as a whole), `source-ip` or `metadata`."""
    dimension_field: str = ""
    """The `vmx.metadata` key when `dimension` is `metadata`."""

    @property
    def cost_nanos(self) -> int | None:
        return None if self.cost_usd is None else usd_to_nanos(self.cost_usd)

    def describe(self, metric: Metric) -> str:
        """`60 requests per minute`, `$200.00 per month`, `1000000 tokens in total`, per dimension."""
        if metric is Metric.COST:
            amount = f"${self.cost_usd:,.2f}" if self.cost_usd and self.cost_usd >= 0.01 else f"${self.cost_usd:g}"
        elif metric is Metric.TOKENS:
            amount = f"{self.tokens:,} tokens"
        else:
            amount = f"{self.requests:,} requests"
        period = "in total" if self.period == "lifetime" else f"per {self.period}"
        per = ""
        if self.dimension == "source-ip":
            per = " per source IP"
        elif self.dimension == "metadata":
            per = f" per metadata '{self.dimension_field}'"
        return f"{amount} {period}{per}"


MAX_COST_NANOS = 2**53
"""Exact in a Lua number (a double) and in Redis's 64-bit counters: 9 million dollars."""


def usd_to_nanos(usd: float) -> int:
    return min(MAX_COST_NANOS, max(0, round(usd * NANOS_PER_USD)))
