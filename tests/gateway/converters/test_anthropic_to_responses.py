"""Anthropic Messages request → OpenAI Responses request (spec 1.1-1.8 and the request-side cases of spec 6).

Every converted body is validated against the openai SDK's `ResponseCreateParams` (strictly: the
validated copy must equal the body, so unknown or misspelt keys fail too).
"""

from __future__ import annotations

import copy
import dataclasses
import hashlib
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pydantic
import pytest
from openai.types.responses import ResponseCreateParams

from gateway.converters.anthropic_to_responses import (
    anthropic_to_responses,
    reasoning_items_removed,
    reasoning_params_removed,
)
from gateway.converters.common import ConversionError, ConvertedRequest, ConvertOptions, signature_encode

FIXTURES = Path(__file__).parent / "fixtures" / "requests"
UPSTREAM = "gpt-5.1-codex"
RESPONSES_CREATE = pydantic.TypeAdapter(ResponseCreateParams)
PNG = "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mP8/5+hHgAHggJ/PchI7wAAAABJRU5ErkJggg=="


# ---------------------------------------------------------------------------------------------
# helpers
# ---------------------------------------------------------------------------------------------


def _materialize(value: Any) -> Any:
    """pydantic validates `Iterable[...]` fields lazily; iterate them to force validation."""
    if isinstance(value, dict):
        return {key: _materialize(item) for key, item in value.items()}
    if isinstance(value, (list, tuple, Iterator)):
        return [_materialize(item) for item in value]
    return value


def _sdk_typed(body: dict[str, Any]) -> dict[str, Any]:
    """The body with one known gap of the SDK types bridged.

    The API accepts an id-less assistant message with `output_text` parts (the form spec 1.2
    requires, and what Codex sends), but the SDK only types that content on
    `ResponseOutputMessageParam`, which requires `id` and `status`. Add placeholders so the
    rest of such an item is still checked.
    """
    typed = copy.deepcopy(body)
    for item in typed.get("input", []):
        if item.get("type") == "message" and item.get("role") == "assistant" and "id" not in item:
            item["id"] = "msg_placeholder"
            item["status"] = "completed"
    return typed


def assert_valid_responses_body(body: dict[str, Any]) -> None:
    typed = _sdk_typed(body)
    validated = _materialize(RESPONSES_CREATE.validate_python(typed))
    # TypedDict validation silently ignores unknown keys: equality catches them.
    assert validated == typed


def request(**overrides: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "model": "claude-sonnet-4-5",
        "max_tokens": 1024,
        "messages": [{"role": "user", "content": "Hello"}],
    }
    body.update(overrides)
    return {key: value for key, value in body.items() if value is not None}


def convert(body: dict[str, Any], **options: Any) -> ConvertedRequest:
    original = copy.deepcopy(body)
    result = anthropic_to_responses(body, options=ConvertOptions(upstream_model=UPSTREAM, **options))
    assert body == original, "the client's body must not be mutated"
    assert_valid_responses_body(result.body)
    return result


def user(*blocks: Any) -> dict[str, Any]:
    return {"role": "user", "content": list(blocks)}


def assistant(*blocks: Any) -> dict[str, Any]:
    return {"role": "assistant", "content": list(blocks)}


def text(value: str) -> dict[str, Any]:
    return {"type": "text", "text": value}


def tool_use(call_id: str, name: str = "get_weather", arguments: dict[str, Any] | None = None) -> dict[str, Any]:
    return {"type": "tool_use", "id": call_id, "name": name, "input": arguments or {}}


def thinking(signature: str, value: str = "") -> dict[str, Any]:
    return {"type": "thinking", "thinking": value, "signature": signature}


def sig(rs: str, nx: dict[str, Any] | None, *, model: str = UPSTREAM, ec: str | None = "enc") -> str:
    return signature_encode(reasoning_id=rs, encrypted_content=ec, model=model, next_item=nx)


def fc_nx(fc: str, cid: str) -> dict[str, Any]:
    return {"t": "function_call", "id": fc, "cid": cid}


def msg_nx(msg: str, phase: str | None = None) -> dict[str, Any]:
    return {"t": "message", "id": msg, "ph": phase}


def user_msg(*texts: str) -> dict[str, Any]:
    return {"type": "message", "role": "user", "content": [{"type": "input_text", "text": t} for t in texts]}


def assistant_msg(*texts: str) -> dict[str, Any]:
    return {
        "type": "message",
        "role": "assistant",
        "content": [{"type": "output_text", "text": t, "annotations": []} for t in texts],
    }


def call(call_id: str, name: str = "get_weather", arguments: str = "{}", item_id: str | None = None) -> dict[str, Any]:
    item = {"type": "function_call", "call_id": call_id, "name": name, "arguments": arguments}
    if item_id is not None:
        item["id"] = item_id
    return item


def reasoning_item(rs: str, summary: str = "", ec: str = "enc") -> dict[str, Any]:
    return {
        "type": "reasoning",
        "id": rs,
        "summary": [{"type": "summary_text", "text": summary}] if summary else [],
        "encrypted_content": ec,
    }


WEATHER_TOOL = {
    "name": "get_weather",
    "description": "Weather for a city",
    "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
}


# ---------------------------------------------------------------------------------------------
# recorded request fixtures (golden converted output)
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["claude_code", "tool_loop", "images", "pdfs"])
def test_fixture_converts_to_the_pinned_responses_request(name):
    body = json.loads((FIXTURES / f"{name}.json").read_text())
    expected = json.loads((FIXTURES / f"{name}.expected.json").read_text())

    result = convert(body)

    assert dataclasses.asdict(result) == expected


def test_claude_code_request_keeps_what_claude_code_relies_on():
    body = json.loads((FIXTURES / "claude_code.json").read_text())

    result = convert(body)
    out = result.body

    assert len(out["tools"]) == 12
    assert all(isinstance(tool["strict"], bool) for tool in out["tools"])
    assert [tool["name"] for tool in out["tools"] if tool["strict"]] == ["ExitPlanMode"]
    long_name = "mcp__plugin_playwright_playwright__browser_take_screenshot_of_the_full_scrollable_page"
    short = out["tools"][-1]["name"]
    assert len(short) <= 64
    assert result.tool_names == {short: long_name}
    # adaptive thinking + display omitted + output_config.effort
    assert out["reasoning"] == {"effort": "high"}
    assert out["include"] == ["reasoning.encrypted_content"]
    assert (result.thinking, result.display_omitted) == (True, True)
    # cache_control / context_management never reach upstream
    assert "cache_control" not in json.dumps(out)
    assert "context_management" not in out
    assert out["instructions"].startswith("x-anthropic-billing-header")
    assert [item.get("role", item["type"]) for item in out["input"]] == [
        "user",
        "reasoning",
        "function_call",
        "function_call_output",
        "developer",
        "user",
    ]
    assert out["safety_identifier"] == hashlib.sha256(body["metadata"]["user_id"].encode()).hexdigest()


