"""The `mock` provider: answers in-process and deterministically, with no network.

For the offline quickstart, demos and load tests only: it never calls a model. The reply quotes
the last user message, in the upstream's shapes (Chat Completions and Responses, JSON or SSE),
so clients and the gateway's own stream handling see what they would see from OpenAI.
"""

from __future__ import annotations

import hashlib
from collections.abc import AsyncIterator, Iterator
from typing import Any

import orjson

from gateway.core.errors import UpstreamStatusError
from gateway.providers.base import CheckResult, Provider, UpstreamRequest, UpstreamResponse

CREATED = 1_760_000_000  # fixed, so replies are identical for identical requests


class MockProvider(Provider):
    slug = "mock"
    label = "Mock (offline demo)"
    description = "Deterministic in-process answers for demos and load tests; never calls a model."
    default_model = "mock-1"

    async def check(self) -> CheckResult:
        return CheckResult(True, 0.0, "ok, the mock provider answers in-process")

    async def send(self, request: UpstreamRequest) -> UpstreamResponse:
        body = orjson.loads(request.body)
        if request.path == "/chat/completions":
            reply = _Reply.from_messages(body.get("messages"), body.get("model", ""))
            if request.stream:
                include_usage = bool((body.get("stream_options") or {}).get("include_usage"))
                return _stream(reply.chat_events(include_usage))
            return UpstreamResponse(status=200, headers={}, body=orjson.dumps(reply.chat_completion()))
        if request.path == "/responses":
            reply = _Reply.from_input(body.get("input"), body.get("instructions"), body.get("model", ""))
            if request.stream:
                return _stream(reply.responses_events())
            return UpstreamResponse(status=200, headers={}, body=orjson.dumps(reply.response()))
        if request.path == "/responses/input_tokens":
            reply = _Reply.from_input(body.get("input"), body.get("instructions"), body.get("model", ""))
            return UpstreamResponse(
                status=200,
                headers={},
                body=orjson.dumps({"object": "response.input_tokens", "input_tokens": reply.input_tokens}),
            )
        error = {
            "error": {
                "message": f"the mock provider does not serve {request.path}",
                "type": "invalid_request_error",
                "param": None,
                "code": None,
            }
        }
        raise UpstreamStatusError(status=404, body=orjson.dumps(error), headers={}, connection=self.connection.name)


