"""The gateway speaks HTTP only: a WebSocket handshake gets 426 Upgrade Required with a JSON error
in the path's shape, so a client that tries WebSockets first (Codex on `/v1/responses`) falls back
to HTTP at once, instead of reading a 405 (or a 500) as a failure.

Checked against the running server (gunicorn + uvicorn) with a real handshake on a socket: a
server without a WebSocket library hands it to the gateway as an HTTP request, one with a
library as a `websocket` connection; both answer the same. The `websocket` connection is also
driven in process, so it is covered whichever way this machine's uvicorn is installed.
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import socket
from typing import Any

import httpx2
import pytest

from gateway.asgi.handler import GatewayASGIHandler
from tests.integration.conftest import ALL_KEY

HANDSHAKE = {
    "Upgrade": "websocket",
    "Connection": "Upgrade",
    "Sec-WebSocket-Key": base64.b64encode(os.urandom(16)).decode(),
    "Sec-WebSocket-Version": "13",
    "Authorization": f"Bearer {ALL_KEY}",
}


def _handshake(base_url: str, path: str) -> tuple[int, dict[str, str], Any]:
    """A WebSocket opening handshake on a plain socket: (status, headers, JSON body)."""
    host, port = base_url.removeprefix("http://").split(":")
    lines = [f"GET {path} HTTP/1.1", f"Host: {host}:{port}", *(f"{k}: {v}" for k, v in HANDSHAKE.items())]
    with socket.create_connection((host, int(port)), timeout=10) as sock:
        sock.sendall(("\r\n".join(lines) + "\r\n\r\n").encode())
        data = b""
        while not _complete(data):
            chunk = sock.recv(65536)
            if not chunk:
                break
            data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    headers = _parse_headers(head)
    if headers.get("transfer-encoding") == "chunked":
        body = _unchunked(body)
    return int(head.split()[1]), headers, json.loads(body)


def _complete(data: bytes) -> bool:
    head, separator, body = data.partition(b"\r\n\r\n")
    if not separator:
        return False
    headers = _parse_headers(head)
    if headers.get("transfer-encoding") == "chunked":
        return body.endswith(b"0\r\n\r\n")
    return len(body) >= int(headers.get("content-length", "0"))


def _unchunked(body: bytes) -> bytes:
    out = b""
    while True:
        size_line, _, rest = body.partition(b"\r\n")
        size = int(size_line, 16)
        if size == 0:
            return out
        out, body = out + rest[:size], rest[size + 2 :]


def _parse_headers(head: bytes) -> dict[str, str]:
    headers: dict[str, str] = {}
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.decode("latin-1").partition(":")
        headers[name.strip().lower()] = value.strip()
    return headers


def test_a_websocket_handshake_on_responses_gets_426_with_an_openai_error(gateway):
    status, headers, body = _handshake(gateway.base_url, "/v1/responses")
    assert status == 426, body
    assert headers["content-type"] == "application/json"
    assert headers["x-vmx-request-id"].startswith("req_")
    assert body["error"]["type"] == "invalid_request_error"
    assert body["error"]["code"] == "websocket_not_supported"
    assert "HTTP" in body["error"]["message"]


def test_a_websocket_handshake_on_messages_gets_the_anthropic_shape(gateway):
    status, _, body = _handshake(gateway.base_url, "/v1/messages")
    assert status == 426
    assert body["type"] == "error" and body["error"]["type"] == "invalid_request_error"


def test_a_get_asking_to_upgrade_gets_426_and_the_connection_is_not_reused(gateway):
    response = httpx2.get(
        f"{gateway.base_url}/v1/responses",
        headers={"Upgrade": "websocket", "Connection": "Upgrade", "Authorization": f"Bearer {ALL_KEY}"},
    )
    assert response.status_code == 426
    assert response.json()["error"]["code"] == "websocket_not_supported"
    assert response.headers["connection"] == "close"
    assert "upgrade" not in response.headers  # there is nothing to upgrade to: plain HTTP it is


def test_http_on_the_same_paths_is_unchanged(gateway):
    # Without an upgrade, a GET is still 405 and an unknown path still 404.
    plain = httpx2.get(f"{gateway.base_url}/v1/responses", headers={"Authorization": f"Bearer {ALL_KEY}"})
    assert plain.status_code == 405
    status, _, body = _handshake(gateway.base_url, "/v1/no-such-thing")
    assert status == 404 and body["error"]["code"] == "unknown_url"


# -- the `websocket` connection, as a server with a WebSocket library hands it over --------------


def _websocket(path: str, *, denial_response: bool = True) -> list[dict[str, Any]]:
    scope: dict[str, Any] = {
        "type": "websocket",
        "path": path,
        "raw_path": path.encode(),
        "query_string": b"",
        "headers": [(k.lower().encode(), v.encode()) for k, v in HANDSHAKE.items()],
        "client": ("127.0.0.1", 5000),
        "server": ("127.0.0.1", 8000),
        "subprotocols": [],
        "extensions": {"websocket.http.response": {}} if denial_response else {},
    }
    sent: list[dict[str, Any]] = []
    incoming = [{"type": "websocket.connect"}]

    async def receive() -> dict[str, Any]:
        if incoming:
            return incoming.pop(0)
        await asyncio.sleep(3600)
        raise AssertionError("unreachable")

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    asyncio.run(asyncio.wait_for(GatewayASGIHandler()(scope, receive, send), 5))
    return sent


@pytest.mark.django_db
def test_a_websocket_connection_is_refused_with_the_426_answer():
    start, body = _websocket("/v1/responses")
    assert start["type"] == "websocket.http.response.start" and start["status"] == 426
    headers = {name.decode(): value.decode() for name, value in start["headers"]}
    assert headers["content-type"] == "application/json"
    assert int(headers["content-length"]) == len(body["body"])
    assert json.loads(body["body"])["error"]["code"] == "websocket_not_supported"


@pytest.mark.django_db
def test_a_websocket_connection_without_the_denial_extension_is_closed():
    assert _websocket("/v1/responses", denial_response=False) == [{"type": "websocket.close", "code": 1008}]
