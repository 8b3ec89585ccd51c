"""Health probes (DESIGN.md 2.13): `/healthz` (the process is alive) and `/readyz` (this worker can
serve: its configuration is loaded and fresh). Neither fails because the database or the cache
blinked: a serving instance stays in the load balancer, and the body says how each answers.

`capacity` is checked through the very client and connection the limits use (with Redis, the
worker's request-path client; else the database), never through another client that may read
`REDIS_URL` differently. While the limits' circuit breaker is open it is `down` without asking.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable
from typing import Any

from asgiref.sync import sync_to_async
from django.core.cache import cache
from django.db import connection
from django.http import HttpRequest, JsonResponse

from connections.selectors import aconfig_snapshot, config_snapshot_age
from gateway.capacity.stores import RedisCapacityStore, capacity_store
from gateway.capacity.stores.factory import capacity_breaker, redis_url


async def healthz(request: HttpRequest) -> JsonResponse:
    """The process is alive. Touches nothing, so a database outage never restarts workers."""
    return JsonResponse({"status": "ok"})


READY_MAX_CONFIG_AGE = 30.0
"""A worker whose configuration was last read longer ago than this cannot vouch for it."""
PROBE_TIMEOUT = 2.0


def _database_ping() -> None:
    with connection.cursor() as cursor:
        cursor.execute("SELECT 1")


async def _state(probe: Callable[[], Awaitable[Any]]) -> str:
    try:
        await asyncio.wait_for(probe(), PROBE_TIMEOUT)
    except Exception:  # any failure or a hang: that dependency is down right now
        return "down"
    return "ok"


async def readyz(request: HttpRequest) -> JsonResponse:
    """200 while this worker can serve: its configuration is loaded and was read within the last
    30 s (DESIGN.md 2.13). A blink of the database or cache does not pull a serving instance out of
    the load balancer; the body says how each dependency answers right now."""

    async def cache_probe() -> None:
        await cache.aset("vmx:readyz", "1", timeout=5)
        await cache.aget("vmx:readyz")

    with contextlib.suppress(Exception):  # outside a server nothing refreshes it in the background
        await aconfig_snapshot()
    age = config_snapshot_age()
    configuration = "ok" if age is not None and age <= READY_MAX_CONFIG_AGE else "down"
    url = redis_url()
    breaker_open = bool(url) and capacity_breaker(url).is_open
    store = capacity_store()

    async def capacity_probe() -> None:
        if breaker_open:
            raise RuntimeError("the limits' Redis failed moments ago")
        if isinstance(store, RedisCapacityStore):
            await store.ping()

    database, cache_state, capacity = await asyncio.gather(
        _state(sync_to_async(_database_ping)), _state(cache_probe), _state(capacity_probe)
    )
    if not isinstance(store, RedisCapacityStore):
        capacity = database  # the counters are in the database
    checks = {"configuration": configuration, "database": database, "cache": cache_state, "capacity": capacity}
    ready = configuration == "ok"
    body: dict[str, Any] = {
        "status": "ok" if ready else "unavailable",
        "checks": checks,
        "capacity_breaker": "open" if breaker_open else "closed",
    }
    if age is not None:
        body["configuration_age_seconds"] = round(age, 1)
    return JsonResponse(body, status=200 if ready else 503)
