"""Responses → Anthropic conversion (spec §2, §3, §4.2, §1.7 output side, §6 output-side edge cases).

Fixtures under fixtures/responses/ are upstream recordings in real wire format: `*.sse` are Responses
event streams (`event: x\\ndata: {...}\\n\\n`), `*.json` non-stream Response bodies. The terminal
event of a stream (`response.completed` / `.incomplete` / `.failed`) carries the full Response, which
is exactly the non-stream body for the same generation, so every stream is also checked against the
non-stream converter through the anthropic SDK's own accumulator.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import anthropic.types
import pydantic
import pytest
from anthropic.lib.streaming._messages import accumulate_event
from anthropic.types.shared import ErrorResponse
from openai.types.responses import Response, ResponseStreamEvent

from gateway.converters.common import ConvertedRequest, signature_decode, signature_encode
from gateway.converters.responses_to_anthropic import UpstreamFailure, anthropic_message, anthropic_usage
from gateway.converters.responses_to_anthropic_stream import AnthropicStreamTranslator
from gateway.core.errors import anthropic_error_type

FIXTURES = Path(__file__).parent / "fixtures" / "responses"
MODEL = "claude-sonnet-4-5"
UPSTREAM = "gpt-5.4"
LONG_NAME = "mcp__filesystem__read_text_file_with_a_really_long_name_that_exceeds_limits"
SHORT_NAME = "mcp__filesystem__read_text_file_with_a_really_long_name_3dac5779"
TERMINAL = ("response.completed", "response.incomplete", "response.failed")

STREAM_EVENT = pydantic.TypeAdapter(anthropic.types.RawMessageStreamEvent)
UPSTREAM_EVENT = pydantic.TypeAdapter(ResponseStreamEvent)


# -- helpers ------------------------------------------------------------------------------------


def load_sse(name: str) -> list[dict[str, Any]]:
    """Parse a recorded Responses SSE stream; the `event:` line must name the payload's type."""
    events = []
    for frame in (FIXTURES / f"{name}.sse").read_text(encoding="utf-8").split("\n\n"):
        if not frame.strip():
            continue
        lines = dict(line.split(": ", 1) for line in frame.split("\n"))
        payload = json.loads(lines["data"])
        assert lines["event"] == payload["type"]
        events.append(payload)
    return events


def load_json(name: str) -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads((FIXTURES / f"{name}.json").read_text(encoding="utf-8"))
    return loaded


def terminal_response(events: list[dict[str, Any]]) -> dict[str, Any]:
    return next(e["response"] for e in reversed(events) if e["type"] in TERMINAL)


def request(**kwargs: Any) -> ConvertedRequest:
    return ConvertedRequest(body={"model": UPSTREAM}, **kwargs)


def convert(response: dict[str, Any], req: ConvertedRequest) -> dict[str, Any]:
    message = anthropic_message(response, request=req, model=MODEL, upstream_model=UPSTREAM)
    anthropic.types.Message.model_validate(message)
    json.dumps(message, ensure_ascii=False).encode("utf-8")  # serialisable as UTF-8 JSON
    return message


@dataclass
class StreamRun:
    events: list[tuple[str, dict[str, Any]]]
    translator: AnthropicStreamTranslator
    per_feed: list[list[tuple[str, dict[str, Any]]]] = field(default_factory=list)
    consumed: int = 0
    """Upstream events read before the translator said `finished` (the caller stops reading)."""


def run_stream(events: list[dict[str, Any]], req: ConvertedRequest, *, end: str | None = "cut") -> StreamRun:
    """Drive the translator like the gateway does: stop reading once it is finished."""
    translator = AnthropicStreamTranslator(request=req, model=MODEL, upstream_model=UPSTREAM)
    run = StreamRun(events=[], translator=translator)
    for upstream_event in events:
        out = translator.feed(upstream_event)
        run.per_feed.append(out)
        run.events.extend(out)
        run.consumed += 1
        if translator.finished:
            break
    if not translator.finished and end is not None:
        run.events.extend(translator.end(reason=end))
    check_invariants(run.events, finished=translator.finished)
    return run


