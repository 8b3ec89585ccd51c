"""Counters in Redis, exact across every worker of every instance sharing it: one Lua script per
admission and per settlement (one round trip each), through the client the factory gives this
event loop.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from typing import Any

import redis.exceptions

from gateway.capacity.policy import KEY_PREFIX, Counter, Used, reservations_key
from gateway.capacity.stores.base import (
    Admission,
    Charge,
    Settlement,
    StoreUnavailableError,
    admission_releases,
    counter_expiry,
    settle_in_background,
    settlement_id,
)
from gateway.capacity.stores.factory import (
    REDIS_TIMEOUT_SECONDS,
    RedisReplyError,
    RedisUnavailableError,
    ScriptClient,
    redis_script_client,
    redis_sync_client,
)
from gateway.core.limits import Metric
from gateway.core.logs import ThrottledLog

_refusals = ThrottledLog(logging.getLogger("vmx.capacity"), interval=10.0)
MAX_LISTED = 10_000
"""The admin looks at this many counters of one limit at most (one per dimension value)."""

# KEYS: per counter i, its hash (r, t, c: counted; rt, rc: reserved), its reservations' sorted set
# (member "id:tokens:cost", score = expiry in ms), then its limit's index of values (a set of
# counter keys; the counter's own key again when it has no dimension).
# ARGV: reservation id, how long it is held (ms, from Redis's own clock), number of groups, then per counter:
# group, max requests, max tokens, max cost (-1: no limit), estimate tokens, estimate cost, key
# expiry ms (0: never), max values (-1: no bound), has an index (1/0).
_ADMIT = """
-- Expiry by the server's clock: every instance's reservations are stamped and dropped alike.
local clock = redis.call('TIME')
local now = tonumber(clock[1]) * 1000 + math.floor(tonumber(clock[2]) / 1000)
-- Lua numbers print as floats past 1e14 and as "-0": amounts stay strings where they are passed on.
local rid = ARGV[1]
local rexp = string.format('%d', now + tonumber(ARGV[2]))
local ngroups = tonumber(ARGV[3])
local n = #KEYS / 3
local ok = {}
for g = 0, ngroups - 1 do ok[g] = true end
local crossed = {}
for i = 1, n do
  local h, z, x, a = KEYS[3 * i - 2], KEYS[3 * i - 1], KEYS[3 * i], 3 + (i - 1) * 9
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
  local maxv = tonumber(ARGV[a + 8])
  if maxv >= 0 and redis.call('SISMEMBER', x, h) == 0 and redis.call('SCARD', x) >= maxv then bits = bits + 8 end
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
    local h, z, x, a = KEYS[3 * i - 2], KEYS[3 * i - 1], KEYS[3 * i], 3 + (i - 1) * 9
    local g = tonumber(ARGV[a + 1])
    if g == 0 or g == chosen then
      local et, ec, kexp = ARGV[a + 5], ARGV[a + 6], tonumber(ARGV[a + 7])
      redis.call('HINCRBY', h, 'r', 1)
      if et ~= '0' or ec ~= '0' then
        if et ~= '0' then redis.call('HINCRBY', h, 'rt', et) end
        if ec ~= '0' then redis.call('HINCRBY', h, 'rc', ec) end
        redis.call('ZADD', z, rexp, rid .. ':' .. g .. ':' .. et .. ':' .. ec)
      end
      if ARGV[a + 9] == '1' then redis.call('SADD', x, h) end
      if kexp > 0 then
        redis.call('PEXPIREAT', h, kexp)
        redis.call('PEXPIREAT', z, kexp)
        if ARGV[a + 9] == '1' then redis.call('PEXPIREAT', x, kexp) end
      end
    end
  end
