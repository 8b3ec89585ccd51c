"""Where capacity counters live: Redis when `REDIS_URL` is set, else the database (DESIGN.md 2.10).

Both stores apply `policy.exceeded` atomically to every counter of a request at once:
- `admit` checks the mandatory group (API key and resource counters) and the leg groups in order
  (one per candidate connection), and counts the mandatory group and the first leg group that
  fits; if the mandatory group or every leg group would cross a limit, nothing is counted.
  Redis does it in one Lua script (one round trip); the database in one transaction that locks
  the counters' rows (on SQLite the IMMEDIATE transaction serialises writers).
- A reservation (tokens and cost held for a running request) is kept per counter with an expiry;
  `settle` removes it (if still there) and adds the real figures, so a reservation is released
  or replaced exactly once. Expired reservations are dropped by the next admission of the counter.
- Counters expire with their window (plus a margin); `lifetime` counters never do.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Protocol

import redis
import redis.exceptions
from asgiref.sync import sync_to_async
from django.conf import settings
from django.db import DatabaseError, transaction
from django.db.models import F, Q, Sum

from gateway.capacity.policy import Counter, Estimate, Metric, Used, exceeded, reservations_key
from gateway.capacity.resp import RedisReplyError, RedisUnavailableError, RespClient
from gateway.logs import ThrottledLog
from gateway.models import CapacityCounter, CapacityReservation

_refusals = ThrottledLog(logging.getLogger("vmx.capacity"), interval=10.0)

MAX_LISTED = 10_000
"""The admin looks at this many counters of one limit at most (one per dimension value)."""
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
        self, *, groups: Sequence[Sequence[Charge]], reservation: str, reservation_expires: float
    ) -> Admission: ...

    async def settle(self, *, settlements: Sequence[Settlement]) -> None: ...

    def used(self, *, key_prefix: str, limit: int) -> list[tuple[str, Used]]:
        """Synchronous read for the admin: the counters whose key starts with `key_prefix`
        (at most `limit`, the busiest first), as (key, figures in use)."""
        ...


# ------------------------------------------------------------------------------------------------
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
        try:
            await store.settle(settlements=settlements)
        except StoreUnavailableError as exc:
            if on_failure is not None:
                on_failure(exc)

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


def _releases(groups: Sequence[Sequence[Charge]], reservation: str, chosen: int | None = None) -> list[Settlement]:
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
        if _reserves(charge)
    ]


def _expiry(counter: Counter) -> float | None:
    return None if counter.window_end is None else counter.window_end + EXPIRY_MARGIN_SECONDS


def _reserves(charge: Charge) -> bool:
    return bool(charge.estimate.tokens or charge.estimate.cost_nanos)


# ------------------------------------------------------------------------------------------------
# Redis

# KEYS: per counter i, its hash (r, t, c: counted; rt, rc: reserved) then its reservations' sorted set
# (member "id:tokens:cost", score = expiry in ms).
# ARGV: now_ms, reservation id, reservation expiry ms, number of groups, then per counter:
# group, max requests, max tokens, max cost (-1: no limit), estimate tokens, estimate cost, key expiry ms (0: never).
_ADMIT = """
local now = tonumber(ARGV[1])
-- Lua numbers print as floats past 1e14 and as "-0": amounts stay strings where they are passed on.
local rid = ARGV[2]
local rexp = tonumber(ARGV[3])
local ngroups = tonumber(ARGV[4])
local n = #KEYS / 2
local ok = {}
for g = 0, ngroups - 1 do ok[g] = true end
local crossed = {}
for i = 1, n do
  local h, z, a = KEYS[2 * i - 1], KEYS[2 * i], 4 + (i - 1) * 7
  local expired = redis.call('ZRANGEBYSCORE', z, '-inf', now)
  if #expired > 0 then
    local t, c = 0, 0
    for _, m in ipairs(expired) do
      local mt, mc = string.match(m, ':(%d+):(%d+)$')
      t = t + tonumber(mt)
      c = c + tonumber(mc)
    end
    if t > 0 then redis.call('HINCRBY', h, 'rt', string.format('%d', 0 - t)) end
    if c > 0 then redis.call('HINCRBY', h, 'rc', string.format('%d', 0 - c)) end
    redis.call('ZREMRANGEBYSCORE', z, '-inf', now)
  end
  local v = redis.call('HMGET', h, 'r', 't', 'c', 'rt', 'rc')
  local r = tonumber(v[1]) or 0
  local t = (tonumber(v[2]) or 0) + (tonumber(v[4]) or 0)
  local c = (tonumber(v[3]) or 0) + (tonumber(v[5]) or 0)
  local maxr, maxt, maxc = tonumber(ARGV[a + 2]), tonumber(ARGV[a + 3]), tonumber(ARGV[a + 4])
  local et, ec = tonumber(ARGV[a + 5]), tonumber(ARGV[a + 6])
  local bits = 0
  if maxr >= 0 and r + 1 > maxr then bits = bits + 1 end
  if maxt >= 0 and t + et > maxt then bits = bits + 2 end
  if maxc >= 0 and c + ec > maxc then bits = bits + 4 end
  if bits > 0 then
    ok[tonumber(ARGV[a + 1])] = false
    table.insert(crossed, i)
    table.insert(crossed, bits)
  end
