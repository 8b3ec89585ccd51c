"""The fake OpenAI upstream: canned bodies and the nginx config rendered from nginx.conf.template."""

from __future__ import annotations

import json
import os
from pathlib import Path

HERE = Path(__file__).resolve().parent
TEMPLATE = HERE / "nginx.conf.template"
NGINX_MODULE = Path("/usr/lib/nginx/modules/ngx_http_echo_module.so")

WORDS = ["Hello", "!", " This", " is", " a", " canned", " benchmark", " answer", "."]
USAGE_CHAT = {
    "prompt_tokens": 9,
    "completion_tokens": 12,
    "total_tokens": 21,
    "prompt_tokens_details": {"cached_tokens": 0, "audio_tokens": 0},
    "completion_tokens_details": {
        "reasoning_tokens": 0,
        "audio_tokens": 0,
        "accepted_prediction_tokens": 0,
        "rejected_prediction_tokens": 0,
    },
}
USAGE_RESPONSES = {
    "input_tokens": 9,
    "input_tokens_details": {"cached_tokens": 0},
    "output_tokens": 12,
    "output_tokens_details": {"reasoning_tokens": 0},
    "total_tokens": 21,
}


def _dump(obj: object) -> str:
    return json.dumps(obj, separators=(",", ":"))


def chat_json() -> str:
    return _dump(
        {
            "id": "chatcmpl-bench",
            "object": "chat.completion",
            "created": 1700000000,
            "model": "bench-model",
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": "".join(WORDS), "refusal": None},
                    "logprobs": None,
                    "finish_reason": "stop",
                }
            ],
            "usage": USAGE_CHAT,
            "system_fingerprint": "fp_bench",
        }
    )


def _chat_chunk(delta: dict[str, object], finish: str | None = None, usage: object = None, choices: bool = True) -> str:
    chunk: dict[str, object] = {
        "id": "chatcmpl-bench",
        "object": "chat.completion.chunk",
        "created": 1700000000,
        "model": "bench-model",
        "system_fingerprint": "fp_bench",
        "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}] if choices else [],
    }
    if usage is not None or not choices:
        chunk["usage"] = usage
    return f"data: {_dump(chunk)}\n\n"


def chat_sse() -> tuple[str, str]:
    """(first event, the rest): role chunk, 9 content chunks, finish, usage chunk, [DONE]."""
    first = _chat_chunk({"role": "assistant", "content": "", "refusal": None})
    rest = "".join(_chat_chunk({"content": word}) for word in WORDS)
    rest += _chat_chunk({}, finish="stop")
    rest += _chat_chunk({}, usage=USAGE_CHAT, choices=False)
    rest += "data: [DONE]\n\n"
    return first, rest


def _response_object(status: str, with_output: bool) -> dict[str, object]:
    text = "".join(WORDS)
    output = (
        [
            {
                "id": "msg_bench",
                "type": "message",
                "status": "completed",
                "role": "assistant",
                "content": [{"type": "output_text", "text": text, "annotations": []}],
            }
        ]
        if with_output
        else []
    )
    return {
        "id": "resp_bench",
        "object": "response",
        "created_at": 1700000000,
        "status": status,
        "error": None,
        "incomplete_details": None,
        "instructions": None,
        "max_output_tokens": None,
        "model": "bench-model",
        "output": output,
        "parallel_tool_calls": True,
        "previous_response_id": None,
        "reasoning": {"effort": None, "summary": None},
        "store": False,
        "temperature": 1.0,
        "text": {"format": {"type": "text"}},
        "tool_choice": "auto",
        "tools": [],
        "top_p": 1.0,
        "truncation": "disabled",
        "usage": USAGE_RESPONSES if status == "completed" else None,
        "metadata": {},
    }


def responses_json() -> str:
    return _dump(_response_object("completed", True))


def responses_sse() -> tuple[str, str]:
    """(first event, the rest): created ... output_text deltas ... response.completed with usage."""
    seq = iter(range(1000))

    def event(kind: str, **fields: object) -> str:
        return f"event: {kind}\ndata: {_dump({'type': kind, 'sequence_number': next(seq), **fields})}\n\n"

    text = "".join(WORDS)
    first = event("response.created", response=_response_object("in_progress", False))
    item = {"id": "msg_bench", "type": "message", "status": "in_progress", "role": "assistant", "content": []}
    part = {"type": "output_text", "text": "", "annotations": []}
    rest = event("response.in_progress", response=_response_object("in_progress", False))
    rest += event("response.output_item.added", output_index=0, item=item)
    rest += event("response.content_part.added", item_id="msg_bench", output_index=0, content_index=0, part=part)
    for word in WORDS:
        rest += event("response.output_text.delta", item_id="msg_bench", output_index=0, content_index=0, delta=word)
    rest += event("response.output_text.done", item_id="msg_bench", output_index=0, content_index=0, text=text)
    done_part = {"type": "output_text", "text": text, "annotations": []}
    rest += event("response.content_part.done", item_id="msg_bench", output_index=0, content_index=0, part=done_part)
    done_item = {**item, "status": "completed", "content": [done_part]}
    rest += event("response.output_item.done", output_index=0, item=done_item)
    rest += event("response.completed", response=_response_object("completed", True))
    return first, rest


def _nginx_quote(text: str) -> str:
    """Body text for a single-quoted nginx argument: escapes, and no `$` (variable syntax)."""
    if "$" in text or "'" in text:
        raise ValueError("canned bodies must not contain $ or '")
    # nginx caps one parameter at a few KiB: long bodies become several `echo -n` directives.
    pieces = [text[i : i + 1200] for i in range(0, len(text), 1200)] or [""]
    pieces = [piece.replace("\\", "\\\\").replace("\n", "\\n") for piece in pieces]
    return "';\n            echo -n '".join(pieces)


def render_config(prefix: Path, port: int, workers: int, hold_seconds: float) -> Path:
    chat_first, chat_rest = chat_sse()
    resp_first, resp_rest = responses_sse()
    values = {
        "PREFIX": str(prefix),
        "PORT": str(port),
        "WORKERS": str(workers),
        "HOLD_SECONDS": f"{hold_seconds:g}",
        "CHAT_JSON": _nginx_quote(chat_json()),
        "CHAT_SSE_FIRST": _nginx_quote(chat_first),
        "CHAT_SSE_REST": _nginx_quote(chat_rest),
        "RESPONSES_JSON": _nginx_quote(responses_json()),
        "RESPONSES_SSE_FIRST": _nginx_quote(resp_first),
        "RESPONSES_SSE_REST": _nginx_quote(resp_rest),
    }
    text = TEMPLATE.read_text()
    for name, value in values.items():
        text = text.replace(f"@{name}@", value)
    (prefix / "body").mkdir(parents=True, exist_ok=True)
    path = prefix / "nginx.conf"
    path.write_text(text)
    return path


def nginx_workers() -> int:
    """One worker per core: nginx + echo serves far more than the gateway on the same cores."""
    return max(1, os.cpu_count() or 1)
