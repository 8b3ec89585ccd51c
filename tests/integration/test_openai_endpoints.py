"""/v1/chat/completions, /v1/responses and /v1/models through the real openai SDK.

The gateway runs under gunicorn with uvicorn workers; the upstream is the fake OpenAI server on
loopback (tests/fakes). Each test scripts the upstream and asserts what a client would notice:
the answer, the headers, the errors, and the audit record.
"""

from __future__ import annotations

import json
import threading
import time

import httpx2
import openai
import pytest

from tests.fakes.openai_upstream import CHAT_USAGE, Reply, chat_stream, responses_stream, sse
from tests.integration.conftest import ALL_KEY, LIMITED_KEY, MAX_BODY, post_declaring_length


@pytest.fixture
def client(gateway):
    with openai.OpenAI(api_key=ALL_KEY, base_url=f"{gateway.base_url}/v1", max_retries=0) as sdk:
        yield sdk


@pytest.fixture
def http(gateway):
    with httpx2.Client(base_url=gateway.base_url, timeout=30) as raw:
        yield raw


MESSAGES = [{"role": "user", "content": "Hello gateway"}]


def error_reply(
    status: int, message: str = "boom", headers: dict[str, str] | None = None, code: str | None = None
) -> Reply:
    kind = "server_error" if status >= 500 else "invalid_request_error"
    return Reply(
        status=status,
        body={"error": {"message": message, "type": kind, "param": None, "code": code}},
        headers=headers or {},
    )


# -- forwarding ----------------------------------------------------------------------------------


def test_chat_is_forwarded_verbatim_with_envelopes_stripped(client, upstream):
    extra = {
        "prediction": {"type": "content", "content": "Hello"},
        "modalities": ["text", "audio"],
        "audio": {"voice": "alloy", "format": "wav"},
        "web_search_options": {"search_context_size": "low"},
        "logit_bias": {"1234": -100},
        "reasoning_effort": "low",
        "some_future_field": {"nested": [1, 2, 3]},
        "vmx": {"correlationId": "run-42", "metadata": {"team": "growth"}},
        "__vmx_passthrough": {"ignored": True},
    }
    completion = client.chat.completions.create(model="default", messages=MESSAGES, extra_body=extra)
    assert completion.choices[0].message.content == "echo: Hello gateway"
    [sent] = upstream.calls("/a/v1/chat/completions")
    body = sent.json()
    assert body == {
        "model": "gpt-4.1",
        "messages": MESSAGES,
        **{k: v for k, v in extra.items() if k not in ("vmx", "__vmx_passthrough")},
    }
    assert sent.headers["authorization"] == "Bearer sk-upstream-up-a"


def test_model_ids_and_unicode_pass_untouched(client, upstream):
    text = "Grüße 👋 — ünïcödé"
    completion = client.chat.completions.create(
        model="up-b/some-future-model-2027", messages=[{"role": "user", "content": text}]
    )
    assert completion.choices[0].message.content == f"echo: {text}"
    assert upstream.calls("/b/v1/chat/completions")[0].json()["model"] == "some-future-model-2027"


def test_default_args_under_client_body_under_provider_args(client, upstream):
    client.chat.completions.create(
        model="with-defaults",
        messages=MESSAGES,
        temperature=0.9,
        extra_body={"vmx": {"providerArgs": {"user": "u-1", "service_tier": "scale", "logit_bias": {"1": -1}}}},
    )
    body = upstream.calls("/a/v1/chat/completions")[0].json()
    assert body["temperature"] == 0.9  # client over defaultArgs
    assert body["max_tokens"] == 50  # defaultArgs kept
    assert body["user"] == "u-1"  # providerArgs over defaultArgs
    assert body["service_tier"] == "scale"
    assert body["logit_bias"] == {"1": -1}
    assert "vmx" not in body


def test_responses_non_stream(client, upstream):
    response = client.responses.create(
        model="default", input="Hi there", reasoning={"effort": "low"}, include=["reasoning.encrypted_content"]
    )
    assert response.output_text == "echo: Hi there"
    body = upstream.calls("/a/v1/responses")[0].json()
    assert body == {
        "model": "gpt-4.1",
        "input": "Hi there",
        "reasoning": {"effort": "low"},
        "include": ["reasoning.encrypted_content"],
    }