def check_invariants(events: list[tuple[str, dict[str, Any]]], *, finished: bool) -> None:
    """Strict stream invariants (spec §3.2, §3.3, §6.23, §6.26)."""
    names = [name for name, _ in events]
    for name, payload in events:
        assert payload["type"] == name
        json.dumps(payload, ensure_ascii=False).encode("utf-8")
        if name == "ping":
            assert payload == {"type": "ping"}
        elif name == "error":
            ErrorResponse.model_validate(payload)
        else:
            STREAM_EVENT.validate_python(payload)
    if finished:
        assert names, "a finished stream emitted nothing"
        assert names[-1] in ("message_stop", "error")
        assert names.count("message_stop") + names.count("error") == 1  # nothing after the end
        if names[-1] == "message_stop":
            assert names[-2] == "message_delta"
            assert names.count("message_delta") == 1
    else:
        assert "message_stop" not in names and "error" not in names
    if "message_start" in names:
        assert names[:2] == ["message_start", "ping"]
        assert names.count("message_start") == 1 and names.count("ping") == 1
    else:
        assert names == ["error"] or not names
    open_index: int | None = None
    next_index = 0
    kinds: dict[int, str] = {}
    last_delta: dict[int, str] = {}
    signatures: dict[int, int] = {}
    for name, payload in events:
        if name == "content_block_start":
            assert open_index is None, "blocks must never interleave"
            assert payload["index"] == next_index
            open_index = next_index
            kinds[open_index] = payload["content_block"]["type"]
            next_index += 1
        elif name == "content_block_delta":
            assert payload["index"] == open_index
            kind = payload["delta"]["type"]
            last_delta[open_index] = kind
            if kind == "signature_delta":
                signatures[open_index] = signatures.get(open_index, 0) + 1
        elif name == "content_block_stop":
            assert payload["index"] == open_index
            if kinds[open_index] == "thinking" and names[-1] == "message_stop":
                # signature_delta comes right before the thinking block's stop, exactly once
                assert last_delta.get(open_index) == "signature_delta"
                assert signatures[open_index] == 1
            open_index = None
        elif name in ("message_delta", "message_stop", "error"):
            assert open_index is None, "every started block is stopped before the message ends"
    if finished:
        assert open_index is None


def accumulate(events: list[tuple[str, dict[str, Any]]]) -> dict[str, Any]:
    """The Message the anthropic SDK builds from the stream (its own accumulator)."""
    snapshot = None
    json_bufs: dict[int, bytes] = {}
    for name, payload in events:
        if name in ("ping", "error"):
            continue
        event = STREAM_EVENT.validate_python(payload)
        snapshot = accumulate_event(event=event, current_snapshot=snapshot, json_bufs=json_bufs)
    assert snapshot is not None
    return normalise(snapshot.model_dump(mode="json"))


def normalise(message: dict[str, Any]) -> dict[str, Any]:
    return anthropic.types.Message.model_validate(message).model_dump(mode="json", exclude_none=True)


def sig(rs: str, ec: str | None, nx: dict[str, Any] | None) -> str:
    return signature_encode(reasoning_id=rs, encrypted_content=ec, model=UPSTREAM, next_item=nx)


def deltas(events: list[tuple[str, dict[str, Any]]], kind: str, field_name: str) -> list[Any]:
    return [p["delta"][field_name] for n, p in events if n == "content_block_delta" and p["delta"]["type"] == kind]


def usage(inp: int, out: int, *, read: int = 0, write: int = 0, thinking: int = 0, **extra: Any) -> dict[str, Any]:
    return {
        "input_tokens": inp,
        "output_tokens": out,
        "cache_read_input_tokens": read,
        "cache_creation_input_tokens": write,
        "output_tokens_details": {"thinking_tokens": thinking},
        **extra,
    }


def text(value: str, **extra: Any) -> dict[str, Any]:
    return {"type": "text", "text": value, **extra}


def tool(call_id: str, name: str, tool_input: dict[str, Any]) -> dict[str, Any]:
    return {"type": "tool_use", "id": call_id, "name": name, "input": tool_input}


REFUSAL_DETAILS = {"type": "refusal", "category": None, "explanation": None}


# -- the table: stream and non-stream must produce the same Message ------------------------------


@dataclass
class Case:
    id: str
    fixture: str
    req: dict[str, Any]
    content: list[dict[str, Any]]
    stop_reason: str
    usage: dict[str, Any] | None
    """None for stop-sequence cases: the stream aborts before upstream usage exists (estimate)."""
    stop_sequence: str | None = None
    stop_details: dict[str, Any] | None = None
    text_deltas: list[str] | None = None
    """Exact `text_delta` sequence of the stream (pins hold-back and prefill behaviour)."""


HELLO = "Hello, wörld! 👩\u200d💻 done."
SEARCH_TEXT = "🌍 Paris weather: sunny, 21°C. Source: Météo."
SEARCH_SOURCES = [
    {
        "type": "web_search_result",
        "url": "https://meteo.example/paris",
        "title": "https://meteo.example/paris",
        "encrypted_content": "",
    },
    {
        "type": "web_search_result",
        "url": "https://news.example/🌤",
        "title": "https://news.example/🌤",
        "encrypted_content": "",
    },
]
STOP_TOOL = tool("call_s", "get_weather", {"city": "Oslo"})