def _tokens(text: str) -> int:
    return max(1, len(text) // 4)


def _text_of(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return " ".join(str(part.get("text", "")) for part in content if isinstance(part, dict) and part.get("text"))
    return ""


class _Reply:
    def __init__(self, *, prompt: str, last_user: str, model: str) -> None:
        self.model = model
        quoted = last_user.strip().replace("\n", " ")
        quoted = quoted if len(quoted) <= 200 else quoted[:200] + "…"
        self.text = (
            f"This is the mock provider (no model was called). You said: {quoted}"
            if quoted
            else "This is the mock provider (no model was called)."
        )
        self.input_tokens = _tokens(prompt)
        self.output_tokens = _tokens(self.text)
        self.id_suffix = hashlib.sha256(f"{model}|{prompt}".encode()).hexdigest()[:24]

    @classmethod
    def from_messages(cls, messages: Any, model: str) -> _Reply:
        messages = messages if isinstance(messages, list) else []
        texts = [_text_of(m.get("content")) for m in messages if isinstance(m, dict)]
        users = [_text_of(m.get("content")) for m in messages if isinstance(m, dict) and m.get("role") == "user"]
        return cls(prompt=" ".join(texts), last_user=users[-1] if users else "", model=model)

    @classmethod
    def from_input(cls, items: Any, instructions: Any, model: str) -> _Reply:
        if isinstance(items, str):
            return cls(prompt=f"{instructions or ''} {items}", last_user=items, model=model)
        items = items if isinstance(items, list) else []
        texts = [_text_of(i.get("content")) for i in items if isinstance(i, dict)]
        users = [_text_of(i.get("content")) for i in items if isinstance(i, dict) and i.get("role") == "user"]
        return cls(prompt=f"{instructions or ''} {' '.join(texts)}", last_user=users[-1] if users else "", model=model)

    def pieces(self) -> list[str]:
        words = self.text.split(" ")
        return [word if i == 0 else " " + word for i, word in enumerate(words)]

    # Chat Completions ----------------------------------------------------------------------------

    def chat_usage(self) -> dict[str, Any]:
        return {
            "prompt_tokens": self.input_tokens,
            "completion_tokens": self.output_tokens,
            "total_tokens": self.input_tokens + self.output_tokens,
            "prompt_tokens_details": {"cached_tokens": 0, "audio_tokens": 0},
            "completion_tokens_details": {
                "reasoning_tokens": 0,
                "audio_tokens": 0,
                "accepted_prediction_tokens": 0,
                "rejected_prediction_tokens": 0,
            },
        }

    def chat_completion(self) -> dict[str, Any]:
        return {
            "id": f"chatcmpl-mock{self.id_suffix}",
            "object": "chat.completion",
            "created": CREATED,
            "model": self.model,
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": self.text, "refusal": None, "annotations": []},
                    "logprobs": None,
                    "finish_reason": "stop",
                }
            ],
            "usage": self.chat_usage(),
            "service_tier": "default",
            "system_fingerprint": None,
        }

    def chat_events(self, include_usage: bool) -> Iterator[bytes]:
        base = {
            "id": f"chatcmpl-mock{self.id_suffix}",
            "object": "chat.completion.chunk",
            "created": CREATED,
            "model": self.model,
            "system_fingerprint": None,
        }
        extra = {"usage": None} if include_usage else {}

        def chunk(delta: dict[str, Any], finish: str | None = None) -> bytes:
            choice = {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}
            return b"data: " + orjson.dumps({**base, "choices": [choice], **extra}) + b"\n\n"

        yield chunk({"role": "assistant", "content": "", "refusal": None})
        for piece in self.pieces():
            yield chunk({"content": piece})
        yield chunk({}, "stop")
        if include_usage:
            yield b"data: " + orjson.dumps({**base, "choices": [], "usage": self.chat_usage()}) + b"\n\n"
        yield b"data: [DONE]\n\n"

    # Responses -----------------------------------------------------------------------------------

    def response(self, *, status: str = "completed", text: str | None = None) -> dict[str, Any]:
        done = status == "completed"
        message = {
            "id": f"msg_mock{self.id_suffix}",
            "type": "message",
            "status": "completed",
            "role": "assistant",
            "content": [
                {"type": "output_text", "text": self.text if text is None else text, "annotations": [], "logprobs": []}
            ],
        }
        return {
            "id": f"resp_mock{self.id_suffix}",
            "object": "response",
            "created_at": CREATED,
            "status": status,
            "error": None,
            "incomplete_details": None,
            "instructions": None,
            "model": self.model,
            "output": [message] if done else [],
            "parallel_tool_calls": True,
            "tool_choice": "auto",
            "tools": [],
            "usage": {
                "input_tokens": self.input_tokens,
                "input_tokens_details": {"cached_tokens": 0},
                "output_tokens": self.output_tokens,
                "output_tokens_details": {"reasoning_tokens": 0},
                "total_tokens": self.input_tokens + self.output_tokens,
            }
            if done
            else None,
        }

    def responses_events(self) -> Iterator[bytes]:
        sequence = 0

        def event(kind: str, **fields: Any) -> bytes:
            nonlocal sequence
            data = orjson.dumps({"type": kind, "sequence_number": sequence, **fields})
            sequence += 1
            return b"event: " + kind.encode() + b"\ndata: " + data + b"\n\n"

        item_id = f"msg_mock{self.id_suffix}"
        yield event("response.created", response=self.response(status="in_progress"))
        yield event("response.in_progress", response=self.response(status="in_progress"))
        item = {"id": item_id, "type": "message", "status": "in_progress", "role": "assistant", "content": []}
        yield event("response.output_item.added", output_index=0, item=item)
        empty_part = {"type": "output_text", "text": "", "annotations": [], "logprobs": []}
        yield event("response.content_part.added", item_id=item_id, output_index=0, content_index=0, part=empty_part)
        for piece in self.pieces():
            yield event(
                "response.output_text.delta", item_id=item_id, output_index=0, content_index=0, delta=piece, logprobs=[]
            )
        yield event(
            "response.output_text.done", item_id=item_id, output_index=0, content_index=0, text=self.text, logprobs=[]
        )
        part = {**empty_part, "text": self.text}
        yield event("response.content_part.done", item_id=item_id, output_index=0, content_index=0, part=part)
        final = self.response()
        yield event("response.output_item.done", output_index=0, item=final["output"][0])
        yield event("response.completed", response=final)


def _stream(events: Iterator[bytes]) -> UpstreamResponse:
    async def chunks() -> AsyncIterator[bytes]:
        for frame in events:
            yield frame

    return UpstreamResponse(status=200, headers={"content-type": "text/event-stream"}, chunks=chunks())