def test_responses_web_search_annotations_reach_the_client(client, upstream):
    citation = {"type": "url_citation", "start_index": 0, "end_index": 4, "url": "https://example.com/a", "title": "A"}
    body = {
        "id": "resp_x",
        "object": "response",
        "created_at": 1,
        "status": "completed",
        "model": "gpt-4.1",
        "output": [
            {
                "id": "ws_1",
                "type": "web_search_call",
                "status": "completed",
                "action": {"type": "search", "query": "q"},
            },
            {
                "id": "msg_1",
                "type": "message",
                "status": "completed",
                "role": "assistant",
                "content": [{"type": "output_text", "text": "Text", "annotations": [citation]}],
            },
        ],
        "usage": {
            "input_tokens": 1,
            "output_tokens": 1,
            "total_tokens": 2,
            "input_tokens_details": {"cached_tokens": 0},
            "output_tokens_details": {"reasoning_tokens": 0},
        },
        "parallel_tool_calls": True,
        "tool_choice": "auto",
        "tools": [],
    }
    upstream.reply("POST", "/a/v1/responses", Reply(body=body))
    response = client.responses.create(model="default", input="q", tools=[{"type": "web_search"}])
    assert response.output[1].content[0].annotations[0].url == "https://example.com/a"


# -- streaming -----------------------------------------------------------------------------------


def test_chat_stream_is_relayed_byte_for_byte(http, upstream):
    events = chat_stream("gpt-4.1", "one two three", include_usage=True)
    upstream.reply("POST", "/a/v1/chat/completions", Reply(events=events))
    body = {"model": "default", "messages": MESSAGES, "stream": True, "stream_options": {"include_usage": True}}
    with http.stream(
        "POST", "/v1/chat/completions", json=body, headers={"Authorization": f"Bearer {ALL_KEY}"}
    ) as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        assert response.headers["cache-control"] == "no-cache"
        assert response.headers["x-accel-buffering"] == "no"
        received = b"".join(response.iter_raw())
    assert received == b"".join(e for e in events if isinstance(e, bytes))


@pytest.mark.parametrize("path", ["/v1/chat/completions", "/v1/responses"])
def test_several_events_in_one_upstream_chunk_are_all_relayed(http, upstream, path):
    is_chat = path.endswith("completions")
    events = (
        chat_stream("gpt-4.1", "one two three", include_usage=True) if is_chat else responses_stream("gpt-4.1", "a b c")
    )
    whole = b"".join(e for e in events if isinstance(e, bytes))
    upstream.reply("POST", "/a" + path, Reply(events=[whole[:-5], whole[-5:]]))  # the first write holds nearly all
    body = {
        "model": "default",
        "stream": True,
        **({"messages": MESSAGES, "stream_options": {"include_usage": True}} if is_chat else {"input": "x"}),
    }
    with http.stream("POST", path, json=body, headers={"x-api-key": ALL_KEY}) as response:
        assert b"".join(response.iter_raw()) == whole


def test_chat_stream_usage_is_counted_even_when_the_client_did_not_ask(client, upstream, gateway):
    stream = client.chat.completions.with_raw_response.create(model="default", messages=MESSAGES, stream=True)
    chunks = list(stream.parse())
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == "echo: Hello gateway "
    assert all(c.usage is None and c.choices for c in chunks), "the usage-only chunk the gateway asked for is hidden"
    sent = upstream.calls("/a/v1/chat/completions")[0].json()
    assert sent["stream_options"] == {"include_usage": True}
    record = gateway.audit(stream.headers["x-vmx-request-id"])
    assert record["stream"] is True
    assert record["usage"]["total_tokens"] == CHAT_USAGE["total_tokens"]


def test_chat_stream_helper(client, upstream):
    with client.chat.completions.stream(model="default", messages=MESSAGES) as stream:
        final = stream.get_final_completion()
    assert final.choices[0].message.content == "echo: Hello gateway "


def test_responses_stream_is_relayed_byte_for_byte(http, upstream):
    events = responses_stream("gpt-4.1", "a b")
    events.insert(2, b": keep-alive comment\n\n")
    upstream.reply("POST", "/a/v1/responses", Reply(events=events))
    with http.stream(
        "POST", "/v1/responses", json={"model": "default", "input": "x", "stream": True}, headers={"x-api-key": ALL_KEY}
    ) as response:
        received = b"".join(response.iter_raw())
    assert received == b"".join(e for e in events if isinstance(e, bytes))


