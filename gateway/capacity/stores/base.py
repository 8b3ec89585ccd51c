"""What every capacity store shares (DESIGN.md 2.10): the shapes of an admission and a settlement,
the store protocol, and settling off the request path.

Both stores apply `policy.exceeded` atomically to every counter of a request at once:
- `admit` checks the mandatory group (API key and resource counters) and the leg groups in order
  (one per candidate connection), and counts the mandatory group and the first leg group that
  fits; if the mandatory group or every leg group would cross a limit, nothing is counted.
- A reservation (tokens and cost held for a running request) is kept per counter with an expiry
  stamped and compared by the store's clock, never an instance's;
  `settle` removes it (if still there) and adds the real figures, so a reservation is released
  or replaced exactly once. Expired reservations are dropped by the next admission of the counter.
- Counters expire with their window (plus a margin); `lifetime` counters never do.
- A settlement that fails (a Redis blip, a database restart) is tried again in the background,
  `SETTLE_RETRY_DELAYS` apart, so a reservation is not held for its whole allowance by one
  failed call. Settling is idempotent: a store that ran a settlement whose answer was lost does
  not add it twice when it is retried.
"""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Protocol

from gateway.capacity.policy import Counter, Estimate, Used
from gateway.core.limits import Metric

SETTLE_RETRY_DELAYS = (0.2, 0.5, 1.0, 2.0, 4.0, 8.0, 15.0)
"""Seconds between the tries of a failed settlement: about half a minute in all, then it is given
up (and logged): a reservation it held expires with its request's allowance."""
EXPIRY_MARGIN_SECONDS = 120
"""Counters outlive their window a little: instances' clocks differ by a few seconds at most."""


@dataclass(frozen=True, slots=True)
class Charge:
    """A counter as one request is checked against it, with what it expects to use."""

    counter: Counter
    estimate: Estimate = field(default_factory=Estimate)


@dataclass(slots=True)
class Admission:
    chosen: int | None
    """The index of the leg group that was counted; None when nothing was (rejected)."""
    crossed: dict[int, list[tuple[Counter, Metric]]] = field(default_factory=dict)
    """Per group: the counters that would have been crossed (group 0 is the mandatory one)."""


@dataclass(frozen=True, slots=True)
class Settlement:
    counter: Counter
    reservation: str
    """`<admission's reservation id>:<group>`: what `admit` reserved the estimate under."""
    reserved: Estimate
    actual: Estimate


def reservation_of(admission_id: str, group: int) -> str:
    return f"{admission_id}:{group}"


class StoreUnavailableError(Exception):
    """The store could not be reached or failed; the caller fails open or closed."""


class CapacityStore(Protocol):
    name: str

    async def admit(
        self, *, groups: Sequence[Sequence[Charge]], reservation: str, reservation_seconds: float
    ) -> Admission:
        """Check and count; what is reserved is held `reservation_seconds` from the store's own
        clock (Redis `TIME`, the database's time): instances' clocks do not agree, the store's
        is one."""
        ...

    async def settle(self, *, settlements: Sequence[Settlement]) -> None:
        """Idempotent: the same settlements applied again (a retry) change nothing."""
        ...

    def used(self, *, key: str = "", values_key: str = "", limit: int) -> list[tuple[str, Used]]:
        """Synchronous read for the admin: the counter `key`, or the counters listed in the index
        `values_key` (at most `limit`, the busiest first), as (key, figures in use). Never a scan."""
        ...

    def values_count(self, *, values_key: str) -> int:
        """How many values the index `values_key` lists (synchronous, for the admin)."""
        ...


# Settling in the background, and releasing what an abandoned admission counted

_settling: set[asyncio.Task[None]] = set()


def settle_in_background(
    store: CapacityStore,
    settlements: Sequence[Settlement],
    *,
    on_failure: Callable[[StoreUnavailableError], None] | None = None,
) -> None:
    """Settle off the request path (inline when there is no event loop: a command, a test)."""
    if not settlements:
        return

    async def work() -> None:
        for delay in (*SETTLE_RETRY_DELAYS, None):
            try:
                await store.settle(settlements=settlements)
                return
            except StoreUnavailableError as exc:
                if delay is None:
                    if on_failure is not None:
                        on_failure(exc)
                    return
            await asyncio.sleep(delay)

    try:
        loop = asyncio.get_running_loop()
    except RuntimeError:
        asyncio.run(work())
        return
    task = loop.create_task(work())
    _settling.add(task)
    task.add_done_callback(_settling.discard)


async def settlements_finished(within: float) -> None:
    """Wait (at most `within` seconds) for settlements in flight (shutdown; tests)."""
    if _settling:
        await asyncio.wait(list(_settling), timeout=within)


def admission_releases(
    groups: Sequence[Sequence[Charge]], reservation: str, chosen: int | None = None
) -> list[Settlement]:
    """Settlements that give back what `admit` may have reserved (of the groups it may have
    counted: all when unknown), adding nothing: releasing a reservation that is not there is a
    no-op, so this is safe whether the admission counted or not. The request counts stay."""
    counted = range(len(groups)) if chosen is None else (0, chosen)
    return [
        Settlement(
            counter=charge.counter,
            reservation=reservation_of(reservation, group),
            reserved=charge.estimate,
            actual=Estimate(),
        )
        for group in counted
        for charge in groups[group]
        if charge_reserves(charge)
    ]


def settlement_id(settlements: Sequence[Settlement]) -> str:
    """What names one settlement call, so that a retry of it is recognised."""
    text = "|".join(
        f"{item.counter.key}\x1f{item.reservation}\x1f{item.actual.tokens}\x1f{item.actual.cost_nanos}"
        for item in settlements
    )
    return hashlib.sha256(text.encode()).hexdigest()[:32]


def counter_expiry(counter: Counter) -> float | None:
    return None if counter.window_end is None else counter.window_end + EXPIRY_MARGIN_SECONDS


def charge_reserves(charge: Charge) -> bool:
    return bool(charge.estimate.tokens or charge.estimate.cost_nanos)
