"""Limits and budgets through the running gateway (DESIGN.md 2.10), with the real SDKs as clients.

The session's gateway runs two workers: on the SQLite run its counters are in the database file,
on the PostgreSQL run in Redis; either way every test here crosses both workers. Each test names
its own keys, resources and connections, because Redis keeps counters for their whole window.

The failure shapes users of a well-known peer keep reporting are each reproduced here:
concurrent requests all passing one check (LiteLLM #34732), reservations that leak into phantom
"budget exceeded" (#27639, #6288); the multi-instance ones (#27735 stale per-pod spend, #28247
re-seeding multiplied by pods) are in test_capacity_instances.py.
"""

from __future__ import annotations

import concurrent.futures
import secrets
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import anthropic
import httpx2
import openai
import pytest
import yaml

from gateway.capacity.policy import estimated_tokens
from tests.fakes.openai_upstream import CHAT_USAGE, Reply
from tests.integration.conftest import Gateway
from tests.integration.server import manage

MESSAGES = [{"role": "user", "content": "How many requests may I send?"}]
RESET_SECONDS = 3
SETTLE_SECONDS = 1.0
"""Config refresh is 0.2 s in the session's gateway: two periods and a margin reach every worker."""


def _name(prefix: str) -> str:
    return f"{prefix}-{secrets.token_hex(3)}"


_created: list[dict[str, Any]] = []


def _apply(gateway: Gateway, tmp_path: Path, document: dict[str, Any]) -> None:
    path = tmp_path / f"{secrets.token_hex(4)}.yaml"
    path.write_text(yaml.safe_dump(document))
    manage(gateway.env, "vmx_apply", str(path))
    _created.append(document)
    time.sleep(SETTLE_SECONDS)


@pytest.fixture(autouse=True)
def _remove_what_the_test_created(gateway: Gateway) -> Any:
    """The session's gateway is shared: leave its configuration as the other tests expect it."""
    yield
    names = {
        kind: [item["name" if kind != "pricing" else "model"] for doc in _created for item in doc.get(kind, [])]
        for kind in ("resources", "apiKeys", "connections", "pricing")
    }
    _created.clear()
    script = (
        "from connections.models import AIResource, APIKey, Connection, PricingEntry; "
        f"AIResource.objects.filter(name__in={names['resources']!r}).delete(); "
        f"APIKey.objects.filter(name__in={names['apiKeys']!r}).delete(); "
        f"Connection.objects.filter(name__in={names['connections']!r}).delete(); "
        f"PricingEntry.objects.filter(model__in={names['pricing']!r}).delete()"
    )
    manage(gateway.env, "shell", "-v", "0", "-c", script)


def _connection(name: str, upstream: Any, path: str) -> dict[str, Any]:
    base = f"http://127.0.0.1:{upstream.port}/{path}/v1"
    return {"name": name, "provider": "openai", "config": {"apiKey": f"sk-{name}-secret", "baseURL": base}}


PRICE = 1000.0
"""USD per 1M tokens, input and output alike: 0.001 $ a token keeps budgets easy to reason about."""


def _estimated_cost(body: dict[str, Any]) -> float:
    """What the gateway reserves for `body` at PRICE (its text / 4 + its max tokens)."""
    input_tokens, output_tokens = estimated_tokens(body)
    return (input_tokens + output_tokens) * PRICE / 1e6


def _away_from_a_minute_boundary(margin: float = 8.0) -> None:
    """A test counting per minute must not straddle two windows."""
    left = 60 - time.time() % 60
    if left < margin:
        time.sleep(left + 0.2)


@pytest.fixture
def limited(gateway: Gateway, upstream: Any, tmp_path: Path) -> dict[str, str]:
    """A key limited to 2 requests per minute, on a resource of its own."""
    names = {"key": _name("cap-key"), "resource": _name("cap-res"), "secret": "vmx-" + secrets.token_hex(16)}
    _apply(
        gateway,
        tmp_path,
        {
            "resources": [{"name": names["resource"], "model": {"connection": "up-a", "model": "gpt-4.1"}}],
            "apiKeys": [
                {
                    "name": names["key"],
                    "key": names["secret"],
                    "resources": [names["resource"]],
                    "capacity": [{"period": "minute", "requests": 2}],
                }
            ],
        },
    )
    return names


