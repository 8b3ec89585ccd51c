"""Learned upstream limits: reading the upstream's reset durations."""

from __future__ import annotations

import pytest

from gateway.capacity.learned import duration_ms


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


# ------------------------------------------------------------------------------------------------
# An upstream's reset is capped, absurd ones are survived, and an operator can clear a mark.


def _observe(connection: str, model: str, reset: str) -> None:
    from gateway.capacity.learned import upstream_limits_observe

    upstream_limits_observe(
        connection=connection,
        model=model,
        headers={"x-ratelimit-remaining-requests": "0", "x-ratelimit-reset-requests": reset},
        publish=False,
    )


def test_a_reset_of_a_year_marks_the_pair_for_minutes_only(settings):
    import time

    from gateway.capacity.learned import upstream_limit_until

    settings.VMX_UPSTREAM_LIMIT_MAX_WAIT_SECONDS = 120
    _observe("year-conn", "gpt-year", "8760h")
    until = upstream_limit_until(connection="year-conn", model="gpt-year", now=time.time())
    assert until is not None and until <= time.time() + 120


@pytest.mark.django_db
def test_an_absurd_reset_is_saved_with_the_rest_of_the_batch():
    from gateway.capacity.learned import upstream_limits_save
    from gateway.models import UpstreamRateLimit

    _observe("absurd-conn", "gpt-absurd", "9" * 31 + "h")  # past any date a database holds
    _observe("absurd-conn", "gpt-sane", "2s")
    assert upstream_limits_save() >= 2
    rows = {row.model: row for row in UpstreamRateLimit.objects.filter(connection="absurd-conn")}
    assert set(rows) == {"gpt-absurd", "gpt-sane"}
    assert rows["gpt-absurd"].exhausted_until is not None


@pytest.mark.django_db
def test_clearing_a_mark_lets_requests_through_again():
    import time

    from gateway.capacity.learned import upstream_limit_clear, upstream_limit_until, upstream_limits_save
    from gateway.models import UpstreamRateLimit

    _observe("clear-conn", "gpt-clear", "5m")
    upstream_limits_save()
    assert upstream_limit_until(connection="clear-conn", model="gpt-clear", now=time.time()) is not None
    assert upstream_limit_clear(connection="clear-conn", model="gpt-clear") is True
    assert upstream_limit_until(connection="clear-conn", model="gpt-clear", now=time.time()) is None
    row = UpstreamRateLimit.objects.get(connection="clear-conn", model="gpt-clear")
    assert row.exhausted_until is None and row.cleared_at is not None
    assert upstream_limit_clear(connection="clear-conn", model="gpt-unknown") is False