CASES = [
    Case(
        "plain-text-cached-usage-emoji",
        "text_cached",
        {},
        [text(HELLO)],
        "end_turn",
        usage(20, 40, read=100, service_tier="standard"),
        text_deltas=["Hello", ", wörld! 👩", "\u200d💻 done."],
    ),
    Case(
        "worked-example-3.4-reasoning-then-tool",
        "reasoning_tool",
        {"thinking": True},
        [
            {
                "type": "thinking",
                "thinking": "Need weather",
                "signature": sig("rs_1", "gAAAA-enc-1", {"t": "function_call", "id": "fc_1", "cid": "call_A"}),
            },
            tool("call_A", "get_weather", {"city": "Paris"}),
        ],
        "tool_use",
        usage(20, 40, read=100, thinking=25, service_tier="standard"),
    ),
    Case(
        "reasoning-not-requested-no-thinking-block",
        "reasoning_tool",
        {},
        [tool("call_A", "get_weather", {"city": "Paris"})],
        "tool_use",
        usage(20, 40, read=100, thinking=25, service_tier="standard"),
    ),
    Case(
        "parallel-tools-long-name-empty-args",
        "parallel_tools",
        {"tool_names": {SHORT_NAME: LONG_NAME}},
        [
            text("Checking both."),
            tool("call_a", LONG_NAME, {"path": "docs/café 🎉.txt"}),
            tool("call_b", "list_roots", {}),
        ],
        "tool_use",
        usage(300, 55, service_tier="standard"),
    ),
    Case(
        "multi-summary-joined-by-blank-line",
        "multi_summary",
        {"thinking": True},
        [
            {
                "type": "thinking",
                "thinking": "First thought.\n\nSecond thought 🤔.",
                "signature": sig("rs_sum", "gAAAA-enc-sum", {"t": "message", "id": "msg_sum01", "ph": "final_answer"}),
            },
            text("The answer is 4."),
        ],
        "end_turn",
        usage(50, 500, thinking=420, service_tier="standard"),
    ),
    Case(
        "display-omitted-empty-thinking-with-signature",
        "multi_summary",
        {"thinking": True, "display_omitted": True},
        [
            {
                "type": "thinking",
                "thinking": "",
                "signature": sig("rs_sum", "gAAAA-enc-sum", {"t": "message", "id": "msg_sum01", "ph": "final_answer"}),
            },
            text("The answer is 4."),
        ],
        "end_turn",
        usage(50, 500, thinking=420, service_tier="standard"),
    ),
    Case(
        "stop-sequence-across-deltas-drops-later-tool",
        "stop_text",
        {"stop_sequences": ["\nHuman:"]},
        [text("The answer is 42.")],
        "stop_sequence",
        None,
        stop_sequence="\nHuman:",
        text_deltas=["The ans", "wer is 4", "2."],
    ),
    Case(
        "stop-sequence-inside-one-delta",
        "stop_text",
        {"stop_sequences": ["is"]},
        [text("The answer ")],
        "stop_sequence",
        None,
        stop_sequence="is",
        text_deltas=["The ans", "wer "],
    ),
    Case(
        "stop-sequence-at-very-start",
        "stop_text",
        {"stop_sequences": ["The"]},
        [],
        "stop_sequence",
        None,
        stop_sequence="The",
        text_deltas=[],
    ),
    Case(
        "stop-sequence-first-to-complete-wins",
        "stop_text",
        {"stop_sequences": ["answer is 42.\nHuman", "\nHu"]},
        [text("The answer is 42.")],
        "stop_sequence",
        None,
        stop_sequence="\nHu",
        text_deltas=["The ", "answer is 42."],
    ),
    Case(
        "stop-sequence-none-matches",
        "stop_text",
        {"stop_sequences": ["zzz"]},
        [text("The answer is 42.\nHuman: next"), STOP_TOOL],
        "tool_use",
        usage(30, 20, service_tier="standard"),
        text_deltas=["The ans", "wer is 4", "2.\nHu", "man: next"],
    ),
    Case(
        "stop-sequence-partial-never-completes-is-flushed",
        "stop_text",
        {"stop_sequences": ["42!"]},
        [text("The answer is 42.\nHuman: next"), STOP_TOOL],
        "tool_use",
        usage(30, 20, service_tier="standard"),
        text_deltas=["The ans", "wer is ", "42.\nHu", "man: next"],
    ),
    Case(
        "incomplete-max-tokens-truncated-arguments",
        "incomplete_max_tokens",
        {},
        [text("Let me look."), tool("call_m", "get_weather", {"city": "Paris", "days": [1, 2]})],
        "max_tokens",
        usage(40, 16, service_tier="standard"),
    ),
    Case(
        "incomplete-content-filter-is-refusal",
        "incomplete_content_filter",
        {},
        [text("Sure, here is")],
        "refusal",
        usage(40, 5, service_tier="standard"),
        stop_details=REFUSAL_DETAILS,
    ),
    Case(
        "refusal-part",
        "refusal",
        {},
        [text("I can't help with that.")],
        "refusal",
        usage(25, 8, service_tier="standard"),
        stop_details=REFUSAL_DETAILS,
    ),
    Case(
        "web-search-and-url-citation",
        "web_search",
        {"web_search": True},
        [
            {
                "type": "server_tool_use",
                "id": "srvtoolu_ws_1",
                "name": "web_search",
                "input": {"query": "weather Paris today"},
            },
            {"type": "web_search_tool_result", "tool_use_id": "srvtoolu_ws_1", "content": SEARCH_SOURCES},
            text(
                SEARCH_TEXT,
                citations=[
                    {
                        "type": "web_search_result_location",
                        "url": "https://meteo.example/paris",
                        "title": "Météo Paris ☀",
                        "cited_text": "sunny, 21°C.",
                        "encrypted_index": "",
                    }
                ],
            ),
        ],
        "end_turn",
        usage(
            388,
            60,
            read=512,
            service_tier="priority",
            server_tool_use={"web_search_requests": 1, "web_fetch_requests": 0},
        ),
    ),
    Case(
        "prefill-stripped-across-deltas",
        "prefill",
        {"prefill": '{"answer":'},
        [text(" 42}")],
        "end_turn",
        usage(20, 6, service_tier="standard"),
        text_deltas=[" 4", "2}"],
    ),
    Case(
        "prefill-not-repeated-left-alone",
        "prefill",
        {"prefill": "Sure"},
        [text('{"answer": 42}')],
        "end_turn",
        usage(20, 6, service_tier="standard"),
        text_deltas=['{"ans', 'wer": 4', "2}"],
    ),
    Case(
        "prefill-then-stop-sequence",
        "prefill",
        {"prefill": '{"answer":', "stop_sequences": ["}"]},
        [text(" 42")],
        "stop_sequence",
        None,
        stop_sequence="}",
        text_deltas=[" 4", "2"],
    ),
    Case(
        "policy-failure-is-refusal",
        "failed_policy",
        {},
        [text("Here is how")],
        "refusal",
        usage(33, 7, service_tier="standard"),
        stop_details={
            "type": "refusal",
            "category": "bio",
            "explanation": "This request was flagged by our bio safety policy.",
        },
    ),
    Case(
        "order-preserved-text-after-tools-prefill-only-first-usage-missing",
        "ordered_mix",
        {"thinking": True, "prefill": "Let me"},
        [
            {
                "type": "thinking",
                "thinking": "Plan.",
                "signature": sig("rs_mix", "enc-mix", {"t": "message", "id": "msg_mix_a", "ph": "commentary"}),
            },
            text(" check."),
            tool("call_m1", "get_weather", {"city": "Oslo"}),
            tool("call_m2", "get_time", {}),
            text("Let me check the rest."),
        ],
        "tool_use",
        usage(0, 0, service_tier="standard"),
        text_deltas=[" check.", "Let me check the rest."],
    ),
    Case(
        "interleaved-parallel-tools-buffered",
        "interleaved_tools",
        {},
        [tool("call_x", "get_weather", {"city": "Rome"}), tool("call_y", "get_time", {"tz": "CET"})],
        "tool_use",
        usage(80, 30, service_tier="standard"),
    ),
]


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_message_and_stream(case: Case) -> None:
    events = load_sse(case.fixture)
    req = request(**case.req)
    upstream = terminal_response(events)
    expected_id = "msg_" + upstream["id"].removeprefix("resp_")

    # Non-stream: exact content and stop fields.
    message = convert(upstream, req)
    assert message["id"] == expected_id
    assert message["model"] == MODEL
    assert message["content"] == [normalise_block(b) for b in case.content]
    assert (message["stop_reason"], message["stop_sequence"], message["stop_details"]) == (
        case.stop_reason,
        case.stop_sequence,
        case.stop_details,
    )
    if case.usage is not None:
        assert message["usage"] == case.usage

    # Stream: same Message through the SDK accumulator, and the exact text deltas.
    run = run_stream(events, req)
    assert run.translator.finished and run.translator.error is None
    assert run.events[-1][0] == "message_stop"
    streamed = accumulate(run.events)
    if case.usage is None:
        # Stop-sequence abort: upstream usage never arrives; output_tokens is an estimate.
        assert run.consumed < len(events), "the caller must stop reading (early abort)"
        assert streamed["usage"]["output_tokens"] > 0
        assert run.translator.response_usage is None
        expected = normalise(message)
        keys = ("id", "model", "content", "stop_reason", "stop_sequence", "stop_details")
        assert {k: streamed.get(k) for k in keys} == {k: expected.get(k) for k in keys}
    else:
        assert streamed == normalise(message)
        assert run.translator.response_usage == upstream["usage"]
    if case.text_deltas is not None:
        assert deltas(run.events, "text_delta", "text") == case.text_deltas


