"""A fake OpenAI server: a real HTTP server on 127.0.0.1 in a background thread.

By default it answers like OpenAI: `GET …/models` lists a model; `POST …/chat/completions` and
`POST …/responses` answer from the request (JSON, or SSE when `stream` is true, honouring
`stream_options.include_usage`), with usage that carries cached, reasoning, audio and prediction
tokens. Any path prefix before `/v1` works, so several connections can share one server with base
URLs like `http://127.0.0.1:PORT/a/v1`.

Tests script what comes next on a route with `reply(method, path, Reply(...))`: an HTTP error
with headers, a delay, an SSE stream given event by event (with pauses, optionally cut off) or
re-cut into writes of a fixed size (`rechunk`), and read what the gateway sent in `requests`.
"""

from __future__ import annotations

import itertools
import json
import socket
import struct
import threading
import time
from collections import defaultdict, deque
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

CHAT_USAGE = {
    "prompt_tokens": 40,
    "completion_tokens": 12,
    "total_tokens": 52,
    "prompt_tokens_details": {"cached_tokens": 8, "audio_tokens": 2},
    "completion_tokens_details": {
        "reasoning_tokens": 5,
        "audio_tokens": 3,
        "accepted_prediction_tokens": 4,
        "rejected_prediction_tokens": 1,
    },
}
RESPONSES_USAGE = {
    "input_tokens": 30,
    "input_tokens_details": {"cached_tokens": 6},
    "output_tokens": 20,
    "output_tokens_details": {"reasoning_tokens": 7},
    "total_tokens": 50,
}


@dataclass
class Reply:
    status: int = 200
    body: Any = None
    """A JSON-able value, or bytes sent as they are; None for the default answer."""
    headers: dict[str, str] = field(default_factory=dict)
    delay: float = 0.0
    """Seconds to wait before answering."""
    events: list[bytes | float] | None = None
    """An SSE body sent piece by piece; a float pauses that many seconds."""
    cut: bool = False
    """Close the connection after `events` without ending the body properly."""
    drop: str | None = None
    """End the connection without answering: "reset" (TCP RST, a crashed upstream) or "close"
    (a clean close, as a proxy that gave up does)."""


@dataclass
class RecordedRequest:
    method: str
    path: str
    headers: dict[str, str]
    """Lower-cased names."""
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


def sse(payload: Any, event: str | None = None) -> bytes:
    data = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
    return (f"event: {event}\n".encode() if event else b"") + b"data: " + data + b"\n\n"


def rechunk(events: list[bytes | float], size: int) -> list[bytes | float]:
    """The body of `events` (which must not pause) re-cut into `size`-byte writes: event
    boundaries then fall anywhere in a write, and a big event spans many, as over a network."""
    assert all(isinstance(e, bytes) for e in events), "rechunk keeps no pauses"
    body = b"".join(e for e in events if isinstance(e, bytes))
    return [body[start : start + size] for start in range(0, len(body), size)]


def chat_completion(model: str, text: str) -> dict[str, Any]:
    return {
        "id": "chatcmpl-fake1",
        "object": "chat.completion",
        "created": 1_700_000_000,
        "model": model,
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": text, "refusal": None, "annotations": []},
                "logprobs": None,
                "finish_reason": "stop",
            }
        ],
        "usage": CHAT_USAGE,
        "system_fingerprint": "fp_fake",
    }


