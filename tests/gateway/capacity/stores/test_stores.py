"""Both capacity stores against the real thing: Redis on 127.0.0.1:6379 and the suite's database.

Each test runs on both stores; concurrency is real (asyncio tasks against Redis, worker threads
against the database), so "exactly N admitted" here is what the stores guarantee.
"""

from __future__ import annotations

import asyncio
import secrets
import socket
import time
from collections.abc import Coroutine, Iterator
from typing import Any, TypeVar

import pytest

from gateway.capacity.policy import Counter, Estimate, Scope, counters_for
from gateway.capacity.stores import (
    CapacityStore,
    Charge,
    DatabaseCapacityStore,
    RedisCapacityStore,
    Settlement,
    StoreUnavailableError,
    reservation_of,
)
from gateway.core.limits import CapacityLimit, Metric

REDIS_URL = "redis://127.0.0.1:6379/13"
T = TypeVar("T")
pytestmark = pytest.mark.django_db(transaction=True)  # the database store's threads need committed rows


def _redis_up() -> bool:
    try:
        socket.create_connection(("127.0.0.1", 6379), timeout=1).close()
    except OSError:
        return False
    return True


@pytest.fixture(params=["redis", "database"])
def store(request: pytest.FixtureRequest) -> Iterator[CapacityStore]:
    if request.param == "redis":
        if not _redis_up():
            pytest.skip("no Redis on 127.0.0.1:6379")
        yield RedisCapacityStore(REDIS_URL)
        return
    yield DatabaseCapacityStore()


def _counter(limit: CapacityLimit, *, kind: str = "api_key", value: str = "") -> Counter:
    # A fresh scope name per test: Redis keeps counters between tests within their window.
    name = f"t-{secrets.token_hex(4)}"
    metadata = {"user": value} if value else {}
    [counter] = counters_for(Scope(kind, name), [limit], now=time.time(), source_ip=None, metadata=metadata)
    return counter


async def _all(store: CapacityStore, calls: list[Coroutine[Any, Any, T]]) -> list[T]:
    """Run the calls at once; one by one on the suite's in-memory SQLite, which locks whole tables
    between threads (a gateway's SQLite file is WAL with a busy timeout: the two-worker
    integration test covers it under real concurrency)."""
    from django.db import connection

    if isinstance(store, DatabaseCapacityStore) and connection.vendor == "sqlite":
        return [await call for call in calls]
    return await asyncio.gather(*calls)


async def _admit(store: CapacityStore, *groups: list[Charge], expires_in: float = 60.0) -> tuple[str, int | None]:
    admission_id = secrets.token_hex(6)
    admission = await store.admit(
        groups=[list(g) for g in groups] if len(groups) > 1 else [list(groups[0]), []],
        reservation=admission_id,
        reservation_seconds=expires_in,
    )
    return admission_id, admission.chosen


async def test_requests_are_counted_up_to_the_limit_and_no_further(store):
    counter = _counter(CapacityLimit(period="minute", requests=3))
    results = [(await _admit(store, [Charge(counter)]))[1] for _ in range(5)]
    assert results == [1, 1, 1, None, None]
    [(key, used)] = await asyncio.to_thread(store.used, key=counter.key, limit=5)
    assert key == counter.key and used.requests == 3  # the rejected ones counted nothing


async def test_concurrent_admissions_never_pass_on_one_reading(store):
    counter = _counter(CapacityLimit(period="minute", requests=10))
    results = await _all(store, [_admit(store, [Charge(counter)]) for _ in range(50)])
    assert sum(chosen is not None for _, chosen in results) == 10


async def test_a_budget_admits_what_its_reservations_leave_room_for(store):
    # Worth ten requests of 0.1 $-estimate each, fifty at once.
    counter = _counter(CapacityLimit(period="month", cost_usd=1.0))
    charge = Charge(counter, Estimate(tokens=100, cost_nanos=100_000_000))
    results = await _all(store, [_admit(store, [charge]) for _ in range(50)])
    admitted = [admission_id for admission_id, chosen in results if chosen is not None]
    assert len(admitted) == 10
    # The requests end having cost a tenth of the estimate: the reservations are replaced, and
    # the budget has room again for exactly what is left (1.0 - 10 x 0.01 = 0.9 → nine more).
    await store.settle(
        settlements=[
            Settlement(counter, reservation_of(admission_id, 0), charge.estimate, Estimate(10, 10_000_000))
            for admission_id in admitted
        ]
    )
    more = await _all(store, [_admit(store, [charge]) for _ in range(20)])
    assert sum(chosen is not None for _, chosen in more) == 9
    [(_, used)] = await asyncio.to_thread(store.used, key=counter.key, limit=1)
    assert used.cost_nanos == 10 * 10_000_000 + 9 * 100_000_000