def normalise_block(block: dict[str, Any]) -> dict[str, Any]:
    """Expected blocks as the converter writes them (web search results carry page_age null)."""
    if block["type"] == "web_search_tool_result" and isinstance(block["content"], list):
        return {**block, "content": [{**r, "page_age": None} for r in block["content"]]}
    return block


# -- stream specifics ----------------------------------------------------------------------------


def test_worked_example_exact_event_sequence() -> None:
    """Spec §3.4, event by event."""
    run = run_stream(load_sse("reasoning_tool"), request(thinking=True))
    shape: list[tuple[Any, ...]] = []
    for name, payload in run.events:
        if name == "content_block_start":
            shape.append((name, payload["index"], payload["content_block"]["type"]))
        elif name == "content_block_delta":
            d = payload["delta"]
            shape.append((name, payload["index"], d.get("thinking") or d.get("partial_json") or d["type"]))
        elif name == "content_block_stop":
            shape.append((name, payload["index"]))
        else:
            shape.append((name,))
    assert shape == [
        ("message_start",),
        ("ping",),
        ("content_block_start", 0, "thinking"),
        ("content_block_delta", 0, "Need "),
        ("content_block_delta", 0, "weather"),
        ("content_block_delta", 0, "signature_delta"),
        ("content_block_stop", 0),
        ("content_block_start", 1, "tool_use"),
        ("content_block_delta", 1, '{"city":'),
        ("content_block_delta", 1, '"Paris"}'),
        ("content_block_stop", 1),
        ("message_delta",),
        ("message_stop",),
    ]
    start = run.events[0][1]["message"]
    assert start["id"] == "msg_tool01" and start["model"] == MODEL and start["content"] == []
    assert {k: start["usage"][k] for k in ("input_tokens", "output_tokens")} == {"input_tokens": 0, "output_tokens": 0}
    signature = run.events[5][1]["delta"]["signature"]
    assert signature_decode(signature) == {
        "rs": "rs_1",
        "ec": "gAAAA-enc-1",
        "m": UPSTREAM,
        "nx": {"t": "function_call", "id": "fc_1", "cid": "call_A"},
    }
    message_delta = run.events[-2][1]
    assert message_delta["delta"] == {"stop_reason": "tool_use", "stop_sequence": None, "stop_details": None}
    assert message_delta["usage"] == usage(20, 40, read=100, thinking=25)
    tool_start = run.events[7][1]["content_block"]
    assert tool_start == {"type": "tool_use", "id": "call_A", "name": "get_weather", "input": {}}