def chat_stream(model: str, text: str, *, include_usage: bool) -> list[bytes | float]:
    base = {
        "id": "chatcmpl-fake1",
        "object": "chat.completion.chunk",
        "created": 1_700_000_000,
        "model": model,
        "system_fingerprint": "fp_fake",
    }
    extra = {"usage": None} if include_usage else {}
    events: list[bytes | float] = [
        sse(
            {
                **base,
                "choices": [
                    {"index": 0, "delta": {"role": "assistant", "content": ""}, "logprobs": None, "finish_reason": None}
                ],
                **extra,
            }
        )
    ]
    for word in text.split(" "):
        events.append(
            sse(
                {
                    **base,
                    "choices": [
                        {"index": 0, "delta": {"content": word + " "}, "logprobs": None, "finish_reason": None}
                    ],
                    **extra,
                }
            )
        )
    events.append(
        sse({**base, "choices": [{"index": 0, "delta": {}, "logprobs": None, "finish_reason": "stop"}], **extra})
    )
    if include_usage:
        events.append(sse({**base, "choices": [], "usage": CHAT_USAGE}))
    events.append(b"data: [DONE]\n\n")
    return events


def response_object(model: str, text: str, status: str = "completed") -> dict[str, Any]:
    done = status == "completed"
    return {
        "id": "resp_fake1",
        "object": "response",
        "created_at": 1_700_000_000,
        "status": status,
        "error": None,
        "incomplete_details": None,
        "model": model,
        "output": [
            {
                "id": "msg_fake1",
                "type": "message",
                "status": "completed",
                "role": "assistant",
                "content": [{"type": "output_text", "text": text, "annotations": []}],
            }
        ]
        if done
        else [],
        "parallel_tool_calls": True,
        "tool_choice": "auto",
        "tools": [],
        "usage": RESPONSES_USAGE if done else None,
    }


def responses_stream(model: str, text: str) -> list[bytes | float]:
    seq = itertools.count()
    item = {"id": "msg_fake1", "type": "message", "status": "in_progress", "role": "assistant", "content": []}
    part = {"type": "output_text", "text": "", "annotations": []}
    events: list[bytes | float] = [
        sse(
            {
                "type": "response.created",
                "sequence_number": next(seq),
                "response": response_object(model, "", "in_progress"),
            },
            "response.created",
        ),
        sse(
            {"type": "response.output_item.added", "sequence_number": next(seq), "output_index": 0, "item": item},
            "response.output_item.added",
        ),
        sse(
            {
                "type": "response.content_part.added",
                "sequence_number": next(seq),
                "item_id": "msg_fake1",
                "output_index": 0,
                "content_index": 0,
                "part": part,
            },
            "response.content_part.added",
        ),
    ]
    for word in text.split(" "):
        events.append(
            sse(
                {
                    "type": "response.output_text.delta",
                    "sequence_number": next(seq),
                    "item_id": "msg_fake1",
                    "output_index": 0,
                    "content_index": 0,
                    "delta": word + " ",
                },
                "response.output_text.delta",
            )
        )
    full = " ".join(w + "" for w in text.split(" ")) + " "
    events += [
        sse(
            {
                "type": "response.output_text.done",
                "sequence_number": next(seq),
                "item_id": "msg_fake1",
                "output_index": 0,
                "content_index": 0,
                "text": full,
            },
            "response.output_text.done",
        ),
        sse(
            {
                "type": "response.content_part.done",
                "sequence_number": next(seq),
                "item_id": "msg_fake1",
                "output_index": 0,
                "content_index": 0,
                "part": {**part, "text": full},
            },
            "response.content_part.done",
        ),
        sse(
            {
                "type": "response.output_item.done",
                "sequence_number": next(seq),
                "output_index": 0,
                "item": {**item, "status": "completed", "content": [{**part, "text": full}]},
            },
            "response.output_item.done",
        ),
        sse(
            {"type": "response.completed", "sequence_number": next(seq), "response": response_object(model, full)},
            "response.completed",
        ),
    ]
    return events


def _last_user_text(body: dict[str, Any]) -> str:
    items = body.get("messages") or body.get("input") or []
    if isinstance(items, str):
        return items
    for item in reversed(items):
        if isinstance(item, dict) and item.get("role") == "user":
            content = item.get("content")
            if isinstance(content, str):
                return content
            if isinstance(content, list):  # the last text part: agents put the prompt last
                texts = [str(p.get("text", "")) for p in content if isinstance(p, dict) and p.get("text")]
                return texts[-1] if texts else ""
    return ""