end
local chosen = -1
if ok[0] then
  for g = 1, ngroups - 1 do
    if ok[g] then chosen = g break end
  end
end
if chosen > 0 then
  for i = 1, n do
    local h, z, a = KEYS[2 * i - 1], KEYS[2 * i], 4 + (i - 1) * 7
    local g = tonumber(ARGV[a + 1])
    if g == 0 or g == chosen then
      local et, ec, kexp = ARGV[a + 5], ARGV[a + 6], tonumber(ARGV[a + 7])
      redis.call('HINCRBY', h, 'r', 1)
      if et ~= '0' or ec ~= '0' then
        if et ~= '0' then redis.call('HINCRBY', h, 'rt', et) end
        if ec ~= '0' then redis.call('HINCRBY', h, 'rc', ec) end
        redis.call('ZADD', z, rexp, rid .. ':' .. g .. ':' .. et .. ':' .. ec)
      end
      if kexp > 0 then
        redis.call('PEXPIREAT', h, kexp)
        redis.call('PEXPIREAT', z, kexp)
      end
    end
  end
end
table.insert(crossed, 1, chosen)
return crossed
"""

# KEYS as above; ARGV per counter: its reservation ("id:group"), reserved tokens, reserved cost,
# actual tokens, actual cost, key expiry ms (0: never).
_SETTLE = """
for i = 1, #KEYS / 2 do
  local h, z, a = KEYS[2 * i - 1], KEYS[2 * i], (i - 1) * 6
  local rid, rt, rc = ARGV[a + 1], ARGV[a + 2], ARGV[a + 3]
  if (rt ~= '0' or rc ~= '0') and redis.call('ZREM', z, rid .. ':' .. rt .. ':' .. rc) == 1 then
    if rt ~= '0' then redis.call('HINCRBY', h, 'rt', '-' .. rt) end
    if rc ~= '0' then redis.call('HINCRBY', h, 'rc', '-' .. rc) end
  end
  if ARGV[a + 4] ~= '0' then redis.call('HINCRBY', h, 't', ARGV[a + 4]) end
  if ARGV[a + 5] ~= '0' then redis.call('HINCRBY', h, 'c', ARGV[a + 5]) end
  local kexp = tonumber(ARGV[a + 6])
  if kexp > 0 then
    redis.call('PEXPIREAT', h, kexp)
    redis.call('PEXPIREAT', z, kexp)
  end
