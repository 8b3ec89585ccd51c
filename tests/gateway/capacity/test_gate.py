"""A request's passage through its limits, against the real stores: what is counted when a request
ends in each of the ways requests end (DESIGN.md 2.10)."""

from __future__ import annotations

import asyncio
import secrets
import time
from typing import Any

import pytest

from gateway.audit.entry import AuditEntry
from gateway.capacity.gate import CapacityGate, LegCapacity, capacity_gate_open
from gateway.capacity.policy import Scope, counters_for, estimated_tokens
from gateway.capacity.stores import CapacityStore, DatabaseCapacityStore, RedisCapacityStore, settlements_finished
from gateway.core.errors import CapacityExceededError, ServiceUnavailableError
from gateway.core.limits import CapacityLimit
from gateway.core.pricing import PriceList
from gateway.core.usage import Usage
from tests.gateway.capacity.stores.test_stores import REDIS_URL, _redis_up

pytestmark = pytest.mark.django_db(transaction=True)

BODY = {"model": "r", "messages": [{"role": "user", "content": "x" * 400}], "max_tokens": 100}
ESTIMATE = sum(estimated_tokens(BODY))


@pytest.fixture(params=["redis", "database"])
def store(request: pytest.FixtureRequest) -> CapacityStore:
    if request.param == "redis":
        if not _redis_up():
            pytest.skip("no Redis on 127.0.0.1:6379")
        return RedisCapacityStore(REDIS_URL)
    return DatabaseCapacityStore()


def _gate(store: CapacityStore, key: str, *, connections: tuple[str, ...] = ("c1",), **options: Any) -> CapacityGate:
    gate = capacity_gate_open(
        api_key=key,
        api_key_limits=(CapacityLimit(period="day", tokens=10_000),),
        resource=None,
        resource_limits=(),
        legs=[
            LegCapacity(
                connection=f"{key}-{name}", model="m", limits=options.get("connection_limits", ()), longest_seconds=10
            )
            for name in connections
        ],
        body=BODY,
        source_ip=None,
        metadata={},
        prices=PriceList(exact={}),
        fail_closed=options.get("fail_closed", False),
        store=store,
    )
    assert gate is not None
    return gate


async def _tokens_used(store: CapacityStore, key: str) -> int:
    [counter] = counters_for(
        Scope("api_key", key), [CapacityLimit(period="day", tokens=1)], now=time.time(), source_ip=None, metadata={}
    )
    found = await asyncio.to_thread(store.used, key=counter.key, limit=1)
    return found[0][1].tokens if found else 0


async def _end(gate: CapacityGate, usage: Usage | None = None) -> None:
    audit = AuditEntry(request_id=secrets.token_hex(4), endpoint="chat.completions", usage=usage or Usage())
    gate.settle(audit, None)
    await settlements_finished(5.0)


@pytest.mark.parametrize(
    ("ending", "expected"),
    [
        ("answered with usage", 52),  # the real figure replaces the estimate
        ("answered, no usage reported", ESTIMATE),  # a stream cut before its usage event
        ("left during the call", ESTIMATE),  # the client or a shutdown ended it mid-call
        ("failed upstream", 0),
        ("rejected before any call", 0),
    ],
)
async def test_what_a_request_is_charged_by_how_it_ended(store, ending, expected):
    key = f"g-{secrets.token_hex(3)}"
    gate = _gate(store, key)
    chosen, _ = await gate.choose([0])
    assert chosen == 0
    assert await _tokens_used(store, key) == ESTIMATE  # reserved while it runs
    usage = None
    if ending == "answered with usage":
        gate.calling(0)
        gate.answered(0)
        usage = Usage(input_tokens=40, output_tokens=12, total_tokens=52)
    elif ending == "answered, no usage reported":
        gate.calling(0)
        gate.answered(0)
    elif ending == "left during the call":
        gate.calling(0)
    elif ending == "failed upstream":
        gate.calling(0)
        gate.failed(0)
    await _end(gate, usage)
    assert await _tokens_used(store, key) == expected


async def test_a_store_failure_after_admission_still_settles_what_was_counted(store):
    key = f"g-{secrets.token_hex(3)}"
    gate = _gate(
        store,
        key,
        connections=("c1", "c2"),
        connection_limits=(CapacityLimit(period="day", requests=100),),
    )
    assert (await gate.choose([0, 1]))[0] == 0
    gate.calling(0)
    gate.failed(0)
    gate.store = RedisCapacityStore("redis://127.0.0.1:9/0", timeout=0.5)  # the store goes away
    assert (await gate.choose([1]))[0] == 1  # served open
    gate.store = store  # and comes back before the request ends
    gate.calling(1)
    gate.answered(1)
    await _end(gate, Usage(input_tokens=40, output_tokens=12, total_tokens=52))
    assert await _tokens_used(store, key) == 52