# ---------------------------------------------------------------------------------------------
# 1.8 validation
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ({"max_tokens": 10, "messages": [{"role": "user", "content": "x"}]}, "model: Field required"),
        ({"model": "m", "messages": [{"role": "user", "content": "x"}]}, "max_tokens: Field required"),
        (request(max_tokens="10"), "max_tokens: Input should be a valid integer"),
        (request(max_tokens=True), "max_tokens: Input should be a valid integer"),
        (request(max_tokens=-1), "max_tokens: Input should be greater than or equal to 0"),
        ({"model": "m", "max_tokens": 10}, "messages: Field required"),
        (request(messages=[]), "messages: List should have at least 1 item after validation, not 0"),
        (request(messages={"role": "user"}), "messages: Input should be a valid list"),
        (request(messages=[{"role": "tool", "content": "x"}]), "messages.0.role: unknown role 'tool'"),
        (request(messages=[{"content": "x"}]), "messages.0.role: Field required"),
        (request(messages=[{"role": "user"}]), "messages.0.content: Field required"),
        (
            request(messages=[{"role": "user", "content": 3}]),
            "messages.0.content: Input should be a valid string or a list",
        ),
        (request(messages=[user({"type": "text"})]), "messages.0.content.0.text: Field required"),
        (request(messages=[user({"type": "video"})]), "messages.0.content.0: block type 'video' is not allowed"),
        (
            request(messages=[user(text("a"), {"type": "image", "source": {"type": "file", "file_id": "f_1"}})]),
            "messages.0.content.1: image source type 'file' is not supported",
        ),
        (
            request(messages=[user({"type": "document", "source": {"type": "file", "file_id": "f_1"}})]),
            "messages.0.content.0: document source type 'file' is not supported",
        ),
        (
            request(messages=[user({"type": "image", "source": {"type": "base64", "media_type": "image/png"}})]),
            "messages.0.content.0.source.data: Field required",
        ),
        (request(messages=[user({"type": "image"})]), "messages.0.content.0.source: Field required"),
        (
            request(messages=[user({"type": "tool_result", "content": "x"})]),
            "messages.0.content.0.tool_use_id: Field required",
        ),
        (
            request(messages=[user(text("q")), assistant({"type": "tool_use", "name": "f"})]),
            "messages.1.content.0.id: Field required",
        ),
        (
            request(messages=[user(text("q")), assistant({"type": "tool_use", "id": "c", "name": "f", "input": "x"})]),
            "messages.1.content.0.input: Input should be a valid dictionary",
        ),
        (
            request(messages=[user(text("q")), assistant({"type": "tool_result", "tool_use_id": "c"})]),
            "messages.1.content.0: block type 'tool_result' is not allowed in an assistant message",
        ),
        (
            request(messages=[user(text("q")), assistant({"type": "thinking", "thinking": "t"})]),
            "messages.1.content.0.signature: Field required",
        ),
        (
            request(messages=[{"role": "system", "content": [{"type": "image", "source": {}}]}, user(text("q"))]),
            "messages.0.content.0: expected a text block",
        ),
        (request(system=5), "system: Input should be a valid string or a list of text blocks"),
        (request(system=[{"type": "image"}]), "system.0: expected a text block"),
        (request(stream="yes"), "stream: Input should be a valid boolean"),
        (request(stop_sequences="STOP"), "stop_sequences: Input should be a valid list"),
        (request(tools={"name": "x"}), "tools: Input should be a valid list"),
        (request(tools=[{"name": "f"}]), "tools.0.input_schema: Field required"),
        (request(tools=[{"input_schema": {"type": "object"}}]), "tools.0.name: Field required"),
        (request(tool_choice={"type": "sometimes"}), "tool_choice.type: unknown tool_choice type 'sometimes'"),
        (request(tool_choice={"type": "tool"}), "tool_choice.name: Field required"),
        (request(thinking={"type": "enabled"}), "thinking.budget_tokens: Field required"),
        (request(thinking={"type": "deep"}), "thinking.type: unknown thinking type 'deep'"),
        (request(thinking={"type": "adaptive", "display": "full"}), "thinking.display: unknown value 'full'"),
        (request(service_tier="priority"), "service_tier: unknown value 'priority'"),
        (request(output_config={"format": {"type": "regex"}}), "output_config.format.type: unsupported format type"),
        (request(output_format={"type": "json_schema"}), "output_format.schema: Field required"),
        (request(metadata={"user_id": 7}), "metadata.user_id: Input should be a valid string"),
        # Wrong types where the converter compares or looks values up (these used to be 500s).
        (
            request(messages=[user(text("a"), {"type": "text", "text": {"value": "b"}})]),
            "messages.0.content.1.text: Input should be a valid string",
        ),
        (
            request(messages=[user({"type": ["text"], "text": "a"})]),
            "messages.0.content.0.type: Input should be a valid",
        ),
        (
            request(messages=[user(text("q")), assistant({"type": {"t": 1}})]),
            "messages.1.content.0.type: Input should be a valid string",
        ),
        (request(messages=["Hello"]), "messages.0: Input should be a valid dictionary"),
        (request(messages=[{"role": ["user"], "content": "x"}]), "messages.0.role: Input should be a valid string"),
        (request(tools=[{**WEATHER_TOOL, "type": {"custom": True}}]), "tools.0.type: Input should be a valid string"),
        (request(tools=[{**WEATHER_TOOL, "strict": "yes"}]), "tools.0.strict: Input should be a valid boolean"),
        (request(tools=[{**WEATHER_TOOL, "input_examples": {}}]), "tools.0.input_examples: Input should be a valid"),
        (
            request(tools=[{"type": "web_search_20250305", "allowed_domains": ["a.com", 3]}]),
            "tools.0.allowed_domains.1: Input should be a valid string",
        ),
        (request(tool_choice={"type": ["auto"]}), "tool_choice.type: Input should be a valid string"),
        (
            request(tool_choice={"type": "auto", "disable_parallel_tool_use": "true"}),
            "tool_choice.disable_parallel_tool_use: Input should be a valid boolean",
        ),
        (request(thinking={"type": ["enabled"]}), "thinking.type: Input should be a valid string"),
        (request(thinking={"type": "enabled", "budget_tokens": "1024"}), "thinking.budget_tokens: Input should be"),
        (request(thinking={"type": "adaptive", "display": {}}), "thinking.display: Input should be a valid string"),
        (request(service_tier={"tier": "auto"}), "service_tier: Input should be a valid string"),
        (request(stop_sequences=["END", None]), "stop_sequences.1: Input should be a valid string"),
        (
            request(output_config={"format": ["json_schema"]}),
            "output_config.format: Input should be a valid dictionary",
        ),
        (request(output_config={"effort": 3}), "output_config.effort: Input should be a valid string"),
        (
            request(messages=[user({"type": "image", "source": {"type": "url", "url": ["https://x"]}})]),
            "messages.0.content.0.source.url: Input should be a valid string",
        ),
        (
            request(messages=[user({"type": "document", "title": 5, "source": {"type": "text", "data": "d"}})]),
            "messages.0.content.0.title: Input should be a valid string",
        ),
        (
            request(messages=[user({"type": "tool_result", "tool_use_id": "c", "is_error": "yes"})]),
            "messages.0.content.0.is_error: Input should be a valid boolean",
        ),
        (
            request(messages=[user({"type": "tool_result", "tool_use_id": "c", "content": [{"type": 1}]})]),
            "messages.0.content.0.content.0.type: Input should be a valid string",
        ),
    ],
)
def test_invalid_request_is_refused_naming_the_field(body, message):
    with pytest.raises(ConversionError) as excinfo:
        anthropic_to_responses(body, options=ConvertOptions(upstream_model=UPSTREAM))
    assert str(excinfo.value).startswith(message)


