"""Edges a well-behaved client never reaches, through a real server process: a client that leaves
before reading its stream, and a client that writes its own `X-Forwarded-For`."""

from __future__ import annotations

import json
import secrets
import socket
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx2
import pytest
import yaml
from cryptography.fernet import Fernet

from tests.fakes.openai_upstream import FakeOpenAI, Reply, chat_stream
from tests.integration.conftest import ALL_KEY, Gateway, _database, gateway_config
from tests.integration.server import gateway_env, gateway_start, manage

MESSAGES = [{"role": "user", "content": "Tell me a long story."}]


def _apply(env: dict[str, str], tmp_path: Path, document: dict[str, Any]) -> None:
    path = tmp_path / f"{secrets.token_hex(4)}.yaml"
    path.write_text(yaml.safe_dump(document))
    manage(env, "vmx_apply", str(path))
    time.sleep(1.0)  # two config refresh periods and a margin reach every worker


def _reserved_tokens(env: dict[str, str], key_name: str) -> int:
    """Tokens still reserved on the key's counters, read from the store the gateway counts in."""
    prefix = "vmx:{cap}:k:" + key_name + ":"
    script = (
        "import os, json\n"
        "from gateway.models import CapacityCounter\n"
        f"prefix = {prefix!r}\n"
        "if os.environ.get('REDIS_URL'):\n"
        "    import redis\n"
        "    client = redis.Redis.from_url(os.environ['REDIS_URL'])\n"
        "    keys = [k for k in client.scan_iter(match=prefix.replace('{', '[{]') + '*') if not k.endswith(b':ttl')]\n"
        "    print(sum(int(client.hget(k, 'rt') or 0) for k in keys if client.type(k) == b'hash'))\n"
        "else:\n"
        "    print(sum(c.reserved_tokens for c in CapacityCounter.objects.filter(key__startswith=prefix)))\n"
    )
    return int(manage(env, "shell", "-v", "0", "-c", script).stdout.strip() or 0)


def _held_open_stream() -> Reply:
    """A stream that starts (its first event lets the gateway answer) and then keeps writing
    keep-alive comments for ~20 s before the rest: the fake notices the gateway closing the
    connection when a write fails."""
    first, *rest = chat_stream("gpt-4.1", "late", include_usage=True)
    events: list[bytes | float] = [first]
    for _ in range(100):
        events += [b": still thinking\n\n", 0.2]
    return Reply(events=events + rest)


def _remove(env: dict[str, str], *, resource: str, key: str) -> None:
    """Take this test's objects out of the session's gateway (others list what it serves)."""
    code = (
        "from connections.models import AIResource, APIKey, Connection;"
        "from connections.signals import config_revision_bump;"
        f"AIResource.objects.filter(name={resource!r}).delete();"
        f"Connection.objects.filter(name={resource!r}).delete();"
        f"APIKey.objects.filter(name={key!r}).delete();"
        "config_revision_bump()"
    )
    manage(env, "shell", "-c", code)
    time.sleep(1.0)


def test_a_client_that_leaves_before_reading_its_stream_is_audited_settled_and_the_upstream_closed(
    gateway: Gateway, upstream: FakeOpenAI, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    key, secret, resource = (
        f"edge-{secrets.token_hex(3)}",
        "vmx-" + secrets.token_hex(16),
        f"edge-{secrets.token_hex(3)}",
    )
    path = f"/{resource}/v1/chat/completions"
    _apply(
        gateway.env,
        tmp_path,
        {
            "connections": [
                {
                    "name": resource,
                    "provider": "openai",
                    "config": {"apiKey": "sk-edge", "baseURL": f"http://127.0.0.1:{upstream.port}/{resource}/v1"},
                }
            ],
            "resources": [{"name": resource, "model": {"connection": resource, "model": "gpt-4.1"}}],
            "apiKeys": [
                {"name": key, "key": secret, "resources": "*", "capacity": [{"period": "day", "tokens": 1_000_000}]}
            ],
        },
    )
    request.addfinalizer(lambda: _remove(gateway.env, resource=resource, key=key))
    upstream.reply("POST", path, _held_open_stream())
    correlation = secrets.token_hex(8)
    body = json.dumps({"model": resource, "messages": MESSAGES, "stream": True, "max_tokens": 5000}).encode()
    host, port = gateway.base_url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=10) as sock:
        sock.sendall(
            (
                f"POST /v1/chat/completions HTTP/1.1\r\nHost: {host}\r\nAuthorization: Bearer {secret}\r\n"
                f"Content-Type: application/json\r\nx-vmx-correlation-id: {correlation}\r\n"
                f"Content-Length: {len(body)}\r\n\r\n"
            ).encode()
            + body
        )
        head = b""
        while b"\r\n\r\n" not in head:
            chunk = sock.recv(1)  # one byte at a time: read the status line and headers, nothing after
            assert chunk, "the gateway closed before answering"
            head += chunk
        assert head.startswith(b"HTTP/1.1 200")
        # While the client is still there, its reservation is held.
        assert _reserved_tokens(gateway.env, key) > 0
    # The client is gone, before reading a byte of the stream.

    deadline = time.monotonic() + 10
    while path not in upstream.disconnects and time.monotonic() < deadline:
        time.sleep(0.1)
    assert path in upstream.disconnects, "the gateway kept the upstream stream open after its client left"
    record = gateway.audit_by(correlation_id=correlation, timeout=10)
    assert record["status_code"] == 499
    assert record["api_key"] == key
    deadline = time.monotonic() + 5
    while _reserved_tokens(gateway.env, key) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert _reserved_tokens(gateway.env, key) == 0, "the reservation was never settled"