def test_a_key_over_its_limit_gets_429_in_each_protocol(gateway, upstream, limited):
    _away_from_a_minute_boundary()
    client = openai.OpenAI(api_key=limited["secret"], base_url=f"{gateway.base_url}/v1", max_retries=0)
    for _ in range(2):
        client.chat.completions.create(model=limited["resource"], messages=MESSAGES)
    calls = len(upstream.calls("/a/v1/chat/completions"))

    with pytest.raises(openai.RateLimitError) as caught:
        client.chat.completions.create(model=limited["resource"], messages=MESSAGES)
    error = caught.value
    assert error.code == "capacity_exceeded"
    assert error.body["message"] == f"API key '{limited['key']}' reached its limit of 2 requests per minute."
    retry_after = int(error.response.headers["retry-after"])
    assert 1 <= retry_after <= 60
    assert int(error.response.headers["retry-after-ms"]) == retry_after * 1000
    request_id = error.response.headers["x-vmx-request-id"]

    messages = anthropic.Anthropic(api_key=limited["secret"], base_url=gateway.base_url, max_retries=0)
    with pytest.raises(anthropic.RateLimitError) as anthropic_caught:
        messages.messages.create(model=limited["resource"], max_tokens=50, messages=MESSAGES)
    assert anthropic_caught.value.body["error"]["type"] == "rate_limit_error"
    assert "reached its limit of 2 requests per minute" in anthropic_caught.value.message
    assert anthropic_caught.value.response.headers["retry-after"]

    assert len(upstream.calls("/a/v1/chat/completions")) == calls  # nothing reached the upstream
    record = gateway.audit(request_id)
    assert record["status_code"] == 429 and record["error_type"] == "capacity_exceeded"
    assert record["attempts"] == []


def test_the_openai_sdk_waits_for_the_window_and_then_succeeds(gateway, upstream, tmp_path):
    """The SDK's own retry honours Retry-After: a client over a per-minute limit just waits."""
    key, secret = _name("cap-wait"), "vmx-" + secrets.token_hex(16)
    _apply(
        gateway,
        tmp_path,
        {
            "apiKeys": [
                {"name": key, "key": secret, "resources": "*", "capacity": [{"period": "minute", "requests": 1}]}
            ]
        },
    )
    left = 60 - time.time() % 60
    if left < 2:  # both requests must fall in one window
        time.sleep(left + 0.1)
        left = 60 - time.time() % 60
    if left > 6:  # be close to the end of a window, so the wait is short
        time.sleep(left - 4)
    client = openai.OpenAI(api_key=secret, base_url=f"{gateway.base_url}/v1", max_retries=2)
    client.chat.completions.create(model="default", messages=MESSAGES)
    started = time.monotonic()
    client.chat.completions.create(model="default", messages=MESSAGES)
    assert time.monotonic() - started >= 0.5  # it waited for the next minute rather than failing


def test_per_user_limits_count_each_metadata_value(gateway, upstream, tmp_path):
    _away_from_a_minute_boundary()
    resource = _name("cap-users")
    _apply(
        gateway,
        tmp_path,
        {
            "resources": [
                {
                    "name": resource,
                    "model": {"connection": "up-a", "model": "gpt-4.1"},
                    "capacity": [
                        {"period": "minute", "requests": 1, "dimension": "metadata", "dimensionField": "user"}
                    ],
                }
            ]
        },
    )
    client = openai.OpenAI(api_key="vmx-it-all-0123456789abcdef", base_url=f"{gateway.base_url}/v1", max_retries=0)

    refusals: list[str] = []

    def ask(user: str | None) -> int:
        extra = {"vmx": {"metadata": {"user": user}}} if user else {}
        try:
            client.chat.completions.create(model=resource, messages=MESSAGES, extra_body=extra)
        except openai.RateLimitError as exc:
            refusals.append(exc.message)
            return 429
        return 200

    assert [ask("alice"), ask("bob"), ask("alice"), ask(None), ask(None)] == [200, 200, 429, 200, 429]
    assert "per metadata 'user' for 'alice'" in refusals[0]
    assert "per metadata 'user' for 'unknown'" in refusals[1]  # no `user`: counted under `unknown`