# ---------------------------------------------------------------------------------------------
# 6.1 max_tokens, stream, store, model
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("max_tokens", "sent", "empty"),
    [(0, 16, True), (1, 16, False), (15, 16, False), (16, 16, False), (17, 17, False), (64000, 64000, False)],
)
def test_max_tokens_is_clamped_and_zero_means_empty(max_tokens, sent, empty):
    result = convert(request(max_tokens=max_tokens))

    assert result.body["max_output_tokens"] == sent
    assert result.empty is empty


@pytest.mark.parametrize(("stream", "sent"), [(None, False), (False, False), (True, True)])
def test_fixed_fields_model_store_and_stream(stream, sent):
    result = convert(request(stream=stream))

    assert result.body["model"] == UPSTREAM
    assert result.body["store"] is False
    assert result.body["stream"] is sent


def test_minimal_request_converts_exactly():
    result = convert(request())

    assert result.body == {
        "model": UPSTREAM,
        "input": [user_msg("Hello")],
        "max_output_tokens": 1024,
        "store": False,
        "stream": False,
    }
    assert (result.thinking, result.prefill, result.stop_sequences, result.web_search) == (False, "", [], False)


# ---------------------------------------------------------------------------------------------
# 6.2 system, 6.3 mid-conversation system, 6.4 consecutive messages
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("system", "instructions"),
    [
        ("Be brief.", "Be brief."),
        (
            [
                {"type": "text", "text": "You are Claude Code.", "cache_control": {"type": "ephemeral"}},
                {"type": "text", "text": "Be brief.", "cache_control": {"type": "ephemeral", "ttl": "1h"}},
            ],
            "You are Claude Code.\n\nBe brief.",
        ),
        ([{"type": "text", "text": "A"}, {"type": "text", "text": "  "}, {"type": "text", "text": "B"}], "A\n\nB"),
        ("", None),
        ("   \n", None),
        ([], None),
        ([{"type": "text", "text": ""}], None),
    ],
)
def test_system_becomes_instructions(system, instructions):
    body = convert(request(system=system)).body

    assert body.get("instructions") == instructions


def test_mid_conversation_system_message_becomes_developer_message_in_place():
    messages = [
        user(text("first")),
        assistant(text("ok")),
        {"role": "system", "content": [text("Plan mode is on."), text("Do not edit.")]},
        {"role": "system", "content": "Second note."},
        user(text("go")),
    ]

    items = convert(request(messages=messages)).body["input"]

    assert items == [
        user_msg("first"),
        assistant_msg("ok"),
        {
            "type": "message",
            "role": "developer",
            "content": [
                {"type": "input_text", "text": "Plan mode is on."},
                {"type": "input_text", "text": "Do not edit."},
            ],
        },
        {"type": "message", "role": "developer", "content": [{"type": "input_text", "text": "Second note."}]},
        user_msg("go"),
    ]


def test_consecutive_same_role_messages_are_kept_separate_and_in_order():
    messages = [user(text("a")), user(text("b")), assistant(text("c")), assistant(text("d")), user(text("e"))]

    items = convert(request(messages=messages)).body["input"]

    assert items == [user_msg("a"), user_msg("b"), assistant_msg("c"), assistant_msg("d"), user_msg("e")]


# ---------------------------------------------------------------------------------------------
# 6.5 prefill, 6.6 empty blocks
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("last", "item", "prefill"),
    [
        (assistant(text("The best answer is (")), assistant_msg("The best answer is ("), "The best answer is ("),
        ({"role": "assistant", "content": '{"name": '}, assistant_msg('{"name":'), '{"name":'),
        (assistant(text("Answer:  \n")), assistant_msg("Answer:"), "Answer:"),
    ],
)
def test_assistant_prefill_is_sent_as_trailing_output_text(last, item, prefill):
    result = convert(request(messages=[user(text("q")), last]))

    assert result.body["input"] == [user_msg("q"), item]
    assert result.prefill == prefill


def test_trailing_tool_use_or_user_message_is_not_a_prefill():
    tool_turn = convert(request(messages=[user(text("q")), assistant(text("Let me check."), tool_use("c1"))]))
    user_turn = convert(request(messages=[user(text("q")), assistant(text("A")), user(text("more"))]))

    assert tool_turn.prefill == ""
    assert tool_turn.body["input"][-1] == call("c1")
    assert user_turn.prefill == ""
    assert user_turn.body["input"][1] == assistant_msg("A")


def test_empty_and_whitespace_text_blocks_and_emptied_messages_are_dropped():
    messages = [
        user(text(""), text("real"), text("  \n ")),
        assistant(text("   ")),
        {"role": "user", "content": ""},
        {"role": "system", "content": " "},
        user(text("again")),
    ]

    items = convert(request(messages=messages)).body["input"]

    assert items == [user_msg("real"), user_msg("again")]