def test_multi_summary_separator_and_display_omitted() -> None:
    events = load_sse("multi_summary")
    shown = run_stream(events, request(thinking=True)).events
    assert deltas(shown, "thinking_delta", "thinking") == ["First ", "thought.", "\n\n", "Second ", "thought 🤔."]
    omitted = run_stream(events, request(thinking=True, display_omitted=True)).events
    assert deltas(omitted, "thinking_delta", "thinking") == []
    assert len(deltas(omitted, "signature_delta", "signature")) == 1
    hidden = run_stream(events, request()).events
    assert [p["content_block"]["type"] for n, p in hidden if n == "content_block_start"] == ["text"]
    assert deltas(hidden, "thinking_delta", "thinking") == []


def test_parallel_tools_indexes_and_argument_deltas_verbatim() -> None:
    events = load_sse("parallel_tools")
    run = run_stream(events, request(tool_names={SHORT_NAME: LONG_NAME}))
    starts = [(p["index"], p["content_block"]) for n, p in run.events if n == "content_block_start"]
    assert starts == [
        (0, {"type": "text", "text": ""}),
        (1, {"type": "tool_use", "id": "call_a", "name": LONG_NAME, "input": {}}),
        (2, {"type": "tool_use", "id": "call_b", "name": "list_roots", "input": {}}),
    ]
    by_index: dict[int, list[str]] = {}
    for name, payload in run.events:
        if name == "content_block_delta" and payload["delta"]["type"] == "input_json_delta":
            by_index.setdefault(payload["index"], []).append(payload["delta"]["partial_json"])
    # Upstream chunks pass through untouched (a \u escape split across them stays split) …
    assert by_index == {1: ['{"path":"docs/caf', "\\u00", 'e9 🎉.txt"}']}
    # … and concatenate to the final arguments; empty arguments emit no delta at all.
    final = {
        item["call_id"]: item["arguments"]
        for item in terminal_response(events)["output"]
        if item["type"] == "function_call"
    }
    assert "".join(by_index[1]) == final["call_a"] and final["call_b"] == ""


