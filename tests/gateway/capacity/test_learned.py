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