@pytest.mark.parametrize(
    "messages",
    [
        [user(text("")), assistant(text(" "))],
        [{"role": "user", "content": "   "}],
        [user({"type": "web_search_tool_result", "tool_use_id": "s", "content": []})],
    ],
)
def test_all_empty_input_is_refused(messages):
    with pytest.raises(ConversionError, match="messages: all messages are empty"):
        anthropic_to_responses(request(messages=messages), options=ConvertOptions(upstream_model=UPSTREAM))


# ---------------------------------------------------------------------------------------------
# 6.7 images, 6.8 documents
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("source", "image_url"),
    [
        ({"type": "base64", "media_type": "image/png", "data": PNG}, f"data:image/png;base64,{PNG}"),
        ({"type": "base64", "media_type": "image/jpeg", "data": "/9j/4A=="}, "data:image/jpeg;base64,/9j/4A=="),
        ({"type": "base64", "media_type": "image/gif", "data": "R0lGOD=="}, "data:image/gif;base64,R0lGOD=="),
        ({"type": "base64", "media_type": "image/webp", "data": "UklGRh=="}, "data:image/webp;base64,UklGRh=="),
        ({"type": "url", "url": "https://example.com/cat.jpg"}, "https://example.com/cat.jpg"),
    ],
)
def test_image_blocks_become_input_image_with_detail_auto(source, image_url):
    block = {"type": "image", "source": source, "cache_control": {"type": "ephemeral"}}

    items = convert(request(messages=[user(text("look"), block)])).body["input"]

    assert items == [
        {
            "type": "message",
            "role": "user",
            "content": [
                {"type": "input_text", "text": "look"},
                {"type": "input_image", "image_url": image_url, "detail": "auto"},
            ],
        }
    ]


PDF_B64 = {"type": "base64", "media_type": "application/pdf", "data": "JVBERi0x"}


@pytest.mark.parametrize(
    ("document", "parts"),
    [
        (
            {"type": "document", "source": PDF_B64, "title": "q3.pdf", "citations": {"enabled": True}},
            [{"type": "input_file", "filename": "q3.pdf", "file_data": "data:application/pdf;base64,JVBERi0x"}],
        ),
        (
            {"type": "document", "source": PDF_B64},
            [{"type": "input_file", "filename": "document.pdf", "file_data": "data:application/pdf;base64,JVBERi0x"}],
        ),
        (
            {"type": "document", "source": {"type": "url", "url": "https://example.com/a.pdf"}},
            [{"type": "input_file", "file_url": "https://example.com/a.pdf"}],
        ),
        (
            {"type": "document", "source": {"type": "text", "media_type": "text/plain", "data": "Body."}},
            [{"type": "input_text", "text": "Body."}],
        ),
        (
            {
                "type": "document",
                "source": {"type": "text", "media_type": "text/plain", "data": "Body."},
                "title": 'Notes "Q3"',
                "context": "CFO memo",
            },
            [
                {
                    "type": "input_text",
                    "text": '<document title="Notes &quot;Q3&quot;" context="CFO memo">\nBody.\n</document>',
                }
            ],
        ),
        (
            {"type": "document", "source": {"type": "text", "media_type": "text/plain", "data": "Body."}, "title": "T"},
            [{"type": "input_text", "text": '<document title="T">\nBody.\n</document>'}],
        ),
        (
            {
                "type": "document",
                "source": {
                    "type": "content",
                    "content": [
                        text("Slide 1"),
                        {"type": "image", "source": {"type": "url", "url": "https://x/1.png"}},
                    ],
                },
            },
            [
                {"type": "input_text", "text": "Slide 1"},
                {"type": "input_image", "image_url": "https://x/1.png", "detail": "auto"},
            ],
        ),
        (
            {"type": "document", "source": {"type": "content", "content": "Just text"}},
            [{"type": "input_text", "text": "Just text"}],
        ),
        (
            {
                "type": "search_result",
                "source": "https://docs.example.com",
                "title": "Pricing",
                "content": [text("Pro $20."), text("Team $30.")],
            },
            [
                {
                    "type": "input_text",
                    "text": '<search_result title="Pricing" source="https://docs.example.com">\nPro $20.\n\nTeam $30.\n</search_result>',
                }
            ],
        ),
    ],
)
def test_documents_and_search_results_map_to_input_parts(document, parts):
    items = convert(request(messages=[user(document, text("Summarise."))])).body["input"]

    assert items == [
        {"type": "message", "role": "user", "content": [*parts, {"type": "input_text", "text": "Summarise."}]}
    ]


# ---------------------------------------------------------------------------------------------
# 6.9 / 6.10 tool results
# ---------------------------------------------------------------------------------------------

