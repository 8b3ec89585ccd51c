"""Routing's pure pieces: when a 429 tells the client to come back."""

from __future__ import annotations

import pytest

from gateway.services.routing import retry_after_ms


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