def test_responses_stream_helper_and_stream_true(client, upstream, gateway):
    with client.responses.stream(model="default", input="streamed") as stream:
        final = stream.get_final_response()
    assert final.output_text == "echo: streamed "
    raw = client.responses.with_raw_response.create(model="default", input="again", stream=True)
    kinds = [event.type for event in raw.parse()]
    assert kinds[0] == "response.created" and kinds[-1] == "response.completed"
    record = gateway.audit(raw.headers["x-vmx-request-id"])
    assert record["endpoint"] == "responses"
    assert record["usage"]["reasoning_tokens"] == 7 and record["usage"]["cached_tokens"] == 6


def test_accept_event_stream_on_a_json_request_is_not_a_406(http, upstream):
    response = http.post(
        "/v1/chat/completions",
        json={"model": "default", "messages": MESSAGES},
        headers={"Authorization": f"Bearer {ALL_KEY}", "Accept": "text/event-stream"},
    )
    assert response.status_code == 200
    assert response.json()["choices"][0]["message"]["content"] == "echo: Hello gateway"


# -- retries and fallback ------------------------------------------------------------------------


def test_max_retries_of_the_entry_is_the_sdk_retry_count(client, upstream):
    upstream.reply("POST", "/a/v1/chat/completions", error_reply(500), error_reply(503))
    raw = client.chat.completions.with_raw_response.create(model="retrying", messages=MESSAGES)
    assert raw.parse().choices[0].message.content == "echo: Hello gateway"
    assert len(upstream.calls("/a/v1/chat/completions")) == 3  # two failures, then the retry that worked
    assert raw.headers["x-vmx-attempts"] == "1"


def test_max_retries_exhausted_gives_the_upstream_error(client, upstream):
    upstream.reply("POST", "/a/v1/chat/completions", *[error_reply(500, "still down")] * 3)
    with pytest.raises(openai.InternalServerError) as info:
        client.chat.completions.create(model="retrying", messages=MESSAGES)
    assert info.value.body["message"] == "still down"
    assert len(upstream.calls("/a/v1/chat/completions")) == 3


@pytest.mark.parametrize("status", [500, 429, 400])
def test_fallback_to_the_next_model_on_an_upstream_error(client, upstream, gateway, status):
    upstream.reply("POST", "/a/v1/chat/completions", error_reply(status, f"primary failed with {status}"))
    raw = client.chat.completions.with_raw_response.create(model="fallback", messages=MESSAGES)
    assert raw.parse().model == "gpt-4o-mini"
    assert raw.headers["x-vmx-connection"] == "up-b"
    assert raw.headers["x-vmx-model"] == "gpt-4o-mini"
    assert raw.headers["x-vmx-attempts"] == "2"
    assert upstream.calls("/b/v1/chat/completions")[0].json()["model"] == "gpt-4o-mini"
    record = gateway.audit(raw.headers["x-vmx-request-id"])
    assert [(a["connection"], a["status_code"]) for a in record["attempts"]] == [("up-a", status), ("up-b", 200)]
    assert record["attempts"][0]["error"] == f"primary failed with {status}"
    assert (record["connection"], record["model"], record["status_code"]) == ("up-b", "gpt-4o-mini", 200)


def test_fallback_on_timeout(client, upstream, gateway):
    upstream.reply("POST", "/a/v1/chat/completions", Reply(delay=2.0))
    started = time.monotonic()
    raw = client.chat.completions.with_raw_response.create(model="slow-first", messages=MESSAGES)
    assert time.monotonic() - started < 1.9
    assert raw.headers["x-vmx-connection"] == "up-b"
    record = gateway.audit(raw.headers["x-vmx-request-id"])
    assert record["attempts"][0]["status_code"] is None
    assert "did not answer within 0.5 s" in record["attempts"][0]["error"]


def test_fallback_on_connect_error(client, upstream):
    raw = client.chat.completions.with_raw_response.create(model="dead-first", messages=MESSAGES)
    assert raw.headers["x-vmx-connection"] == "up-b"
    assert raw.headers["x-vmx-attempts"] == "2"