IMAGE_BLOCK = {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": PNG}}
IMAGE_PART = {"type": "input_image", "image_url": f"data:image/png;base64,{PNG}", "detail": "auto"}


@pytest.mark.parametrize(
    ("tool_result", "output"),
    [
        ({"content": "18°C"}, "18°C"),
        ({"content": [text("18°C"), text("light rain")]}, "18°C\nlight rain"),
        ({"content": [text("shot"), IMAGE_BLOCK]}, [{"type": "input_text", "text": "shot"}, IMAGE_PART]),
        (
            {"content": [{"type": "document", "source": {"type": "url", "url": "https://x/a.pdf"}}]},
            [{"type": "input_file", "file_url": "https://x/a.pdf"}],
        ),
        ({"content": []}, ""),
        ({}, ""),
        ({"content": None}, ""),
        ({"content": "timeout", "is_error": True}, "Error: timeout"),
        ({"content": [text("bad"), text("input")], "is_error": True}, "Error: bad\ninput"),
        ({"is_error": True}, "Error:"),
        (
            {"content": [text("partial"), IMAGE_BLOCK], "is_error": True},
            [{"type": "input_text", "text": "Error:"}, {"type": "input_text", "text": "partial"}, IMAGE_PART],
        ),
        ({"content": "ok", "is_error": False}, "ok"),
    ],
)
def test_tool_result_becomes_function_call_output(tool_result, output):
    block = {"type": "tool_result", "tool_use_id": "call_1", "cache_control": {"type": "ephemeral"}, **tool_result}
    messages = [user(text("q")), assistant(tool_use("call_1")), user(block)]

    items = convert(request(messages=messages, tools=[WEATHER_TOOL])).body["input"]

    assert items[-1] == {"type": "function_call_output", "call_id": "call_1", "output": output}


def test_tool_results_and_text_in_one_user_message_keep_their_order():
    messages = [
        user(text("q")),
        assistant(tool_use("c1"), tool_use("c2")),
        user(
            text("before"),
            {"type": "tool_result", "tool_use_id": "c1", "content": "r1"},
            {"type": "tool_result", "tool_use_id": "c2", "content": "r2"},
            text("after"),
            IMAGE_BLOCK,
        ),
    ]

    items = convert(request(messages=messages)).body["input"]

    assert items[3:] == [
        user_msg("before"),
        {"type": "function_call_output", "call_id": "c1", "output": "r1"},
        {"type": "function_call_output", "call_id": "c2", "output": "r2"},
        {"type": "message", "role": "user", "content": [{"type": "input_text", "text": "after"}, IMAGE_PART]},
    ]


# ---------------------------------------------------------------------------------------------
# 6.11 assistant turn ordering, 6.16 / 6.17 reasoning replay and pairing
# ---------------------------------------------------------------------------------------------


def test_assistant_turn_order_is_preserved_item_by_item():
    turn = assistant(
        thinking(sig("rs_1", msg_nx("msg_1")), "Plan."),
        text("I'll check both."),
        tool_use("c1", arguments={"city": "Paris"}),
        tool_use("c2", arguments={"city": "Tōkyō"}),
        text("Text after the calls stays after."),
    )

    items = convert(request(messages=[user(text("q")), turn])).body["input"]

    assert items[1:] == [
        reasoning_item("rs_1", "Plan."),
        {
            "type": "message",
            "role": "assistant",
            "id": "msg_1",
            "status": "completed",
            "content": [{"type": "output_text", "text": "I'll check both.", "annotations": []}],
        },
        call("c1", arguments='{"city":"Paris"}'),
        call("c2", arguments='{"city":"Tōkyō"}'),
        assistant_msg("Text after the calls stays after."),
    ]


def test_thinking_signature_round_trip_replays_reasoning_right_before_its_tool_call():
    turn = assistant(
        thinking(sig("rs_9", fc_nx("fc_9", "call_9"), ec="gAAAA-secret"), "Need weather"), tool_use("call_9")
    )
    messages = [user(text("q")), turn, user({"type": "tool_result", "tool_use_id": "call_9", "content": "sunny"})]

    items = convert(request(messages=messages)).body["input"]

    assert items == [
        user_msg("q"),
        reasoning_item("rs_9", "Need weather", ec="gAAAA-secret"),
        call("call_9", item_id="fc_9"),
        {"type": "function_call_output", "call_id": "call_9", "output": "sunny"},
    ]


def test_redacted_thinking_with_gateway_envelope_replays_with_empty_summary():
    turn = assistant({"type": "redacted_thinking", "data": sig("rs_r", fc_nx("fc_r", "c_r"))}, tool_use("c_r"))

    items = convert(request(messages=[user(text("q")), turn])).body["input"]

    assert items[1:] == [reasoning_item("rs_r"), call("c_r", item_id="fc_r")]


def test_reasoning_without_following_item_is_replayed_alone():
    turn = assistant(thinking(sig("rs_alone", None), "thought"), text("Answer"))

    items = convert(request(messages=[user(text("q")), turn, user(text("next"))])).body["input"]

    assert items == [user_msg("q"), reasoning_item("rs_alone", "thought"), assistant_msg("Answer"), user_msg("next")]


def test_message_pairing_carries_phase_and_keeps_adjacent_text_in_the_same_message():
    turn = assistant(thinking(sig("rs_m", msg_nx("msg_m", "final_answer"))), text("Part one."), text(" Part two."))

    items = convert(request(messages=[user(text("q")), turn, user(text("next"))])).body["input"]

    assert items[1:3] == [
        reasoning_item("rs_m"),
        {
            "type": "message",
            "role": "assistant",
            "id": "msg_m",
            "status": "completed",
            "phase": "final_answer",
            "content": [
                {"type": "output_text", "text": "Part one.", "annotations": []},
                {"type": "output_text", "text": " Part two.", "annotations": []},
            ],
        },
    ]


@pytest.mark.parametrize(
    ("label", "block"),
    [
        ("genuine Claude signature", thinking("EqQBCkgIARABGAIiQL2c5x0hQJHn0Qe0Yx3N", "Claude's thoughts")),
        ("garbled envelope", thinking("oai1.!!!not-base64-json!!!", "x")),
        ("envelope of another upstream model", thinking(sig("rs_x", fc_nx("fc_x", "c1"), model="gpt-4.1"), "x")),
        ("envelope without encrypted content", thinking(sig("rs_x", fc_nx("fc_x", "c1"), ec=None), "x")),
        ("foreign redacted_thinking", {"type": "redacted_thinking", "data": "EmwKAhgBEgy3va3pzix/LafPsn4a"}),
    ],
)
def test_unreplayable_thinking_is_dropped_and_the_request_still_converts(label, block):
    turn = assistant(block, tool_use("c1"))

    items = convert(request(messages=[user(text("q")), turn])).body["input"]

    assert items == [user_msg("q"), call("c1")], label


@pytest.mark.parametrize(
    ("label", "turn", "expected"),
    [
        (
            "tool_use edited (other id)",
            assistant(thinking(sig("rs_1", fc_nx("fc_1", "call_A"))), tool_use("call_B")),
            [call("call_B")],
        ),
        (
            "tool_use removed",
            assistant(thinking(sig("rs_1", fc_nx("fc_1", "call_A"))), text("hi")),
            [assistant_msg("hi")],
        ),
        (
            "tool_use moved later",
            assistant(thinking(sig("rs_1", fc_nx("fc_1", "call_A"))), text("hi"), tool_use("call_A")),
            [assistant_msg("hi"), call("call_A")],
        ),
        ("text removed", assistant(thinking(sig("rs_1", msg_nx("msg_1"))), tool_use("c1")), [call("c1")]),
        ("text emptied", assistant(thinking(sig("rs_1", msg_nx("msg_1"))), text("  "), tool_use("c1")), [call("c1")]),
        ("nothing follows", assistant(thinking(sig("rs_1", fc_nx("fc_1", "c1")))), []),
    ],
)
def test_broken_pairing_drops_the_reasoning_item_and_the_ids(label, turn, expected):
    messages = [user(text("q")), turn, user(text("continue"))]

    items = convert(request(messages=messages)).body["input"]

    assert items == [user_msg("q"), *expected, user_msg("continue")], label
    assert all("id" not in item for item in items), label


def test_reasoning_items_are_replayed_even_when_thinking_is_not_requested_now():
    turn = assistant(thinking(sig("rs_1", fc_nx("fc_1", "c1")), "t"), tool_use("c1"))

    result = convert(request(messages=[user(text("q")), turn]))

    assert result.body["input"][1:] == [reasoning_item("rs_1", "t"), call("c1", item_id="fc_1")]
    assert "reasoning" not in result.body
    assert result.thinking is False


# ---------------------------------------------------------------------------------------------
# 6.13 tool_choice, 6.14 strict and name shortening, 6.12 parallel
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("tool_choice", "sent", "parallel"),
    [
        (None, None, None),
        ({"type": "auto"}, "auto", None),
        ({"type": "any"}, "required", None),
        ({"type": "none"}, "none", None),
        ({"type": "tool", "name": "get_weather"}, {"type": "function", "name": "get_weather"}, None),
        ({"type": "auto", "disable_parallel_tool_use": True}, "auto", False),
        ({"type": "any", "disable_parallel_tool_use": True}, "required", False),
        (
            {"type": "tool", "name": "get_weather", "disable_parallel_tool_use": False},
            {"type": "function", "name": "get_weather"},
            None,
        ),
    ],
)
def test_tool_choice_mapping(tool_choice, sent, parallel):
    body = convert(request(tools=[WEATHER_TOOL], tool_choice=tool_choice)).body

    assert body.get("tool_choice") == sent
    assert body.get("parallel_tool_calls") == parallel


