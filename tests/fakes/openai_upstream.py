"""A fake OpenAI server: a real HTTP server on 127.0.0.1 in a background thread.

Tests script replies per route (`upstream.reply(...)`) and read what the gateway sent
(`upstream.requests`). Unscripted `GET /v1/models` answers a small model list, so connection
checks work out of the box; any other unscripted route answers 404 in OpenAI's error shape.
"""

from __future__ import annotations

import json
import threading
import time
from collections import defaultdict, deque
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


@dataclass
class Reply:
    status: int = 200
    body: Any = None
    """A JSON-able value, or bytes sent as they are."""
    headers: dict[str, str] = field(default_factory=dict)
    delay: float = 0.0
    """Seconds to wait before answering."""


@dataclass
class RecordedRequest:
    method: str
    path: str
    headers: dict[str, str]
    """Lower-cased names."""
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


class FakeOpenAI:
    def __init__(self) -> None:
        self.requests: list[RecordedRequest] = []
        self._script: dict[tuple[str, str], deque[Reply]] = defaultdict(deque)
        self._lock = threading.Lock()
        fake = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: Any) -> None:  # keep test output clean
                pass

            def _handle(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                path = self.path.split("?", 1)[0]
                with fake._lock:
                    fake.requests.append(
                        RecordedRequest(self.command, path, {k.lower(): v for k, v in self.headers.items()}, body)
                    )
                    queue = fake._script.get((self.command, path))
                    reply = queue.popleft() if queue else fake._default(self.command, path)
                if reply.delay:
                    time.sleep(reply.delay)
                payload = reply.body if isinstance(reply.body, bytes) else json.dumps(reply.body).encode()
                self.send_response(reply.status)
                headers = {"Content-Type": "application/json", **reply.headers}
                for name, value in headers.items():
                    self.send_header(name, value)
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            do_GET = do_POST = _handle

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, name="fake-openai", daemon=True)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_port}/v1"

    def start(self) -> FakeOpenAI:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    def reply(self, method: str, path: str, reply: Reply) -> None:
        """Answer the next `method path` (path as the upstream sees it, e.g. /v1/models) with `reply`."""
        with self._lock:
            self._script[(method, path)].append(reply)

    def _default(self, method: str, path: str) -> Reply:
        if (method, path) == ("GET", "/v1/models"):
            models = [{"id": "gpt-4.1", "object": "model", "created": 0, "owned_by": "fake"}]
            return Reply(body={"object": "list", "data": models})
        error = {
            "message": "no route " + method + " " + path,
            "type": "invalid_request_error",
            "param": None,
            "code": None,
        }
        return Reply(status=404, body={"error": error})
