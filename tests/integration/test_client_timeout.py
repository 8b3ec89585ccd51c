"""Slow and stalled clients are dropped after VMX_CLIENT_TIMEOUT (gateway/asgi/protocol.py).

A real gunicorn + uvicorn gateway with a 1 s deadline, spoken to over raw sockets so each test
controls exactly which bytes arrive and when. Waits are generous (the deadline is 1 s, the tests
allow 10-15 s) so a loaded machine does not make them flaky; lower bounds show the close came from
the deadline, not from something else closing the connection at once.
"""

from __future__ import annotations

import json
import select
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import httpx2
import pytest
import yaml
from cryptography.fernet import Fernet

from tests.fakes.openai_upstream import FakeOpenAI, Reply
from tests.integration.conftest import _database
from tests.integration.server import GatewayProcess, gateway_env, gateway_start, manage

TIMEOUT = 1.0
KEY = "vmx-timeout-0123456789abcdef0"
WAIT = 10.0  # how long a test waits for the server to act on a 1 s deadline


@pytest.fixture(scope="module")
def gateway(tmp_path_factory: pytest.TempPathFactory, fake_openai: FakeOpenAI) -> Iterator[GatewayProcess]:
    directory = tmp_path_factory.mktemp("client-timeout")
    databases = _database(directory)
    env = gateway_env(
        database_url=next(databases),
        encryption_key=Fernet.generate_key().decode(),
        VMX_CLIENT_TIMEOUT=str(TIMEOUT),
    )
    manage(env, "migrate", "--no-input", "-v", "0")
    config = {
        "connections": [
            {"name": "up", "provider": "openai", "config": {"apiKey": "sk-x", "baseURL": fake_openai.base_url}}
        ],
        "resources": [{"name": "slow", "model": {"connection": "up", "model": "gpt-4.1"}}],
        "apiKeys": [{"name": "ops", "key": KEY, "resources": "*"}],
    }
    config_file = directory / "vmx.yaml"
    config_file.write_text(yaml.safe_dump(config))
    manage(env, "vmx_apply", str(config_file))
    process = gateway_start(env, Path(directory / "gunicorn.log"), "--workers", "1")
    yield process
    assert process.stop() == 0
    for _ in databases:  # drop the PostgreSQL database
        pass


def connect(gateway: GatewayProcess) -> socket.socket:
    host, port = gateway.base_url.removeprefix("http://").split(":")
    sock = socket.create_connection((host, int(port)), timeout=WAIT)
    return sock


def read_until_closed(sock: socket.socket) -> tuple[bytes, float]:
    """Everything the server sends until it closes, and how long that took."""
    start = time.monotonic()
    data = b""
    while chunk := sock.recv(65536):
        data += chunk
    return data, time.monotonic() - start


