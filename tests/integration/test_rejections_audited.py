"""A request refused before its body could be read is audited with what its `x-vmx-*` headers
said (DESIGN.md 2.5, 2.9, 2.13): the correlation id and metadata are what an operator searches
the audit by, and a client that sends a bad body is the one they are looking for. The header
values are held to the envelope's limits: one the envelope would refuse is left out."""

from __future__ import annotations

import secrets
from typing import Any

import httpx2
import pytest

from tests.integration.conftest import ALL_KEY, MAX_BODY, Gateway, post_declaring_length

AUTH = {"Authorization": f"Bearer {ALL_KEY}"}


def _headers(correlation: str) -> dict[str, str]:
    return {**AUTH, "x-vmx-correlation-id": correlation, "x-vmx-metadata-team": "growth", "x-vmx-metadata-run": "7"}


def _assert_audited_with_headers(gateway: Gateway, correlation: str, status: int, endpoint: str) -> dict[str, Any]:
    record = gateway.audit_by(correlation_id=correlation)
    assert (record["status_code"], record["endpoint"], record["api_key"]) == (status, endpoint, "all")
    assert record["metadata"] == {"team": "growth", "run": "7"}
    return record


BAD_BODIES = {
    "not JSON": b'{"model": "default", "messages": [',
    "not an object": b'["default"]',
    "no model": b'{"messages": []}',
    "a NUL in metadata": b'{"model": "default", "messages": [], "vmx": {"metadata": {"user": "a\\u0000b"}}}',
    "vmx not an object": b'{"model": "default", "messages": [], "vmx": "run-1"}',
    "too many metadata keys": (
        b'{"model": "default", "messages": [], "vmx": {"metadata": {'
        + b", ".join(b'"k%d": "v"' % i for i in range(40))
        + b"}}}"
    ),
}


@pytest.mark.parametrize(
    ("path", "endpoint"),
    [("/v1/chat/completions", "chat.completions"), ("/v1/responses", "responses"), ("/v1/messages", "messages")],
)
@pytest.mark.parametrize("case", sorted(BAD_BODIES))
def test_a_body_refused_before_its_envelope_is_audited_with_the_headers(gateway, path, endpoint, case):
    correlation = f"bad-body-{secrets.token_hex(4)}"
    response = httpx2.post(f"{gateway.base_url}{path}", content=BAD_BODIES[case], headers=_headers(correlation))
    assert response.status_code == 400, response.text
    assert response.headers["x-vmx-correlation-id"] == correlation
    record = _assert_audited_with_headers(gateway, correlation, 400, endpoint)
    assert record["request_id"] == response.headers["x-vmx-request-id"]


@pytest.mark.parametrize(("path", "endpoint"), [("/v1/responses", "responses"), ("/v1/messages", "messages")])
def test_a_body_refused_by_its_declared_length_is_audited_with_the_headers(gateway, path, endpoint):
    correlation = f"too-large-{secrets.token_hex(4)}"
    status, _ = post_declaring_length(gateway.base_url, path, _headers(correlation), MAX_BODY + 1)
    assert status == 413
    _assert_audited_with_headers(gateway, correlation, 413, endpoint)


def test_header_values_the_envelope_would_refuse_are_left_out(gateway):
    """A header value or key too long, or not UTF-8, is not audited; the others still are. (The
    HTTP server refuses control characters in headers before the gateway sees them.)"""
    correlation = f"bounded-{secrets.token_hex(4)}"
    headers = {
        **_headers(correlation),
        "x-vmx-metadata-note": "x" * 600,
        "x-vmx-metadata-" + "k" * 65: "v",
        "x-vmx-metadata-latin": "caf\xe9".encode("latin-1"),
    }
    response = httpx2.post(f"{gateway.base_url}/v1/chat/completions", content=b"{", headers=headers)
    assert response.status_code == 400
    _assert_audited_with_headers(gateway, correlation, 400, "chat.completions")

    too_long = "c" * 300
    response = httpx2.post(
        f"{gateway.base_url}/v1/chat/completions",
        content=b"{",
        headers={**AUTH, "x-vmx-correlation-id": too_long, "x-vmx-metadata-team": "growth"},
    )
    assert response.status_code == 400 and "x-vmx-correlation-id" not in response.headers
    record = gateway.audit(response.headers["x-vmx-request-id"])
    assert not record["correlation_id"] and record["metadata"] == {"team": "growth"}