def test_only_timeout_left_is_a_504(client, upstream):
    upstream.reply("POST", "/a/v1/chat/completions", Reply(delay=2.0))
    upstream.reply("POST", "/b/v1/chat/completions", Reply(delay=2.0))
    with pytest.raises(openai.APIStatusError) as info:
        client.chat.completions.create(model="slow-first", messages=MESSAGES, extra_body={"vmx": {"timeoutMs": 300}})
    assert info.value.status_code == 504
    assert info.value.code == "upstream_timeout"


def test_unreachable_upstream_is_a_502(client):
    with pytest.raises(openai.APIStatusError) as info:
        client.chat.completions.create(model="dead/gpt-4.1", messages=MESSAGES)
    assert info.value.status_code == 502
    assert info.value.code == "upstream_unavailable"


def test_upstream_401_is_the_operators_problem_not_the_clients(client, upstream):
    upstream.reply(
        "POST",
        "/a/v1/chat/completions",
        error_reply(401, "Incorrect API key provided: sk-upst***-a", code="invalid_api_key"),
    )
    with pytest.raises(openai.APIStatusError) as info:
        client.chat.completions.create(model="default", messages=MESSAGES)
    assert info.value.status_code == 502
    assert info.value.code == "upstream_auth_failed"
    assert "connection 'up-a'" in info.value.message
    assert "sk-upstream" not in info.value.message


def test_stream_falls_back_when_the_first_event_is_an_error(client, upstream):
    error_event = sse({"error": {"message": "overloaded", "type": "server_error", "param": None, "code": None}})
    upstream.reply("POST", "/a/v1/chat/completions", Reply(events=[error_event]))
    raw = client.chat.completions.with_raw_response.create(model="fallback", messages=MESSAGES, stream=True)
    assert raw.headers["x-vmx-connection"] == "up-b"
    assert "".join(c.choices[0].delta.content or "" for c in raw.parse() if c.choices) == "echo: Hello gateway "


def test_responses_stream_falls_back_on_an_error_first_event(client, upstream):
    upstream.reply(
        "POST",
        "/a/v1/responses",
        Reply(
            events=[sse({"type": "error", "code": "server_error", "message": "nope", "sequence_number": 0}, "error")]
        ),
    )
    raw = client.responses.with_raw_response.create(model="fallback", input="x", stream=True)
    assert raw.headers["x-vmx-attempts"] == "2"
    assert [e.type for e in raw.parse()][-1] == "response.completed"


def test_chat_stream_cut_after_commit_ends_with_an_error_not_done(client, upstream, gateway):
    events = chat_stream("gpt-4.1", "one two three four", include_usage=True)[:3]
    upstream.reply("POST", "/a/v1/chat/completions", Reply(events=events, cut=True))
    raw = client.chat.completions.with_raw_response.create(model="fallback", messages=MESSAGES, stream=True)
    received = []

    def consume() -> None:
        for chunk in raw.parse():
            received.append(chunk)

    with pytest.raises(openai.APIError, match="upstream stream of connection 'up-a' broke"):
        consume()
    assert len(received) == 3  # what came before the cut reached the client
    assert not upstream.calls("/b/v1/chat/completions"), "no fallback after the commit point"
    record = gateway.audit(raw.headers["x-vmx-request-id"])
    assert record["error_type"] == "upstream_unavailable"
    assert "broke" in record["error_message"]


def test_responses_stream_silent_gap_becomes_an_error_event(http, upstream):
    events = responses_stream("gpt-4.1", "a b")
    upstream.reply("POST", "/a/v1/responses", Reply(events=[*events[:3], 1.5, *events[3:]]))
    body = {"model": "slow-first", "input": "x", "stream": True}
    with http.stream("POST", "/v1/responses", json=body, headers={"x-api-key": ALL_KEY}) as response:
        text = b"".join(response.iter_raw()).decode()
    assert text.count("event: response.") == 3
    last = text.strip().split("\n\n")[-1]
    assert last.startswith("event: error\ndata: ")
    payload = json.loads(last.split("data: ", 1)[1])
    assert payload["type"] == "error" and payload["code"] == "upstream_timeout" and payload["sequence_number"] == 3
    assert "response.completed" not in text


