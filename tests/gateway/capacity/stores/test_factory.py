"""The request path's Redis client (`redis_script_client`) against real Redis servers: the suite's,
one of the test's own over TLS, one whose memory is full, and servers that refuse or never answer.
"""

from __future__ import annotations

import asyncio
import secrets
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
from django.conf import settings

from gateway.capacity.policy import Scope, counters_for
from gateway.capacity.stores import Charge, RedisCapacityStore, StoreUnavailableError
from gateway.capacity.stores.factory import RedisReplyError, RedisUnavailableError, redis_script_client
from gateway.core.limits import CapacityLimit
from tests.fakes.redis_servers import (
    Certificate,
    SilentServer,
    redis_server,
    redis_server_available,
    self_signed_certificate,
)
from tests.gateway.capacity.stores.test_stores import _redis_up

pytestmark = pytest.mark.skipif(not _redis_up(), reason="no Redis on 127.0.0.1:6379")

REDIS_URL = settings.REDIS_URL or "redis://127.0.0.1:6379/2"
ECHO = "return ARGV[1]"
INCR = "return redis.call('INCR', KEYS[1])"
BUSY = """
local function ms() local t = redis.call('TIME') return t[1] * 1000 + t[2] / 1000 end
local start = ms()
while ms() - start < tonumber(ARGV[1]) do end
return 'slow'
"""
"""Keeps Redis busy for ARGV[1] ms (`DEBUG SLEEP` is not allowed in scripts)."""


@pytest.fixture
def key() -> Iterator[str]:
    name = f"vmx:test:{secrets.token_hex(4)}"
    yield name
    redis.Redis.from_url(REDIS_URL).delete(name)


# Reply integrity


async def test_a_command_that_cannot_be_encoded_leaves_every_later_reply_matched():
    """A local failure before anything is sent (here text Redis cannot be given: a lone
    surrogate) fails that command only; every later command gets its own reply."""
    client = redis_script_client(REDIS_URL, timeout=2.0)
    with pytest.raises(RedisReplyError):
        await client.evalsha(ECHO, [], ["\ud800"])
    replies = await asyncio.gather(*(client.evalsha(ECHO, [], [f"r{i}"]) for i in range(5)), return_exceptions=True)
    assert replies == [b"r0", b"r1", b"r2", b"r3", b"r4"]
    assert await client.evalsha(ECHO, [], ["after"]) == b"after"


async def test_concurrent_commands_each_get_their_own_reply(key):
    client = redis_script_client(REDIS_URL, timeout=2.0)
    replies = await asyncio.gather(*(client.evalsha(INCR, [key], []) for _ in range(300)))
    assert sorted(replies) == list(range(1, 301))
    echoed = await asyncio.gather(*(client.evalsha(ECHO, [], [str(i)]) for i in range(300)))
    assert echoed == [str(i).encode() for i in range(300)]


async def test_a_command_cancelled_while_waiting_does_not_shift_the_replies_of_others():
    client = redis_script_client(REDIS_URL, timeout=2.0)
    slow = asyncio.ensure_future(client.evalsha(BUSY, [], [200]))
    await asyncio.sleep(0.05)
    slow.cancel()
    with pytest.raises(asyncio.CancelledError):
        await slow
    assert await asyncio.gather(*(client.evalsha(ECHO, [], [f"e{i}"]) for i in range(5))) == [
        b"e0",
        b"e1",
        b"e2",
        b"e3",
        b"e4",
    ]


async def test_an_error_reply_fails_that_command_only(key):
    redis.Redis.from_url(REDIS_URL).set(key, "text")
    client = redis_script_client(REDIS_URL, timeout=2.0)
    with pytest.raises(RedisReplyError, match="not an integer"):
        await client.evalsha(INCR, [key], [])
    assert await client.evalsha("return redis.call('GET', KEYS[1])", [key], []) == b"text"


async def test_scripts_are_loaded_again_when_redis_forgot_them():
    client = redis_script_client(REDIS_URL, timeout=2.0)
    script = "return {tonumber(ARGV[1]) + 1, 'x'}"
    assert await client.evalsha(script, [], [41]) == [42, b"x"]
    redis.Redis.from_url(REDIS_URL).script_flush()
    assert await client.evalsha(script, [], [1]) == [2, b"x"]


async def test_the_database_of_the_url_is_used(key):
    client = redis_script_client(REDIS_URL, timeout=2.0)
    await client.evalsha("return redis.call('SET', KEYS[1], 'here')", [key], [])
    assert redis.Redis.from_url(REDIS_URL).get(key) == b"here"


