"""The gateway when its database goes away, and when it is stopped with streams still open
(DESIGN.md 2.13). Each test runs a gateway process of its own; the database sits behind a TCP
proxy on loopback that the test cuts and restores, as a real outage would look to the gateway.

PostgreSQL is needed for the database outages (a SQLite file cannot "go away"); they are skipped
where none answers on 127.0.0.1:5432.
"""

from __future__ import annotations

import json
import signal
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx2
import pytest
import yaml
from cryptography.fernet import Fernet

from tests.fakes.openai_upstream import FakeOpenAI, Reply, sse
from tests.fakes.tcp_proxy import TcpProxy
from tests.integration.conftest import ALL_KEY, gateway_config, postgres_url
from tests.integration.server import GatewayProcess, gateway_env, gateway_start, manage

MESSAGES = [{"role": "user", "content": "Hello gateway"}]
AUTH = {"Authorization": f"Bearer {ALL_KEY}"}


class Outage:
    """A configured database behind a proxy, and what a test needs to start gateways on it."""

    def __init__(self, tmp_path: Path, upstream: FakeOpenAI, params: dict[str, str], name: str) -> None:
        self.tmp_path = tmp_path
        self.proxy = TcpProxy(params.get("host", "127.0.0.1"), int(params.get("port", "5432"))).up()
        key = Fernet.generate_key().decode()
        self.spool = tmp_path / "spool"
        self.env = gateway_env(
            database_url=postgres_url(params, name, host="127.0.0.1", port=self.proxy.port),
            encryption_key=key,
            VMX_CONFIG_REFRESH_SECONDS="0.2",
            VMX_AUDIT_SPOOL_DIR=str(self.spool),
            VMX_GRACEFUL_TIMEOUT="12",
        )
        # Checks read the database directly, whatever the proxy is doing.
        self.direct_env = {**self.env, "DATABASE_URL": postgres_url(params, name)}
        manage(self.direct_env, "migrate", "--no-input", "-v", "0")
        config = tmp_path / "vmx.yaml"
        config.write_text(yaml.safe_dump(gateway_config(upstream)))
        manage(self.direct_env, "vmx_apply", str(config))
        self.starts = 0

    def start(self, *, wait: bool = True) -> GatewayProcess:
        self.starts += 1
        return gateway_start(self.env, self.tmp_path / f"gunicorn-{self.starts}.log", "--workers", "2", wait=wait)

    def audited(self) -> dict[str, dict[str, Any]]:
        out = manage(self.direct_env, "vmx_audit", "--format", "jsonl", "--limit", "1000").stdout
        records = [json.loads(line) for line in out.splitlines() if line.strip()]
        return {record["request_id"]: record for record in records}

    def spooled(self) -> list[dict[str, Any]]:
        return [json.loads(line) for path in self.spool.glob("*.jsonl") for line in path.read_text().splitlines()]


@pytest.fixture
def outage(tmp_path, upstream, postgres_database) -> Iterator[Outage]:
    params, name = postgres_database
    scenario = Outage(tmp_path, upstream, params, name)
    yield scenario
    scenario.proxy.down()


def _chat(base_url: str, **extra: Any) -> httpx2.Response:
    return httpx2.post(
        f"{base_url}/v1/chat/completions",
        json={"model": "default", "messages": MESSAGES, **extra},
        headers=AUTH,
        timeout=20,
    )


def test_a_database_outage_keeps_serving_and_spools_the_audit_at_shutdown(outage, upstream):
    gateway = outage.start()
    try:
        before = [_chat(gateway.base_url).headers["x-vmx-request-id"] for _ in range(3)]
        deadline = time.monotonic() + 10
        while not set(before) <= set(outage.audited()) and time.monotonic() < deadline:
            time.sleep(0.2)
        assert set(before) <= set(outage.audited())

        outage.proxy.down()
        during = []
        for _ in range(6):
            response = _chat(gateway.base_url)
            assert response.status_code == 200  # served from the last configuration
            during.append(response.headers["x-vmx-request-id"])
            time.sleep(0.3)
        ready = httpx2.get(f"{gateway.base_url}/readyz", timeout=10)
        assert ready.status_code == 200  # configuration read within 30 s: still able to serve
        assert ready.json()["checks"]["database"] == "down"
        log = gateway.log()
        # One line per 10 s and kind, not a traceback for every failed flush or refresh.
        assert log.count("audit write failed") <= 4, log
        assert log.count("configuration refresh failed") <= 4, log
        assert log.count("Traceback") <= 2, log
    finally:
        assert gateway.stop() == 0
    spooled = {row["request_id"] for row in outage.spooled()}
    assert set(during) <= spooled

    outage.proxy.up()
    gateway = outage.start()
    try:
        deadline = time.monotonic() + 10
        while not set(during) <= set(outage.audited()) and time.monotonic() < deadline:
            time.sleep(0.2)
        records = outage.audited()
        assert set(during) <= set(records)  # written at the next start
        assert all(records[r]["status_code"] == 200 for r in during)
        assert list(outage.spool.glob("*.jsonl")) == []
    finally:
        gateway.stop()