async def test_failing_closed_answers_503():
    gate = _gate(RedisCapacityStore("redis://127.0.0.1:9/0", timeout=0.5), "g-closed", fail_closed=True)
    with pytest.raises(ServiceUnavailableError) as caught:
        await gate.choose([0])
    assert caught.value.status_code == 503 and caught.value.code == "capacity_unavailable"


async def test_a_client_that_leaves_during_admission_leaves_no_reservation(store):
    key = f"g-{secrets.token_hex(3)}"
    gate = _gate(store, key)
    task = asyncio.ensure_future(gate.choose([0]))
    await asyncio.sleep(0)  # the admission is under way
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    await asyncio.sleep(0.5)  # the store answers; what it counted is released
    await settlements_finished(5.0)
    assert await _tokens_used(store, key) == 0


async def test_a_full_key_is_a_429_that_counts_nothing(store):
    key = f"g-{secrets.token_hex(3)}"
    big = {**BODY, "max_tokens": 20_000}
    gate = capacity_gate_open(
        api_key=key,
        api_key_limits=(CapacityLimit(period="day", tokens=10_000),),
        resource=None,
        resource_limits=(),
        legs=[LegCapacity(connection="c", model="m", limits=(), longest_seconds=10)],
        body=big,
        source_ip=None,
        metadata={},
        prices=PriceList(exact={}),
        fail_closed=False,
        store=store,
    )
    assert gate is not None
    with pytest.raises(CapacityExceededError) as caught:
        await gate.choose([0])
    assert caught.value.code == "capacity_exceeded" and "10,000 tokens per day" in caught.value.message
    assert await _tokens_used(store, key) == 0


async def test_planned_counters_are_reused_only_where_nothing_about_the_request_matters(store):
    """Per-user limits are never served from the plan: each user keeps a counter of their own."""
    key = f"g-{secrets.token_hex(3)}"
    per_user = (CapacityLimit(period="day", requests=1, dimension="metadata", dimension_field="user"),)

    def gate(user: str, limits: tuple[CapacityLimit, ...]) -> CapacityGate:
        opened = capacity_gate_open(
            api_key=key,
            api_key_limits=limits,
            resource=None,
            resource_limits=(),
            legs=[LegCapacity(connection="c", model="m", limits=(), longest_seconds=10)],
            body=BODY,
            source_ip=None,
            metadata={"user": user},
            prices=PriceList(exact={}),
            fail_closed=False,
            store=store,
            plan_key=("revision", key, limits),
        )
        assert opened is not None
        return opened

    assert (await gate("alice", per_user).choose([0]))[0] == 0
    assert (await gate("bob", per_user).choose([0]))[0] == 0
    with pytest.raises(CapacityExceededError):
        await gate("alice", per_user).choose([0])
    whole = (CapacityLimit(period="day", requests=2),)
    assert (await gate("alice", whole).choose([0]))[0] == 0
    assert (await gate("bob", whole).choose([0]))[0] == 0  # from the plan: the same counter
    with pytest.raises(CapacityExceededError):
        await gate("carol", whole).choose([0])


async def test_a_limit_per_value_tracks_at_most_the_configured_values(store, settings):
    """Each metadata value has its own counter, up to VMX_CAPACITY_MAX_VALUES per limit and window:
    a request bringing one more is a clear 429; values already counted go on as before; the
    values are listed from the limit's own index (no scan), busiest first."""
    from gateway.capacity.usage import capacity_window_usage

    settings.VMX_CAPACITY_MAX_VALUES = 3
    settings.REDIS_URL = store.url if isinstance(store, RedisCapacityStore) else ""  # what the reads below look at
    key = f"t-{secrets.token_hex(4)}"
    limit = CapacityLimit(period="lifetime", requests=5, dimension="metadata", dimension_field="user")

    async def call(user: str) -> None:
        gate = capacity_gate_open(
            api_key=key,
            api_key_limits=(limit,),
            resource=None,
            resource_limits=(),
            legs=[LegCapacity(connection=f"{key}-c", model="m", limits=(), longest_seconds=10)],
            body=BODY,
            source_ip=None,
            metadata={"user": user},
            prices=PriceList(exact={}),
            fail_closed=False,
            store=store,
        )
        assert gate is not None
        await gate.choose([0])

    for user in ("alice", "bob", "carol", "alice"):
        await call(user)
    with pytest.raises(CapacityExceededError) as caught:
        await call("dave")
    assert caught.value.status == 429
    assert f"API key '{key}' reached its limit of 3 distinct values of metadata 'user' in total" in str(caught.value)
    await call("bob")  # a value already counted is not refused
    usage = await asyncio.to_thread(capacity_window_usage, scope_kind="api_key", scope_name=key, limit=limit, top=10)
    assert [value for value, _ in usage.values] == ["alice", "bob", "carol"]
    assert usage.values_count == 3