def test_a_budget_admits_at_most_what_it_is_worth_under_fifty_concurrent_requests(gateway, upstream, tmp_path):
    """LiteLLM #34732: concurrent requests all pass the same check. Here the reservations make
    fifty simultaneous requests against a budget worth ten admit exactly ten."""
    resource, path, model = _name("cap-budget"), _name("budget"), _name("priced")
    body = {"model": resource, "messages": MESSAGES, "max_tokens": 30}
    estimate = _estimated_cost(body)
    connection = _name("cap-conn")
    _apply(
        gateway,
        tmp_path,
        {
            "connections": [_connection(connection, upstream, path)],
            "pricing": [{"model": model, "input": PRICE, "output": PRICE}],
            "resources": [
                {
                    "name": resource,
                    "model": {"connection": connection, "model": model},
                    "capacity": [{"period": "month", "costUsd": round(estimate * 10.5, 6)}],
                }
            ],
        },
    )
    # Every call is slow, so all fifty are in flight together.
    upstream.reply("POST", f"/{path}/v1/chat/completions", *[Reply(delay=1.5) for _ in range(50)])

    def post(_: int) -> httpx2.Response:
        return httpx2.post(
            f"{gateway.base_url}/v1/chat/completions",
            json=body,
            headers={"Authorization": "Bearer vmx-it-all-0123456789abcdef"},
            timeout=30,
        )

    with concurrent.futures.ThreadPoolExecutor(max_workers=50) as pool:
        responses = list(pool.map(post, range(50)))
    statuses = [r.status_code for r in responses]
    assert statuses.count(200) == 10, statuses
    assert statuses.count(429) == 40
    refused = next(r for r in responses if r.status_code == 429).json()["error"]
    assert refused["code"] == "budget_exceeded"
    assert refused["message"].startswith(f"Resource '{resource}' reached its budget of $")
    assert len(upstream.calls(f"/{path}/v1/chat/completions")) == 10

    # The ten ended costing more than estimated (the fake reports 52 tokens each): their real cost
    # replaced the reservations, so the budget is spent and says so, on every worker.
    spent = CHAT_USAGE["total_tokens"] * PRICE / 1e6 * 10
    time.sleep(0.5)
    again = [post(0) for _ in range(4)]
    assert {r.status_code for r in again} == {429}
    usage = _admin_usage(gateway, "resource", resource)
    assert f"${spent:,.4f}" in usage, usage


def test_failed_and_abandoned_requests_never_leak_their_reservations(gateway, upstream, tmp_path):
    """LiteLLM #27639, #6288: reservations that leak turn into phantom 'budget exceeded'. Here a
    budget worth three and a half requests serves ten that fail upstream (free), then three
    streams abandoned before their usage report (charged their reservation), and no more."""
    key, secret, path, model = _name("cap-leak"), "vmx-" + secrets.token_hex(16), _name("leaky"), _name("priced")
    body = {"messages": MESSAGES, "max_tokens": 30}
    estimate = _estimated_cost({"model": "x", **body})
    conn = _name("cap-conn")
    _apply(
        gateway,
        tmp_path,
        {
            "connections": [_connection(conn, upstream, path)],
            "pricing": [{"model": model, "input": PRICE, "output": PRICE}],
            "apiKeys": [
                {
                    "name": key,
                    "key": secret,
                    "resources": "*",
                    "capacity": [{"period": "day", "costUsd": round(estimate * 3.5, 6)}],
                }
            ],
        },
    )
    failing = {"error": {"message": "boom", "type": "server_error", "param": None, "code": None}}
    upstream.reply("POST", f"/{path}/v1/chat/completions", *[Reply(status=500, body=failing) for _ in range(10)])
    client = openai.OpenAI(api_key=secret, base_url=f"{gateway.base_url}/v1", max_retries=0)
    for _ in range(10):
        with pytest.raises(openai.InternalServerError):
            client.chat.completions.create(model=f"{conn}/{model}", **body)

    assert _admin_usage(gateway, "api_key", key).startswith("$0.0000 / ")  # failures cost nothing

    # Streams the client walks away from after their first chunk, before any usage report: each
    # is charged what it reserved, once: neither let off as free nor left holding room.
    slow = [
        b'data: {"id":"c","object":"chat.completion.chunk","choices":[{"index":0,"delta":{"content":"hi"}}]}\n\n',
        5.0,
    ]
    upstream.reply("POST", f"/{path}/v1/chat/completions", *[Reply(events=list(slow)) for _ in range(3)])
    for _ in range(3):
        with httpx2.stream(
            "POST",
            f"{gateway.base_url}/v1/chat/completions",
            json={"model": f"{conn}/{model}", "stream": True, **body},
            headers={"Authorization": f"Bearer {secret}"},
            timeout=30,
        ) as stream:
            assert stream.status_code == 200
            next(stream.iter_raw())
    time.sleep(1.0)  # the gateway notices the clients left and settles
    assert _admin_usage(gateway, "api_key", key).startswith(f"${3 * estimate:,.4f} / ")
    with pytest.raises(openai.RateLimitError) as caught:  # half a request's worth is left
        client.chat.completions.create(model=f"{conn}/{model}", **body)
    assert caught.value.code == "budget_exceeded"


