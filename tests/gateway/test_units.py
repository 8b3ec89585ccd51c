"""Pure pieces of the gateway: SSE decoding, retry-after, usage, envelope, body summaries."""

from __future__ import annotations

import base64
import hashlib

import pytest

from gateway.audit import summarize_payloads
from gateway.capacity.learned import duration_ms
from gateway.errors import InvalidRequestError
from gateway.services.envelope import envelope_extract, request_body_parse
from gateway.services.routing import retry_after_ms
from gateway.sse import SSEDecoder
from gateway.usage import usage_from_chat, usage_from_responses

STREAM = (
    b": comment\n\n"
    b'event: response.created\ndata: {"a": 1}\n\n'
    b"data: line one\ndata: line two\r\n\r\n"
    b"data:no-space\r\r"
    b"data: [DONE]\n\n"
    b"data: partial"
)


@pytest.mark.parametrize("size", [1, 2, 3, 7, 64, len(STREAM)])
def test_sse_decoder_keeps_bytes_whatever_the_chunking(size):
    decoder = SSEDecoder()
    events = []
    for start in range(0, len(STREAM), size):
        events += decoder.feed(STREAM[start : start + size])
    assert b"".join(e.raw for e in events) + decoder.pending() == STREAM
    assert [(e.event, e.data) for e in events] == [
        (None, b""),
        ("response.created", b'{"a": 1}'),
        (None, b"line one\nline two"),
        (None, b"no-space"),
        (None, b"[DONE]"),
    ]
    assert decoder.pending() == b"data: partial"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("1m30s", 90_000),
        ("250ms", 250),
        ("7s", 7_000),
        ("2h", 7_200_000),
        ("0.5s", 500),
        ("1h2m3s", 3_723_000),
        ("", None),
        ("soon", None),
        ("5x", None),
    ],
)
def test_duration_ms(text, expected):
    assert duration_ms(text) == expected


@pytest.mark.parametrize(
    ("headers", "expected"),
    [
        ({"retry-after-ms": "2500", "retry-after": "9"}, 2500),
        ({"retry-after": "4"}, 4000),
        ({"x-ratelimit-reset-requests": "1s", "x-ratelimit-reset-tokens": "6m0s"}, 360_000),
        ({"x-ratelimit-reset-requests": "garbage"}, 1000),
        ({}, 1000),
    ],
)
def test_retry_after_ms(headers, expected):
    assert retry_after_ms(headers) == expected


def test_usage_from_chat_and_responses():
    chat = usage_from_chat(
        {
            "prompt_tokens": 10,
            "completion_tokens": 5,
            "total_tokens": 15,
            "prompt_tokens_details": {"cached_tokens": 4, "audio_tokens": 1},
            "completion_tokens_details": {
                "reasoning_tokens": 2,
                "audio_tokens": 3,
                "accepted_prediction_tokens": 1,
                "rejected_prediction_tokens": 0,
            },
        }
    )
    assert chat.as_dict() == {
        "input_tokens": 10,
        "cached_tokens": 4,
        "output_tokens": 5,
        "reasoning_tokens": 2,
        "audio_tokens": 4,
        "accepted_prediction_tokens": 1,
        "rejected_prediction_tokens": 0,
        "total_tokens": 15,
    }
    responses = usage_from_responses(
        {"input_tokens": 7, "output_tokens": 3, "output_tokens_details": {"reasoning_tokens": 2}}
    )
    assert (responses.input_tokens, responses.reasoning_tokens, responses.total_tokens) == (7, 2, 10)
    assert usage_from_chat(None).total_tokens == 0
    assert usage_from_responses({"input_tokens": "x", "output_tokens": True}).as_dict() == usage_from_chat({}).as_dict()


def test_envelope_is_removed_and_validated():
    body = request_body_parse(
        b'{"model": "m", "vmx": {"correlationId": "c", "providerArgs": {"user": "u"}, "timeoutMs": 5, "future": 1}, "__vmx_passthrough": {}}'
    )
    envelope = envelope_extract(body, {"X-Vmx-Metadata-Team": "a", "x-vmx-correlation-id": "ignored"})
    assert body == {"model": "m"}
    assert (envelope.correlation_id, envelope.metadata, envelope.provider_args, envelope.timeout_ms) == (
        "c",
        {"team": "a"},
        {"user": "u"},
        5,
    )


@pytest.mark.parametrize(
    "vmx",
    [
        "x",
        {"correlationId": 1},
        {"metadata": []},
        {"metadata": {"a": 1}},
        {"providerArgs": []},
        {"timeoutMs": 0},
        {"timeoutMs": True},
        {"correlationId": "x" * 300},
    ],
)
def test_malformed_envelope_is_a_400(vmx):
    with pytest.raises(InvalidRequestError):
        envelope_extract({"model": "m", "vmx": vmx}, {})


def test_payload_summaries_replace_base64_only():
    image = base64.b64encode(b"\x89PNG" + b"\0" * 2000).decode()
    body = {
        "messages": [
            {
                "content": [
                    {"type": "image_url", "image_url": {"url": f"data:image/png;base64,{image}"}},
                    {"type": "text", "text": "short text"},
                ]
            }
        ],
        "input_audio": image,
        "prose": "word " * 200,
    }
    summary = summarize_payloads(body)
    url = summary["messages"][0]["content"][0]["image_url"]["url"]
    assert url == f"[image/png: 2004 bytes, sha256 {hashlib.sha256(image.encode()).hexdigest()}]"
    assert summary["input_audio"].startswith("[base64: 2004 bytes")
    assert summary["messages"][0]["content"][1]["text"] == "short text"
    assert summary["prose"] == "word " * 200
