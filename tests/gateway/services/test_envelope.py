"""The `vmx` envelope: removed from the body, validated, a 400 when malformed."""

from __future__ import annotations

import pytest

from gateway.core.errors import InvalidRequestError
from gateway.services.envelope import envelope_extract, envelope_headers, request_body_parse


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


def test_the_headers_alone_give_what_the_envelope_would_accept():
    """For the audit of a request refused before its body: each header value held to the
    envelope's limits, the rest left out, never an error."""
    headers = {
        "x-vmx-correlation-id": "run-42",
        "x-vmx-metadata-team": "caf\xc3\xa9",  # UTF-8 sent as header bytes: "café"
        "x-vmx-metadata-long": "x" * 513,
        "x-vmx-metadata-" + "k" * 65: "v",
        "x-vmx-metadata-bad": "\xff",  # not UTF-8
        "x-vmx-metadata-bell": "a\x07",
        "x-vmx-metadata-": "no key",
        **{f"x-vmx-metadata-n{i}": "v" for i in range(40)},
    }
    correlation_id, metadata = envelope_headers(headers)
    assert correlation_id == "run-42"
    assert metadata["team"] == "café"
    assert not {"long", "k" * 65, "bad", "bell", ""} & set(metadata)
    assert len(metadata) == 32
    assert envelope_headers({"x-vmx-correlation-id": "c" * 257}) == ("", {})
