"""The client body and the gateway's `vmx` envelope (DESIGN.md 2.4, 2.5).

The body is parsed once; `vmx` and `__vmx_passthrough` are removed from it here, so nothing
downstream can forward them by mistake (OpenAI rejects unknown top-level fields).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import orjson

from gateway.errors import InvalidRequestError

METADATA_HEADER_PREFIX = "x-vmx-metadata-"
MAX_CORRELATION_ID = 256


@dataclass(frozen=True, slots=True)
class Envelope:
    correlation_id: str = ""
    metadata: dict[str, str] = field(default_factory=dict)
    provider_args: dict[str, Any] = field(default_factory=dict)
    timeout_ms: int | None = None


def request_body_parse(raw: bytes, *, required: tuple[str, ...] = ()) -> dict[str, Any]:
    """The body as a JSON object with a string `model` (and the `required` fields), else 400."""
    try:
        body = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise InvalidRequestError(f"The request body is not valid JSON: {exc}") from None
    if not isinstance(body, dict):
        raise InvalidRequestError("The request body must be a JSON object.")
    model = body.get("model")
    if not isinstance(model, str) or not model:
        raise InvalidRequestError("you must provide a model parameter (a string)", param="model")
    for name in required:
        if name not in body:
            raise InvalidRequestError(f"{name}: Field required", param=name)
    return body


def envelope_extract(body: dict[str, Any], headers: Mapping[str, str]) -> Envelope:
    """Remove the envelopes from `body` and return the validated `vmx` settings (400 if malformed)."""
    body.pop("__vmx_passthrough", None)
    raw = body.pop("vmx", None)
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise InvalidRequestError("vmx must be an object", param="vmx")

    correlation_id = raw.get("correlationId", headers.get("x-vmx-correlation-id", ""))
    if not isinstance(correlation_id, str):
        raise InvalidRequestError("vmx.correlationId must be a string", param="vmx.correlationId")
    if len(correlation_id) > MAX_CORRELATION_ID:
        raise InvalidRequestError(
            f"vmx.correlationId is longer than {MAX_CORRELATION_ID} characters", param="vmx.correlationId"
        )

    metadata: dict[str, str] = {}
    for name, value in headers.items():
        lowered = name.lower()
        if lowered.startswith(METADATA_HEADER_PREFIX) and len(lowered) > len(METADATA_HEADER_PREFIX):
            metadata[lowered[len(METADATA_HEADER_PREFIX) :]] = value
    body_metadata = raw.get("metadata", {})
    if not isinstance(body_metadata, dict) or not all(isinstance(v, str) for v in body_metadata.values()):
        raise InvalidRequestError("vmx.metadata must be an object of strings", param="vmx.metadata")
    metadata.update(body_metadata)  # the body wins over headers

    provider_args = raw.get("providerArgs", {})
    if not isinstance(provider_args, dict):
        raise InvalidRequestError("vmx.providerArgs must be an object", param="vmx.providerArgs")

    timeout_ms = raw.get("timeoutMs")
    if timeout_ms is not None and (not isinstance(timeout_ms, int) or isinstance(timeout_ms, bool) or timeout_ms <= 0):
        raise InvalidRequestError("vmx.timeoutMs must be a positive integer (milliseconds)", param="vmx.timeoutMs")

    # Other vmx fields are ignored: clients of other VM-X implementations may send more.
    return Envelope(
        correlation_id=correlation_id, metadata=metadata, provider_args=provider_args, timeout_ms=timeout_ms
    )
