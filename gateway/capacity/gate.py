"""One request's passage through its limits (DESIGN.md 2.10).

Invariants:
- `capacity_gate_open` returns None when the key, the resource and every leg's connection have no
  limits: such a request does no counting work at all.
- The first `choose` checks the API key's and resource's counters together with the candidate
  legs' connection counters, in one store call: an exhausted key or resource raises the 429;
  otherwise the first leg whose connection fits is counted with them, and the legs before it are
  reported as skipped. Later calls (after a leg failed upstream) check connections only.
- Whatever was counted is settled exactly once, when the audit entry finishes (however the
  request ends): a reservation is replaced by the real tokens and cost, by itself when a model
  answered or was being called but no usage is known, by nothing when every call failed. A
  worker that dies leaves reservations that expire once the request could no longer be running
  (remaining legs' timeouts and tries, plus a margin; plus 15 minutes for a stream).
- The store failing fails open (serve, count nothing, one log line per 10 s) unless
  `VMX_CAPACITY_FAIL_CLOSED` is set, which answers 503.
"""

from __future__ import annotations

import itertools
import logging
import math
import secrets
import time
from collections.abc import Hashable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from django.conf import settings

from gateway.capacity.policy import (
    Counter,
    Estimate,
    Scope,
    counters_for,
    estimated_tokens,
    exceeded_message,
    retry_after_seconds,
)
from gateway.capacity.stores import (
    Admission,
    CapacityStore,
    Charge,
    Settlement,
    StoreUnavailableError,
    capacity_store,
    reservation_of,
    settle_in_background,
)
from gateway.core.errors import BudgetExceededError, CapacityExceededError, ServiceUnavailableError
from gateway.core.limits import CapacityLimit, Metric, usd_to_nanos
from gateway.core.logs import ThrottledLog
from gateway.core.pricing import PriceList
from gateway.observability import metrics

if TYPE_CHECKING:
    from gateway.audit.entry import AuditEntry

logger = logging.getLogger("vmx.capacity")
_store_failures = ThrottledLog(logger, interval=10.0)
RESERVATION_MARGIN_SECONDS = 60.0
STREAM_ALLOWANCE_SECONDS = 900.0
"""A stream's timeout bounds its silences, not its length: its reservation is held this much
longer. One still running after that keeps being counted when it ends, but no longer holds room."""


def _count_failure() -> None:
    """A store call failed (the request was served open, or answered 503)."""
    metrics.capacity_store_failures_total.inc()


@dataclass(frozen=True, slots=True)
class LegCapacity:
    """What the gate needs to know of one leg of the route."""

    connection: str
    model: str
    limits: tuple[CapacityLimit, ...]
    longest_seconds: float
    """The longest this leg may take (timeout x tries): how long its reservation is held."""


@dataclass(slots=True)
class _Counted:
    charge: Charge
    reservation: str
    leg: int | None
    """The leg it was counted for; None for the key's and resource's counters."""


