"""/v1/messages through the real anthropic SDK, converted to OpenAI Responses and back."""

from __future__ import annotations

import base64
import json
import os
import time
from pathlib import Path
from typing import Any

import anthropic
import httpx2
import pytest

from tests.fakes.openai_upstream import RESPONSES_USAGE, Reply, response_object, sse
from tests.integration.conftest import ALL_KEY, LIMITED_KEY, MAX_BODY, post_declaring_length


@pytest.fixture
def client(gateway):
    with anthropic.Anthropic(api_key=ALL_KEY, base_url=gateway.base_url, max_retries=0) as sdk:
        yield sdk


@pytest.fixture
def http(gateway):
    with httpx2.Client(base_url=gateway.base_url, timeout=30) as raw:
        yield raw


USER = [{"role": "user", "content": "Hello Claude"}]
WEATHER_TOOL = {
    "name": "get_weather",
    "description": "Weather for a city",
    "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
}


def events_of(
    *items: dict[str, Any], usage: dict[str, Any] | None = None, status: str = "completed"
) -> list[bytes | float]:
    """A Responses event stream that outputs `items` (reasoning, function_call, message) in order."""
    seq = iter(range(10_000))
    out: list[bytes | float] = [
        sse(
            {
                "type": "response.created",
                "sequence_number": next(seq),
                "response": response_object("gpt-4.1", "", "in_progress"),
            },
            "response.created",
        )
    ]
    for index, item in enumerate(items):
        added = {**item, "status": "in_progress"}
        if item["type"] == "function_call":
            added["arguments"] = ""
        if item["type"] == "message":
            added["content"] = []
        out.append(
            sse(
                {
                    "type": "response.output_item.added",
                    "sequence_number": next(seq),
                    "output_index": index,
                    "item": added,
                },
                "response.output_item.added",
            )
        )
        if item["type"] == "reasoning":
            for s_index, part in enumerate(item.get("summary", [])):
                out.append(
                    sse(
                        {
                            "type": "response.reasoning_summary_part.added",
                            "sequence_number": next(seq),
                            "item_id": item["id"],
                            "output_index": index,
                            "summary_index": s_index,
                            "part": {"type": "summary_text", "text": ""},
                        },
                        "response.reasoning_summary_part.added",
                    )
                )
                out.append(
                    sse(
                        {
                            "type": "response.reasoning_summary_text.delta",
                            "sequence_number": next(seq),
                            "item_id": item["id"],
                            "output_index": index,
                            "summary_index": s_index,
                            "delta": part["text"],
                        },
                        "response.reasoning_summary_text.delta",
                    )
                )
                out.append(
                    sse(
                        {
                            "type": "response.reasoning_summary_text.done",
                            "sequence_number": next(seq),
                            "item_id": item["id"],
                            "output_index": index,
                            "summary_index": s_index,
                            "text": part["text"],
                        },
                        "response.reasoning_summary_text.done",
                    )
                )
                out.append(
                    sse(
                        {
                            "type": "response.reasoning_summary_part.done",
                            "sequence_number": next(seq),
                            "item_id": item["id"],
                            "output_index": index,
                            "summary_index": s_index,
                            "part": part,
                        },
                        "response.reasoning_summary_part.done",
                    )
                )
        if item["type"] == "function_call":
            arguments = item["arguments"]
            for piece in (arguments[: len(arguments) // 2], arguments[len(arguments) // 2 :]):
                out.append(
                    sse(
                        {
                            "type": "response.function_call_arguments.delta",
                            "sequence_number": next(seq),
                            "item_id": item["id"],
                            "output_index": index,
                            "delta": piece,
                        },
                        "response.function_call_arguments.delta",
                    )
                )
            out.append(
                sse(
                    {
                        "type": "response.function_call_arguments.done",
                        "sequence_number": next(seq),
                        "item_id": item["id"],
                        "output_index": index,
                        "arguments": arguments,
                    },
                    "response.function_call_arguments.done",
                )
            )
        if item["type"] == "message":
            text = item["content"][0]["text"]
            part = {"type": "output_text", "text": "", "annotations": []}
            out.append(
                sse(
                    {
                        "type": "response.content_part.added",
                        "sequence_number": next(seq),
                        "item_id": item["id"],
                        "output_index": index,
                        "content_index": 0,
                        "part": part,
                    },
                    "response.content_part.added",
                )
            )
            out.append(
                sse(
                    {
                        "type": "response.output_text.delta",
                        "sequence_number": next(seq),
                        "item_id": item["id"],
                        "output_index": index,
                        "content_index": 0,
                        "delta": text,
                    },
                    "response.output_text.delta",
                )
            )
            out.append(
                sse(
                    {
                        "type": "response.output_text.done",
                        "sequence_number": next(seq),
                        "item_id": item["id"],
                        "output_index": index,
                        "content_index": 0,
                        "text": text,
                    },
                    "response.output_text.done",
                )
            )
            out.append(
                sse(
                    {
                        "type": "response.content_part.done",
                        "sequence_number": next(seq),
                        "item_id": item["id"],
                        "output_index": index,
                        "content_index": 0,
                        "part": {**part, "text": text},
                    },
                    "response.content_part.done",
                )
            )
        out.append(
            sse(
                {
                    "type": "response.output_item.done",
                    "sequence_number": next(seq),
                    "output_index": index,
                    "item": item,
                },
                "response.output_item.done",
            )
        )
    final = {
        **response_object("gpt-4.1", ""),
        "status": status,
        "output": list(items),
        "usage": usage or RESPONSES_USAGE,
    }
    out.append(
        sse({"type": f"response.{status}", "sequence_number": next(seq), "response": final}, f"response.{status}")
    )
    return out


def message_item(text: str, item_id: str = "msg_1") -> dict[str, Any]:
    return {
        "id": item_id,
        "type": "message",
        "status": "completed",
        "role": "assistant",
        "content": [{"type": "output_text", "text": text, "annotations": []}],
    }


def call_item(
    arguments: str, call_id: str = "call_1", item_id: str = "fc_1", name: str = "get_weather"
) -> dict[str, Any]:
    return {
        "id": item_id,
        "type": "function_call",
        "status": "completed",
        "call_id": call_id,
        "name": name,
        "arguments": arguments,
    }


def reasoning_item(summary: str, item_id: str = "rs_1", encrypted: str = "ENC123") -> dict[str, Any]:
    return {
        "id": item_id,
        "type": "reasoning",
        "summary": [{"type": "summary_text", "text": summary}],
        "encrypted_content": encrypted,
    }


def body_sent(upstream) -> dict[str, Any]:
    [request] = upstream.calls("/a/v1/responses")
    return dict(request.json())


# -- basic ---------------------------------------------------------------------------------------


def test_create_converts_both_ways(client, upstream, gateway):
    raw = client.messages.with_raw_response.create(model="default", max_tokens=256, system="Be brief.", messages=USER)
    message = raw.parse()
    assert message.content[0].type == "text" and message.content[0].text == "echo: Hello Claude"
    assert message.model == "default" and message.id.startswith("msg_")
    assert message.stop_reason == "end_turn"
    assert (message.usage.input_tokens, message.usage.cache_read_input_tokens, message.usage.output_tokens) == (
        24,
        6,
        20,
    )
    assert raw.headers["request-id"] == raw.headers["x-vmx-request-id"]
    sent = body_sent(upstream)
    assert sent["model"] == "gpt-4.1" and sent["instructions"] == "Be brief." and sent["max_output_tokens"] == 256
    assert sent["store"] is False
    assert sent["input"] == [
        {"type": "message", "role": "user", "content": [{"type": "input_text", "text": "Hello Claude"}]}
    ]
    record = gateway.audit(raw.headers["x-vmx-request-id"])
    assert record["endpoint"] == "messages" and record["usage"]["reasoning_tokens"] == 7


def test_stream_get_final_message(client, upstream):
    with client.messages.stream(model="default", max_tokens=256, messages=USER) as stream:
        texts = list(stream.text_stream)
        final = stream.get_final_message()
    assert "".join(texts) == "echo: Hello Claude "
    assert final.content[0].text == "echo: Hello Claude "
    assert final.stop_reason == "end_turn" and final.usage.output_tokens == 20
    assert body_sent(upstream)["stream"] is True


def test_provider_args_are_merged_into_the_converted_body(client, upstream):
    client.messages.create(
        model="default",
        max_tokens=100,
        messages=USER,
        extra_body={"vmx": {"providerArgs": {"service_tier": "flex", "safety_identifier": "u-9"}}},
    )
    sent = body_sent(upstream)
    assert (sent["service_tier"], sent["safety_identifier"]) == ("flex", "u-9")
    assert "vmx" not in sent


def test_max_tokens_zero_answers_without_calling_upstream(client, upstream):
    message = client.messages.create(model="default", max_tokens=0, messages=USER)
    assert (message.content, message.stop_reason) == ([], "max_tokens")
    assert not upstream.requests


# -- tools and thinking over several turns -------------------------------------------------------


def test_tool_loop_over_several_turns(client, upstream):
    upstream.reply("POST", "/a/v1/responses", Reply(events=events_of(call_item('{"city":"Paris"}'))))
    upstream.reply("POST", "/a/v1/responses", Reply(events=events_of(call_item('{"city":"Rome"}', "call_2", "fc_2"))))
    upstream.reply("POST", "/a/v1/responses", Reply(events=events_of(message_item("Paris 20C, Rome 25C"))))
    messages = [{"role": "user", "content": "Weather in Paris and Rome?"}]
    for turn in range(3):
        with client.messages.stream(model="default", max_tokens=512, messages=messages, tools=[WEATHER_TOOL]) as stream:
            reply = stream.get_final_message()
        messages.append(
            {"role": "assistant", "content": [block.model_dump(exclude_none=True) for block in reply.content]}
        )
        if reply.stop_reason != "tool_use":
            break
        [tool_use] = [b for b in reply.content if b.type == "tool_use"]
        assert tool_use.name == "get_weather" and tool_use.input == {"city": ["Paris", "Rome"][turn]}
        messages.append(
            {
                "role": "user",
                "content": [{"type": "tool_result", "tool_use_id": tool_use.id, "content": f"{20 + 5 * turn}C"}],
            }
        )
    assert reply.content[0].text == "Paris 20C, Rome 25C"
    last = upstream.calls("/a/v1/responses")[-1].json()
    kinds = [(item["type"], item.get("call_id")) for item in last["input"]]
    assert kinds == [
        ("message", None),
        ("function_call", "call_1"),
        ("function_call_output", "call_1"),
        ("function_call", "call_2"),
        ("function_call_output", "call_2"),
    ]
    assert last["input"][2]["output"] == "20C"
    assert last["tools"][0] == {
        "type": "function",
        "name": "get_weather",
        "description": "Weather for a city",
        "parameters": WEATHER_TOOL["input_schema"],
        "strict": False,
    }


def test_thinking_signature_round_trips_to_the_next_turn(client, upstream):
    upstream.reply(
        "POST",
        "/a/v1/responses",
        Reply(events=events_of(reasoning_item("Need the weather"), call_item('{"city":"Oslo"}'))),
    )
    thinking = {"type": "enabled", "budget_tokens": 10_000}
    messages = [{"role": "user", "content": "Weather in Oslo?"}]
    with client.messages.stream(
        model="default", max_tokens=20_000, messages=messages, tools=[WEATHER_TOOL], thinking=thinking
    ) as stream:
        first = stream.get_final_message()
    assert [b.type for b in first.content] == ["thinking", "tool_use"]
    assert first.content[0].thinking == "Need the weather" and first.content[0].signature.startswith("oai1.")
    assert body_sent(upstream)["reasoning"] == {"effort": "medium", "summary": "auto"}
    messages += [
        {"role": "assistant", "content": [b.model_dump(exclude_none=True) for b in first.content]},
        {"role": "user", "content": [{"type": "tool_result", "tool_use_id": first.content[1].id, "content": "-3C"}]},
    ]
    client.messages.create(
        model="default", max_tokens=20_000, messages=messages, tools=[WEATHER_TOOL], thinking=thinking
    )
    replay = upstream.calls("/a/v1/responses")[-1].json()["input"]
    assert replay[1] == {
        "type": "reasoning",
        "id": "rs_1",
        "summary": [{"type": "summary_text", "text": "Need the weather"}],
        "encrypted_content": "ENC123",
    }
    assert replay[2]["type"] == "function_call" and replay[2]["id"] == "fc_1" and replay[2]["call_id"] == "call_1"


def test_reasoning_rejected_by_the_model_is_retried_once_without_it(client, upstream, gateway):
    rejection = {
        "error": {
            "message": "Unsupported parameter: 'reasoning.effort' is not supported with this model.",
            "type": "invalid_request_error",
            "param": "reasoning.effort",
            "code": "unsupported_parameter",
        }
    }
    upstream.reply("POST", "/a/v1/responses", Reply(status=400, body=rejection))
    raw = client.messages.with_raw_response.create(
        model="default", max_tokens=5000, messages=USER, thinking={"type": "enabled", "budget_tokens": 2000}
    )
    assert raw.parse().content[0].text == "echo: Hello Claude"
    first, second = (r.json() for r in upstream.calls("/a/v1/responses"))
    assert first["reasoning"]["effort"] == "low" and "reasoning" not in second
    record = gateway.audit(raw.headers["x-vmx-request-id"])
    assert record["attempts"][0]["notes"] == ["retried without reasoning parameters"]


def test_a_stream_sent_in_one_chunk_is_translated_whole(client, upstream):
    whole = b"".join(
        e for e in events_of(reasoning_item("Plan"), message_item("All in one write")) if isinstance(e, bytes)
    )
    upstream.reply("POST", "/a/v1/responses", Reply(events=[whole]))
    with client.messages.stream(
        model="default", max_tokens=2000, messages=USER, thinking={"type": "enabled", "budget_tokens": 1024}
    ) as stream:
        final = stream.get_final_message()
    assert [b.type for b in final.content] == ["thinking", "text"]
    assert final.content[1].text == "All in one write" and final.stop_reason == "end_turn"


def test_resource_temperature_is_not_sent_with_reasoning(client, upstream):
    client.messages.create(
        model="with-defaults", max_tokens=2000, messages=USER, thinking={"type": "enabled", "budget_tokens": 1024}
    )
    sent = body_sent(upstream)
    assert "temperature" not in sent and sent["reasoning"]["effort"] == "low"
    assert sent["max_output_tokens"] == 2000  # the client's max_tokens over the resource's default


def test_a_failed_response_falls_back_to_the_next_model(client, upstream, gateway):
    failed = {
        **response_object("gpt-4.1", ""),
        "status": "failed",
        "error": {"code": "server_error", "message": "model crashed"},
        "output": [],
    }
    upstream.reply("POST", "/a/v1/responses", Reply(body=failed))
    raw = client.messages.with_raw_response.create(model="fallback", max_tokens=100, messages=USER)
    assert raw.parse().content[0].text == "echo: Hello Claude"
    assert raw.headers["x-vmx-connection"] == "up-b"
    record = gateway.audit(raw.headers["x-vmx-request-id"])
    assert record["attempts"][0]["error"] == "model crashed"


def test_unverified_org_reasoning_summary_is_retried_without_the_summary(client, upstream, gateway):
    rejection = {
        "error": {
            "message": "Your organization must be verified to generate reasoning summaries.",
            "type": "invalid_request_error",
            "param": "reasoning.summary",
            "code": "unsupported_value",
        }
    }
    upstream.reply("POST", "/a/v1/responses", Reply(status=400, body=rejection))
    raw = client.messages.with_raw_response.create(
        model="default", max_tokens=5000, messages=USER, thinking={"type": "enabled", "budget_tokens": 5000}
    )
    assert raw.parse().content[-1].text == "echo: Hello Claude"
    first, second = (r.json() for r in upstream.calls("/a/v1/responses"))
    assert first["reasoning"] == {"effort": "medium", "summary": "auto"}
    assert second["reasoning"] == {"effort": "medium"}  # thinking kept, only the summary dropped
    assert gateway.audit(raw.headers["x-vmx-request-id"])["attempts"][0]["notes"] == [
        "retried without the reasoning summary"
    ]


def test_rejected_reasoning_replay_is_retried_without_reasoning_items(client, upstream, gateway):
    upstream.reply(
        "POST", "/a/v1/responses", Reply(events=events_of(reasoning_item("Think"), call_item('{"city":"Oslo"}')))
    )
    thinking = {"type": "enabled", "budget_tokens": 2000}
    with client.messages.stream(
        model="default", max_tokens=4000, messages=USER, tools=[WEATHER_TOOL], thinking=thinking
    ) as stream:
        first = stream.get_final_message()
    history = [
        {"role": "user", "content": "Hello Claude"},
        {"role": "assistant", "content": [b.model_dump(exclude_none=True) for b in first.content]},
        {"role": "user", "content": [{"type": "tool_result", "tool_use_id": first.content[1].id, "content": "ok"}]},
    ]
    rejection = {
        "error": {
            "message": "Item 'rs_1' of type 'reasoning' was provided without its required following item.",
            "type": "invalid_request_error",
            "param": "input",
            "code": None,
        }
    }
    upstream.reply("POST", "/a/v1/responses", Reply(status=400, body=rejection))
    raw = client.messages.with_raw_response.create(
        model="default", max_tokens=4000, messages=history, tools=[WEATHER_TOOL], thinking=thinking
    )
    assert raw.parse().stop_reason == "end_turn"
    rejected, retried = (r.json()["input"] for r in upstream.calls("/a/v1/responses")[1:])
    assert any(item["type"] == "reasoning" for item in rejected)
    assert not any(item["type"] == "reasoning" for item in retried)
    assert all("id" not in item for item in retried if item["type"] == "function_call")
    assert gateway.audit(raw.headers["x-vmx-request-id"])["attempts"][0]["notes"] == [
        "retried without replayed reasoning items"
    ]


def test_stop_sequence_ends_the_stream_early_and_is_audited(client, upstream, gateway):
    upstream.reply("POST", "/a/v1/responses", Reply(events=events_of(message_item("one two STOP three four"))))
    raw = client.messages.with_raw_response.create(
        model="default", max_tokens=100, messages=USER, stop_sequences=["STOP"], stream=True
    )
    events = list(raw.parse())
    delta = next(e for e in events if e.type == "message_delta")
    assert (delta.delta.stop_reason, delta.delta.stop_sequence) == ("stop_sequence", "STOP")
    text = "".join(e.delta.text for e in events if e.type == "content_block_delta" and e.delta.type == "text_delta")
    assert text == "one two "
    record = gateway.audit(raw.headers["x-vmx-request-id"])
    assert record["status_code"] == 200 and record["usage"]["output_tokens"] > 0


def test_ping_keeps_a_silent_stream_alive(http, upstream):
    events = events_of(message_item("late answer"))
    upstream.reply("POST", "/a/v1/responses", Reply(events=[*events[:2], 1.3, *events[2:]]))
    body = {"model": "default", "max_tokens": 50, "messages": USER, "stream": True}
    with http.stream("POST", "/v1/messages", json=body, headers={"x-api-key": ALL_KEY}) as response:
        text = b"".join(response.iter_raw()).decode()
    assert text.count("event: ping") >= 2  # the one after message_start, and at least one for the silence
    assert text.rstrip().endswith('data: {"type":"message_stop"}')


def test_client_disconnect_closes_the_upstream_stream(http, upstream, gateway):
    paced: list[bytes | float] = []
    for event in events_of(message_item(" ".join(["word"] * 40))):
        paced += [event, 0.1]
    upstream.reply("POST", "/a/v1/responses", Reply(events=paced))
    body = {"model": "default", "max_tokens": 500, "messages": USER, "stream": True}
    with http.stream("POST", "/v1/messages", json=body, headers={"x-api-key": ALL_KEY}) as response:
        request_id = response.headers["request-id"]
        next(response.iter_raw())
    deadline = time.monotonic() + 5
    while not upstream.disconnects and time.monotonic() < deadline:
        time.sleep(0.05)
    assert upstream.disconnects == ["/a/v1/responses"]
    assert gateway.audit(request_id)["status_code"] == 499


# -- auth, headers, errors -----------------------------------------------------------------------


@pytest.mark.parametrize(
    "headers",
    [
        {"x-api-key": ALL_KEY, "anthropic-version": "2023-06-01"},  # anthropic 0.x/1.x, curl
        {
            "Authorization": f"Bearer {ALL_KEY}",
            "anthropic-version": "2026-10-21",
            "anthropic-beta": "interleaved-thinking-2025-05-14",
        },
        {"x-api-key": ALL_KEY},  # no anthropic-version at all
    ],
)
@pytest.mark.parametrize("path", ["/v1/messages", "/v1/messages?beta=true"])
def test_any_client_generation_is_accepted(http, upstream, headers, path):
    response = http.post(path, json={"model": "default", "max_tokens": 50, "messages": USER}, headers=headers)
    assert response.status_code == 200
    assert response.json()["content"][0]["text"] == "echo: Hello Claude"


@pytest.mark.parametrize(
    ("headers", "body", "status", "kind"),
    [
        ({}, {"model": "default", "max_tokens": 5, "messages": USER}, 401, "authentication_error"),
        (
            {"x-api-key": "nope-nope-nope-nope-nope"},
            {"model": "default", "max_tokens": 5, "messages": USER},
            401,
            "authentication_error",
        ),
        ({"x-api-key": ALL_KEY}, b"{oops", 400, "invalid_request_error"),
        ({"x-api-key": ALL_KEY}, {"model": "default", "messages": USER}, 400, "invalid_request_error"),
        ({"x-api-key": ALL_KEY}, {"model": "default", "max_tokens": 5}, 400, "invalid_request_error"),
        ({"x-api-key": ALL_KEY}, {"model": "claude-nope", "max_tokens": 5, "messages": USER}, 404, "not_found_error"),
        ({"x-api-key": LIMITED_KEY}, {"model": "default", "max_tokens": 5, "messages": USER}, 403, "permission_error"),
    ],
)
def test_gateway_errors_in_anthropic_shape(http, upstream, headers, body, status, kind):
    content = body if isinstance(body, bytes) else json.dumps(body).encode()
    response = http.post("/v1/messages", content=content, headers={"Content-Type": "application/json", **headers})
    assert response.status_code == status
    payload = response.json()
    assert payload["type"] == "error" and payload["error"]["type"] == kind and payload["error"]["message"]
    assert response.headers["request-id"].startswith("req_")
    assert not upstream.requests


def test_sdk_raises_its_own_error_classes(client, upstream):
    with pytest.raises(anthropic.NotFoundError):
        client.messages.create(model="claude-nope", max_tokens=5, messages=USER)
    with pytest.raises(anthropic.BadRequestError, match="messages"):
        client.messages.create(model="default", messages=[], max_tokens=5)


@pytest.mark.parametrize(
    ("upstream_status", "status", "kind"),
    [
        (400, 400, "invalid_request_error"),
        (429, 429, "rate_limit_error"),
        (500, 500, "api_error"),
        (503, 529, "overloaded_error"),
        (504, 504, "timeout_error"),
    ],
)
def test_upstream_errors_map_to_anthropic(http, upstream, gateway, upstream_status, status, kind):
    error = {"error": {"message": f"upstream said {upstream_status}", "type": "x", "param": None, "code": None}}
    upstream.reply(
        "POST",
        "/a/v1/responses",
        Reply(status=upstream_status, body=error, headers={"retry-after": "3"} if upstream_status == 429 else {}),
    )
    response = http.post(
        "/v1/messages",
        json={"model": "default", "max_tokens": 5, "messages": USER, "stream": True},
        headers={"x-api-key": ALL_KEY},
    )
    assert response.status_code == status
    assert response.headers["content-type"] == "application/json"  # not SSE: nothing was committed
    assert response.json()["error"] == {"type": kind, "message": f"upstream said {upstream_status}"}
    if upstream_status == 429:
        assert response.headers["retry-after"] == "3"
    # The audit records what the client got (529, not the upstream's 503).
    assert gateway.audit(response.headers["request-id"])["status_code"] == status


def test_upstream_credentials_refused_is_a_502_naming_the_connection(client, upstream):
    upstream.reply(
        "POST",
        "/a/v1/responses",
        Reply(
            status=401,
            body={
                "error": {
                    "message": "bad key",
                    "type": "invalid_request_error",
                    "param": None,
                    "code": "invalid_api_key",
                }
            },
        ),
    )
    with pytest.raises(anthropic.APIStatusError) as info:
        client.messages.create(model="default", max_tokens=5, messages=USER)
    assert info.value.status_code == 502
    assert "connection 'up-a'" in info.value.message


def test_stream_cut_ends_with_an_error_event(http, upstream, gateway):
    events = events_of(message_item("a long answer that never ends"))[:5]
    upstream.reply("POST", "/a/v1/responses", Reply(events=events, cut=True))
    with http.stream(
        "POST",
        "/v1/messages",
        json={"model": "default", "max_tokens": 50, "messages": USER, "stream": True},
        headers={"x-api-key": ALL_KEY},
    ) as response:
        text = b"".join(response.iter_raw()).decode()
        request_id = response.headers["request-id"]
    frames = [frame for frame in text.strip().split("\n\n") if frame]
    assert frames[0].startswith("event: message_start")
    assert frames[-1].startswith("event: error")
    assert json.loads(frames[-1].split("data: ", 1)[1])["error"]["type"] == "api_error"
    assert "message_stop" not in text
    record = gateway.audit(request_id)
    assert record["error_type"]


def test_sdk_stream_raises_on_a_cut(client, upstream):
    upstream.reply("POST", "/a/v1/responses", Reply(events=events_of(message_item("partial"))[:5], cut=True))
    with (
        pytest.raises(anthropic.APIStatusError),
        client.messages.stream(model="default", max_tokens=50, messages=USER) as stream,
    ):
        stream.get_final_message()


def test_oversized_body_is_413_in_anthropic_shape(gateway):
    status, body = post_declaring_length(gateway.base_url, "/v1/messages", {"x-api-key": ALL_KEY}, MAX_BODY + 1)
    assert status == 413
    assert body["type"] == "error" and body["error"]["type"] == "request_too_large"


def test_a_20_mb_pdf_is_accepted(client, upstream):
    pdf = base64.b64encode(b"%PDF-1.7\n" + os.urandom(15 * 1024 * 1024)).decode()  # 20 MB of base64
    content = [
        {
            "type": "document",
            "source": {"type": "base64", "media_type": "application/pdf", "data": pdf},
            "title": "report.pdf",
        },
        {"type": "text", "text": "Summarise"},
    ]
    message = client.messages.create(model="default", max_tokens=100, messages=[{"role": "user", "content": content}])
    assert message.content[0].text == "echo: Summarise"
    part = body_sent(upstream)["input"][0]["content"][0]
    assert part == {"type": "input_file", "filename": "report.pdf", "file_data": f"data:application/pdf;base64,{pdf}"}


# -- count_tokens ----------------------------------------------------------------------------------


def test_count_tokens_asks_the_upstream(client, upstream):
    upstream.reply(
        "POST", "/a/v1/responses/input_tokens", Reply(body={"object": "response.input_tokens", "input_tokens": 321})
    )
    raw = client.messages.with_raw_response.count_tokens(
        model="default", messages=USER, system="sys", tools=[WEATHER_TOOL]
    )
    assert raw.parse().input_tokens == 321
    assert "x-vmx-estimate" not in raw.headers
    sent = upstream.calls("/a/v1/responses/input_tokens")[0].json()
    assert sent["model"] == "gpt-4.1" and sent["instructions"] == "sys" and sent["tools"][0]["name"] == "get_weather"
    assert "max_output_tokens" not in sent and "stream" not in sent and "store" not in sent


def test_count_tokens_estimates_when_the_upstream_cannot_answer(client, upstream):
    upstream.reply(
        "POST",
        "/a/v1/responses/input_tokens",
        Reply(
            status=404,
            body={"error": {"message": "no such route", "type": "invalid_request_error", "param": None, "code": None}},
        ),
    )
    raw = client.messages.with_raw_response.count_tokens(
        model="default", messages=[{"role": "user", "content": "x" * 400}]
    )
    assert raw.headers["x-vmx-estimate"] == "true"
    assert 100 <= raw.parse().input_tokens <= 130


def test_mock_provider_speaks_anthropic_too(client):
    with client.messages.stream(model="demo", max_tokens=100, messages=[{"role": "user", "content": "ping"}]) as stream:
        assert "You said: ping" in stream.get_final_message().content[0].text


def test_a_claude_code_shaped_request_streams_end_to_end(http, upstream):
    """12 custom tools, adaptive thinking with display omitted, output_config.effort,
    context_management, cache_control on system blocks, a mid-conversation system message,
    ?beta=true and streaming (the recorded fixture the converter tests pin)."""
    fixture = Path(__file__).parents[1] / "gateway" / "converters" / "fixtures" / "requests" / "claude_code.json"
    body = {**json.loads(fixture.read_text()), "model": "claude-sonnet-4-6"}
    upstream.reply(
        "POST",
        "/a/v1/responses",
        Reply(events=events_of(reasoning_item("Plan"), call_item('{"command":"ls"}', name=body["tools"][1]["name"]))),
    )
    headers = {
        "x-api-key": ALL_KEY,
        "anthropic-version": "2023-06-01",
        "anthropic-beta": "claude-code-20250219,interleaved-thinking-2025-05-14",
    }
    with http.stream("POST", "/v1/messages?beta=true", json=body, headers=headers) as response:
        assert response.status_code == 200
        text = b"".join(response.iter_raw()).decode()
    kinds = [line.split(": ", 1)[1] for line in text.splitlines() if line.startswith("event: ")]
    assert kinds[0] == "message_start" and kinds[-1] == "message_stop"
    starts = [
        json.loads(line[6:])["content_block"]["type"]
        for line in text.splitlines()
        if line.startswith('data: {"type":"content_block_start"')
    ]
    assert starts == ["thinking", "tool_use"]
    assert '"thinking":""' in text.replace(" ", "")  # display omitted: no thinking text, only the signature
    sent = body_sent(upstream)
    assert sent["reasoning"] == {"effort": "high"} and len(sent["tools"]) == 12
    assert any(item.get("role") == "developer" for item in sent["input"])
    assert "context_management" not in sent and "cache_control" not in json.dumps(sent)