async def test_settling_twice_or_after_expiry_never_releases_twice(store):
    counter = _counter(CapacityLimit(period="hour", tokens=1000))
    charge = Charge(counter, Estimate(tokens=600))
    first, chosen = await _admit(store, [charge], expires_in=-1)  # its worker "died": already expired
    assert chosen == 1
    # The next admission drops the expired reservation: 600 more fit.
    second, chosen = await _admit(store, [charge])
    assert chosen == 1
    # The dead request's settlement finds nothing to release and still adds what it used.
    await store.settle(settlements=[Settlement(counter, reservation_of(first, 0), charge.estimate, Estimate(50))])
    [(_, used)] = await asyncio.to_thread(store.used, key=counter.key, limit=1)
    assert used.tokens == 600 + 50
    await store.settle(settlements=[Settlement(counter, reservation_of(second, 0), charge.estimate, Estimate(100))])
    [(_, used)] = await asyncio.to_thread(store.used, key=counter.key, limit=1)
    assert used.tokens == 150


async def test_legs_are_counted_on_the_first_connection_with_room(store):
    mandatory = _counter(CapacityLimit(period="minute", requests=100))
    first = _counter(CapacityLimit(period="minute", requests=1), kind="connection")
    second = _counter(CapacityLimit(period="minute", requests=100), kind="connection")
    groups = ([Charge(mandatory)], [Charge(first)], [Charge(second)])
    assert (await _admit(store, *groups))[1] == 1
    assert (await _admit(store, *groups))[1] == 2  # the first connection is full: the second leg
    for counter, requests in ((mandatory, 2), (first, 1), (second, 1)):
        [(_, used)] = await asyncio.to_thread(store.used, key=counter.key, limit=1)
        assert used.requests == requests


async def test_a_full_key_counts_nothing_anywhere(store):
    mandatory = _counter(CapacityLimit(period="minute", requests=0))
    connection = _counter(CapacityLimit(period="minute", requests=5), kind="connection")
    admission = await store.admit(
        groups=[[Charge(mandatory)], [Charge(connection)]], reservation="x", reservation_seconds=60
    )
    assert admission.chosen is None
    assert [(counter.key, metric) for counter, metric in admission.crossed[0]] == [(mandatory.key, Metric.REQUESTS)]
    assert await asyncio.to_thread(store.used, key=connection.key, limit=1) in ([], [(connection.key, _zero())])


def _zero():
    from gateway.capacity.policy import Used

    return Used()


async def test_per_dimension_values_have_counters_of_their_own(store):
    limit = CapacityLimit(period="day", requests=1, dimension="metadata", dimension_field="user")
    name = f"t-{secrets.token_hex(4)}"

    def counter(user: str) -> Counter:
        return counters_for(Scope("resource", name), [limit], now=time.time(), source_ip=None, metadata={"user": user})[
            0
        ]

    assert (await _admit(store, [Charge(counter("alice"))]))[1] == 1
    assert (await _admit(store, [Charge(counter("bob"))]))[1] == 1
    assert (await _admit(store, [Charge(counter("alice"))]))[1] is None


async def test_redis_unreachable_is_a_store_failure():
    store = RedisCapacityStore("redis://127.0.0.1:9/0", timeout=0.5)
    counter = _counter(CapacityLimit(period="minute", requests=1))
    with pytest.raises(StoreUnavailableError):
        await _admit(store, [Charge(counter)])


async def test_no_value_a_client_chooses_reaches_another_counters_keys(store):
    """Values end counter keys: none may spell another counter's key or its reservations' key."""
    limit = CapacityLimit(period="day", tokens=1000, dimension="metadata", dimension_field="user")
    name = f"t-{secrets.token_hex(4)}"
    for user in ("X:z", "X", "reservations:X", "X=Y"):
        [counter] = counters_for(
            Scope("resource", name), [limit], now=time.time(), source_ip=None, metadata={"user": user}
        )
        for _ in range(2):
            assert (await _admit(store, [Charge(counter, Estimate(tokens=10))]))[1] == 1


