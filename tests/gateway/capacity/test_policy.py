"""The pure capacity policy: windows, counter identity, estimates, messages and Retry-After."""

from __future__ import annotations

import math
from datetime import UTC, datetime

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gateway.capacity.gate import capacity_error
from gateway.capacity.policy import (
    Estimate,
    Scope,
    Used,
    counter_key,
    counters_for,
    estimated_tokens,
    exceeded,
    exceeded_message,
    window,
)
from gateway.core.errors import BudgetExceededError, CapacityExceededError
from gateway.core.limits import CapacityLimit, Metric


def ts(text: str) -> float:
    return datetime.fromisoformat(text).replace(tzinfo=UTC).timestamp()


@pytest.mark.parametrize(
    ("period", "now", "start", "end"),
    [
        ("minute", "2026-12-01 05:16:27.5", "2026-12-01 05:16:00", "2026-12-01 05:17:00"),
        ("hour", "2026-12-01 05:16:27", "2026-12-01 05:00:00", "2026-12-01 06:00:00"),
        ("day", "2026-12-31 23:59:59", "2026-12-31 00:00:00", "2027-01-01 00:00:00"),
        # 2026-12-01 is a Tuesday: the week started on Monday 30 November.
        ("week", "2026-12-01 05:16:27", "2026-11-30 00:00:00", "2026-12-07 00:00:00"),
        ("week", "2026-11-30 00:00:00", "2026-11-30 00:00:00", "2026-12-07 00:00:00"),
        ("month", "2028-02-15 12:00:00", "2028-02-01 00:00:00", "2028-03-01 00:00:00"),
        ("month", "2026-12-31 23:59:59", "2026-12-01 00:00:00", "2027-01-01 00:00:00"),
    ],
)
def test_windows_are_utc_calendar_periods(period, now, start, end):
    assert window(period, ts(now)) == (int(ts(start)), int(ts(end)))


def test_lifetime_never_ends():
    assert window("lifetime", ts("2026-12-01 00:00:00")) == (0, None)


def test_limits_of_one_scope_period_and_dimension_share_a_counter():
    limits = [
        CapacityLimit(period="minute", requests=60),
        CapacityLimit(period="minute", tokens=10_000),
        CapacityLimit(period="minute", requests=5, dimension="metadata", dimension_field="user"),
        CapacityLimit(period="day", cost_usd=25),
    ]
    counters = counters_for(
        Scope("resource", "default"), limits, now=ts("2026-12-01 05:16:27"), source_ip="10.0.0.1", metadata={}
    )
    assert len(counters) == 3
    shared = counters[0]
    assert (shared.max_requests, shared.max_tokens, shared.max_cost_nanos) == (60, 10_000, None)
    per_user = counters[1]
    assert per_user.dimension_value == "unknown"  # no `user` in the metadata
    assert per_user.key.endswith(":m.user=unknown")
    assert counters[2].max_cost_nanos == 25_000_000_000


def test_scopes_and_values_never_share_counters():
    limit = CapacityLimit(period="hour", requests=1, dimension="source-ip")
    now = ts("2026-12-01 05:16:27")
    keys = {
        counters_for(Scope(kind, name), [limit], now=now, source_ip=ip, metadata={})[0].key
        for kind in ("api_key", "resource", "connection")
        for name in ("a", "a:b")
        for ip in ("10.0.0.1", "10.0.0.2")
    }
    assert len(keys) == 12


def test_very_long_dimension_values_keep_distinct_bounded_keys():
    limit = CapacityLimit(period="hour", requests=1, dimension="metadata", dimension_field="team")
    now = ts("2026-12-01 05:16:27")
    a, b = (
        counters_for(Scope("resource", "r"), [limit], now=now, source_ip=None, metadata={"team": "x" * 500 + tail})[0]
        for tail in ("1", "2")
    )
    assert a.key != b.key and len(a.key) <= 250 and len(b.key) <= 250


def test_admission_arithmetic_counts_this_request():
    [counter] = counters_for(
        Scope("api_key", "ci"),
        [CapacityLimit(period="minute", requests=60, tokens=1000, cost_usd=0.01)],
        now=0,
        source_ip=None,
        metadata={},
    )
    assert exceeded(counter, Used(requests=59, tokens=500, cost_nanos=0), Estimate(tokens=500)) == Metric(0)
    assert exceeded(counter, Used(requests=60), Estimate()) == Metric.REQUESTS
    assert exceeded(counter, Used(tokens=501), Estimate(tokens=500)) == Metric.TOKENS
    assert exceeded(counter, Used(cost_nanos=9_000_000), Estimate(cost_nanos=1_000_001)) == Metric.COST