class CapacityGate:
    def __init__(
        self,
        *,
        store: CapacityStore,
        mandatory: list[Charge],
        leg_charges: list[list[Charge]],
        leg_seconds: list[float],
        stream: bool,
        fail_closed: bool,
    ) -> None:
        self.store = store
        self.fail_closed = fail_closed
        self.request = secrets.token_hex(8)
        self._calls = itertools.count()
        self._mandatory = mandatory
        self._leg_charges = leg_charges
        self._leg_seconds = leg_seconds
        self._allowance = STREAM_ALLOWANCE_SECONDS if stream else RESERVATION_MARGIN_SECONDS
        self._counted: list[_Counted] = []
        self._admitted = False
        self._disabled = False
        self._answered: int | None = None
        self._calling: int | None = None

    @property
    def settles(self) -> bool:
        """Whether the end of the request must reach the store (some counter counts tokens or cost)."""
        return any(_counts_usage(item.charge.counter) for item in self._counted)

    async def choose(self, candidates: Sequence[int]) -> tuple[int | None, dict[int, CapacityExceededError]]:
        """The first of `candidates` (leg indexes, in order) whose connection has room, counted;
        with the reasons the ones before it were skipped. Raises the 429 (key or resource
        exhausted) or, failing closed, the 503."""
        skipped: dict[int, CapacityExceededError] = {}
        need_store = not self._admitted and bool(self._mandatory)
        considered: list[int] = []
        for index in candidates:
            considered.append(index)
            if not self._leg_charges[index]:
                break
            need_store = True
        if self._disabled or not considered or not need_store:
            self._admitted = True
            return (considered[0] if considered else None), skipped
        groups: list[list[Charge]] = [[] if self._admitted else self._mandatory]
        groups += [self._leg_charges[index] for index in considered]
        admission_id = f"{self.request}.{next(self._calls)}"
        # Held until the request can no longer be running: every remaining leg at its longest.
        held = sum(self._leg_seconds[considered[0] :]) + self._allowance
        try:
            admission = await self.store.admit(groups=groups, reservation=admission_id, reservation_seconds=held)
        except StoreUnavailableError as exc:
            _count_failure()
            if self.fail_closed:
                _store_failures.warning("store", "capacity store unavailable, answering 503 (%s)", exc)
                raise ServiceUnavailableError(
                    "The gateway cannot check its usage limits right now; try again shortly.",
                    code="capacity_unavailable",
                    headers={"retry-after": "1"},
                ) from exc
            _store_failures.warning("store", "capacity store unavailable, serving without limits (%s)", exc)
            self._disabled = True
            self._admitted = True
            return considered[0], skipped
        if 0 in admission.crossed:
            raise capacity_error(admission.crossed[0], now=time.time())
        for group, index in enumerate(considered, start=1):
            if admission.chosen == group:
                break
            skipped[index] = capacity_error(admission.crossed.get(group, []), now=time.time())
        if admission.chosen is None:
            return None, skipped
        self._record(admission, groups, admission_id, considered)
        return considered[admission.chosen - 1], skipped

    def _record(self, admission: Admission, groups: list[list[Charge]], admission_id: str, legs: list[int]) -> None:
        assert admission.chosen is not None
        if not self._admitted:
            self._counted += [_Counted(charge, reservation_of(admission_id, 0), None) for charge in groups[0]]
            self._admitted = True
        leg = legs[admission.chosen - 1]
        reservation = reservation_of(admission_id, admission.chosen)
        self._counted += [_Counted(charge, reservation, leg) for charge in groups[admission.chosen]]

    def calling(self, leg: int) -> None:
        """The leg is being called: if the request ends before its outcome is known (the client
        left, shutdown), what it reserved is what it used."""
        self._calling = leg

    def failed(self, leg: int) -> None:
        """The leg failed upstream: it used nothing."""
        if self._calling == leg:
            self._calling = None

    def answered(self, leg: int) -> None:
        """The leg that answered: its connection's counters get the real usage."""
        self._answered, self._calling = leg, None

    def settle(self, audit: AuditEntry, cost_usd: float | None) -> None:
        """Replace the reservations with what the request used (called once, when it ends).

        The real usage when the answer reported it; the reservation itself when a model answered
        or was being asked but no usage is known (a stream cut before its usage event, a client
        that left mid-call); nothing when no upstream call got anywhere. Counters on connections
        whose legs failed or were not the one used get nothing."""
        if not self.settles:
            return
        used_leg = self._answered if self._answered is not None else self._calling
        usage = audit.usage
        tokens = max(usage.total_tokens, usage.input_tokens + usage.output_tokens)
        known = Estimate(tokens=tokens, cost_nanos=usd_to_nanos(cost_usd or 0.0)) if tokens else None

        def actual(item: _Counted) -> Estimate:
            if used_leg is None or (item.leg is not None and item.leg != used_leg):
                return Estimate()
            return known if known is not None else item.charge.estimate

        settlements = [
            Settlement(
                counter=item.charge.counter,
                reservation=item.reservation,
                reserved=item.charge.estimate,
                actual=actual(item),
            )
            for item in self._counted
            if _counts_usage(item.charge.counter)
        ]
        # Nothing reserved and nothing used (token counting, say): nothing to tell the store.
        settlements = [s for s in settlements if s.reserved != _NOTHING or s.actual != _NOTHING]
        if settlements:
            _spawn_settle(self.store, settlements)


_NOTHING = Estimate()


def _counts_usage(counter: Counter) -> bool:
    return counter.max_tokens is not None or counter.max_cost_nanos is not None


def capacity_error(crossed: list[tuple[Counter, Metric]], *, now: float) -> CapacityExceededError:
    """The 429 for the counters crossed: named after the first, waiting for the latest window."""
    if not crossed:
        return CapacityExceededError("No capacity is left.")
    counter, metric = crossed[0]
    waits = [retry_after_seconds(c.window_end, now) for c, _ in crossed]
    wait = None if None in waits else max(w for w in waits if w is not None)
    error_class = BudgetExceededError if Metric.COST in metric else CapacityExceededError
    return error_class(exceeded_message(counter, metric) + ".", retry_after=wait, scope=counter.scope.kind)


# ------------------------------------------------------------------------------------------------
# Settling off the request path (the tasks live in `stores`, which also releases what a cancelled
# admission counted).


def _spawn_settle(store: CapacityStore, settlements: list[Settlement]) -> None:
    settle_in_background(store, settlements, on_failure=_settle_failed)