@pytest.mark.parametrize("tools", [None, []])
def test_tool_choice_without_tools_is_dropped(tools):
    body = convert(request(tools=tools, tool_choice={"type": "any", "disable_parallel_tool_use": True})).body

    assert "tools" not in body
    assert "tool_choice" not in body
    assert "parallel_tool_calls" not in body


@pytest.mark.parametrize(("strict", "sent"), [(None, False), (False, False), (True, True)])
def test_function_tools_always_carry_explicit_strict(strict, sent):
    tool = {
        **WEATHER_TOOL,
        "strict": strict,
        "cache_control": {"type": "ephemeral"},
        "defer_loading": False,
        "eager_input_streaming": True,
        "allowed_callers": ["direct"],
    }
    tool = {key: value for key, value in tool.items() if value is not None}

    tools = convert(request(tools=[tool])).body["tools"]

    assert tools == [
        {
            "type": "function",
            "name": "get_weather",
            "description": "Weather for a city",
            "parameters": WEATHER_TOOL["input_schema"],
            "strict": sent,
        }
    ]


def test_input_examples_are_appended_to_the_description():
    tool = {**WEATHER_TOOL, "input_examples": [{"city": "Paris"}, {"city": "Köln"}]}

    tools = convert(request(tools=[tool])).body["tools"]

    assert tools[0]["description"] == 'Weather for a city\n\nInput examples:\n{"city":"Paris"}\n{"city":"Köln"}'


def test_long_tool_names_are_shortened_in_tools_history_and_tool_choice():
    long_name = "mcp__claude_in_chrome__" + "navigate_to_the_page_and_take_a_full_page_screenshot_now"
    tool = {"name": long_name, "input_schema": {"type": "object", "properties": {}}}
    messages = [
        user(text("q")),
        assistant(tool_use("c1", long_name, {"url": "https://x"})),
        user({"type": "tool_result", "tool_use_id": "c1", "content": "done"}),
    ]

    result = convert(
        request(tools=[tool, WEATHER_TOOL], tool_choice={"type": "tool", "name": long_name}, messages=messages)
    )

    short = result.body["tools"][0]["name"]
    assert len(short) == 64
    assert short.startswith(long_name[:55] + "_")
    assert result.body["tools"][1]["name"] == "get_weather"
    assert result.body["input"][1] == call("c1", short, '{"url":"https://x"}')
    assert result.body["tool_choice"] == {"type": "function", "name": short}
    assert result.tool_names == {short: long_name}


def test_invalid_characters_in_tool_names_are_replaced():
    tool = {"name": "files.read", "input_schema": {"type": "object"}}

    result = convert(request(tools=[tool]))

    short = result.body["tools"][0]["name"]
    assert short.startswith("files_read_")
    assert result.tool_names == {short: "files.read"}


# ---------------------------------------------------------------------------------------------
# 6.27 web search (request side)
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("tool_type", ["web_search_20250305", "web_search_20260209", "web_search_20260318"])
def test_web_search_server_tool_maps_to_responses_web_search(tool_type):
    tool = {
        "type": tool_type,
        "name": "web_search",
        "max_uses": 3,
        "allowed_domains": ["docs.python.org"],
        "user_location": {
            "type": "approximate",
            "city": "Paris",
            "country": "FR",
            "region": None,
            "timezone": "Europe/Paris",
        },
        "cache_control": {"type": "ephemeral"},
    }

    result = convert(request(tools=[WEATHER_TOOL, tool], tool_choice={"type": "tool", "name": "web_search"}))

    assert result.body["tools"][1] == {
        "type": "web_search",
        "filters": {"allowed_domains": ["docs.python.org"]},
        "user_location": {"type": "approximate", "city": "Paris", "country": "FR", "timezone": "Europe/Paris"},
    }
    assert result.body["max_tool_calls"] == 3
    assert result.body["include"] == ["web_search_call.action.sources"]
    assert result.body["tool_choice"] == {
        "type": "allowed_tools",
        "mode": "required",
        "tools": [{"type": "web_search"}],
    }
    assert result.web_search is True


def test_web_search_blocked_domains_are_dropped_and_reasoning_include_comes_first():
    tool = {"type": "web_search_20250305", "name": "web_search", "blocked_domains": ["spam.example"]}

    result = convert(request(tools=[tool], thinking={"type": "adaptive"}))

    assert result.body["tools"] == [{"type": "web_search"}]
    assert "max_tool_calls" not in result.body
    assert result.body["include"] == ["reasoning.encrypted_content", "web_search_call.action.sources"]


def test_server_tool_blocks_in_history_are_dropped():
    turn = assistant(
        text("Searching."),
        {"type": "server_tool_use", "id": "srvtoolu_1", "name": "web_search", "input": {"query": "django 5.2"}},
        {
            "type": "web_search_tool_result",
            "tool_use_id": "srvtoolu_1",
            "content": [
                {
                    "type": "web_search_result",
                    "url": "https://djangoproject.com",
                    "title": "Django",
                    "encrypted_content": "x",
                }
            ],
        },
        {
            "type": "text",
            "text": "Django 5.2 is out.",
            "citations": [
                {
                    "type": "web_search_result_location",
                    "url": "https://djangoproject.com",
                    "title": "Django",
                    "cited_text": "5.2",
                    "encrypted_index": "e",
                }
            ],
        },
        {"type": "web_fetch_tool_result", "tool_use_id": "s2", "content": {}},
        {"type": "code_execution_tool_result", "tool_use_id": "s3", "content": {}},
        {"type": "bash_code_execution_tool_result", "tool_use_id": "s4", "content": {}},
    )

    items = convert(request(messages=[user(text("news?")), turn, user(text("thanks"))])).body["input"]

    assert items == [user_msg("news?"), assistant_msg("Searching.", "Django 5.2 is out."), user_msg("thanks")]