def test_estimates_count_text_not_identifiers_or_inline_payloads():
    body = {
        "model": "a-very-long-resource-name-that-is-not-text",
        "messages": [
            {"role": "user", "content": [{"type": "text", "text": "x" * 400}]},
            {
                "role": "user",
                "content": [{"type": "image_url", "image_url": {"url": "data:image/png;base64," + "A" * 10_000}}],
            },
        ],
        "max_completion_tokens": 300,
    }
    input_tokens, output_tokens = estimated_tokens(body)
    assert output_tokens == 300
    assert 100 <= input_tokens <= 110  # the 400 characters of text, "user" twice, "text", "image_url"


def test_a_prompt_that_looks_like_a_data_url_is_still_text():
    """Payloads are told by the field that holds them: a prompt beginning `data:` is counted."""
    prompt = "data: " + "x" * 394
    for body in (
        {"model": "m", "messages": [{"role": "user", "content": prompt}]},
        {"model": "m", "input": prompt},
        {"model": "m", "input": [{"role": "user", "content": [{"type": "input_text", "text": prompt}]}]},
    ):
        assert estimated_tokens(body)[0] >= 100, body


def test_messages_name_the_scope_the_limit_and_the_period():
    [counter] = counters_for(
        Scope("api_key", "ci"), [CapacityLimit(period="minute", requests=60)], now=0, source_ip=None, metadata={}
    )
    assert exceeded_message(counter, Metric.REQUESTS) == "API key 'ci' reached its limit of 60 requests per minute"
    [budget] = counters_for(
        Scope("resource", "default"), [CapacityLimit(period="month", cost_usd=200)], now=0, source_ip=None, metadata={}
    )
    assert exceeded_message(budget, Metric.COST) == "Resource 'default' reached its budget of $200.00 per month"
    [per_user] = counters_for(
        Scope("resource", "default"),
        [CapacityLimit(period="minute", requests=20, dimension="metadata", dimension_field="user")],
        now=0,
        source_ip=None,
        metadata={"user": "alice"},
    )
    assert exceeded_message(per_user, Metric.REQUESTS) == (
        "Resource 'default' reached its limit of 20 requests per minute per metadata 'user' for 'alice'"
    )


def test_the_429_tells_when_to_come_back():
    now = ts("2026-12-01 05:16:27.2")
    [minute] = counters_for(
        Scope("api_key", "ci"), [CapacityLimit(period="minute", requests=1)], now=now, source_ip=None, metadata={}
    )
    error = capacity_error([(minute, Metric.REQUESTS)], now=now)
    assert isinstance(error, CapacityExceededError) and error.status_code == 429 and error.code == "capacity_exceeded"
    assert error.headers["retry-after"] == "33" and error.headers["retry-after-ms"] == "33000"
    assert "x-should-retry" not in error.headers

    [month] = counters_for(
        Scope("api_key", "ci"), [CapacityLimit(period="month", cost_usd=1)], now=now, source_ip=None, metadata={}
    )
    budget = capacity_error([(month, Metric.COST)], now=now)
    assert isinstance(budget, BudgetExceededError) and budget.code == "budget_exceeded"
    assert int(budget.headers["retry-after"]) == int(ts("2027-01-01 00:00:00") - now) + 1
    assert budget.headers["x-should-retry"] == "false"  # longer than any SDK waits

    [lifetime] = counters_for(
        Scope("api_key", "ci"), [CapacityLimit(period="lifetime", tokens=5)], now=now, source_ip=None, metadata={}
    )
    forever = capacity_error([(lifetime, Metric.TOKENS)], now=now)
    assert "retry-after" not in forever.headers and forever.headers["x-should-retry"] == "false"


@given(st.floats(min_value=0, max_value=4_102_444_800, allow_nan=False))  # 1970 to 2100
def test_windows_hold_the_moment_and_start_where_their_calendar_says(now):
    moment = datetime.fromtimestamp(math.floor(now), UTC)
    for period in ("minute", "hour", "day", "week", "month"):
        start, end = window(period, now)
        assert end is not None and start <= now < end
        first = datetime.fromtimestamp(start, UTC)
        assert (first.second, first.microsecond) == (0, 0)
        if period != "minute":
            assert first.minute == 0
        if period in ("day", "week", "month"):
            assert first.hour == 0
        if period == "week":
            assert first.weekday() == 0 and (moment - first).days < 7
        if period == "month":
            assert first.day == 1 and (first.year, first.month) == (moment.year, moment.month)


def test_default_environment_counters_keep_the_keys_of_before_and_others_carry_their_id():
    """DESIGN.md 2.15: default/default's budgets survive the upgrade; another environment's
    key `ci` never shares a counter with it."""
    limit = CapacityLimit("minute", requests=1)
    before = counter_key(Scope("api_key", "ci"), limit, 0, "")
    assert before == "vmx:{cap}:k:ci:minute:0:all="
    other = counter_key(Scope("api_key", "ci", "0f" * 16), limit, 0, "")
    assert other == "vmx:{cap}:" + "0f" * 16 + ":k:ci:minute:0:all="
    assert len({before, other, counter_key(Scope("api_key", "ci", "1e" * 16), limit, 0, "")}) == 3