end
table.insert(crossed, 1, chosen)
return crossed
"""

# KEYS as above, then the settlement's marker; ARGV per counter: its reservation ("id:group"),
# reserved tokens, reserved cost, actual tokens, actual cost, key expiry ms (0: never).
# The marker makes a retried settlement (its first answer lost) a no-op.
_SETTLE = """
if not redis.call('SET', KEYS[#KEYS], '1', 'NX', 'PX', 3600000) then return 0 end
for i = 1, (#KEYS - 1) / 2 do
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


def settled_key(settlement: str) -> str:
    """The marker of a settlement already applied (kept an hour: longer than any retry)."""
    return f"{KEY_PREFIX}settled:{settlement}"


def _limit(value: int | None) -> int:
    return -1 if value is None else value


def _ms(seconds: float | None) -> int:
    return 0 if seconds is None else int(seconds * 1000)


class RedisCapacityStore:
    """Counters in Redis: exact across every worker of every instance sharing it."""

    name = "redis"

    def __init__(self, url: str, *, timeout: float = REDIS_TIMEOUT_SECONDS) -> None:
        self.url = url
        self.timeout = timeout
        self._clients: dict[int, ScriptClient] = {}
        """One client per event loop (a connection belongs to its loop): one pipelined connection."""

    def _client(self) -> ScriptClient:
        loop = asyncio.get_running_loop()
        client = self._clients.get(id(loop))
        if client is None:
            client = redis_script_client(self.url, timeout=self.timeout)
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
        self, *, groups: Sequence[Sequence[Charge]], reservation: str, reservation_seconds: float
    ) -> Admission:
        keys: list[str] = []
        args: list[Any] = [reservation, _ms(max(reservation_seconds, 0.0)), len(groups)]
        index: list[tuple[int, Counter]] = []
        for group, charges in enumerate(groups):
            for charge in charges:
                counter = charge.counter
                keys += [counter.key, reservations_key(counter.key), counter.values_key or counter.key]
                args += [
                    group,
                    _limit(counter.max_requests),
                    _limit(counter.max_tokens),
                    _limit(counter.max_cost_nanos),
                    charge.estimate.tokens,
                    charge.estimate.cost_nanos,
                    _ms(counter_expiry(counter)),
                    _limit(counter.max_values),
                    1 if counter.values_key else 0,
                ]
                index.append((group, counter))
        try:
            reply = await self._run(_ADMIT, keys, args)
        except asyncio.CancelledError:
            # The client left with the script sent: it may have counted. Releasing what it may
            # have reserved is a no-op if it did not; should the release reach Redis first, the
            # reservation expires after `reservation_seconds`.
            settle_in_background(self, admission_releases(groups, reservation))
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
                _ms(counter_expiry(item.counter)),
            ]
        keys.append(settled_key(settlement_id(settlements)))
        await self._run(_SETTLE, keys, args)

    async def ping(self) -> None:
        """Whether the connection the limits use answers (`/readyz`); StoreUnavailableError if not."""
        try:
            await self._client().ping()
        except (RedisReplyError, RedisUnavailableError) as exc:
            raise StoreUnavailableError(f"Redis: {exc}") from exc

    def used(self, *, key: str = "", values_key: str = "", limit: int) -> list[tuple[str, Used]]:
        client = redis_sync_client(self.url, timeout=self.timeout)
        try:
            # A limit's values come from its index (bounded by VMX_CAPACITY_MAX_VALUES), never a scan.
            members: Any = client.smembers(values_key) if values_key else []
            keys = sorted(member.decode() for member in members) if values_key else [key]
            keys = keys[:MAX_LISTED]
            pipeline = client.pipeline(transaction=False)
            for each in keys:
                pipeline.hmget(each, "r", "t", "c", "rt", "rc")
            found = []
            for each, values in zip(keys, pipeline.execute(raise_on_error=False), strict=True):
                if isinstance(values, Exception) or all(v is None for v in values):  # gone, or not a counter
                    continue
                r, t, c, rt, rc = (int(v or 0) for v in values)
                found.append((each, Used(requests=r, tokens=t + rt, cost_nanos=c + rc)))
        except redis.exceptions.RedisError as exc:
            raise StoreUnavailableError(f"Redis: {type(exc).__name__}: {exc}") from exc
        finally:
            client.close()
        found.sort(key=lambda item: (item[1].cost_nanos, item[1].tokens, item[1].requests), reverse=True)
        return found[:limit]

    def values_count(self, *, values_key: str) -> int:
        client = redis_sync_client(self.url, timeout=self.timeout)
        try:
            return int(client.scard(values_key))
        except redis.exceptions.RedisError as exc:
            raise StoreUnavailableError(f"Redis: {type(exc).__name__}: {exc}") from exc
        finally:
            client.close()
