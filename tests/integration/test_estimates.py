"""Admission estimates are taken from what goes upstream (DESIGN.md 2.10), through the running
gateway: concurrent requests against a token budget admit what the budget is worth, whatever the
prompt starts with and wherever the request's `max_tokens` comes from (the client's body, the
resource's `defaultArgs`, `vmx.providerArgs`, or the converted body of `/v1/messages`).

Each case sends its requests together against a slow upstream, so they are all in flight at
once: only the reservations can keep them within the budget.
"""

from __future__ import annotations

import concurrent.futures
from pathlib import Path
from typing import Any

import httpx2
import pytest

from tests.fakes.openai_upstream import Reply
from tests.integration.conftest import ALL_KEY, Gateway
from tests.integration.test_capacity import _apply, _connection, _name, _remove_what_the_test_created

__all__ = ["_remove_what_the_test_created"]  # the autouse clean-up of the shared gateway

CONCURRENT = 20
BUDGET = 2_000
PROMPT = "data: " + "the quarterly numbers, line by line; " * 54  # ~2,000 characters: ~500 tokens


def _concurrent(gateway: Gateway, path: str, body: dict[str, Any]) -> list[int]:
    def post(_: int) -> int:
        response = httpx2.post(
            f"{gateway.base_url}{path}", json=body, headers={"Authorization": f"Bearer {ALL_KEY}"}, timeout=30
        )
        return response.status_code

    with concurrent.futures.ThreadPoolExecutor(max_workers=CONCURRENT) as pool:
        return list(pool.map(post, range(CONCURRENT)))


def _budgeted_resource(
    gateway: Gateway, upstream: Any, tmp_path: Path, *, route: str, default_args: dict[str, Any] | None = None
) -> tuple[str, str]:
    """A resource with a day's budget of BUDGET tokens on a slow connection of its own: (name, path)."""
    resource, path, connection = _name("est-res"), _name("est"), _name("est-conn")
    entry: dict[str, Any] = {
        "name": resource,
        "model": {"connection": connection, "model": "gpt-4.1"},
        "capacity": [{"period": "day", "tokens": BUDGET}],
    }
    if default_args:
        entry["defaultArgs"] = default_args
    _apply(gateway, tmp_path, {"connections": [_connection(connection, upstream, path)], "resources": [entry]})
    upstream.reply("POST", f"/{path}/v1/{route}", *[Reply(delay=1.5) for _ in range(CONCURRENT)])
    return resource, path


def test_a_prompt_that_begins_with_data_is_counted(gateway, upstream, tmp_path):
    """A prompt starting `data:` once dropped out of the estimate: twenty such requests all
    passed a budget worth three of them."""
    resource, path = _budgeted_resource(gateway, upstream, tmp_path, route="chat/completions")
    body = {"model": resource, "messages": [{"role": "user", "content": PROMPT}]}
    statuses = _concurrent(gateway, "/v1/chat/completions", body)
    assert statuses.count(200) == 3, statuses  # ~505 tokens each: three fit in 2,000
    assert statuses.count(429) == CONCURRENT - 3
    assert len(upstream.calls(f"/{path}/v1/chat/completions")) == 3


@pytest.mark.parametrize("source", ["providerArgs", "defaultArgs"])
def test_max_tokens_from_the_envelope_or_the_resource_is_reserved(gateway, upstream, tmp_path, source):
    defaults = {"max_tokens": 900} if source == "defaultArgs" else None
    resource, path = _budgeted_resource(gateway, upstream, tmp_path, route="chat/completions", default_args=defaults)
    body: dict[str, Any] = {"model": resource, "messages": [{"role": "user", "content": "Hello"}]}
    if source == "providerArgs":
        body["vmx"] = {"providerArgs": {"max_tokens": 900}}
    statuses = _concurrent(gateway, "/v1/chat/completions", body)
    assert statuses.count(200) == 2, statuses  # 900 + a few tokens each: two fit in 2,000
    assert statuses.count(429) == CONCURRENT - 2
    sent = upstream.calls(f"/{path}/v1/chat/completions")
    assert len(sent) == 2 and sent[0].json()["max_tokens"] == 900


def test_messages_are_estimated_from_the_converted_body(gateway, upstream, tmp_path):
    """On /v1/messages the upstream gets `max_output_tokens` from `providerArgs` over the converted
    body: that is what is reserved, not the client's `max_tokens`."""
    resource, path = _budgeted_resource(gateway, upstream, tmp_path, route="responses")
    body = {
        "model": resource,
        "max_tokens": 20,
        "messages": [{"role": "user", "content": "Hello"}],
        "vmx": {"providerArgs": {"max_output_tokens": 900}},
    }
    statuses = _concurrent(gateway, "/v1/messages", body)
    assert statuses.count(200) == 2, statuses  # 900 + a few tokens each: two fit in 2,000
    assert statuses.count(429) == CONCURRENT - 2
    sent = upstream.calls(f"/{path}/v1/responses")
    assert len(sent) == 2 and sent[0].json()["max_output_tokens"] == 900
