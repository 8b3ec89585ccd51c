"""Limits across processes: two instances on one PostgreSQL and one Redis, two workers on SQLite
without Redis, and a Redis that is not there (DESIGN.md 2.10).

Peer failure shapes reproduced: spend read from a stale per-pod cache (LiteLLM #27735) — here a
budget spent through one instance is refused by the other at once; re-seeding that multiplies
counters by the number of pods (#28247) — here an instance restarted mid-window finds the
counters as they were, and the limit still admits exactly what it allows.
"""

from __future__ import annotations

import concurrent.futures
import secrets
import socket
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx2
import pytest
import yaml
from cryptography.fernet import Fernet

from tests.fakes.openai_upstream import FakeOpenAI, Reply
from tests.fakes.redis_servers import SilentServer, redis_server, redis_server_available, self_signed_certificate
from tests.integration.server import GatewayProcess, gateway_env, gateway_start, manage

MESSAGES = [{"role": "user", "content": "Count me"}]
KEY = "vmx-capacity-instances-0123456789"
WARM_KEY = "vmx-capacity-warm-up-0123456789ab"
"""A key without limits, to warm the workers up before a measured burst."""
LIMIT = 40
CONCURRENT = 120


def _redis_url() -> str | None:
    try:
        socket.create_connection(("127.0.0.1", 6379), timeout=1).close()
    except OSError:
        return None
    return "redis://127.0.0.1:6379/12"


def _config(upstream: FakeOpenAI, path: str, *, key_capacity: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "connections": [
            {
                "name": "up",
                "provider": "openai",
                "config": {"apiKey": "sk-upstream-secret", "baseURL": f"http://127.0.0.1:{upstream.port}/{path}/v1"},
            }
        ],
        "resources": [{"name": "default", "model": {"connection": "up", "model": "gpt-4.1"}}],
        "apiKeys": [
            {"name": "team", "key": KEY, "resources": "*", "capacity": key_capacity},
            {"name": "warm-up", "key": WARM_KEY, "resources": "*"},
        ],
        "pricing": [{"model": "gpt-4.1", "input": 1000, "output": 1000}],
    }


def _prepare(tmp_path: Path, env: dict[str, str], document: dict[str, Any]) -> None:
    manage(env, "migrate", "--no-input", "-v", "0")
    config = tmp_path / "vmx.yaml"
    config.write_text(yaml.safe_dump(document))
    manage(env, "vmx_apply", str(config))


def _post(
    gateway: GatewayProcess, body: dict[str, Any] | None = None, client: httpx2.Client | None = None, key: str = KEY
) -> int:
    response = (client or httpx2).post(
        f"{gateway.base_url}/v1/chat/completions",
        json=body or {"model": "default", "messages": MESSAGES},
        headers={"Authorization": f"Bearer {key}"},
        timeout=60,
    )
    return response.status_code


def _burst(gateways: list[GatewayProcess], count: int, *, then: Callable[[], None]) -> list[int]:
    """`count` requests at once, spread over the gateways.

    One pooled client sends them, and a first burst with a key without limits warms everything up:
    fresh workers and a client opening `count` connections at once stall a 2-core machine for
    seconds (with or without limits), long enough for the store's 3 s timeout to serve some
    requests uncounted, which is the fail-open rule, not what this burst measures. `then` runs
    between the two (e.g. to script the upstream's answers for the measured burst)."""
    with (
        httpx2.Client(limits=httpx2.Limits(max_connections=count)) as client,
        concurrent.futures.ThreadPoolExecutor(max_workers=count) as pool,
    ):
        warm = list(pool.map(lambda i: _post(gateways[i % len(gateways)], client=client, key=WARM_KEY), range(count)))
        assert set(warm) == {200}
        then()
        return list(pool.map(lambda i: _post(gateways[i % len(gateways)], client=client), range(count)))


def _slow_upstream(upstream: FakeOpenAI, path: str) -> Callable[[], None]:
    """Slow answers for the admitted requests, so the whole burst is in flight together."""
    return lambda: upstream.reply("POST", f"/{path}/v1/chat/completions", *[Reply(delay=0.5) for _ in range(LIMIT)])


def _away_from_a_minute_boundary(margin: float = 15.0) -> None:
    left = 60 - time.time() % 60
    if left < margin:
        time.sleep(left + 0.2)


@pytest.fixture
def redis_url() -> Any:
    url = _redis_url()
    if url is None:
        pytest.skip("no Redis on 127.0.0.1:6379")
    import redis

    redis.Redis.from_url(url).flushdb()
    yield url
    redis.Redis.from_url(url).flushdb()