def test_a_worker_that_starts_without_its_database_answers_503_until_it_can(outage, upstream):
    outage.proxy.down()
    gateway = outage.start()
    try:
        response = _chat(gateway.base_url)
        assert response.status_code == 503
        assert response.json()["error"]["code"] == "service_unavailable"
        response = httpx2.post(
            f"{gateway.base_url}/v1/messages",
            json={"model": "default", "max_tokens": 32, "messages": MESSAGES},
            headers=AUTH,
            timeout=20,
        )
        assert response.status_code == 503
        assert response.json()["type"] == "error"
        assert httpx2.get(f"{gateway.base_url}/readyz", timeout=10).status_code == 503

        outage.proxy.up()
        deadline = time.monotonic() + 15
        while _chat(gateway.base_url).status_code != 200:
            assert time.monotonic() < deadline, gateway.log()
            time.sleep(0.3)
        assert httpx2.get(f"{gateway.base_url}/readyz", timeout=10).status_code == 200
    finally:
        gateway.stop()


def _slow_stream(first: bytes) -> list[bytes | float]:
    pieces: list[bytes | float] = [first]
    for _ in range(30):
        pieces += [1.0, b": still thinking\n\n"]
    return pieces


def test_streams_open_when_the_graceful_timeout_ends_get_an_error_event_and_are_audited(outage, upstream):
    chunk = {"id": "c1", "object": "chat.completion.chunk", "created": 1, "model": "gpt-4.1"}
    upstream.reply(
        "POST",
        "/a/v1/chat/completions",
        Reply(events=_slow_stream(sse({**chunk, "choices": [{"index": 0, "delta": {"content": "Hel"}}]}))),
    )
    created = sse({"type": "response.created", "sequence_number": 0, "response": {"id": "r"}}, "response.created")
    upstream.reply("POST", "/a/v1/responses", Reply(events=_slow_stream(created)), Reply(events=_slow_stream(created)))
    gateway = outage.start()
    bodies: dict[str, bytes] = {}
    ids: dict[str, str] = {}
    with httpx2.Client(timeout=30) as client:
        streams = {
            "chat": client.stream(
                "POST",
                f"{gateway.base_url}/v1/chat/completions",
                json={"model": "default", "messages": MESSAGES, "stream": True},
                headers=AUTH,
            ),
            "responses": client.stream(
                "POST",
                f"{gateway.base_url}/v1/responses",
                json={"model": "default", "input": "Hi", "stream": True},
                headers=AUTH,
            ),
            "messages": client.stream(
                "POST",
                f"{gateway.base_url}/v1/messages",
                json={"model": "default", "max_tokens": 64, "messages": MESSAGES, "stream": True},
                headers=AUTH,
            ),
        }
        opened = {name: stream.__enter__() for name, stream in streams.items()}
        iterators = {name: response.iter_bytes() for name, response in opened.items()}
        for name, response in opened.items():
            ids[name] = response.headers["x-vmx-request-id"]
            bodies[name] = next(iterators[name])
        started = time.monotonic()
        gateway.process.send_signal(signal.SIGTERM)
        for name in opened:
            bodies[name] += b"".join(iterators[name])
            streams[name].__exit__(None, None, None)
        took = time.monotonic() - started
    assert gateway.process.wait(30) == 0
    assert took < 20  # ended at the graceful timeout (12 s), not after the upstream's 30 s
    assert b'"code":"server_shutting_down"' in bodies["chat"] and b"[DONE]" not in bodies["chat"]
    assert b"event: error" in bodies["responses"] and b"server_shutting_down" in bodies["responses"]
    assert bodies["messages"].rstrip().splitlines()[-2:][0] == b"event: error"  # not message_stop
    records = outage.audited()
    for name in ("chat", "responses", "messages"):
        assert records[ids[name]]["status_code"] == 503
        assert records[ids[name]]["error_type"] == "server_shutting_down"
