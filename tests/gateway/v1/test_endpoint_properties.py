"""Property: whatever a client sends to `/v1/chat/completions`, `/v1/responses` or
`/v1/messages`, the gateway itself never answers 5xx.

Valid bodies (with a `vmx` envelope) are damaged by `tests.gateway.json_mutations` and sent
through the real Django app in-process. The resource's only model entry is on the `mock`
provider, which answers in-process: every upstream call succeeds, so any 5xx is the gateway's own
failure. What a client would notice is checked: an error is JSON in the endpoint's error shape,
a JSON answer parses, and a stream can be read to its proper end.
"""

from __future__ import annotations

import copy
from typing import Any

import httpx2
import orjson
import pytest
from hypothesis import HealthCheck, currently_in_test_context, event, given, settings
from hypothesis import strategies as st

from connections.selectors import config_snapshot_invalidate
from connections.services import ModelEntrySpec, api_key_save, connection_save, resource_save
from gateway.audit.writer import audit_flush
from tests.gateway.anthropic_requests import ANTHROPIC_REQUESTS, PNG, UPSTREAM
from tests.gateway.json_mutations import mutate, mutated

# Threads other than the test's (the audit writer, the snapshot refresh) read and write the
# database, so the configuration must be committed for them to see it.
pytestmark = pytest.mark.django_db(transaction=True)

KEY = "vmx-properties-0123456789abcdef"
RESOURCE = "default"
# One fixture serves every example: the configuration does not change between them.
EXAMPLES = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


@pytest.fixture
def gateway():
    # The mock answers whatever model it is given; the signatures in the samples replay only to
    # UPSTREAM, so naming it reaches the reasoning-replay code as well.
    connection_save(name="mock", provider="mock", config={})
    resource_save(name=RESOURCE, models=[ModelEntrySpec(connection="mock", model=UPSTREAM)])
    api_key_save(name="properties", resources=None, key=KEY)
    config_snapshot_invalidate()
    yield
    config_snapshot_invalidate()
    audit_flush()  # nothing queued may reach a later test's database


def _envelope(**provider_args: Any) -> dict[str, Any]:
    return {
        "correlationId": "corr-42",
        "metadata": {"team": "search", "ticket": "T-1"},
        "providerArgs": provider_args,
        "timeoutMs": 30_000,
    }


CHAT_REQUESTS: list[dict[str, Any]] = [
    {
        "model": RESOURCE,
        "messages": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hello"}],
        "temperature": 0.5,
        "max_tokens": 50,
        "stream": False,
        "vmx": _envelope(user="user-1"),
    },
    {
        "model": RESOURCE,
        "messages": [
            {
                "role": "user",
                "content": [
                    {"type": "text", "text": "What is this?"},
                    {"type": "image_url", "image_url": {"url": f"data:image/png;base64,{PNG}"}},
                ],
            },
            {
                "role": "assistant",
                "content": None,
                "tool_calls": [
                    {"id": "call_1", "type": "function", "function": {"name": "look", "arguments": '{"q": "x"}'}}
                ],
            },
            {"role": "tool", "tool_call_id": "call_1", "content": "a cat"},
        ],
        "tools": [
            {
                "type": "function",
                "function": {"name": "look", "parameters": {"type": "object", "properties": {"q": {"type": "string"}}}},
            }
        ],
        "tool_choice": "auto",
        "stream": True,
        "stream_options": {"include_usage": True},
        "vmx": _envelope(),
    },
]
RESPONSES_REQUESTS: list[dict[str, Any]] = [
    {
        "model": RESOURCE,
        "input": "Hello",
        "instructions": "Be brief.",
        "stream": True,
        "vmx": _envelope(),
    },
    {
        "model": RESOURCE,
        "input": [
            {"type": "message", "role": "user", "content": [{"type": "input_text", "text": "Weather?"}]},
            {"type": "function_call", "call_id": "call_1", "name": "weather", "arguments": "{}"},
            {"type": "function_call_output", "call_id": "call_1", "output": "sunny"},
        ],
        "tools": [{"type": "function", "name": "weather", "parameters": {"type": "object"}, "strict": False}],
        "reasoning": {"effort": "low"},
        "store": False,
        "stream": False,
        "vmx": _envelope(safety_identifier="user-1"),
    },
]


def _for_the_gateway(body: dict[str, Any], *, stream: bool) -> dict[str, Any]:
    """A sample Anthropic request addressed to this gateway's resource, with an envelope."""
    body = copy.deepcopy(body)
    body.update(model=RESOURCE, stream=stream, vmx=_envelope(parallel_tool_calls=True))
    return body


MESSAGES_REQUESTS = [
    _for_the_gateway(body, stream=index % 2 == 0) for index, body in enumerate(ANTHROPIC_REQUESTS.values())
]


def _only_under(document: dict[str, Any], keys: tuple[str, ...]) -> st.SearchStrategy[dict[str, Any]]:
    """`document` with mutations only below `keys` (the envelope and `stream`): random paths in a
    large body would seldom land there."""
    rest = {key: value for key, value in document.items() if key not in keys}
    parts = {key: document[key] for key in keys if key in document}
    # A mutated root that is no longer an object stands for "none of these fields".
    return mutate(parts).map(
        lambda mutated_parts: {**rest, **(mutated_parts if isinstance(mutated_parts, dict) else {})}
    )


def envelope_mutated(documents: list[dict[str, Any]]) -> st.SearchStrategy[dict[str, Any]]:
    return st.sampled_from(documents).flatmap(lambda document: _only_under(document, ("vmx", "stream")))


