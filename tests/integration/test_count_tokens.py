"""`POST /v1/messages/count_tokens` through the running gateway, with the Anthropic SDK: it is a
request like any other to the limits (it counts as one; it reserves no tokens or cost, since it
calls no model) and to the audit (one record, endpoint `messages.count_tokens`)."""

from __future__ import annotations

import secrets
from typing import Any

import anthropic
import pytest

from tests.fakes.openai_upstream import Reply
from tests.integration.test_capacity import (
    _apply,
    _away_from_a_minute_boundary,
    _name,
    _remove_what_the_test_created,
)

__all__ = ["_remove_what_the_test_created"]  # the autouse clean-up of the shared gateway

USER = [{"role": "user", "content": "How long is this?"}]
COUNTED = Reply(body={"object": "response.input_tokens", "input_tokens": 7})


def _limited_key(gateway: Any, tmp_path: Any, capacity: list[dict[str, Any]]) -> tuple[str, anthropic.Anthropic]:
    name, secret = _name("ct-key"), "vmx-" + secrets.token_hex(16)
    _apply(gateway, tmp_path, {"apiKeys": [{"name": name, "key": secret, "resources": "*", "capacity": capacity}]})
    return name, anthropic.Anthropic(api_key=secret, base_url=gateway.base_url, max_retries=0)


def test_count_tokens_counts_against_a_request_limit(gateway, upstream, tmp_path):
    _away_from_a_minute_boundary()
    name, client = _limited_key(gateway, tmp_path, [{"period": "minute", "requests": 2}])
    upstream.reply("POST", "/a/v1/responses/input_tokens", COUNTED, COUNTED, COUNTED)
    for _ in range(2):
        assert client.messages.count_tokens(model="default", messages=USER).input_tokens == 7
    with pytest.raises(anthropic.RateLimitError) as refused:
        client.messages.count_tokens(model="default", messages=USER)
    assert f"API key '{name}' reached its limit of 2 requests per minute" in str(refused.value)
    assert len(upstream.calls("/a/v1/responses/input_tokens")) == 2  # the refused one reached no upstream
    # ... and a request it made to count shares the same counter.
    with pytest.raises(anthropic.RateLimitError):
        client.messages.create(model="default", max_tokens=10, messages=USER)


def test_count_tokens_reserves_no_tokens(gateway, upstream, tmp_path):
    """A token budget is for what models read and write: counting calls none, so a budget smaller
    than the prompt still lets it be counted, and spends nothing of it."""
    _, client = _limited_key(gateway, tmp_path, [{"period": "day", "tokens": 5}])
    upstream.reply("POST", "/a/v1/responses/input_tokens", COUNTED, COUNTED)
    prompt = [{"role": "user", "content": "x" * 400}]
    for _ in range(2):
        assert client.messages.count_tokens(model="default", messages=prompt).input_tokens == 7


def test_count_tokens_is_audited(gateway, upstream):
    upstream.reply("POST", "/a/v1/responses/input_tokens", COUNTED)
    client = anthropic.Anthropic(api_key="vmx-it-all-0123456789abcdef", base_url=gateway.base_url, max_retries=0)
    correlation = "ct-" + secrets.token_hex(4)
    raw = client.messages.with_raw_response.count_tokens(
        model="default", messages=USER, extra_headers={"x-vmx-correlation-id": correlation}
    )
    assert raw.headers["x-vmx-correlation-id"] == correlation
    record = gateway.audit(raw.headers["x-vmx-request-id"])
    assert record["endpoint"] == "messages.count_tokens"
    assert (record["status_code"], record["resource"], record["api_key"]) == (200, "default", "all")
    assert record["correlation_id"] == correlation
    assert record["connection"] == "up-a" and record["attempts"][0]["tries"] == 1
    assert record["usage"]["total_tokens"] == 0  # counting is not using

    # A rejected count is audited too, as every rejection after authentication is.
    with pytest.raises(anthropic.NotFoundError) as missing:
        client.messages.count_tokens(model="no-such-resource", messages=USER)
    request_id = missing.value.response.headers["x-vmx-request-id"]
    assert gateway.audit(request_id)["status_code"] == 404