def test_tokens_are_counted_from_the_real_usage_of_streams(gateway, upstream, tmp_path):
    """The estimate is replaced by what the stream reported: a chat stream (52 tokens) and an
    Anthropic stream (50, from the Responses usage) fill a 110-token day; the next is refused."""
    key, secret = _name("cap-tokens"), "vmx-" + secrets.token_hex(16)
    _apply(
        gateway,
        tmp_path,
        {"apiKeys": [{"name": key, "key": secret, "resources": "*", "capacity": [{"period": "day", "tokens": 110}]}]},
    )
    chat = openai.OpenAI(api_key=secret, base_url=f"{gateway.base_url}/v1", max_retries=0)
    for _ in chat.chat.completions.create(model="default", messages=MESSAGES, stream=True):
        pass
    messages = anthropic.Anthropic(api_key=secret, base_url=gateway.base_url, max_retries=0)
    with messages.messages.stream(model="default", max_tokens=5, messages=MESSAGES) as stream:
        stream.until_done()
    time.sleep(0.5)  # the settlement follows the end of the stream
    assert _admin_usage(gateway, "api_key", key).startswith("102 / 110 tokens")
    with pytest.raises(openai.RateLimitError) as caught:
        chat.chat.completions.create(model="default", messages=MESSAGES, max_tokens=5)
    assert f"API key '{key}' reached its limit of 110 tokens per day." in caught.value.message


def test_a_connection_over_its_limit_is_skipped_for_the_fallback(gateway, upstream, tmp_path):
    _away_from_a_minute_boundary()
    first, second, resource = _name("cap-first"), _name("cap-second"), _name("cap-two-orgs")
    _apply(
        gateway,
        tmp_path,
        {
            "connections": [
                {**_connection(first, upstream, "a"), "capacity": [{"period": "minute", "requests": 1}]},
                _connection(second, upstream, "b"),
            ],
            "resources": [
                {
                    "name": resource,
                    "model": {"connection": first, "model": "gpt-4.1"},
                    "fallbackModels": [{"connection": second, "model": "gpt-4o-mini"}],
                }
            ],
        },
    )
    client = openai.OpenAI(api_key="vmx-it-all-0123456789abcdef", base_url=f"{gateway.base_url}/v1", max_retries=0)
    one = client.chat.completions.with_raw_response.create(model=resource, messages=MESSAGES)
    assert one.headers["x-vmx-connection"] == first
    two = client.chat.completions.with_raw_response.create(model=resource, messages=MESSAGES)
    assert two.headers["x-vmx-connection"] == second and two.headers["x-vmx-attempts"] == "2"
    record = gateway.audit(two.headers["x-vmx-request-id"])
    skipped, answered = record["attempts"]
    assert skipped["connection"] == first and skipped["error"] == "capacity_exceeded" and skipped["tries"] == 0
    assert skipped["status_code"] is None
    assert answered["connection"] == second and answered["error"] is None


def test_every_connection_full_is_a_429(gateway, upstream, tmp_path):
    _away_from_a_minute_boundary()
    only, resource = _name("cap-only"), _name("cap-single")
    _apply(
        gateway,
        tmp_path,
        {
            "connections": [{**_connection(only, upstream, "a"), "capacity": [{"period": "minute", "requests": 1}]}],
            "resources": [{"name": resource, "model": {"connection": only, "model": "gpt-4.1"}}],
        },
    )
    client = openai.OpenAI(api_key="vmx-it-all-0123456789abcdef", base_url=f"{gateway.base_url}/v1", max_retries=0)
    client.chat.completions.create(model=resource, messages=MESSAGES)
    with pytest.raises(openai.RateLimitError) as caught:
        client.chat.completions.create(model=resource, messages=MESSAGES)
    assert caught.value.code == "capacity_exceeded"
    assert f"Connection '{only}' reached its limit of 1 requests per minute" in caught.value.message