def test_client_disconnect_closes_the_upstream_stream(http, upstream, gateway):
    events = chat_stream("gpt-4.1", " ".join(["word"] * 60), include_usage=True)
    paced = []
    for event in events:
        paced += [event, 0.1]
    upstream.reply("POST", "/a/v1/chat/completions", Reply(events=paced))
    body = {"model": "default", "messages": MESSAGES, "stream": True}
    with http.stream("POST", "/v1/chat/completions", json=body, headers={"x-api-key": ALL_KEY}) as response:
        request_id = response.headers["x-vmx-request-id"]
        iterator = response.iter_raw()
        next(iterator)
    deadline = time.monotonic() + 5
    while not upstream.disconnects and time.monotonic() < deadline:
        time.sleep(0.05)
    assert upstream.disconnects == ["/a/v1/chat/completions"], "the upstream stream was not closed"
    record = gateway.audit(request_id)
    assert record["status_code"] == 499 and record["error_type"] == "client_disconnected"


# -- rate limits ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("headers", "retry_after", "retry_after_ms"),
    [
        ({"x-ratelimit-reset-requests": "1m30s", "x-ratelimit-reset-tokens": "250ms"}, "90", "90000"),
        ({"x-ratelimit-reset-requests": "7s", "x-ratelimit-reset-tokens": "2h"}, "7200", "7200000"),
        ({"retry-after-ms": "2500", "x-ratelimit-reset-requests": "1m"}, "3", "2500"),
        ({"retry-after": "4"}, "4", "4000"),
        ({"x-ratelimit-reset-tokens": "120ms"}, "1", "120"),
    ],
)
def test_429_carries_retry_after(http, upstream, headers, retry_after, retry_after_ms):
    limits = {
        "x-ratelimit-limit-requests": "500",
        "x-ratelimit-remaining-requests": "0",
        "x-request-id": "req_upstream_1",
    }
    upstream.reply(
        "POST",
        "/a/v1/chat/completions",
        error_reply(429, "Rate limit reached", {**headers, **limits}, code="rate_limit_exceeded"),
    )
    # A model of its own: the gateway learns from `remaining: 0` and would skip it for a while.
    model = f"up-a/limited-{retry_after}-{retry_after_ms}"
    response = http.post(
        "/v1/chat/completions", json={"model": model, "messages": MESSAGES}, headers={"x-api-key": ALL_KEY}
    )
    assert response.status_code == 429
    assert response.json()["error"]["code"] == "rate_limit_exceeded"
    assert response.headers["retry-after"] == retry_after
    assert response.headers["retry-after-ms"] == retry_after_ms
    assert response.headers["x-ratelimit-remaining-requests"] == "0"
    assert response.headers["x-request-id"] == "req_upstream_1"


def test_upstream_error_body_and_status_are_kept(client, upstream):
    upstream.reply(
        "POST",
        "/a/v1/chat/completions",
        error_reply(400, "context_length_exceeded: too long", code="context_length_exceeded"),
    )
    with pytest.raises(openai.BadRequestError) as info:
        client.chat.completions.create(model="default", messages=MESSAGES)
    assert info.value.code == "context_length_exceeded"
    assert info.value.body["message"] == "context_length_exceeded: too long"


def test_upstream_html_error_page_is_still_json(http, upstream):
    upstream.reply(
        "POST",
        "/a/v1/chat/completions",
        Reply(status=503, body=b"<html>bad gateway</html>", headers={"Content-Type": "text/html"}),
    )
    response = http.post(
        "/v1/chat/completions", json={"model": "default", "messages": MESSAGES}, headers={"x-api-key": ALL_KEY}
    )
    assert response.status_code == 503
    assert response.headers["content-type"] == "application/json"
    assert "<html>bad gateway</html>" in response.json()["error"]["message"]


