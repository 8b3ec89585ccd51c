"""Property: whatever shape an Anthropic Messages request has, the request converter either
converts it or refuses it with `ConversionError` (the client's 400 `invalid_request_error`),
naming the field. Any other exception would reach the client as a 500.

Valid requests (the recorded fixtures and a few hand-made ones covering every block and tool
kind) are damaged by `tests.gateway.json_mutations`; replayed thinking signatures get their own
property, since their payload is JSON inside a base64 string that structural mutations never
open.
"""

from __future__ import annotations

import base64
import json
import re
from typing import Any

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.converters.anthropic_to_responses import anthropic_to_responses
from gateway.converters.common import ConversionError, ConvertedRequest, ConvertOptions
from tests.gateway.anthropic_requests import ANTHROPIC_REQUESTS, UPSTREAM
from tests.gateway.json_mutations import json_values, mutate, mutated

# `messages.0.content.1.text: Input should be a valid string`, as Anthropic words it.
FIELD_MESSAGE = re.compile(r"^[a-z_]+(\.[A-Za-z0-9_]+)*: \S")


OPTIONS = st.builds(ConvertOptions, upstream_model=st.just(UPSTREAM), reasoning=st.booleans())


def assert_converted_or_refused(
    body: Any, options: ConvertOptions, *, serialisable: bool = True
) -> ConvertedRequest | None:
    try:
        result = anthropic_to_responses(body, options=options)
    except ConversionError as exc:
        refusal = str(exc)
    else:
        if serialisable:
            orjson.dumps(result.body)  # the gateway sends the body with orjson
        return result
    assert FIELD_MESSAGE.match(refusal), f"the refusal does not name a field: {refusal}"
    return None


@pytest.mark.parametrize("name", ANTHROPIC_REQUESTS)
def test_the_unmutated_requests_convert(name):
    assert assert_converted_or_refused(ANTHROPIC_REQUESTS[name], ConvertOptions(upstream_model=UPSTREAM)) is not None


@settings(max_examples=200, deadline=None)
@given(body=mutated(list(ANTHROPIC_REQUESTS.values())), options=OPTIONS)
def test_a_mutated_request_is_converted_or_refused_with_a_conversion_error(body, options):
    assert_converted_or_refused(body, options)


def _raw_signature(payload: Any) -> str:
    raw = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
    return "oai1." + base64.urlsafe_b64encode(raw).decode().rstrip("=")


ENVELOPES = [
    {"rs": "rs_1", "ec": "enc", "m": UPSTREAM, "nx": {"t": "function_call", "id": "fc_1", "cid": "call_1"}},
    {"rs": "rs_1", "ec": "enc", "m": UPSTREAM, "nx": {"t": "message", "id": "msg_1", "ph": "commentary"}},
]


@settings(max_examples=100, deadline=None)
@given(
    payload=st.one_of(mutated(ENVELOPES), json_values),
    following=st.sampled_from(
        [
            {"type": "tool_use", "id": "call_1", "name": "f", "input": {}},
            {"type": "text", "text": "answer"},
            {"type": "text", "text": 5},
        ]
    ),
)
def test_a_replayed_signature_of_any_shape_is_converted_or_refused(payload, following):
    body = {
        "model": "claude-sonnet-4-5",
        "max_tokens": 100,
        "messages": [
            {"role": "user", "content": "q"},
            {
                "role": "assistant",
                "content": [{"type": "thinking", "thinking": "t", "signature": _raw_signature(payload)}, following],
            },
        ],
    }
    assert_converted_or_refused(body, ConvertOptions(upstream_model=UPSTREAM))


def _nested(depth: int, leaf: Any) -> Any:
    value = leaf
    for level in range(depth):
        value = [value] if level % 2 else {"a": value}
    return value


def _nested_schema(depth: int) -> dict[str, Any]:
    schema: dict[str, Any] = {"type": "string"}
    for _ in range(depth):
        schema = {"type": "array", "items": schema}
    return schema


DEEP = 1_000  # what a JSON parser hands over at most (orjson stops at 1024 levels)


@pytest.mark.parametrize(
    "body",
    [
        pytest.param(
            {
                "model": "m",
                "max_tokens": 10,
                "messages": [
                    {"role": "user", "content": "q"},
                    {
                        "role": "assistant",
                        "content": [{"type": "tool_use", "id": "c", "name": "f", "input": {"a": _nested(DEEP, 1)}}],
                    },
                ],
            },
            id="tool_use.input",
        ),
        pytest.param(
            {
                "model": "m",
                "max_tokens": 10,
                "messages": [{"role": "user", "content": "q"}],
                "output_config": {"format": {"type": "json_schema", "schema": _nested_schema(DEEP // 2)}},
            },
            id="output_config.format.schema",
        ),
        pytest.param(
            {
                "model": "m",
                "max_tokens": 10,
                "messages": [{"role": "user", "content": "q"}],
                "tools": [{"name": "f", "input_schema": {"type": "object"}, "input_examples": [_nested(DEEP, 1)]}],
            },
            id="tools.input_examples",
        ),
        pytest.param(
            {
                "model": "m",
                "max_tokens": 10,
                "messages": [
                    {"role": "user", "content": "q"},
                    {
                        "role": "assistant",
                        "content": [
                            {
                                "type": "thinking",
                                "thinking": "t",
                                "signature": _raw_signature(b"[" * 50_000 + b"]" * 50_000),
                            }
                        ],
                    },
                ],
            },
            id="thinking.signature",
        ),
    ],
)
def test_deeply_nested_values_are_converted_or_refused(body):
    # The converted body is not sent here: only a request past the envelope's depth limit (200)
    # converts into one too deep for orjson. The signature is a string and passes that limit.
    assert_converted_or_refused(body, ConvertOptions(upstream_model=UPSTREAM), serialisable=False)


@settings(max_examples=100, deadline=None)
@given(
    body=mutated(list(ANTHROPIC_REQUESTS.values())).flatmap(lambda body: mutate(body, max_mutations=6)), options=OPTIONS
)
def test_a_heavily_mutated_request_is_converted_or_refused(body, options):
    assert_converted_or_refused(body, options)