async def test_a_connection_redis_closed_is_replaced_and_no_outage_is_assumed():
    """Redis (or a proxy) closing an idle connection is not an outage: at most the command on
    it fails, the next connects afresh, and the breaker stays closed."""
    name = f"vmx-test-{secrets.token_hex(4)}"
    url = f"{REDIS_URL}?client_name={name}"  # an option of the URL, honoured like any other
    client = redis_script_client(url, timeout=2.0)
    await client.evalsha(ECHO, [], ["warm"])
    admin = redis.Redis.from_url(REDIS_URL)
    [own] = [entry for entry in admin.client_list() if entry["name"] == name]
    admin.client_kill_filter(_id=own["id"])
    outcomes = []
    for _ in range(3):
        try:
            outcomes.append(await client.evalsha(ECHO, [], ["again"]))
        except RedisUnavailableError:
            outcomes.append("lost")
    assert outcomes[1:] == [b"again", b"again"]
    assert not client.breaker.is_open


# Unreachable, hung


def _dead_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


async def test_a_refused_connection_fails_at_once():
    client = redis_script_client(f"redis://127.0.0.1:{_dead_port()}/0", timeout=2.0)
    started = time.monotonic()
    with pytest.raises(RedisUnavailableError):
        await client.evalsha(ECHO, [], ["x"])
    assert time.monotonic() - started < 1.0


async def test_a_server_that_never_answers_fails_the_commands_waiting_after_the_timeout():
    server = SilentServer()
    try:
        client = redis_script_client(server.url, timeout=0.5)
        started = time.monotonic()
        results = await asyncio.gather(*(client.evalsha(ECHO, [], ["x"]) for _ in range(3)), return_exceptions=True)
        assert all(isinstance(result, RedisUnavailableError) for result in results), results
        assert 0.5 <= time.monotonic() - started < 3.0
    finally:
        server.close()


# TLS: the URL's options are the client's options


@pytest.fixture(scope="module")
def certificate(tmp_path_factory: pytest.TempPathFactory) -> Certificate:
    if not redis_server_available():
        pytest.skip("no redis-server to start")
    return self_signed_certificate(tmp_path_factory.mktemp("tls"))


@pytest.fixture
def tls_redis(tmp_path: Path, certificate: Certificate) -> Iterator[str]:
    with redis_server(tmp_path, certificate=certificate) as url:
        yield url


def _limited_counter() -> Charge:
    [counter] = counters_for(
        Scope("api_key", f"tls-{secrets.token_hex(3)}"),
        [CapacityLimit(period="minute", requests=1)],
        now=time.time(),
        source_ip=None,
        metadata={},
    )
    return Charge(counter=counter)


async def _admitted(store: RedisCapacityStore, charge: Charge) -> bool:
    admission = await store.admit(groups=[[charge], []], reservation=secrets.token_hex(4), reservation_seconds=60)
    return admission.chosen is not None


@pytest.mark.parametrize(
    "query",
    ["ssl_cert_reqs=none", "ssl_ca_certs={cert}", "ssl_cert_reqs=required&ssl_ca_certs={cert}&ssl_check_hostname=true"],
    ids=["no-verification", "own-ca", "own-ca-and-hostname"],
)
async def test_limits_count_over_tls_with_the_options_of_the_url(tls_redis, certificate, query):
    store = RedisCapacityStore(f"{tls_redis}?{query.format(cert=certificate.cert)}", timeout=2.0)
    charge = _limited_counter()
    assert await _admitted(store, charge)
    assert not await _admitted(store, charge)  # counted: the limit of 1 applies


async def test_tls_without_a_way_to_trust_the_server_is_a_store_failure(tls_redis):
    store = RedisCapacityStore(tls_redis, timeout=2.0)  # verification required, no CA given
    with pytest.raises(StoreUnavailableError):
        await _admitted(store, _limited_counter())


# A full Redis


async def test_a_full_redis_refuses_the_admission_and_the_store_reports_it(tmp_path):
    """With `noeviction` (the policy the gateway needs), a Redis at its `maxmemory` refuses writes:
    the store fails, so the request is served by the fail-open / fail-closed rule."""
    if not redis_server_available():
        pytest.skip("no redis-server to start")
    with redis_server(tmp_path, "--maxmemory", "1", "--maxmemory-policy", "noeviction") as url:
        store = RedisCapacityStore(url, timeout=2.0)
        with pytest.raises(StoreUnavailableError, match="maxmemory"):
            await _admitted(store, _limited_counter())
        assert redis.Redis.from_url(url).dbsize() == 0  # nothing half-written