def _source_ip_limited(env: dict[str, str], tmp_path: Path) -> str:
    """A key allowed one request per minute per client address; its secret."""
    secret = "vmx-" + secrets.token_hex(16)
    _apply(
        env,
        tmp_path,
        {
            "apiKeys": [
                {
                    "name": f"edge-ip-{secrets.token_hex(3)}",
                    "key": secret,
                    "resources": "*",
                    "capacity": [{"period": "minute", "requests": 1, "dimension": "source-ip"}],
                }
            ]
        },
    )
    left = 60 - time.time() % 60
    if left < 8:  # every request of the test falls in one window
        time.sleep(left + 0.2)
    return secret


def _ask(base_url: str, secret: str, forwarded_for: str | None) -> httpx2.Response:
    headers = {"Authorization": f"Bearer {secret}"}
    if forwarded_for is not None:
        headers["X-Forwarded-For"] = forwarded_for
    return httpx2.post(
        f"{base_url}/v1/chat/completions",
        json={"model": "default", "messages": [{"role": "user", "content": "hi"}]},
        headers=headers,
        timeout=10,
    )


def test_a_client_cannot_choose_its_source_ip_counter_by_writing_x_forwarded_for(
    gateway: Gateway, upstream: FakeOpenAI, tmp_path: Path
) -> None:
    """The session's gateway trusts no proxy: its client on 127.0.0.1 is counted as 127.0.0.1,
    whatever it writes in `X-Forwarded-For` (uvicorn alone would believe it from loopback)."""
    secret = _source_ip_limited(gateway.env, tmp_path)
    first = _ask(gateway.base_url, secret, "1.2.3.4")
    assert first.status_code == 200
    second = _ask(gateway.base_url, secret, "5.6.7.8")
    assert second.status_code == 429, second.text
    assert "for '127.0.0.1'" in second.json()["error"]["message"]
    record = gateway.audit(first.headers["x-vmx-request-id"])
    assert record["source_ip"] == "127.0.0.1"


@pytest.fixture
def behind_a_proxy(tmp_path: Path, fake_openai: FakeOpenAI) -> Iterator[Gateway]:
    """A gateway whose peer 127.0.0.1 is a trusted proxy, as when a proxy runs on the same host."""
    databases = _database(tmp_path)
    env = gateway_env(
        database_url=next(databases),
        encryption_key=Fernet.generate_key().decode(),
        VMX_CONFIG_REFRESH_SECONDS="0.2",
        VMX_TRUSTED_PROXIES="127.0.0.1,10.0.0.0/8",
    )
    manage(env, "migrate", "--no-input", "-v", "0")
    config_file = tmp_path / "vmx.yaml"
    config_file.write_text(yaml.safe_dump(gateway_config(fake_openai)))
    manage(env, "vmx_apply", str(config_file))
    process = gateway_start(env, tmp_path / "gunicorn.log", "--workers", "1")
    yield Gateway(process, env)
    process.stop()
    for _ in databases:
        pass


def test_through_a_trusted_proxy_the_nearest_untrusted_hop_is_the_client(
    behind_a_proxy: Gateway, upstream: FakeOpenAI, tmp_path: Path
) -> None:
    gateway = behind_a_proxy
    assert _ask(gateway.base_url, ALL_KEY, "9.9.9.9, 10.1.2.3").status_code == 200
    record = gateway.audit_by(timeout=5)
    # 10.1.2.3 is one of our proxies, so what it saw (9.9.9.9) is the client.
    assert record["source_ip"] == "9.9.9.9"

    secret = _source_ip_limited(gateway.env, tmp_path)
    # The client wrote 1.1.1.1 and 2.2.2.2 itself; the proxy appended what it saw: 203.0.113.7.
    assert _ask(gateway.base_url, secret, "1.1.1.1, 203.0.113.7").status_code == 200
    refused = _ask(gateway.base_url, secret, "2.2.2.2, 203.0.113.7")
    assert refused.status_code == 429
    assert "for '203.0.113.7'" in refused.json()["error"]["message"]
    assert _ask(gateway.base_url, secret, "203.0.113.8").status_code == 200  # another client