class FakeOpenAI:
    def __init__(self) -> None:
        self.requests: list[RecordedRequest] = []
        self.disconnects: list[str] = []
        """Paths of streams whose client went away before the stream ended."""
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
                recorded = RecordedRequest(self.command, path, {k.lower(): v for k, v in self.headers.items()}, body)
                with fake._lock:
                    fake.requests.append(recorded)
                    queue = fake._script.get((self.command, path))
                    reply = queue.popleft() if queue else None
                reply = fake._fill_default(recorded, reply or Reply())
                if reply.drop:
                    if reply.drop == "reset":  # SO_LINGER 0: the close sends a TCP reset
                        self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                    self.connection.close()
                    self.close_connection = True
                    return
                if reply.delay:
                    time.sleep(reply.delay)
                if reply.events is not None:
                    self._send_events(reply, path)
                    return
                payload = reply.body if isinstance(reply.body, bytes) else json.dumps(reply.body).encode()
                self.send_response(reply.status)
                for name, value in {"Content-Type": "application/json", **reply.headers}.items():
                    self.send_header(name, value)
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            def _send_events(self, reply: Reply, path: str) -> None:
                self.send_response(reply.status)
                for name, value in {"Content-Type": "text/event-stream", **reply.headers}.items():
                    self.send_header(name, value)
                self.send_header("Transfer-Encoding", "chunked")
                self.end_headers()
                try:
                    for piece in reply.events or []:
                        if isinstance(piece, float):
                            time.sleep(piece)
                            continue
                        self.wfile.write(f"{len(piece):x}\r\n".encode() + piece + b"\r\n")
                        self.wfile.flush()
                    if reply.cut:
                        self.connection.shutdown(socket.SHUT_RDWR)
                        self.close_connection = True
                        return
                    self.wfile.write(b"0\r\n\r\n")
                except (BrokenPipeError, ConnectionResetError):
                    with fake._lock:
                        fake.disconnects.append(path)
                    self.close_connection = True

            do_GET = do_POST = _handle

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, name="fake-openai", daemon=True)

    @property
    def port(self) -> int:
        return int(self._server.server_port)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def start(self) -> FakeOpenAI:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    def reset(self) -> None:
        with self._lock:
            self.requests.clear()
            self.disconnects.clear()
            self._script.clear()

    def reply(self, method: str, path: str, *replies: Reply) -> None:
        """Answer the next calls to `method path` (as the upstream sees it, e.g. /a/v1/responses)."""
        with self._lock:
            self._script[(method, path)].extend(replies)

    def calls(self, path_suffix: str) -> list[RecordedRequest]:
        return [r for r in self.requests if r.path.endswith(path_suffix)]

    def _fill_default(self, request: RecordedRequest, reply: Reply) -> Reply:
        if reply.body is not None or reply.events is not None or reply.status != 200 or reply.drop:
            return reply
        path = request.path
        if request.method == "GET" and path.endswith("/models"):
            reply.body = {
                "object": "list",
                "data": [{"id": "gpt-4.1", "object": "model", "created": 0, "owned_by": "fake"}],
            }
            return reply
        body = request.json() if request.body else {}
        model = str(body.get("model", ""))
        text = f"echo: {_last_user_text(body)}"
        if path.endswith("/chat/completions"):
            if body.get("stream"):
                include_usage = bool((body.get("stream_options") or {}).get("include_usage"))
                reply.events = chat_stream(model, text, include_usage=include_usage)
            else:
                reply.body = chat_completion(model, text)
            return reply
        if path.endswith("/responses"):
            if body.get("stream"):
                reply.events = responses_stream(model, text)
            else:
                reply.body = response_object(model, text)
            return reply
        reply.status = 404
        reply.body = {
            "error": {
                "message": "no route " + request.method + " " + path,
                "type": "invalid_request_error",
                "param": None,
                "code": None,
            }
        }
        return reply