def test_interleaved_items_are_buffered_and_replayed_in_order() -> None:
    run = run_stream(load_sse("interleaved_tools"), request())
    body = [
        (n, p["index"], p.get("delta", {}).get("partial_json")) for n, p in run.events if n.startswith("content_block")
    ]
    assert body == [
        ("content_block_start", 0, None),
        ("content_block_delta", 0, '{"city":'),
        ("content_block_delta", 0, '"Rome"}'),
        ("content_block_stop", 0, None),
        ("content_block_start", 1, None),
        ("content_block_delta", 1, '{"tz":'),
        ("content_block_delta", 1, '"CET"}'),
        ("content_block_stop", 1, None),
    ]


def test_stop_sequence_hold_back_never_leaks_and_aborts() -> None:
    events = load_sse("stop_text")
    run = run_stream(events, request(stop_sequences=["\nHuman:"]))
    # After the delta "2.\nHu" the client has seen only "The answer is 42." — "\nHu" is held back.
    emitted = ""
    for out in run.per_feed:
        emitted += "".join(
            p["delta"]["text"] for n, p in out if n == "content_block_delta" and p["delta"]["type"] == "text_delta"
        )
        assert "\nH" not in emitted
    assert emitted == "The answer is 42."
    # The match ends the message at once: no tool block, the caller stops reading upstream.
    assert [n for n, _ in run.per_feed[-1]] == ["content_block_stop", "message_delta", "message_stop"]
    assert run.events[-2][1]["delta"] == {
        "stop_reason": "stop_sequence",
        "stop_sequence": "\nHuman:",
        "stop_details": None,
    }
    assert run.events[-2][1]["usage"] == {"output_tokens": 8}  # estimate: ceil(30 upstream chars / 4)
    assert events[run.consumed - 1]["type"] == "response.output_text.delta"
    assert run.translator.feed(events[run.consumed]) == []


def test_web_search_stream_blocks_and_citation() -> None:
    run = run_stream(load_sse("web_search"), request(web_search=True))
    starts = [p["content_block"] for n, p in run.events if n == "content_block_start"]
    assert starts[0] == {"type": "server_tool_use", "id": "srvtoolu_ws_1", "name": "web_search", "input": {}}
    assert starts[1]["type"] == "web_search_tool_result" and len(starts[1]["content"]) == 2
    assert starts[2] == {"type": "text", "text": ""}
    assert deltas(run.events, "input_json_delta", "partial_json") == ['{"query":"weather Paris today"}']
    citations = deltas(run.events, "citations_delta", "citation")
    assert [c["cited_text"] for c in citations] == ["sunny, 21°C."]  # code-point slice past an emoji
    assert run.events[0][1]["message"]["usage"]["service_tier"] == "priority"


def test_refusal_stream_sets_stop_details() -> None:
    run = run_stream(load_sse("refusal"), request())
    assert deltas(run.events, "text_delta", "text") == ["I can't ", "help with that."]
    assert run.events[-2][1]["delta"] == {
        "stop_reason": "refusal",
        "stop_sequence": None,
        "stop_details": REFUSAL_DETAILS,
    }


@pytest.mark.parametrize(
    ("fixture", "error_type", "message"),
    [
        ("error_flat", "api_error", "The server had an error while processing your request."),
        ("error_nested", "rate_limit_error", "Rate limit reached for gpt-5.4."),
        ("failed_invalid_prompt", "invalid_request_error", "Invalid prompt: your prompt was flagged."),
    ],
)
def test_upstream_error_events(fixture: str, error_type: str, message: str) -> None:
    events = load_sse(fixture)
    translator = AnthropicStreamTranslator(request=request(), model=MODEL, upstream_model=UPSTREAM)
    out: list[tuple[str, dict[str, Any]]] = []
    for event in events:
        out.extend(translator.feed(event))  # keep feeding: later events must add nothing
    check_invariants(out, finished=True)
    assert out[-1] == ("error", {"type": "error", "error": {"type": error_type, "message": message}})
    assert [n for n, _ in out].count("error") == 1  # response.failed after error is not re-reported
    assert translator.finished and translator.error == (error_type, message)
    assert translator.end() == []


