"""The limits' circuit breaker: its states on a clock of the test's own, then the request path's
client in front of a Redis that accepts connections and never answers."""

from __future__ import annotations

import asyncio
import time

import pytest
from prometheus_client import REGISTRY

from gateway.capacity.stores import RedisCapacityStore, StoreUnavailableError
from gateway.capacity.stores.breaker import CircuitBreaker
from gateway.capacity.stores.factory import RedisUnavailableError, redis_script_client
from tests.fakes.redis_servers import SilentServer
from tests.gateway.capacity.stores.test_factory import ECHO, REDIS_URL, _limited_counter
from tests.gateway.capacity.stores.test_stores import _redis_up


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_one_failure_opens_it_for_the_window_then_one_probe_goes():
    clock = Clock()
    breaker = CircuitBreaker(open_seconds=5, clock=clock)
    assert breaker.allow() and not breaker.is_open
    breaker.failed()
    assert breaker.is_open
    assert not breaker.allow()
    clock.now += 4.9
    assert not breaker.allow()
    clock.now += 0.2
    assert breaker.allow()  # the probe
    assert not breaker.allow()  # the others wait for its outcome
    breaker.succeeded()
    assert not breaker.is_open
    assert breaker.allow() and breaker.allow()


def test_a_failed_probe_opens_it_for_another_window():
    clock = Clock()
    breaker = CircuitBreaker(open_seconds=5, clock=clock)
    breaker.failed()
    clock.now += 5
    assert breaker.allow()
    breaker.failed()
    assert not breaker.allow()
    assert breaker.retry_in() == pytest.approx(5)


def test_a_probe_whose_caller_left_hands_the_probe_to_the_next_call():
    clock = Clock()
    breaker = CircuitBreaker(open_seconds=5, clock=clock)
    breaker.failed()
    clock.now += 5
    assert breaker.allow()
    breaker.abandoned()
    assert breaker.allow()


def test_zero_seconds_never_opens_it():
    breaker = CircuitBreaker(open_seconds=0, clock=Clock())
    breaker.failed()
    assert breaker.allow() and not breaker.is_open


def _sample(name: str) -> float:
    return REGISTRY.get_sample_value(name) or 0.0


def test_opening_and_closing_are_in_the_metrics():
    trips = _sample("vmx_capacity_breaker_trips_total")
    breaker = CircuitBreaker(open_seconds=5, clock=Clock())
    breaker.failed()
    breaker.failed()  # already open: one trip
    assert _sample("vmx_capacity_breaker_open") == 1
    assert _sample("vmx_capacity_breaker_trips_total") == trips + 1
    breaker.succeeded()
    assert _sample("vmx_capacity_breaker_open") == 0


async def test_a_silent_redis_is_waited_for_once_then_not_asked_while_the_breaker_is_open(settings):
    settings.VMX_CAPACITY_BREAKER_SECONDS = 30
    server = SilentServer()
    try:
        client = redis_script_client(server.url, timeout=0.5)
        started = time.monotonic()
        for _ in range(5):
            with pytest.raises(RedisUnavailableError):
                await client.evalsha(ECHO, [], ["x"])
        # Five commands each waiting the timeout would take 2.5 s; the first waits, the rest do not.
        assert time.monotonic() - started < 1.5
        assert server.connections == 1
        assert client.breaker.is_open
    finally:
        server.close()


async def test_the_store_fails_at_once_while_the_breaker_is_open(settings):
    """What the gate sees: a store failure (so the fail-open / fail-closed rule), without a wait."""
    settings.VMX_CAPACITY_BREAKER_SECONDS = 30
    server = SilentServer()
    try:
        store = RedisCapacityStore(server.url, timeout=0.5)
        charge = _limited_counter()
        with pytest.raises(StoreUnavailableError):
            await store.admit(groups=[[charge], []], reservation="r1", reservation_seconds=60)
        started = time.monotonic()
        with pytest.raises(StoreUnavailableError, match="not asked"):
            await store.admit(groups=[[charge], []], reservation="r2", reservation_seconds=60)
        assert time.monotonic() - started < 0.2
    finally:
        server.close()


async def test_after_the_window_one_probe_goes_and_the_others_still_fail_at_once(settings):
    settings.VMX_CAPACITY_BREAKER_SECONDS = 0.3
    server = SilentServer()
    client = redis_script_client(server.url, timeout=0.3)
    try:
        with pytest.raises(RedisUnavailableError):
            await client.evalsha(ECHO, [], ["x"])
        await asyncio.sleep(0.35)
        # The window has passed: one probe goes (and waits); the calls beside it fail at once.
        results = await asyncio.gather(*(client.evalsha(ECHO, [], ["x"]) for _ in range(4)), return_exceptions=True)
        assert all(isinstance(result, RedisUnavailableError) for result in results)
        assert sum("not asked" in str(result) for result in results) == 3
    finally:
        server.close()


@pytest.mark.skipif(not _redis_up(), reason="no Redis on 127.0.0.1:6379")
async def test_a_probe_that_redis_answers_closes_it(settings):
    settings.VMX_CAPACITY_BREAKER_SECONDS = 0.2
    client = redis_script_client(f"{REDIS_URL}?client_name=vmx-breaker-test", timeout=1.0)
    client.breaker.failed()  # as after an outage
    with pytest.raises(RedisUnavailableError, match="not asked"):
        await client.evalsha(ECHO, [], ["x"])
    await asyncio.sleep(0.25)
    assert await client.evalsha(ECHO, [], ["back"]) == b"back"
    assert not client.breaker.is_open