def test_learned_upstream_limits_send_requests_to_the_fallback_until_the_reset(gateway, upstream, tmp_path):
    """OpenAI said `x-ratelimit-remaining-requests: 0`: the next requests skip that connection x
    model until the reset instead of spending a call on a 429; the admin shows what was seen."""
    path, model, resource = _name("learn"), _name("gpt-learned"), _name("cap-learned")
    first = _name("cap-learn")
    _apply(
        gateway,
        tmp_path,
        {
            "connections": [_connection(first, upstream, path)],
            "resources": [
                {
                    "name": resource,
                    "model": {"connection": first, "model": model},
                    "fallbackModels": [{"connection": "up-b", "model": "gpt-4o-mini"}],
                }
            ],
        },
    )
    headers = {
        "x-ratelimit-limit-requests": "500",
        "x-ratelimit-remaining-requests": "0",
        "x-ratelimit-reset-requests": f"{RESET_SECONDS}s",
        "x-ratelimit-limit-tokens": "30000",
        "x-ratelimit-remaining-tokens": "29000",
        "x-ratelimit-reset-tokens": "2ms",
    }
    upstream.reply("POST", f"/{path}/v1/chat/completions", Reply(headers=headers))
    client = openai.OpenAI(api_key="vmx-it-all-0123456789abcdef", base_url=f"{gateway.base_url}/v1", max_retries=0)
    learned = client.chat.completions.with_raw_response.create(model=resource, messages=MESSAGES)
    assert learned.headers["x-vmx-connection"] == first
    learned_at = time.monotonic()
    # Both workers skip it (shared through Redis, or learned by each from its own answers: on the
    # SQLite run without Redis only the worker that saw the header knows, so look at several).
    routed = []
    for _ in range(6):
        raw = client.chat.completions.with_raw_response.create(model=resource, messages=MESSAGES)
        routed.append((raw.headers["x-vmx-connection"], raw.headers["x-vmx-request-id"]))
    assert time.monotonic() - learned_at < RESET_SECONDS
    connections = [connection for connection, _ in routed]
    assert "up-b" in connections
    assert len(upstream.calls(f"/{path}/v1/chat/completions")) == 1 + connections.count(first)
    time.sleep(max(0.0, RESET_SECONDS + 0.2 - (time.monotonic() - learned_at)))
    back = client.chat.completions.with_raw_response.create(model=resource, messages=MESSAGES)
    assert back.headers["x-vmx-connection"] == first
    request_id = next(request_id for connection, request_id in routed if connection == "up-b")
    skipped = gateway.audit(request_id)["attempts"][0]
    assert skipped["connection"] == first and skipped["error"] == "upstream_rate_limited" and skipped["tries"] == 0

    deadline = time.monotonic() + 10
    while True:
        seen = manage(
            gateway.env,
            "shell",
            "-v",
            "0",
            "-c",
            "from gateway.models import UpstreamRateLimit as U; "
            f"print([(u.limit_requests, u.remaining_requests, u.limit_tokens) for u in U.objects.filter(model='{model}')])",
        ).stdout.strip()
        if seen != "[]":
            break
        assert time.monotonic() < deadline, "the last limits seen were never saved"
        time.sleep(0.5)
    assert seen == "[(500, 0, 30000)]"


def _admin_usage(gateway: Gateway, kind: str, name: str) -> str:
    """What the admin shows next to the first limit of `name` (the same function renders it)."""
    script = (
        "from connections.models import CapacityEntry; "
        "from gateway.capacity.usage import capacity_usage_text; "
        "from connections.selectors import config_snapshot; "
        f"w = config_snapshot(); s = w.environment_named(); limits = {{'resource': lambda: s.resources['{name}'].capacity, "
        f"'api_key': lambda: next(k for k in w.api_keys_by_digest.values() if k.name == '{name}').capacity, "
        f"'connection': lambda: s.connection_capacity['{name}']}}['{kind}'](); "
        f"print(capacity_usage_text(scope_kind='{kind}', scope_name='{name}', limit=limits[0]))"
    )
    return manage(gateway.env, "shell", "-v", "0", "-c", script).stdout.strip()