def test_two_instances_share_limits_exactly(tmp_path, upstream, postgres_database, redis_url):
    from tests.integration.conftest import postgres_url

    params, name = postgres_database
    env = gateway_env(
        database_url=postgres_url(params, name), encryption_key=Fernet.generate_key().decode(), REDIS_URL=redis_url
    )
    path = f"inst-{secrets.token_hex(3)}"
    _prepare(tmp_path, env, _config(upstream, path, key_capacity=[{"period": "minute", "requests": LIMIT}]))
    a = gateway_start(env, tmp_path / "a.log", "--workers", "2")
    b = gateway_start(env, tmp_path / "b.log", "--workers", "2")
    try:
        _away_from_a_minute_boundary()
        statuses = _burst([a, b], CONCURRENT, then=_slow_upstream(upstream, path))
        assert statuses.count(200) == LIMIT, statuses
        assert statuses.count(429) == CONCURRENT - LIMIT
        # The warm-up burst's calls, then exactly the admitted ones.
        assert len(upstream.calls(f"/{path}/v1/chat/completions")) == CONCURRENT + LIMIT

        # An instance restarted within the window re-seeds nothing: it sees the same counters,
        # and neither instance admits one more request (LiteLLM #28247).
        b.stop()
        b = gateway_start(env, tmp_path / "b2.log", "--workers", "2")
        assert {_post(b) for _ in range(4)} == {429}
        assert {_post(a) for _ in range(4)} == {429}
    finally:
        a.stop()
        b.stop()
    assert "Traceback" not in a.log() + b.log()


def test_a_budget_spent_through_one_instance_is_refused_by_the_other_at_once(
    tmp_path, upstream, postgres_database, redis_url
):
    """LiteLLM #27735: a per-pod cache of spend lets the other pods overspend. Here there is no
    such cache: the counters are the one place both instances read."""
    from tests.integration.conftest import postgres_url

    params, name = postgres_database
    env = gateway_env(
        database_url=postgres_url(params, name), encryption_key=Fernet.generate_key().decode(), REDIS_URL=redis_url
    )
    path = f"spend-{secrets.token_hex(3)}"
    # 0.001 $ a token; the fake answers with 52 tokens: 0.052 $ a request. Three fit in 0.155 $ and spend 0.156 $,
    # as long as the estimate (the message's characters / 4 + max_tokens) is small.
    _prepare(tmp_path, env, _config(upstream, path, key_capacity=[{"period": "day", "costUsd": 0.155}]))
    a = gateway_start(env, tmp_path / "a.log", "--workers", "2")
    b = gateway_start(env, tmp_path / "b.log", "--workers", "2")
    try:
        assert [_post(a) for _ in range(3)] == [200, 200, 200]
        time.sleep(0.3)  # the last settlement is written right after the answer
        assert _post(b) == 429
        assert _post(a) == 429
    finally:
        a.stop()
        b.stop()


def test_two_workers_on_sqlite_count_exactly_without_redis(tmp_path, upstream):
    env = gateway_env(
        database_url=f"sqlite:///{tmp_path / 'gateway.sqlite3'}", encryption_key=Fernet.generate_key().decode()
    )
    env.pop("REDIS_URL", None)
    path = f"sqlite-{secrets.token_hex(3)}"
    _prepare(tmp_path, env, _config(upstream, path, key_capacity=[{"period": "minute", "requests": LIMIT}]))
    gateway = gateway_start(env, tmp_path / "gateway.log", "--workers", "2")
    try:
        _away_from_a_minute_boundary()
        statuses = _burst([gateway], CONCURRENT, then=_slow_upstream(upstream, path))
        assert statuses.count(200) == LIMIT, statuses
        assert statuses.count(429) == CONCURRENT - LIMIT
    finally:
        gateway.stop()
    assert "Traceback" not in gateway.log()