# The envelope's header forms. Values are what HTTP can carry: Latin-1 without control characters
# (servers refuse anything else before the gateway sees it).
header_text = st.one_of(
    st.text(st.characters(min_codepoint=0x20, max_codepoint=0xFF, exclude_characters="\x7f"), max_size=40),
    st.integers(min_value=200, max_value=2_000).map("c".__mul__),
)
envelope_headers = st.dictionaries(
    st.one_of(
        st.just("x-vmx-correlation-id"),
        st.sampled_from(["team", "ticket", "", "x" * 80]).map("x-vmx-metadata-".__add__),
        st.text("abcxyz0189-_", min_size=1, max_size=20).map("x-vmx-metadata-".__add__),
    ),
    header_text,
    max_size=40,
)


# ------------------------------------------------------------------------------------------------
# The exchange and what a client checks


ENDPOINTS = {
    "/v1/chat/completions": "openai",
    "/v1/responses": "openai",
    "/v1/messages": "anthropic",
    "/v1/messages/count_tokens": "anthropic",
}
STREAM_ENDS = {
    "/v1/chat/completions": b"data: [DONE]",
    "/v1/responses": b"event: response.completed",
    "/v1/messages": b'data: {"type":"message_stop"}',
}
ANSWERS = {
    "/v1/chat/completions": ("object", "chat.completion"),
    "/v1/responses": ("object", "response"),
    "/v1/messages": ("type", "message"),
}


async def _post(path: str, body: Any, headers: dict[str, str]) -> tuple[int, str, bytes]:
    # Through the project's ASGI application, edge included (host check, the key before the body,
    # the bounded body read), as a server would call it.
    from vmx_project.asgi import application

    transport = httpx2.ASGITransport(app=application)  # type: ignore[arg-type]  # ASGI's looser mapping types
    async with httpx2.AsyncClient(transport=transport, base_url="http://127.0.0.1") as client:
        response = await client.post(
            path,
            content=orjson.dumps(body),
            # Header values as the bytes a client sends (UTF-8), whatever the strategy produced.
            headers={
                **{name.encode(): value.encode() for name, value in headers.items()},
                b"content-type": b"application/json",
                b"authorization": f"Bearer {KEY}".encode(),
            },
        )
    return response.status_code, response.headers.get("content-type", ""), response.content


async def assert_answered_properly(path: str, body: Any, headers: dict[str, str] | None = None) -> int:
    """Send `body`; check what a client would notice; return the status."""
    status, content_type, content = await _post(path, body, headers or {})
    streamed = content_type.startswith("text/event-stream")
    if currently_in_test_context():  # shown by --hypothesis-show-statistics
        event(f"{path} {status}{' stream' if streamed else ''}")
    # The mock upstream never fails: a 5xx can only be the gateway's own.
    assert status < 500, f"{status} for {path}: {content[:1000]!r}"
    if streamed:
        assert status == 200
        last_event = content.rstrip(b"\n").rsplit(b"\n\n", 1)[-1]
        assert STREAM_ENDS[path] in last_event, f"the stream did not end properly: {content[-1000:]!r}"
        return status
    parsed = orjson.loads(content)
    assert isinstance(parsed, dict), content[:1000]
    if status >= 400:
        error = parsed.get("error")
        assert isinstance(error, dict), content[:1000]
        assert isinstance(error.get("message"), str) and isinstance(error.get("type"), str), content[:1000]
        if ENDPOINTS[path] == "anthropic":
            assert parsed["type"] == "error", content[:1000]
    elif path == "/v1/messages/count_tokens":
        assert isinstance(parsed.get("input_tokens"), int), content[:1000]
    else:
        key, kind = ANSWERS[path]
        assert parsed.get(key) == kind, content[:1000]
    return status


# ------------------------------------------------------------------------------------------------
# Properties


@pytest.mark.parametrize(
    ("path", "body"),
    [
        *(pytest.param("/v1/chat/completions", body, id=f"chat-{i}") for i, body in enumerate(CHAT_REQUESTS)),
        *(pytest.param("/v1/responses", body, id=f"responses-{i}") for i, body in enumerate(RESPONSES_REQUESTS)),
        *(pytest.param("/v1/messages", body, id=f"messages-{i}") for i, body in enumerate(MESSAGES_REQUESTS)),
    ],
)
async def test_the_unmutated_requests_are_answered(gateway, path, body):
    assert await assert_answered_properly(path, body) == 200


@EXAMPLES
@given(body=mutated(CHAT_REQUESTS))
async def test_chat_completions_never_answers_5xx(gateway, body):
    await assert_answered_properly("/v1/chat/completions", body)


@EXAMPLES
@given(body=mutated(RESPONSES_REQUESTS))
async def test_responses_never_answers_5xx(gateway, body):
    await assert_answered_properly("/v1/responses", body)


@EXAMPLES
@given(body=mutated(MESSAGES_REQUESTS), path=st.sampled_from(["/v1/messages", "/v1/messages/count_tokens"]))
async def test_messages_never_answers_5xx(gateway, body, path):
    await assert_answered_properly(path, body)


@EXAMPLES
@given(
    request=st.one_of(
        envelope_mutated(CHAT_REQUESTS).map(lambda body: ("/v1/chat/completions", body)),
        envelope_mutated(RESPONSES_REQUESTS).map(lambda body: ("/v1/responses", body)),
        envelope_mutated(MESSAGES_REQUESTS).map(lambda body: ("/v1/messages", body)),
    ),
    headers=envelope_headers,
)
async def test_a_damaged_envelope_or_stream_flag_never_gets_5xx(gateway, request, headers):
    path, body = request
    await assert_answered_properly(path, body, headers)
