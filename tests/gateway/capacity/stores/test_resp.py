"""The request path's Redis client against a real Redis (and a server that never answers)."""

from __future__ import annotations

import asyncio
import socket
import threading
import time
from collections.abc import Iterator

import pytest
import redis

from gateway.capacity.stores.resp import RedisReplyError, RedisUnavailableError, RespClient
from tests.gateway.capacity.stores.test_stores import REDIS_URL, _redis_up

pytestmark = pytest.mark.skipif(not _redis_up(), reason="no Redis on 127.0.0.1:6379")


@pytest.fixture
def client() -> Iterator[RespClient]:
    redis.Redis.from_url(REDIS_URL).delete("resp:test")
    yield RespClient(REDIS_URL, timeout=2.0)
    redis.Redis.from_url(REDIS_URL).delete("resp:test")


async def test_concurrent_commands_each_get_their_own_reply(client):
    replies = await asyncio.gather(*(client.call("INCR", "resp:test") for _ in range(500)))
    assert sorted(replies) == list(range(1, 501))  # one connection, answers in order
    assert await client.call("GET", "resp:test") == b"500"
    assert await client.call("PING") == b"PONG"
    assert await client.call("GET", "resp:missing") is None


async def test_the_database_of_the_url_is_used(client):
    await client.call("SET", "resp:test", "in-db-13")
    assert redis.Redis.from_url(REDIS_URL).get("resp:test") == b"in-db-13"


async def test_an_error_reply_fails_that_command_only(client):
    await client.call("SET", "resp:test", "text")
    with pytest.raises(RedisReplyError, match="not an integer"):
        await client.call("INCR", "resp:test")
    assert await client.call("GET", "resp:test") == b"text"


async def test_scripts_are_loaded_again_when_redis_forgot_them(client):
    script = "return {tonumber(ARGV[1]) + 1, 'x'}"
    assert await client.evalsha(script, [], [41]) == [42, b"x"]
    await client.call("SCRIPT", "FLUSH")
    assert await client.evalsha(script, [], [1]) == [2, b"x"]


async def test_a_killed_connection_is_replaced(client):
    own_id = await client.call("CLIENT", "ID")
    redis.Redis.from_url(REDIS_URL).execute_command("CLIENT", "KILL", "ID", own_id)
    for _ in range(20):  # the loss is noticed, then the next command connects afresh
        try:
            assert await client.call("PING") == b"PONG"
            break
        except RedisUnavailableError:
            await asyncio.sleep(0.05)
    else:
        pytest.fail("the client never reconnected")
    assert await client.call("CLIENT", "ID") != own_id


async def test_a_refused_connection_fails_at_once():
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    started = time.monotonic()
    with pytest.raises(RedisUnavailableError, match="cannot connect"):
        await RespClient(f"redis://127.0.0.1:{port}/0", timeout=2.0).call("PING")
    assert time.monotonic() - started < 1.0


async def test_a_server_that_never_answers_fails_every_waiting_command_after_the_timeout():
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen()
    accepted: list[socket.socket] = []
    threading.Thread(target=lambda: accepted.append(server.accept()[0]), daemon=True).start()
    try:
        client = RespClient(f"redis://127.0.0.1:{server.getsockname()[1]}/0", timeout=0.5)
        started = time.monotonic()
        results = await asyncio.gather(*(client.call("PING") for _ in range(3)), return_exceptions=True)
        waited = time.monotonic() - started
        assert all(isinstance(result, RedisUnavailableError) for result in results), results
        assert 0.5 <= waited < 2.0
    finally:
        for connection in accepted:
            connection.close()
        server.close()