@pytest.mark.parametrize(
    "tool",
    [
        {"type": "bash_20250124", "name": "bash"},
        {"type": "text_editor_20250728", "name": "str_replace_based_edit_tool"},
        {"type": "computer_20250124", "name": "computer", "display_width_px": 1024, "display_height_px": 768},
        {"type": "code_execution_20250825", "name": "code_execution"},
        {"type": "web_fetch_20250910", "name": "web_fetch"},
        {"type": "memory_20250818", "name": "memory"},
        {"type": "tool_search_tool_regex_20251119", "name": "tool_search_tool_regex"},
    ],
)
def test_other_anthropic_defined_tools_are_refused(tool):
    with pytest.raises(ConversionError, match=rf"^tools\.1: tool type '{tool['type']}' is not supported$"):
        anthropic_to_responses(request(tools=[WEATHER_TOOL, tool]), options=ConvertOptions(upstream_model=UPSTREAM))


# ---------------------------------------------------------------------------------------------
# 1.5 thinking → reasoning, 6.28 sampling parameters
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("thinking_config", "output_config", "reasoning", "thinking_flag", "omitted"),
    [
        (None, None, None, False, False),
        ({"type": "disabled"}, None, None, False, False),
        ({"type": "enabled", "budget_tokens": 1024}, None, {"effort": "low", "summary": "auto"}, True, False),
        ({"type": "enabled", "budget_tokens": 4000}, None, {"effort": "low", "summary": "auto"}, True, False),
        ({"type": "enabled", "budget_tokens": 4096}, None, {"effort": "medium", "summary": "auto"}, True, False),
        ({"type": "enabled", "budget_tokens": 10000}, None, {"effort": "medium", "summary": "auto"}, True, False),
        ({"type": "enabled", "budget_tokens": 31999}, None, {"effort": "high", "summary": "auto"}, True, False),
        ({"type": "enabled", "budget_tokens": 32768}, None, {"effort": "xhigh", "summary": "auto"}, True, False),
        (
            {"type": "enabled", "budget_tokens": 2048},
            {"effort": "max"},
            {"effort": "max", "summary": "auto"},
            True,
            False,
        ),
        ({"type": "enabled", "budget_tokens": 2048, "display": "omitted"}, None, {"effort": "low"}, True, True),
        ({"type": "adaptive"}, None, {"summary": "auto"}, True, False),
        ({"type": "adaptive"}, {"effort": "xhigh"}, {"effort": "xhigh", "summary": "auto"}, True, False),
        (
            {"type": "adaptive", "display": "summarized"},
            {"effort": "low"},
            {"effort": "low", "summary": "auto"},
            True,
            False,
        ),
        ({"type": "adaptive", "display": "omitted"}, {"effort": "high"}, {"effort": "high"}, True, True),
        ({"type": "between_tools"}, {"effort": "medium"}, {"effort": "medium", "summary": "auto"}, True, False),
        (None, {"effort": "low"}, {"effort": "low"}, False, False),
        ({"type": "disabled"}, {"effort": "minimal"}, {"effort": "minimal"}, False, False),
    ],
)
def test_thinking_maps_to_reasoning(thinking_config, output_config, reasoning, thinking_flag, omitted):
    result = convert(request(thinking=thinking_config, output_config=output_config, temperature=0.5, top_p=0.9))

    assert result.body.get("reasoning") == reasoning
    assert (result.thinking, result.display_omitted) == (thinking_flag, omitted)
    if reasoning is None and not thinking_flag:
        assert "include" not in result.body
        assert (result.body["temperature"], result.body["top_p"]) == (0.5, 0.9)
    else:
        assert result.body["include"] == ["reasoning.encrypted_content"]
        assert "temperature" not in result.body
        assert "top_p" not in result.body


def test_adaptive_thinking_with_display_omitted_and_no_effort_sends_only_the_include():
    result = convert(request(thinking={"type": "adaptive", "display": "omitted"}))

    assert "reasoning" not in result.body
    assert result.body["include"] == ["reasoning.encrypted_content"]
    assert (result.thinking, result.display_omitted) == (True, True)


@pytest.mark.parametrize(
    "body",
    [
        request(thinking={"type": "enabled", "budget_tokens": 8000}, temperature=1, top_p=0.5),
        request(thinking={"type": "adaptive", "display": "omitted"}, output_config={"effort": "high"}),
        request(output_config={"effort": "high"}),
    ],
)
def test_model_without_reasoning_gets_no_reasoning_parameters(body):
    result = convert(body, reasoning=False)

    assert "reasoning" not in result.body
    assert "include" not in result.body
    assert result.thinking is False
    assert result.display_omitted is False
    assert result.body.get("temperature") == body.get("temperature")
    assert result.body.get("top_p") == body.get("top_p")


def test_configured_buckets_and_summary_are_used():
    result = convert(
        request(thinking={"type": "enabled", "budget_tokens": 5000}),
        effort_buckets=((2000, "minimal"), (6000, "low")),
        summary="detailed",
    )
    above = convert(
        request(thinking={"type": "enabled", "budget_tokens": 6000}), effort_buckets=((2000, "minimal"), (6000, "low"))
    )

    assert result.body["reasoning"] == {"effort": "low", "summary": "detailed"}
    assert above.body["reasoning"]["effort"] == "xhigh"


def test_top_k_is_dropped_and_temperature_kept_without_reasoning():
    body = convert(request(temperature=0.2, top_p=0.8, top_k=5)).body

    assert (body["temperature"], body["top_p"]) == (0.2, 0.8)
    assert "top_k" not in body


# ---------------------------------------------------------------------------------------------
# metadata, service_tier, stop_sequences, ignored fields
# ---------------------------------------------------------------------------------------------

LONG_USER_ID = "user_" + "a" * 64 + "_account_" + "b" * 36 + "_session_" + "c" * 36