@pytest.mark.parametrize("fail_closed", [False, True], ids=["fails-open", "fails-closed"])
def test_redis_unreachable(tmp_path, upstream, fail_closed):
    with socket.socket() as probe:  # a port nothing listens on
        probe.bind(("127.0.0.1", 0))
        dead_port = probe.getsockname()[1]
    extra = {"REDIS_URL": f"redis://127.0.0.1:{dead_port}/0"}
    if fail_closed:
        extra["VMX_CAPACITY_FAIL_CLOSED"] = "1"
    env = gateway_env(
        database_url=f"sqlite:///{tmp_path / 'gateway.sqlite3'}", encryption_key=Fernet.generate_key().decode(), **extra
    )
    path = f"noredis-{secrets.token_hex(3)}"
    _prepare(tmp_path, env, _config(upstream, path, key_capacity=[{"period": "minute", "requests": 1}]))
    gateway = gateway_start(env, tmp_path / "gateway.log", "--workers", "1")
    try:
        statuses = [_post(gateway) for _ in range(5)]
        if fail_closed:
            assert statuses == [503] * 5
            response = httpx2.post(
                f"{gateway.base_url}/v1/messages",
                json={"model": "default", "max_tokens": 10, "messages": MESSAGES},
                headers={"x-api-key": KEY},
                timeout=30,
            )
            assert response.status_code == 503
            assert response.json()["error"]["type"] == "api_error"
        else:
            assert statuses == [200] * 5  # served, uncounted: a limit of 1 did not apply
    finally:
        gateway.stop()
    log = gateway.log()
    assert log.count("capacity store unavailable") == 1, log  # one line per 10 s, not one per request
    assert "Traceback" not in log


@pytest.mark.parametrize("fail_closed", [False, True], ids=["fails-open", "fails-closed"])
def test_a_redis_that_never_answers_is_not_waited_for_again_while_it_stays_silent(tmp_path, upstream, fail_closed):
    """A Redis that accepts connections and never answers costs the first limited request the
    store's timeout; the requests after it get the fail-open / fail-closed answer at once, and
    `/readyz` and `/metrics` say the limits' Redis is down."""
    silent = SilentServer()
    extra = {"REDIS_URL": silent.url, "VMX_CAPACITY_BREAKER_SECONDS": "30"}
    if fail_closed:
        extra["VMX_CAPACITY_FAIL_CLOSED"] = "1"
    env = gateway_env(
        database_url=f"sqlite:///{tmp_path / 'gateway.sqlite3'}", encryption_key=Fernet.generate_key().decode(), **extra
    )
    path = f"silent-{secrets.token_hex(3)}"
    _prepare(tmp_path, env, _config(upstream, path, key_capacity=[{"period": "minute", "requests": 1}]))
    gateway = gateway_start(env, tmp_path / "gateway.log", "--workers", "1")
    try:
        assert _post(gateway, key=WARM_KEY) == 200  # a key without limits never asks Redis
        started = time.monotonic()
        statuses = [_post(gateway) for _ in range(5)]
        elapsed = time.monotonic() - started
        assert statuses == ([503] * 5 if fail_closed else [200] * 5)
        # Five requests each waiting the 3 s timeout would take 15 s; one waits, the others do not.
        assert elapsed < 9.0, f"5 limited requests took {elapsed:.1f} s"
        ready = httpx2.get(f"{gateway.base_url}/readyz", timeout=30)
        assert ready.status_code == 200  # the instance still serves, by the rule
        assert ready.json()["checks"]["capacity"] == "down"
        assert ready.json()["capacity_breaker"] == "open"
        metrics = httpx2.get(f"{gateway.base_url}/metrics", timeout=30).text
        assert "vmx_capacity_breaker_open 1.0" in metrics
        assert "vmx_capacity_breaker_trips_total 1.0" in metrics
    finally:
        gateway.stop()
        silent.close()
    assert "Traceback" not in gateway.log()


def test_limits_apply_over_tls_with_the_options_of_redis_url(tmp_path, upstream):
    """`rediss://…?ssl_cert_reqs=none` (and the other options redis-py and Django's cache read)
    reach the limits' connection: the limit applies, and `/readyz` checks that connection."""
    if not redis_server_available():
        pytest.skip("no redis-server to start")
    certificate = self_signed_certificate(tmp_path)
    with redis_server(tmp_path, certificate=certificate) as url:
        env = gateway_env(
            database_url=f"sqlite:///{tmp_path / 'gateway.sqlite3'}",
            encryption_key=Fernet.generate_key().decode(),
            REDIS_URL=f"{url}?ssl_cert_reqs=none",
        )
        path = f"tls-{secrets.token_hex(3)}"
        _prepare(tmp_path, env, _config(upstream, path, key_capacity=[{"period": "minute", "requests": 2}]))
        gateway = gateway_start(env, tmp_path / "gateway.log", "--workers", "2")
        try:
            _away_from_a_minute_boundary(5)
            assert [_post(gateway) for _ in range(4)] == [200, 200, 429, 429]
            ready = httpx2.get(f"{gateway.base_url}/readyz", timeout=30).json()
            assert ready["checks"]["capacity"] == "ok"
            assert ready["checks"]["cache"] == "ok"
        finally:
            gateway.stop()
    assert "capacity store unavailable" not in gateway.log()
