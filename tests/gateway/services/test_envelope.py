"""The `vmx` envelope: removed from the body, validated, a 400 when malformed."""

from __future__ import annotations

import pytest

from gateway.core.errors import InvalidRequestError
from gateway.services.envelope import envelope_extract, request_body_parse


def test_envelope_is_removed_and_validated():
    body = request_body_parse(
        b'{"model": "m", "vmx": {"correlationId": "c", "providerArgs": {"user": "u"}, "timeoutMs": 5, "future": 1}, "__vmx_passthrough": {}}'
    )
    envelope = envelope_extract(body, {"X-Vmx-Metadata-Team": "a", "x-vmx-correlation-id": "ignored"})
    assert body == {"model": "m"}
    assert (envelope.correlation_id, envelope.metadata, envelope.provider_args, envelope.timeout_ms) == (
        "c",
        {"team": "a"},
        {"user": "u"},
        5,
    )


@pytest.mark.parametrize(
    "vmx",
    [
        "x",
        {"correlationId": 1},
        {"metadata": []},
        {"metadata": {"a": 1}},
        {"providerArgs": []},
        {"timeoutMs": 0},
        {"timeoutMs": True},
        {"correlationId": "x" * 300},
    ],
)
def test_malformed_envelope_is_a_400(vmx):
    with pytest.raises(InvalidRequestError):
        envelope_extract({"model": "m", "vmx": vmx}, {})
