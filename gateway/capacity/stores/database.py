"""Counters in the database (used when `REDIS_URL` is not set): exact across the workers of one
host and, on PostgreSQL, across instances sharing it. Each call is one transaction in a worker
thread that locks the counters' rows in key order (on SQLite the IMMEDIATE transaction
serialises writers).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

from asgiref.sync import sync_to_async
from django.db import DatabaseError, connection, transaction
from django.db.models import F, Q, Sum

from gateway.capacity.policy import KEY_PREFIX, Used, exceeded, values_exceeded
from gateway.capacity.stores.base import (
    Admission,
    Charge,
    Settlement,
    StoreUnavailableError,
    admission_releases,
    charge_reserves,
    counter_expiry,
    reservation_of,
    settle_in_background,
    settlement_id,
)
from gateway.models import CapacityCounter, CapacityReservation

SETTLED_KEY = KEY_PREFIX + "settled"
"""The `counter_key` of the markers of settlements applied (a retry of one changes nothing)."""
SETTLED_KEEP = timedelta(hours=1)


class DatabaseCapacityStore:
    """Counters in the database: exact across the workers of one host (and, on PostgreSQL, across
    instances sharing it). Each call is one transaction in a worker thread."""

    name = "database"
    SWEEP_SECONDS = 60.0

    def __init__(self) -> None:
        self._swept_at = 0.0

    async def admit(
        self, *, groups: Sequence[Sequence[Charge]], reservation: str, reservation_seconds: float
    ) -> Admission:
        work = asyncio.ensure_future(
            self._call(sync_to_async(self._admit, thread_sensitive=False)(groups, reservation, reservation_seconds))
        )
        try:
            admission: Admission = await asyncio.shield(work)
        except asyncio.CancelledError:
            # The client left; the transaction goes on in its thread. Once it has committed,
            # give back what it reserved.
            def release(done: asyncio.Future[Admission]) -> None:
                if not done.cancelled() and done.exception() is None and done.result().chosen is not None:
                    settle_in_background(self, admission_releases(groups, reservation, done.result().chosen))

            work.add_done_callback(release)
            raise
        return admission

    async def settle(self, *, settlements: Sequence[Settlement]) -> None:
        await self._call(sync_to_async(self._settle, thread_sensitive=False)(settlements))

    async def _call(self, work: Any) -> Any:
        try:
            return await work
        except DatabaseError as exc:
            raise StoreUnavailableError(f"database: {type(exc).__name__}: {exc}") from exc

    def _admit(self, groups: Sequence[Sequence[Charge]], reservation: str, reservation_seconds: float) -> Admission:
        self._sweep()
        charges = {charge.counter.key: charge for group in groups for charge in group}
        # A per-value counter's row is made only when it is counted: a refused request brings no
        # row, so the rows of a limit are bounded by its index.
        per_value = {key for key, charge in charges.items() if charge.counter.values_key}
        indexes = {
            charge.counter.values_key: charge.counter for charge in charges.values() if charge.counter.values_key
        }
        with transaction.atomic():
            moment = database_now()
            # In key order, like the locks below: two requests creating the same new counters at a
            # window's start must not each wait for the other's insert (a deadlock on PostgreSQL).
            CapacityCounter.objects.bulk_create(
                [
                    CapacityCounter(key=key, expires_at=_moment(counter_expiry(counter)))
                    for key, counter in sorted(
                        [*((k, charges[k].counter) for k in charges if k not in per_value), *indexes.items()]
                    )
                ],
                ignore_conflicts=True,
            )
            # The indexes first, then the counters, each in key order: every admission locks in
            # this one order, so none deadlocks, and no two add a value to one index at once.
            index_rows = {
                row.key: row
                for row in CapacityCounter.objects.select_for_update().filter(key__in=indexes).order_by("key")
            }
            rows = {
                row.key: row
                for row in CapacityCounter.objects.select_for_update().filter(key__in=charges).order_by("key")
            }
            new = {
                key: CapacityCounter(
                    key=key,
                    values_of=charges[key].counter.values_key,
                    expires_at=_moment(counter_expiry(charges[key].counter)),
                )
                for key in per_value
                if key not in rows
            }
            rows.update(new)
            expired = CapacityReservation.objects.filter(counter_key__in=charges, expires_at__lte=moment)
            for item in expired.values("counter_key").annotate(tokens_sum=Sum("tokens"), cost_sum=Sum("cost_nanos")):
                row = rows[item["counter_key"]]
                row.reserved_tokens -= item["tokens_sum"] or 0
                row.reserved_cost_nanos -= item["cost_sum"] or 0
            expired.delete()
            fits = [True] * len(groups)
            admission = Admission(chosen=None)
            for group, group_charges in enumerate(groups):
                for charge in group_charges:
                    row = rows[charge.counter.key]
                    used = Used(
                        requests=row.requests,
                        tokens=row.tokens + row.reserved_tokens,
                        cost_nanos=row.cost_nanos + row.reserved_cost_nanos,
                    )
                    crossed = exceeded(charge.counter, used, charge.estimate)
                    if charge.counter.values_key:
                        crossed |= values_exceeded(
                            charge.counter,
                            tracked=index_rows[charge.counter.values_key].requests,
                            known=charge.counter.key not in new,
                        )
                    if crossed:
                        fits[group] = False
                        admission.crossed.setdefault(group, []).append((charge.counter, crossed))
            if fits[0]:
                admission.chosen = next((g for g in range(1, len(groups)) if fits[g]), None)
            existing = [row for key, row in rows.items() if key not in new]
            if admission.chosen is None:  # nothing counted; the expired reservations stay released
                CapacityCounter.objects.bulk_update(existing, ["reserved_tokens", "reserved_cost_nanos"])
                return admission
            counted = [(0, charge) for charge in groups[0]]
            counted += [(admission.chosen, charge) for charge in groups[admission.chosen]]
            reservations = []
            made = []
            for group, charge in counted:
                row = rows[charge.counter.key]
                row.requests += 1
                if row.key in new:
                    made.append(row)
                    index_rows[charge.counter.values_key].requests += 1
                if charge_reserves(charge):
                    row.reserved_tokens += charge.estimate.tokens
                    row.reserved_cost_nanos += charge.estimate.cost_nanos
                    reservations.append(
                        CapacityReservation(
                            counter_key=row.key,
                            reservation=reservation_of(reservation, group),
                            tokens=charge.estimate.tokens,
                            cost_nanos=charge.estimate.cost_nanos,
                            expires_at=moment + timedelta(seconds=max(reservation_seconds, 0.0)),
                        )
                    )
            CapacityCounter.objects.bulk_update(
                [*existing, *index_rows.values()], ["requests", "reserved_tokens", "reserved_cost_nanos"]
            )
            CapacityCounter.objects.bulk_create(made)
            CapacityReservation.objects.bulk_create(reservations)
        return admission

    def _settle(self, settlements: Sequence[Settlement]) -> None:
        keys = {item.counter.key for item in settlements}
        marker = settlement_id(settlements)
        with transaction.atomic():
            if CapacityReservation.objects.filter(counter_key=SETTLED_KEY, reservation=marker).exists():
                return  # a retry of a settlement whose commit went through
            CapacityReservation.objects.create(
                counter_key=SETTLED_KEY, reservation=marker, expires_at=datetime.now(UTC) + SETTLED_KEEP
            )
            rows = {
                row.key: row for row in CapacityCounter.objects.select_for_update().filter(key__in=keys).order_by("key")
            }
            wanted = Q()
            for item in settlements:
                wanted |= Q(counter_key=item.counter.key, reservation=item.reservation)
            held = {(res.counter_key, res.reservation): res for res in CapacityReservation.objects.filter(wanted)}
            for item in settlements:
                row = rows.get(item.counter.key)
                if row is None:  # its window ended and was swept
                    continue
                res = held.get((item.counter.key, item.reservation))
                if res is not None:  # still held (not expired and dropped): release it
                    row.reserved_tokens -= res.tokens
                    row.reserved_cost_nanos -= res.cost_nanos
                row.tokens += item.actual.tokens
                row.cost_nanos += item.actual.cost_nanos
            CapacityCounter.objects.bulk_update(
                list(rows.values()), ["tokens", "cost_nanos", "reserved_tokens", "reserved_cost_nanos"]
            )
            CapacityReservation.objects.filter(pk__in=[res.pk for res in held.values()]).delete()

    def _sweep(self) -> None:
        """Delete counters whose window ended (with their reservations), at most once a minute."""
        if time.monotonic() - self._swept_at < self.SWEEP_SECONDS:
            return
        self._swept_at = time.monotonic()
        moment = datetime.now(UTC)
        ended = CapacityCounter.objects.filter(expires_at__lt=moment)
        CapacityReservation.objects.filter(counter_key__in=ended.values("key")).delete()
        ended.delete()
        CapacityReservation.objects.filter(counter_key=SETTLED_KEY, expires_at__lt=moment).delete()

    def used(self, *, key: str = "", values_key: str = "", limit: int) -> list[tuple[str, Used]]:
        # A limit's values are the rows naming its index: an indexed lookup, never a prefix scan.
        rows = (
            (
                CapacityCounter.objects.filter(values_of=values_key)
                if values_key
                else CapacityCounter.objects.filter(key=key)
            )
            .annotate(
                all_cost=F("cost_nanos") + F("reserved_cost_nanos"), all_tokens=F("tokens") + F("reserved_tokens")
            )
            .order_by("-all_cost", "-all_tokens", "-requests", "key")[:limit]
        )
        return [(row.key, Used(requests=row.requests, tokens=row.all_tokens, cost_nanos=row.all_cost)) for row in rows]

    def values_count(self, *, values_key: str) -> int:
        row = CapacityCounter.objects.filter(key=values_key).values_list("requests", flat=True).first()
        return int(row or 0)


def database_now() -> datetime:
    """The database's clock (instances' clocks differ; the database they share has one)."""
    query = {
        "postgresql": "SELECT now()",
        "sqlite": "SELECT (julianday('now') - 2440587.5) * 86400.0",
    }.get(connection.vendor)
    if query is None:
        return datetime.now(UTC)
    with connection.cursor() as cursor:
        cursor.execute(query)
        value = cursor.fetchone()[0]
    return value.astimezone(UTC) if isinstance(value, datetime) else datetime.fromtimestamp(float(value), UTC)


def _moment(seconds: float | None) -> datetime | None:
    return None if seconds is None else datetime.fromtimestamp(seconds, UTC)