def _settle_failed(exc: StoreUnavailableError) -> None:
    _count_failure()
    _store_failures.warning("settle", "capacity store unavailable; a request's usage was not counted (%s)", exc)


# ------------------------------------------------------------------------------------------------


_plans: dict[Hashable, tuple[float, list[Charge], list[list[Charge]]]] = {}
"""Charges that depend on nothing but the configuration and the clock, by the caller's key."""
MAX_PLANS = 10_000


def capacity_gate_open(
    *,
    api_key: str,
    api_key_limits: tuple[CapacityLimit, ...],
    resource: str | None,
    resource_limits: tuple[CapacityLimit, ...],
    legs: Sequence[LegCapacity],
    body: Mapping[str, Any] | None,
    source_ip: str | None,
    metadata: Mapping[str, str],
    prices: PriceList,
    fail_closed: bool,
    store: CapacityStore | None = None,
    plan_key: Hashable | None = None,
    environment: str = "",
) -> CapacityGate | None:
    """The request's gate, or None when nothing it touches has limits (the common, free case).

    `body` is what goes upstream, estimated for tokens and cost; None for a request that calls
    no model, which counts as a request only. `plan_key` names everything the limits depend on
    besides the request (configuration revision, key, route): requests that count only requests
    and per no dimension then reuse their counters until the first of their windows ends, instead
    of working them out again. `environment` is the store tag of the key's environment: every
    scope the request counts in is that environment's.
    """
    if not api_key_limits and not resource_limits and not any(leg.limits for leg in legs):
        return None
    now = time.time()
    planned = _plans.get(plan_key) if plan_key is not None else None
    if planned is not None and now < planned[0]:
        mandatory_charges, leg_charges = planned[1], planned[2]
    else:
        max_values = capacity_max_values()

        def counters(scope: Scope, limits: Sequence[CapacityLimit]) -> list[Counter]:
            return counters_for(scope, limits, now=now, source_ip=source_ip, metadata=metadata, max_values=max_values)

        mandatory = counters(Scope("api_key", api_key, environment), api_key_limits)
        if resource is not None:
            mandatory += counters(Scope("resource", resource, environment), resource_limits)
        per_leg = [counters(Scope("connection", leg.connection, environment), leg.limits) for leg in legs]
        every = [*mandatory, *(counter for counters in per_leg for counter in counters)]
        counts_usage = any(_counts_usage(counter) for counter in every)
        input_tokens, output_tokens = estimated_tokens(body) if counts_usage and body is not None else (0, 0)

        def charges(counters: list[Counter], model: str) -> list[Charge]:
            return [_estimated(c, model, input_tokens, output_tokens, prices) for c in counters]

        mandatory_charges = charges(mandatory, legs[0].model)
        leg_charges = [charges(counters, leg.model) for leg, counters in zip(legs, per_leg, strict=True)]
        per_value = any(limit.dimension for counter in every for limit in counter.limits)
        if plan_key is not None and not counts_usage and not per_value:
            ends = [counter.window_end for counter in every if counter.window_end is not None]
            if len(_plans) >= MAX_PLANS:
                _plans.clear()
            _plans[plan_key] = (min(ends, default=math.inf), mandatory_charges, leg_charges)
    return CapacityGate(
        store=store or capacity_store(),
        mandatory=mandatory_charges,
        leg_charges=leg_charges,
        leg_seconds=[leg.longest_seconds for leg in legs],
        stream=body is not None and body.get("stream") is True,
        fail_closed=fail_closed,
    )


def capacity_max_values() -> int | None:
    """Distinct values a limit with a dimension tracks per window (`VMX_CAPACITY_MAX_VALUES`; 0: no bound)."""
    value = int(settings.VMX_CAPACITY_MAX_VALUES)
    return value if value > 0 else None


_unpriced_budgets: set[str] = set()


def _estimated(counter: Counter, model: str, input_tokens: int, output_tokens: int, prices: PriceList) -> Charge:
    if not _counts_usage(counter):
        return Charge(counter=counter)
    price = prices.price(model)
    unpriced = price is None and counter.max_cost_nanos is not None
    if unpriced and model not in _unpriced_budgets and len(_unpriced_budgets) < 1_000:
        # Its cost is unknown, so it spends nothing of a dollar budget: say so, once per model.
        _unpriced_budgets.add(model)
        logger.warning(
            "model '%s' has no price: requests to it do not count against costUsd limits; add a pricing entry",
            model,
        )
    cost = (
        price.cost_usd(input_tokens=input_tokens, cached_tokens=0, output_tokens=output_tokens)
        if price is not None
        else 0.0
    )
    return Charge(
        counter=counter, estimate=Estimate(tokens=input_tokens + output_tokens, cost_nanos=usd_to_nanos(cost))
    )