@pytest.mark.parametrize("answer_lost", [False, True], ids=["never-arrived", "answer-lost"])
async def test_a_settlement_cut_by_a_redis_blip_is_retried_and_counted_once(answer_lost):
    """A budget worth 100,000 tokens, a stream that reserved 90,000 and used 15: the connection to
    Redis is cut exactly while the settlement goes out. Retried, it releases the reservation and
    adds the 15 once (even when Redis had run it and only its answer was lost), so the next large
    request fits instead of being refused for the whole allowance."""
    import hashlib

    from gateway.capacity.stores import settle_in_background, settlements_finished
    from gateway.capacity.stores.redis import _SETTLE
    from tests.fakes.tcp_proxy import TcpProxy

    if not _redis_up():
        pytest.skip("no Redis on 127.0.0.1:6379")
    proxy = TcpProxy("127.0.0.1", 6379).up()
    try:
        store = RedisCapacityStore(f"redis://127.0.0.1:{proxy.port}/13", timeout=1.0)
        counter = _counter(CapacityLimit(period="day", tokens=100_000))
        charge = Charge(counter, Estimate(tokens=90_000))
        # Once through, so Redis knows the settlement script and its EVALSHA is what goes out.
        warm, _ = await _admit(store, [Charge(counter, Estimate(tokens=1))])
        await store.settle(settlements=[Settlement(counter, reservation_of(warm, 0), Estimate(1), Estimate())])
        admission, chosen = await _admit(store, [charge], expires_in=912)
        assert chosen == 1
        digest = hashlib.sha1(_SETTLE.encode()).hexdigest().encode()  # noqa: S324
        proxy.cut_on(digest, deliver=answer_lost)
        settle_in_background(
            store, [Settlement(counter, reservation_of(admission, 0), charge.estimate, Estimate(tokens=15))]
        )
        await settlements_finished(within=10)
        assert proxy.cuts == 1
        [(_, used)] = await asyncio.to_thread(RedisCapacityStore(REDIS_URL).used, key=counter.key, limit=1)
        assert used.tokens == 15
        _, chosen = await _admit(store, [charge])
        assert chosen == 1
    finally:
        proxy.down()


async def test_a_settlement_applied_again_adds_nothing(store):
    """A retry of a settlement that went through (its answer lost) is recognised on every store."""
    counter = _counter(CapacityLimit(period="hour", tokens=1000))
    admission, _ = await _admit(store, [Charge(counter, Estimate(tokens=600))])
    settlement = Settlement(counter, reservation_of(admission, 0), Estimate(tokens=600), Estimate(tokens=40))
    await store.settle(settlements=[settlement])
    await store.settle(settlements=[settlement])
    [(_, used)] = await asyncio.to_thread(store.used, key=counter.key, limit=1)
    assert used.tokens == 40


async def test_a_reservation_expires_by_the_stores_clock_not_the_instances(store, monkeypatch):
    """Instances' clocks differ; the store's does not. With this instance's clock an hour behind,
    a reservation held for 60 s is stamped to expire 60 s after the store's own time (Redis
    `TIME`, the database's `now()`), so a slow clock cannot keep it, nor a fast one drop it early."""
    counter = _counter(CapacityLimit(period="day", tokens=1000))
    real = time.time
    monkeypatch.setattr(time, "time", lambda: real() - 3600)  # this process's clock, an hour slow
    admission = await store.admit(
        groups=[[Charge(counter, Estimate(tokens=10))], []], reservation="skew", reservation_seconds=60
    )
    monkeypatch.undo()
    assert admission.chosen == 1
    if isinstance(store, RedisCapacityStore):
        import redis as redis_py

        from gateway.capacity.policy import reservations_key

        client = redis_py.Redis.from_url(REDIS_URL)
        [(_, score)] = client.zrange(reservations_key(counter.key), 0, -1, withscores=True)
        seconds, micros = client.time()
        client.close()
        store_now = seconds + micros / 1e6
    else:
        from django.db import connection

        from gateway.models import CapacityReservation

        row = await asyncio.to_thread(lambda: CapacityReservation.objects.get(counter_key=counter.key))
        score = row.expires_at.timestamp() * 1000
        store_now = real() if connection.vendor == "sqlite" else await asyncio.to_thread(_database_now)
    assert abs(score / 1000 - (store_now + 60)) < 5


def _database_now() -> float:
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute("SELECT now()")
        return float(cursor.fetchone()[0].timestamp())


async def test_concurrent_new_values_never_pass_the_bound_on_one_reading(store):
    """Fifty requests, each with a value of its own, at once, against a bound of five values:
    exactly five values are counted, on every store; the others leave nothing behind."""
    limit = CapacityLimit(period="lifetime", requests=100, dimension="metadata", dimension_field="user")
    name = f"t-{secrets.token_hex(4)}"
    counters = [
        counters_for(
            Scope("api_key", name), [limit], now=time.time(), source_ip=None, metadata={"user": f"u{n}"}, max_values=5
        )[0]
        for n in range(50)
    ]
    results = await _all(store, [_admit(store, [Charge(counter)]) for counter in counters])
    assert sum(chosen is not None for _, chosen in results) == 5
    assert await asyncio.to_thread(store.values_count, values_key=counters[0].values_key) == 5
    listed = await asyncio.to_thread(store.used, values_key=counters[0].values_key, limit=100)
    assert len(listed) == 5