@pytest.mark.parametrize(
    ("metadata", "identifier"),
    [
        ({"user_id": "user-42"}, "user-42"),
        ({"user_id": "u" * 128}, "u" * 128),
        ({"user_id": "u" * 129}, hashlib.sha256(b"u" * 129).hexdigest()),
        ({"user_id": LONG_USER_ID}, hashlib.sha256(LONG_USER_ID.encode()).hexdigest()),
        ({"user_id": None}, None),
        ({}, None),
    ],
)
def test_metadata_user_id_becomes_safety_identifier(metadata, identifier):
    body = convert(request(metadata=metadata)).body

    assert body.get("safety_identifier") == identifier
    assert "metadata" not in body
    assert "user" not in body


@pytest.mark.parametrize(("tier", "sent"), [("auto", "auto"), ("standard_only", "default"), (None, None)])
def test_service_tier_mapping(tier, sent):
    assert convert(request(service_tier=tier)).body.get("service_tier") == sent


def test_stop_sequences_are_reported_not_sent():
    result = convert(request(stop_sequences=["</answer>", "", "\n\nHuman:"]))

    assert result.stop_sequences == ["</answer>", "\n\nHuman:"]
    assert "stop" not in result.body
    assert "stop_sequences" not in result.body


def test_fields_without_responses_equivalent_are_ignored():
    ignored = {
        "cache_control": {"type": "ephemeral"},
        "container": "container_1",
        "context_management": {"edits": [{"type": "clear_tool_uses_20250919"}]},
        "diagnostics": {"previous_message_id": "msg_1"},
        "inference_geo": "us",
        "mcp_servers": [{"type": "url", "url": "https://mcp.example", "name": "x"}],
        "user_profile_id": "up_1",
        "workspace_id": "wrkspc_1",
        "speed": "fast",
        "top_k": 3,
    }

    assert convert(request(**ignored)).body == convert(request()).body


# ---------------------------------------------------------------------------------------------
# 6.29 structured outputs
# ---------------------------------------------------------------------------------------------

STRICT_SCHEMA = {
    "type": "object",
    "properties": {
        "name": {"type": "string"},
        "tags": {
            "type": "array",
            "items": {
                "type": "object",
                "properties": {"k": {"type": "string"}},
                "required": ["k"],
                "additionalProperties": False,
            },
        },
    },
    "required": ["name", "tags"],
    "additionalProperties": False,
}


def _with(schema: dict[str, Any], path: list[Any], key: str, value: Any) -> dict[str, Any]:
    changed = copy.deepcopy(schema)
    node = changed
    for step in path:
        node = node[step]
    if value is None:
        del node[key]
    else:
        node[key] = value
    return changed


@pytest.mark.parametrize(
    ("schema", "strict"),
    [
        (STRICT_SCHEMA, True),
        (_with(STRICT_SCHEMA, [], "required", ["name"]), False),
        (_with(STRICT_SCHEMA, [], "additionalProperties", None), False),
        (_with(STRICT_SCHEMA, ["properties", "tags", "items"], "additionalProperties", True), False),
        (_with(STRICT_SCHEMA, ["properties", "tags", "items"], "required", []), False),
        (
            {
                "type": "object",
                "properties": {"v": {"anyOf": [{"$ref": "#/$defs/P"}, {"type": "null"}]}},
                "required": ["v"],
                "additionalProperties": False,
                "$defs": {"P": {"type": "object", "properties": {"x": {"type": "integer"}}, "required": ["x"]}},
            },
            False,
        ),
        ({"type": "string", "enum": ["a", "b"]}, True),
    ],
)
@pytest.mark.parametrize("where", ["output_config", "output_format"])
def test_structured_output_maps_to_text_format(schema, strict, where):
    fields = (
        {"output_config": {"format": {"type": "json_schema", "schema": schema}}}
        if where == "output_config"
        else {"output_format": {"type": "json_schema", "schema": schema}}
    )

    body = convert(request(**fields)).body

    assert body["text"] == {"format": {"type": "json_schema", "name": "output", "schema": schema, "strict": strict}}


def test_output_config_format_wins_over_legacy_output_format():
    body = convert(
        request(
            output_config={"format": {"type": "json_schema", "schema": STRICT_SCHEMA}},
            output_format={"type": "json_schema", "schema": {"type": "string"}},
        )
    ).body

    assert body["text"]["format"]["schema"] == STRICT_SCHEMA


# ---------------------------------------------------------------------------------------------
# retries: reasoning_params_removed / reasoning_items_removed
# ---------------------------------------------------------------------------------------------


def _reasoning_body() -> dict[str, Any]:
    turn = assistant(
        thinking(sig("rs_1", msg_nx("msg_1", "commentary")), "t"),
        text("Checking."),
        thinking(sig("rs_2", fc_nx("fc_2", "c2"))),
        tool_use("c2"),
    )
    messages = [user(text("q")), turn, user({"type": "tool_result", "tool_use_id": "c2", "content": "r"})]
    tool = {"type": "web_search_20250305", "name": "web_search"}
    return convert(
        request(messages=messages, tools=[WEATHER_TOOL, tool], thinking={"type": "enabled", "budget_tokens": 2000})
    ).body


def test_reasoning_params_removed_keeps_everything_else():
    body = _reasoning_body()
    before = copy.deepcopy(body)

    retried = reasoning_params_removed(body)

    assert body == before
    assert "reasoning" not in retried
    assert retried["include"] == ["web_search_call.action.sources"]
    assert {key: value for key, value in retried.items() if key != "include"} == {
        key: value for key, value in body.items() if key not in ("include", "reasoning")
    }
    assert_valid_responses_body(retried)


def test_reasoning_params_removed_drops_an_emptied_include():
    body = convert(request(thinking={"type": "adaptive"})).body

    retried = reasoning_params_removed(body)

    assert "include" not in retried
    assert "reasoning" not in retried
    assert retried["input"] == body["input"]


def test_reasoning_items_removed_strips_reasoning_items_and_ids():
    body = _reasoning_body()
    before = copy.deepcopy(body)
    assert [item["type"] for item in body["input"]].count("reasoning") == 2

    retried = reasoning_items_removed(body)

    assert body == before
    assert retried["input"] == [
        user_msg("q"),
        {
            "type": "message",
            "role": "assistant",
            "phase": "commentary",
            "content": [{"type": "output_text", "text": "Checking.", "annotations": []}],
        },
        call("c2"),
        {"type": "function_call_output", "call_id": "c2", "output": "r"},
    ]
    assert retried["reasoning"] == body["reasoning"]
    assert_valid_responses_body(retried)