def test_requests_without_limits_count_nothing_anywhere(gateway, upstream):
    """The session's key `all`, resource `default` and connection `up-a` have no limits: their
    requests leave no counter in the store (and made no store call to leave one)."""
    client = openai.OpenAI(api_key="vmx-it-all-0123456789abcdef", base_url=f"{gateway.base_url}/v1", max_retries=0)
    for _ in range(3):
        client.chat.completions.create(model="default", messages=MESSAGES)
    script = (  # a scan is fine here: it looks for what should not be anywhere
        "from gateway.capacity.stores.factory import redis_sync_client, redis_url; "
        "from gateway.models import CapacityCounter; "
        "prefixes = ('vmx:{cap}:k:all:', 'vmx:{cap}:r:default:', 'vmx:{cap}:c:up-a:'); "
        "print(sum(len(list(redis_sync_client(redis_url()).scan_iter(match=p + '*'))) if redis_url() "
        "else CapacityCounter.objects.filter(key__startswith=p).count() for p in prefixes))"
    )
    assert manage(gateway.env, "shell", "-v", "0", "-c", script).stdout.strip() == "0"


def test_a_reset_of_a_year_skips_a_connection_for_minutes_and_an_operator_clears_it(gateway, upstream, tmp_path):
    """OpenAI said `x-ratelimit-remaining-requests: 0` with a reset of `8760h` (and an absurd
    token reset): the pair is skipped for at most VMX_UPSTREAM_LIMIT_MAX_WAIT_SECONDS, the saved
    row survives the absurd value, and DELETE on the management API sends requests to it again on
    every worker."""
    path, model, resource = _name("year"), _name("gpt-year"), _name("cap-year")
    first = _name("cap-year")
    _apply(
        gateway,
        tmp_path,
        {
            "connections": [_connection(first, upstream, path)],
            "resources": [
                {
                    "name": resource,
                    "model": {"connection": first, "model": model},
                    "fallbackModels": [{"connection": "up-b", "model": "gpt-4o-mini"}],
                }
            ],
        },
    )
    headers = {
        "x-ratelimit-limit-requests": "500",
        "x-ratelimit-remaining-requests": "0",
        "x-ratelimit-reset-requests": "8760h",
        "x-ratelimit-remaining-tokens": "0",
        "x-ratelimit-reset-tokens": "9" * 30 + "h",
    }
    upstream.reply("POST", f"/{path}/v1/chat/completions", Reply(headers=headers), Reply())
    client = openai.OpenAI(api_key="vmx-it-all-0123456789abcdef", base_url=f"{gateway.base_url}/v1", max_retries=0)
    assert (
        client.chat.completions.with_raw_response.create(model=resource, messages=MESSAGES).headers["x-vmx-connection"]
        == first
    )
    token = _operator_token(gateway)
    api = httpx2.Client(base_url=f"{gateway.base_url}/api/v1", headers={"Authorization": f"Token {token}"})
    deadline = time.monotonic() + 10
    while True:
        rows = [row for row in api.get("/capacity/upstream-limits/").json()["results"] if row["model"] == model]
        if rows:
            break
        assert time.monotonic() < deadline, "the limits seen were never saved (the absurd reset lost the batch?)"
        time.sleep(0.5)
    until = datetime.fromisoformat(rows[0]["exhaustedUntil"].replace("Z", "+00:00"))
    assert until <= datetime.now(UTC) + timedelta(seconds=300 + 5)  # the default cap, not a year
    answered = client.chat.completions.with_raw_response.create(model=resource, messages=MESSAGES)
    routed = [answered.headers["x-vmx-connection"]]
    assert api.delete(f"/capacity/upstream-limits/{first}/{model}/").status_code == 204
    # Every worker hears it: at once through Redis, else at its next save (every 5 s).
    deadline = time.monotonic() + 12
    while True:
        answered = client.chat.completions.with_raw_response.create(model=resource, messages=MESSAGES)
        routed.append(answered.headers["x-vmx-connection"])
        if routed[-2:] == [first, first]:
            break
        assert time.monotonic() < deadline, f"still skipped after the clear: {routed}"
        time.sleep(0.3)
    assert api.delete(f"/capacity/upstream-limits/{first}/never-seen/").status_code == 404


def _operator_token(gateway: Gateway) -> str:
    script = (
        "from django.contrib.auth.models import User; from connections.api.auth import management_token_create; "
        "user, _ = User.objects.get_or_create(username='capacity-ops', defaults={'is_staff': True, 'is_superuser': True}); "
        "print(management_token_create(user=user)[1])"
    )
    return manage(gateway.env, "shell", "-v", "0", "-c", script).stdout.strip()