def test_error_mid_text_closes_the_open_block_first() -> None:
    run = run_stream(load_sse("error_flat"), request())
    assert [n for n, _ in run.events][-3:] == ["content_block_delta", "content_block_stop", "error"]
    assert deltas(run.events, "text_delta", "text") == ["Partial ", "answ"]


@pytest.mark.parametrize(
    ("fixture", "reason", "error_type", "message"),
    [
        ("cut_in_text", "cut", "api_error", "upstream stream terminated unexpectedly"),
        ("cut_in_thinking", "cut", "api_error", "upstream stream terminated unexpectedly"),
        ("cut_in_text", "timeout", "timeout_error", "upstream stream timed out"),
    ],
)
def test_cut_stream_ends_with_error_never_silently(fixture: str, reason: str, error_type: str, message: str) -> None:
    events = load_sse(fixture)
    unfinished = run_stream(events, request(thinking=True), end=None)
    assert not unfinished.translator.finished
    assert "message_stop" not in [n for n, _ in unfinished.events]
    run = run_stream(events, request(thinking=True), end=reason)
    assert run.events[-1] == ("error", {"type": "error", "error": {"type": error_type, "message": message}})
    assert run.translator.error == (error_type, message)
    assert run.translator.response_usage is None
    assert run.translator.end(reason=reason) == []


def test_translator_emits_nothing_after_message_stop() -> None:
    events = load_sse("text_cached")
    run = run_stream(events, request())
    assert run.translator.feed(events[-1]) == []
    assert run.translator.feed({"type": "error", "code": "server_error", "message": "late"}) == []
    assert run.translator.end() == []
    assert run.translator.error is None


def test_stream_without_created_event_still_starts_with_message_start() -> None:
    events = [e for e in load_sse("text_cached") if e["type"] not in ("response.created", "response.in_progress")]
    run = run_stream(events, request())
    assert [n for n, _ in run.events][:3] == ["message_start", "ping", "content_block_start"]
    assert deltas(run.events, "text_delta", "text") == ["Hello", ", wörld! 👩", "\u200d💻 done."]


def test_item_done_without_deltas_still_delivers_text_and_arguments() -> None:
    """Upstreams that send only `output_item.done` (no deltas) lose nothing."""
    events = [
        e
        for e in load_sse("parallel_tools")
        if e["type"]
        not in ("response.output_text.delta", "response.function_call_arguments.delta", "response.output_text.done")
        and e["type"] not in ("response.content_part.done", "response.function_call_arguments.done")
    ]
    run = run_stream(events, request(tool_names={SHORT_NAME: LONG_NAME}))
    assert deltas(run.events, "text_delta", "text") == ["Checking both."]
    assert deltas(run.events, "input_json_delta", "partial_json") == ['{"path":"docs/caf\\u00e9 🎉.txt"}']
    assert accumulate(run.events) == normalise(
        convert(terminal_response(events), request(tool_names={SHORT_NAME: LONG_NAME}))
    )


# -- non-stream specifics ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("fixture", "code", "status", "error_type"),
    [
        ("failed_server_error", "server_error", 500, "api_error"),
        ("failed_rate_limit", "rate_limit_exceeded", 429, "rate_limit_error"),
    ],
)
def test_failed_response_raises_upstream_failure(fixture: str, code: str, status: int, error_type: str) -> None:
    with pytest.raises(UpstreamFailure) as info:
        anthropic_message(load_json(fixture), request=request(), model=MODEL, upstream_model=UPSTREAM)
    assert (info.value.code, info.value.status, info.value.error_type) == (code, status, error_type)
    assert info.value.message == load_json(fixture)["error"]["message"]


def test_usage_missing_empty_part_and_unknown_item() -> None:
    message = convert(load_json("usage_missing"), request())
    assert message["content"] == [text("ok")]  # "" part skipped, image_generation_call dropped
    assert message["usage"] == usage(0, 0, service_tier="standard")
    assert message["stop_reason"] == "end_turn"


def test_reasoning_text_content_and_unparseable_arguments() -> None:
    message = convert(load_json("reasoning_text_only"), request(thinking=True))
    assert message["content"] == [
        {
            "type": "thinking",
            "thinking": "raw chain",
            "signature": sig("rs_rt", None, {"t": "function_call", "id": "fc_rt", "cid": "call_rt"}),
        },
        tool("call_rt", "calc", {}),  # a JSON array is not a tool input
        tool("call_rt2", "calc", {}),  # garbage → {}
    ]
    assert message["usage"]["output_tokens_details"] == {"thinking_tokens": 3}