def read_response(sock: socket.socket) -> tuple[int, bytes]:
    """One response with a Content-Length on a connection that stays open: (status, body)."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        assert chunk, f"connection closed after {data!r}"
        data += chunk
    head, body = data.split(b"\r\n\r\n", 1)
    length = int(dict(_headers(head))[b"content-length"])
    while len(body) < length:
        chunk = sock.recv(65536)
        assert chunk, "connection closed mid-body"
        body += chunk
    return int(head.split()[1]), body


def _headers(head: bytes) -> list[tuple[bytes, bytes]]:
    pairs = []
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        pairs.append((name.strip().lower(), value.strip()))
    return pairs


def post_head(gateway: GatewayProcess, path: str, content_length: int, key: str = KEY, extra: str = "") -> bytes:
    host = gateway.base_url.removeprefix("http://")
    return (
        f"POST {path} HTTP/1.1\r\nHost: {host}\r\nAuthorization: Bearer {key}\r\n"
        f"Content-Type: application/json\r\nContent-Length: {content_length}\r\n{extra}\r\n"
    ).encode()


def assert_no_errors_logged(gateway: GatewayProcess) -> None:
    # What uvicorn logs when an app fails or leaves a request unanswered; the disconnect that
    # follows a 408 must be neither.
    log = gateway.log()
    for sign in ("Traceback", "Exception in ASGI application", "ASGI callable returned without"):
        assert sign not in log, log


def test_a_connection_that_sends_nothing_is_closed(gateway):
    with connect(gateway) as sock:
        data, elapsed = read_until_closed(sock)
    assert data == b""  # no request, nothing to answer
    assert TIMEOUT * 0.8 <= elapsed < WAIT


def test_half_a_request_head_gets_408(gateway):
    with connect(gateway) as sock:
        sock.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Ty")
        data, elapsed = read_until_closed(sock)
    head, _, body = data.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 408 Request Timeout\r\n")
    assert (b"connection", b"close") in _headers(head)
    assert body == b"Request Timeout"
    assert TIMEOUT * 0.8 <= elapsed < WAIT


@pytest.mark.parametrize(
    ("path", "expected"),
    [
        (
            "/v1/chat/completions",
            {
                "error": {
                    "message": "The request body did not arrive in full within 1 s.",
                    "type": "invalid_request_error",
                    "param": None,
                    "code": "request_timeout",
                }
            },
        ),
        (
            "/v1/messages",
            {
                "type": "error",
                "error": {
                    "type": "invalid_request_error",
                    "message": "The request body did not arrive in full within 1 s.",
                },
            },
        ),
    ],
)
def test_half_a_body_gets_408_in_the_callers_shape(gateway, path, expected):
    with connect(gateway) as sock:
        sock.sendall(post_head(gateway, path, 1000) + b'{"model": ')
        data, elapsed = read_until_closed(sock)
    head, _, body = data.partition(b"\r\n\r\n")
    headers = dict(_headers(head))
    assert head.startswith(b"HTTP/1.1 408 ")
    assert headers[b"content-type"] == b"application/json" and headers[b"connection"] == b"close"
    # The whole of what came back is this one response: no 500 or second answer after it.
    assert len(body) == int(headers[b"content-length"])
    answer = json.loads(body)
    request_id = headers[b"x-vmx-request-id"].decode()
    assert request_id.startswith("req_")
    if path == "/v1/messages":
        assert answer.pop("request_id") == request_id
    assert answer == expected
    assert TIMEOUT * 0.8 <= elapsed < WAIT
    time.sleep(0.5)  # let the app's task see the disconnect and return
    assert_no_errors_logged(gateway)


def test_trickling_bytes_does_not_extend_the_deadline(gateway):
    # The slow-loris pattern: a byte now and then keeps a per-read timeout from ever firing; the
    # deadline is on the whole request, so the 408 comes after ~1 s although bytes keep coming.
    with connect(gateway) as sock:
        sock.sendall(post_head(gateway, "/v1/chat/completions", 1000))
        start = time.monotonic()
        while time.monotonic() - start < WAIT:
            readable, _, _ = select.select([sock], [], [], TIMEOUT / 4)
            if readable:
                break
            sock.sendall(b" ")
        data, _ = read_until_closed(sock)
        elapsed = time.monotonic() - start
    assert data.startswith(b"HTTP/1.1 408 ")
    assert TIMEOUT * 0.8 <= elapsed < WAIT


def test_many_idle_connections_are_all_closed_and_the_server_still_answers(gateway):
    start = time.monotonic()
    sockets = [connect(gateway) for _ in range(200)]
    try:
        for sock in sockets:
            sock.settimeout(max(0.1, start + 15 - time.monotonic()))
            assert sock.recv(1) == b""
    finally:
        for sock in sockets:
            sock.close()
    assert time.monotonic() - start < 15
    assert httpx2.get(f"{gateway.base_url}/healthz", timeout=WAIT).status_code == 200


def test_a_kept_alive_connection_may_pause_between_requests(gateway):
    # The deadline runs from a request's first byte, not from the end of the previous response:
    # the pause is longer than VMX_CLIENT_TIMEOUT but shorter than the keep-alive timeout.
    request = f"GET /healthz HTTP/1.1\r\nHost: {gateway.base_url.removeprefix('http://')}\r\n\r\n".encode()
    with connect(gateway) as sock:
        sock.sendall(request)
        assert read_response(sock)[0] == 200
        time.sleep(TIMEOUT * 2)
        sock.sendall(request)
        assert read_response(sock)[0] == 200


def test_a_body_sent_in_pieces_within_the_deadline_is_served(gateway, upstream):
    body = json.dumps({"model": "slow", "messages": [{"role": "user", "content": "x" * 100}]}).encode()
    pieces = [body[:40], body[40:80], body[80:]]
    with connect(gateway) as sock:
        # `connection: close` so the answer, however it is framed, ends where the connection does.
        sock.sendall(post_head(gateway, "/v1/chat/completions", len(body), extra="Connection: close\r\n"))
        for piece in pieces:
            time.sleep(0.1)
            sock.sendall(piece)
        answer, _ = read_until_closed(sock)
    assert answer.startswith(b"HTTP/1.1 200 "), answer
    # The whole body reached the view and went on upstream.
    [forwarded] = upstream.calls("/chat/completions")
    assert forwarded.json()["messages"][0]["content"] == "x" * 100


def test_a_slow_response_is_not_cut(gateway, upstream):
    # Once the request is complete the clock stops: the upstream taking longer than the deadline
    # is not the client's fault.
    upstream.reply("POST", "/v1/chat/completions", Reply(delay=TIMEOUT * 2.5))
    response = httpx2.post(
        f"{gateway.base_url}/v1/chat/completions",
        headers={"Authorization": f"Bearer {KEY}"},
        json={"model": "slow", "messages": [{"role": "user", "content": "Hi"}]},
        timeout=30,
    )
    assert response.status_code == 200, response.text
    assert response.json()["choices"][0]["message"]["content"]
    assert_no_errors_logged(gateway)