# -- gateway-side checks -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("headers", "body", "status", "code"),
    [
        ({}, {"model": "default"}, 401, "invalid_api_key"),
        ({"Authorization": "Bearer vmx-wrong-key-000000000000"}, {"model": "default"}, 401, "invalid_api_key"),
        ({"x-api-key": ALL_KEY}, b"{not json", 400, None),
        ({"x-api-key": ALL_KEY}, b"[1, 2]", 400, None),
        ({"x-api-key": ALL_KEY}, {"messages": []}, 400, None),
        ({"x-api-key": ALL_KEY}, {"model": 42}, 400, None),
        ({"x-api-key": ALL_KEY}, {"model": "nope", "messages": []}, 404, "model_not_found"),
        ({"x-api-key": LIMITED_KEY}, {"model": "default", "messages": []}, 403, "model_not_allowed"),
        ({"x-api-key": LIMITED_KEY}, {"model": "up-a/gpt-4.1", "messages": []}, 403, "model_not_allowed"),
        ({"x-api-key": ALL_KEY}, {"model": "default", "vmx": "not-an-object"}, 400, None),
        ({"x-api-key": ALL_KEY}, {"model": "default", "vmx": {"timeoutMs": "soon"}}, 400, None),
        ({"x-api-key": ALL_KEY}, {"model": "default", "vmx": {"metadata": {"n": 1}}}, 400, None),
    ],
)
@pytest.mark.parametrize("path", ["/v1/chat/completions", "/v1/responses"])
def test_gateway_rejections_are_json_in_openai_shape(http, upstream, path, headers, body, status, code):
    content = body if isinstance(body, bytes) else json.dumps(body).encode()
    response = http.post(path, content=content, headers={"Content-Type": "application/json", **headers})
    assert response.status_code == status
    error = response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert error["code"] == code
    assert response.headers["x-vmx-request-id"].startswith("req_")
    assert not upstream.requests, "gateway-side rejections never reach the upstream"


def test_oversized_body_is_413_before_it_is_read(gateway, upstream):
    # Only the headers are sent: the answer must not wait for a body of that size.
    status, body = post_declaring_length(gateway.base_url, "/v1/chat/completions", {"x-api-key": ALL_KEY}, MAX_BODY + 1)
    assert status == 413
    assert body["error"]["type"] == "invalid_request_error" and body["error"]["code"] == "request_too_large"
    # ...but only for a known key: the key is checked first.
    status, body = post_declaring_length(gateway.base_url, "/v1/chat/completions", {}, MAX_BODY + 1)
    assert status == 401


def test_unknown_v1_route_and_wrong_method_are_json(http):
    assert http.get("/v1/embeddings-nope", headers={"x-api-key": ALL_KEY}).json()["error"]["code"] == "unknown_url"
    response = http.get("/v1/chat/completions", headers={"x-api-key": ALL_KEY})
    assert response.status_code == 405
    assert response.json()["error"]["code"] == "method_not_allowed"
    assert http.post("/v1/chat/completions/", headers={"x-api-key": ALL_KEY}).status_code == 404  # no redirect


def test_models_lists_what_the_key_may_use(gateway):
    with openai.OpenAI(api_key=LIMITED_KEY, base_url=f"{gateway.base_url}/v1") as limited:
        assert [m.id for m in limited.models.list()] == ["only-a"]
    with openai.OpenAI(api_key=ALL_KEY, base_url=f"{gateway.base_url}/v1") as everything:
        ids = [m.id for m in everything.models.list()]
    assert ids == sorted(
        [
            "default",
            "fallback",
            "retrying",
            "dead-first",
            "slow-first",
            "with-defaults",
            "only-a",
            "demo",
            "claude-sonnet-4-6",
        ]
    )
    with pytest.raises(openai.AuthenticationError):
        openai.OpenAI(api_key="wrong-key-000000000000", base_url=f"{gateway.base_url}/v1").models.list()


def test_limited_key_uses_its_resource(gateway, upstream):
    with openai.OpenAI(api_key=LIMITED_KEY, base_url=f"{gateway.base_url}/v1", max_retries=0) as limited:
        completion = limited.chat.completions.create(model="only-a", messages=MESSAGES)
    assert completion.model == "gpt-4.1-nano"


# -- headers and audit ---------------------------------------------------------------------------


