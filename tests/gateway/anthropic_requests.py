"""Valid Anthropic Messages requests that together use every block, source, tool and option kind
the gateway converts: the recorded converter fixtures plus two hand-made requests. Property tests
start from these and damage them.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from gateway.converters.common import signature_encode

FIXTURES = Path(__file__).parent / "converters" / "fixtures" / "requests"
UPSTREAM = "gpt-5.1-codex"
"""The upstream model the fixtures' thinking signatures were made for (they replay only to it)."""
PNG = "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mP8/5+hHgAHggJ/PchI7wAAAABJRU5ErkJggg=="


def _signature(next_item: dict[str, Any] | None) -> str:
    return signature_encode(reasoning_id="rs_1", encrypted_content="enc", model=UPSTREAM, next_item=next_item)


def recorded() -> dict[str, dict[str, Any]]:
    """The converter's recorded request fixtures by name (Claude Code, tool loop, images, PDFs)."""
    paths = sorted(FIXTURES.glob("*.json"))
    return {path.stem: json.loads(path.read_text()) for path in paths if not path.stem.endswith(".expected")}


EVERYTHING_AT_ONCE: dict[str, Any] = {
    "model": "claude-sonnet-4-5",
    "max_tokens": 2048,
    "stream": True,
    "system": [{"type": "text", "text": "Be brief.", "cache_control": {"type": "ephemeral"}}],
    "metadata": {"user_id": "user-42"},
    "stop_sequences": ["END"],
    "service_tier": "auto",
    "temperature": 0.2,
    "thinking": {"type": "enabled", "budget_tokens": 5000, "display": "summarized"},
    "output_config": {"effort": "medium", "format": {"type": "json_schema", "schema": {"type": "object"}}},
    "tool_choice": {"type": "tool", "name": "lookup", "disable_parallel_tool_use": True},
    "tools": [
        {
            "name": "lookup",
            "description": "Look a word up",
            "input_schema": {
                "type": "object",
                "properties": {"word": {"type": "string"}, "tags": {"type": "array", "items": {"type": "string"}}},
                "required": ["word", "tags"],
                "additionalProperties": False,
            },
            "input_examples": [{"word": "gateway", "tags": []}],
            "strict": True,
        },
        {
            "type": "web_search_20250305",
            "name": "web_search",
            "max_uses": 3,
            "allowed_domains": ["example.com"],
            "user_location": {"type": "approximate", "city": "Paris", "country": "FR"},
        },
    ],
    "messages": [
        {
            "role": "user",
            "content": [
                {"type": "text", "text": "Look these up."},
                {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": PNG}},
                {"type": "image", "source": {"type": "url", "url": "https://example.com/a.png"}},
                {"type": "document", "source": {"type": "url", "url": "https://example.com/a.pdf"}},
                {
                    "type": "document",
                    "title": "Notes",
                    "context": "from the wiki",
                    "source": {"type": "text", "media_type": "text/plain", "data": "notes"},
                },
                {
                    "type": "document",
                    "source": {
                        "type": "content",
                        "content": [
                            {"type": "text", "text": "inner"},
                            {"type": "image", "source": {"type": "url", "url": "https://example.com/b.png"}},
                        ],
                    },
                },
                {
                    "type": "search_result",
                    "source": "https://example.com",
                    "title": "Example",
                    "content": [{"type": "text", "text": "a result"}],
                },
            ],
        },
        {
            "role": "assistant",
            "content": [
                {"type": "thinking", "thinking": "Look it up.", "signature": _signature(None)},
                {"type": "redacted_thinking", "data": "opaque"},
                {"type": "text", "text": "Looking."},
                {"type": "tool_use", "id": "toolu_1", "name": "lookup", "input": {"word": "gateway", "tags": []}},
                {"type": "server_tool_use", "id": "srvtoolu_1", "name": "web_search", "input": {"query": "q"}},
            ],
        },
        {
            "role": "user",
            "content": [
                {
                    "type": "tool_result",
                    "tool_use_id": "toolu_1",
                    "is_error": True,
                    "content": [
                        {"type": "text", "text": "not found"},
                        {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": PNG}},
                    ],
                },
                {"type": "tool_result", "tool_use_id": "toolu_2", "content": "plain"},
            ],
        },
        {"role": "system", "content": [{"type": "text", "text": "Answer in French."}]},
        {
            "role": "assistant",
            "content": [
                {
                    "type": "thinking",
                    "thinking": "",
                    "signature": _signature({"t": "message", "id": "msg_1", "ph": "final_answer"}),
                },
                {"type": "text", "text": "Voici"},
            ],
        },
    ],
}
LEGACY_AND_ADAPTIVE: dict[str, Any] = {
    "model": "claude-opus-4-1",
    "max_tokens": 0,
    "system": "You are terse.",
    "thinking": {"type": "adaptive", "display": "omitted"},
    "output_format": {"type": "json_schema", "schema": {"type": "object", "properties": {"a": {"type": "integer"}}}},
    "tool_choice": {"type": "auto"},
    "tools": [{"type": "custom", "name": "a tool with spaces", "input_schema": {"type": "object"}}],
    "messages": [
        {"role": "user", "content": "Hi"},
        {
            "role": "assistant",
            "content": [
                {"type": "thinking", "thinking": "t", "signature": _signature({"t": "function_call", "id": "fc_1"})},
                {"type": "tool_use", "id": "call_1", "name": "a tool with spaces", "input": {}},
            ],
        },
        {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "call_1"}]},
        {"role": "assistant", "content": "Prefilled "},
    ],
}
ANTHROPIC_REQUESTS = {
    **recorded(),
    "everything_at_once": EVERYTHING_AT_ONCE,
    "legacy_and_adaptive": LEGACY_AND_ADAPTIVE,
}