def test_failed_web_search_and_tool_usage_count_and_cache_write() -> None:
    message = convert(load_json("web_search_tool_usage"), request(web_search=True))
    assert message["content"] == [
        {"type": "server_tool_use", "id": "srvtoolu_ws_u", "name": "web_search", "input": {"query": "q one"}},
        {
            "type": "web_search_tool_result",
            "tool_use_id": "srvtoolu_ws_u",
            "content": {"type": "web_search_tool_result_error", "error_code": "unavailable"},
        },
    ]
    assert message["usage"] == usage(
        3,
        2,
        read=4,
        write=3,
        service_tier="standard",
        server_tool_use={"web_search_requests": 3, "web_fetch_requests": 0},
    )


def test_stop_sequence_truncates_in_later_block_and_keeps_earlier_blocks() -> None:
    response = terminal_response(load_sse("parallel_tools"))
    message = convert(response, request(stop_sequences=["both"]))
    assert message["content"] == [text("Checking ")]
    assert (message["stop_reason"], message["stop_sequence"]) == ("stop_sequence", "both")


# -- usage and error mapping ---------------------------------------------------------------------


def test_anthropic_usage_zeros_and_web_search_count() -> None:
    assert anthropic_usage(None) == usage(0, 0)
    output = [
        {"type": "web_search_call", "action": {"type": "search", "query": "a"}},
        {"type": "web_search_call", "action": {"type": "open_page", "url": "https://x"}},
        {"type": "web_search_call", "action": {"type": "search", "query": "b"}},
    ]
    assert anthropic_usage({"input_tokens": 5, "output_tokens": 1}, output=output)["server_tool_use"] == {
        "web_search_requests": 2,
        "web_fetch_requests": 0,
    }
    # cached tokens never push input_tokens below zero
    assert (
        anthropic_usage({"input_tokens": 3, "input_tokens_details": {"cached_tokens": 5}, "output_tokens": 0})[
            "input_tokens"
        ]
        == 0
    )


@pytest.mark.parametrize(
    ("status", "expected"),
    [
        (400, (400, "invalid_request_error")),
        (404, (404, "not_found_error")),
        (409, (409, "invalid_request_error")),
        (413, (413, "request_too_large")),
        (418, (418, "invalid_request_error")),
        (422, (400, "invalid_request_error")),
        (429, (429, "rate_limit_error")),
        (500, (500, "api_error")),
        (502, (500, "api_error")),
        (503, (529, "overloaded_error")),
        (504, (504, "timeout_error")),
    ],
)
def test_error_type_for_upstream_status(status: int, expected: tuple[int, str]) -> None:
    assert anthropic_error_type(code="server_error", status=status) == expected


@pytest.mark.parametrize(
    ("code", "expected"),
    [
        ("rate_limit_exceeded", (429, "rate_limit_error")),
        ("server_error", (500, "api_error")),
        ("vector_store_timeout", (500, "api_error")),
        ("invalid_prompt", (400, "invalid_request_error")),
        ("invalid_image_format", (400, "invalid_request_error")),
        ("image_too_large", (400, "invalid_request_error")),
        ("invalid_base64_image", (400, "invalid_request_error")),
        ("failed_to_download_image", (400, "invalid_request_error")),
        ("empty_image_file", (400, "invalid_request_error")),
        ("unsupported_image_media_type", (400, "invalid_request_error")),
        ("data_residency_mismatch", (400, "invalid_request_error")),
        ("something_new", (500, "api_error")),
        (None, (500, "api_error")),
    ],
)
def test_error_type_for_failure_code(code: str | None, expected: tuple[int, str]) -> None:
    assert anthropic_error_type(code=code) == expected


# -- the fixtures themselves are real Responses wire format ---------------------------------------


@pytest.mark.parametrize("path", sorted(FIXTURES.glob("*.sse")), ids=lambda p: p.name)
def test_sse_fixtures_are_real_responses_events(path: Path) -> None:
    for event in load_sse(path.stem):
        if event["type"] == "error" and "error" in event:
            continue  # the nested error shape is observed on the wire but not typed by the SDK (§3.1)
        UPSTREAM_EVENT.validate_python(event)


@pytest.mark.parametrize("path", sorted(FIXTURES.glob("*.json")), ids=lambda p: p.name)
def test_json_fixtures_are_real_responses(path: Path) -> None:
    Response.model_validate(load_json(path.stem))