def test_headers_and_audit_record(http, upstream, gateway):
    upstream.reply(
        "POST",
        "/a/v1/chat/completions",
        Reply(
            headers={"x-request-id": "req_up_9", "x-ratelimit-remaining-tokens": "999", "openai-processing-ms": "12"}
        ),
    )
    body = {
        "model": "default",
        "messages": MESSAGES,
        "vmx": {"correlationId": "run-42", "metadata": {"team": "growth", "env": "body-wins"}},
    }
    response = http.post(
        "/v1/chat/completions",
        json=body,
        headers={"Authorization": f"Bearer {ALL_KEY}", "x-vmx-metadata-env": "header", "x-vmx-metadata-region": "eu"},
    )
    assert response.status_code == 200
    headers = response.headers
    assert headers["x-vmx-correlation-id"] == "run-42"
    assert (headers["x-vmx-model"], headers["x-vmx-connection"], headers["x-vmx-attempts"]) == ("gpt-4.1", "up-a", "1")
    assert (headers["x-request-id"], headers["x-ratelimit-remaining-tokens"]) == ("req_up_9", "999")
    record = gateway.audit(headers["x-vmx-request-id"])
    assert set(record) == {
        "request_id",
        "created_at",
        "endpoint",
        "stream",
        "workspace",
        "environment",
        "api_key",
        "resource",
        "correlation_id",
        "metadata",
        "source_ip",
        "status_code",
        "error_type",
        "error_message",
        "duration_ms",
        "ttft_ms",
        "connection",
        "model",
        "attempts",
        "usage",
        "cost_usd",
    }
    assert record["endpoint"] == "chat.completions" and record["stream"] is False
    assert (record["api_key"], record["resource"], record["correlation_id"]) == ("all", "default", "run-42")
    assert record["metadata"] == {"team": "growth", "env": "body-wins", "region": "eu"}
    assert record["source_ip"] == "127.0.0.1"
    assert record["status_code"] == 200 and record["error_type"] is None
    assert record["duration_ms"] > 0 and record["ttft_ms"] is not None
    assert record["usage"] == {
        "input_tokens": 40,
        "cached_tokens": 8,
        "output_tokens": 12,
        "reasoning_tokens": 5,
        "audio_tokens": 5,
        "accepted_prediction_tokens": 4,
        "rejected_prediction_tokens": 1,
        "total_tokens": 52,
    }
    assert [set(a) for a in record["attempts"]] == [
        {"connection", "model", "status_code", "error", "duration_ms", "tries"}
    ]


def test_correlation_id_from_header(client, upstream):
    raw = client.chat.completions.with_raw_response.create(
        model="default", messages=MESSAGES, extra_headers={"x-vmx-correlation-id": "hdr-7"}
    )
    assert raw.headers["x-vmx-correlation-id"] == "hdr-7"


def test_failed_request_is_audited_with_its_error(client, upstream, gateway):
    upstream.reply("POST", "/a/v1/chat/completions", error_reply(400, "bad things", code="invalid_value"))
    with pytest.raises(openai.BadRequestError) as info:
        client.chat.completions.create(model="default", messages=MESSAGES)
    record = gateway.audit(info.value.response.headers["x-vmx-request-id"])
    assert (record["status_code"], record["error_type"], record["error_message"]) == (
        400,
        "invalid_value",
        "bad things",
    )


def test_usage_command_sums_tokens(client, upstream, gateway):
    from tests.integration.server import manage

    def totals() -> list[int]:
        time.sleep(1.2)  # let queued audit records reach the database
        out = manage(gateway.env, "vmx_usage", "--since", "1h", "--by", "model").stdout
        row = next((line for line in out.splitlines() if line.startswith("gpt-4.1-nano ")), None)
        return [int(n) for n in row.split()[1:-1]] if row else [0] * 7  # the last column is the cost

    before = totals()
    for _ in range(2):
        client.chat.completions.create(model="only-a", messages=MESSAGES)
    after = totals()
    # requests, input, cached, output, reasoning, audio, total
    assert [a - b for a, b in zip(after, before, strict=True)] == [2, 80, 16, 24, 10, 10, 104]


def test_mock_provider_answers_offline(client):
    completion = client.chat.completions.create(model="demo", messages=[{"role": "user", "content": "ping"}])
    assert "You said: ping" in completion.choices[0].message.content
    with client.responses.stream(model="demo", input="pong") as stream:
        assert "You said: pong" in stream.get_final_response().output_text


def test_concurrent_streams_do_not_mix(client, upstream):
    results = {}

    def run(n: int) -> None:
        with client.chat.completions.stream(model="default", messages=[{"role": "user", "content": f"n{n}"}]) as stream:
            results[n] = stream.get_final_completion().choices[0].message.content or ""

    threads = [threading.Thread(target=run, args=(n,)) for n in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert results == {n: f"echo: n{n} " for n in range(8)}