end
return 1
"""


def _limit(value: int | None) -> int:
    return -1 if value is None else value


def _ms(seconds: float | None) -> int:
    return 0 if seconds is None else int(seconds * 1000)


class RedisCapacityStore:
    """Counters in Redis: exact across every worker of every instance sharing it."""

    name = "redis"

    def __init__(self, url: str, *, timeout: float = 3.0) -> None:
        self.url = url
        self.timeout = timeout
        self._clients: dict[int, RespClient] = {}
        """One client per event loop (a connection belongs to its loop): one pipelined connection."""

    def _client(self) -> RespClient:
        loop = asyncio.get_running_loop()
        client = self._clients.get(id(loop))
        if client is None:
            client = RespClient(self.url, timeout=self.timeout)
            self._clients = {id(loop): client}  # an old loop (tests) is gone: drop its client
        return client

    async def _run(self, script: str, keys: list[str], args: list[Any]) -> Any:
        try:
            return await self._client().evalsha(script, keys, args)
        except RedisReplyError as exc:
            # Redis answered, and refused: not an outage but a defect (or a foreign key in the
            # way). Loud, though the request is still served by the fail-open/closed rule.
            _refusals.exception("refused", "Redis refused a capacity script: %s", exc)
            raise StoreUnavailableError(f"Redis refused the capacity script: {exc}") from exc
        except RedisUnavailableError as exc:
            raise StoreUnavailableError(f"Redis: {exc}") from exc

    async def admit(
        self, *, groups: Sequence[Sequence[Charge]], reservation: str, reservation_expires: float
    ) -> Admission:
        keys: list[str] = []
        args: list[Any] = [int(time.time() * 1000), reservation, _ms(reservation_expires), len(groups)]
        index: list[tuple[int, Counter]] = []
        for group, charges in enumerate(groups):
            for charge in charges:
                counter = charge.counter
                keys += [counter.key, reservations_key(counter.key)]
                args += [
                    group,
                    _limit(counter.max_requests),
                    _limit(counter.max_tokens),
                    _limit(counter.max_cost_nanos),
                    charge.estimate.tokens,
                    charge.estimate.cost_nanos,
                    _ms(_expiry(counter)),
                ]
                index.append((group, counter))
        try:
            reply = await self._run(_ADMIT, keys, args)
        except asyncio.CancelledError:
            # The client left with the script sent: it may have counted. A release queued behind
            # it on the same connection runs after it, so nothing stays reserved either way.
            settle_in_background(self, _releases(groups, reservation))
            raise
        chosen = int(reply[0])
        admission = Admission(chosen=chosen if chosen > 0 else None)
        for position in range(1, len(reply), 2):
            group, counter = index[int(reply[position]) - 1]
            admission.crossed.setdefault(group, []).append((counter, Metric(int(reply[position + 1]))))
        return admission

    async def settle(self, *, settlements: Sequence[Settlement]) -> None:
        keys: list[str] = []
        args: list[Any] = []
        for item in settlements:
            keys += [item.counter.key, reservations_key(item.counter.key)]
            args += [
                item.reservation,
                item.reserved.tokens,
                item.reserved.cost_nanos,
                item.actual.tokens,
                item.actual.cost_nanos,
                _ms(_expiry(item.counter)),
            ]
        await self._run(_SETTLE, keys, args)

    def used(self, *, key_prefix: str, limit: int) -> list[tuple[str, Used]]:
        client = redis.Redis.from_url(
            self.url, socket_timeout=self.timeout, socket_connect_timeout=self.timeout, driver_info=None
        )
        try:
            keys = []
            for key in client.scan_iter(match=_glob_escape(key_prefix) + "*", count=1000):
                keys.append(key)
                if len(keys) >= MAX_LISTED:
                    break
            pipeline = client.pipeline(transaction=False)
            for key in keys:
                pipeline.hmget(key, "r", "t", "c", "rt", "rc")
            found = []
            for key, values in zip(keys, pipeline.execute(raise_on_error=False), strict=True):
                if isinstance(values, Exception):  # not a counter (another program's key): not ours to read
                    continue
                r, t, c, rt, rc = (int(v or 0) for v in values)
                found.append((key.decode(), Used(requests=r, tokens=t + rt, cost_nanos=c + rc)))
        except redis.exceptions.RedisError as exc:
            raise StoreUnavailableError(f"Redis: {type(exc).__name__}: {exc}") from exc
        finally:
            client.close()
        found.sort(key=lambda item: (item[1].cost_nanos, item[1].tokens, item[1].requests), reverse=True)
        return found[:limit]


def _glob_escape(text: str) -> str:
    return "".join("\\" + ch if ch in "*?[]\\" else ch for ch in text)


# ------------------------------------------------------------------------------------------------
# Database


class DatabaseCapacityStore:
    """Counters in the database: exact across the workers of one host (and, on PostgreSQL, across
    instances sharing it). Each call is one transaction in a worker thread."""

    name = "database"
    SWEEP_SECONDS = 60.0

    def __init__(self) -> None:
        self._swept_at = 0.0

    async def admit(
        self, *, groups: Sequence[Sequence[Charge]], reservation: str, reservation_expires: float
    ) -> Admission:
        work = asyncio.ensure_future(
            self._call(sync_to_async(self._admit, thread_sensitive=False)(groups, reservation, reservation_expires))
        )
        try:
            admission: Admission = await asyncio.shield(work)
        except asyncio.CancelledError:
            # The client left; the transaction goes on in its thread. Once it has committed,
            # give back what it reserved.
            def release(done: asyncio.Future[Admission]) -> None:
                if not done.cancelled() and done.exception() is None and done.result().chosen is not None:
                    settle_in_background(self, _releases(groups, reservation, done.result().chosen))

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

    def _admit(self, groups: Sequence[Sequence[Charge]], reservation: str, reservation_expires: float) -> Admission:
        self._sweep()
        now = time.time()
        moment = datetime.fromtimestamp(now, UTC)
        charges = {charge.counter.key: charge for group in groups for charge in group}
        with transaction.atomic():
            # In key order, like the locks below: two requests creating the same new counters at a
            # window's start must not each wait for the other's insert (a deadlock on PostgreSQL).
            CapacityCounter.objects.bulk_create(
                [
                    CapacityCounter(key=key, expires_at=_moment(_expiry(charges[key].counter)))
                    for key in sorted(charges)
                ],
                ignore_conflicts=True,
            )
            # Locked in key order, so two requests sharing counters never deadlock.
            rows = {
                row.key: row
                for row in CapacityCounter.objects.select_for_update().filter(key__in=charges).order_by("key")
            }
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
                    if crossed:
                        fits[group] = False
                        admission.crossed.setdefault(group, []).append((charge.counter, crossed))
            if fits[0]:
                admission.chosen = next((g for g in range(1, len(groups)) if fits[g]), None)
            if admission.chosen is None:  # nothing counted; the expired reservations stay released
                CapacityCounter.objects.bulk_update(list(rows.values()), ["reserved_tokens", "reserved_cost_nanos"])
                return admission
            counted = [(0, charge) for charge in groups[0]]
            counted += [(admission.chosen, charge) for charge in groups[admission.chosen]]
            reservations = []
            for group, charge in counted:
                row = rows[charge.counter.key]
                row.requests += 1
                if _reserves(charge):
                    row.reserved_tokens += charge.estimate.tokens
                    row.reserved_cost_nanos += charge.estimate.cost_nanos
                    reservations.append(
                        CapacityReservation(
                            counter_key=row.key,
                            reservation=reservation_of(reservation, group),
                            tokens=charge.estimate.tokens,
                            cost_nanos=charge.estimate.cost_nanos,
                            expires_at=datetime.fromtimestamp(reservation_expires, UTC),
                        )
                    )
            CapacityCounter.objects.bulk_update(
                list(rows.values()), ["requests", "reserved_tokens", "reserved_cost_nanos"]
            )
            CapacityReservation.objects.bulk_create(reservations)
        return admission

    def _settle(self, settlements: Sequence[Settlement]) -> None:
        keys = {item.counter.key for item in settlements}
        with transaction.atomic():
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

    def used(self, *, key_prefix: str, limit: int) -> list[tuple[str, Used]]:
        rows = (
            CapacityCounter.objects.filter(key__startswith=key_prefix)
            .annotate(
                all_cost=F("cost_nanos") + F("reserved_cost_nanos"), all_tokens=F("tokens") + F("reserved_tokens")
            )
            .order_by("-all_cost", "-all_tokens", "-requests")[:limit]
        )
        return [(row.key, Used(requests=row.requests, tokens=row.all_tokens, cost_nanos=row.all_cost)) for row in rows]


def _moment(seconds: float | None) -> datetime | None:
    return None if seconds is None else datetime.fromtimestamp(seconds, UTC)


_stores: dict[str, CapacityStore] = {}


def capacity_store() -> CapacityStore:
    """The configured store: Redis when `REDIS_URL` is set, else the database."""
    url = settings.REDIS_URL
    store = _stores.get(url)
    if store is None:
        store = RedisCapacityStore(url) if url else DatabaseCapacityStore()
        _stores.clear()
        _stores[url] = store
    return store
