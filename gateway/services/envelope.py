"""The client body and the gateway's `vmx` envelope (DESIGN.md 2.4, 2.5, 2.13).

The body is parsed once; `vmx` and `__vmx_passthrough` are removed from it here, so nothing
downstream can forward them by mistake (OpenAI rejects unknown top-level fields).

Invariants: whatever this module accepts can be stored in the audit and echoed in a response
header. The correlation id and metadata (body or `x-vmx-*` header forms) are bounded in size and
hold no control characters; the body nests at most `MAX_JSON_DEPTH` levels, so it can always be
serialised again (orjson refuses to write deeper than 255). Violations are 400s, raised before
any upstream call.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import orjson

from gateway.core.errors import InvalidRequestError
from gateway.core.jsonchecks import MAX_JSON_DEPTH, has_control_characters, json_depth_exceeds

METADATA_HEADER_PREFIX = "x-vmx-metadata-"
MAX_CORRELATION_ID = 256
MAX_METADATA_KEYS = 32
MAX_METADATA_KEY = 64
MAX_METADATA_VALUE = 512
RESERVED_FIELDS = ("vmx", "__vmx_passthrough")


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
    if json_depth_exceeds(raw, body, MAX_JSON_DEPTH):
        raise InvalidRequestError(f"The request body nests JSON deeper than {MAX_JSON_DEPTH} levels.")
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

    if "correlationId" in raw:
        correlation_id = raw["correlationId"]
        if not isinstance(correlation_id, str):
            raise InvalidRequestError("vmx.correlationId must be a string", param="vmx.correlationId")
    else:
        correlation_id = _header_text(headers, "x-vmx-correlation-id")
    _check_text(correlation_id, "vmx.correlationId", MAX_CORRELATION_ID)

    metadata = _header_metadata(headers)
    body_metadata = raw.get("metadata", {})
    if not isinstance(body_metadata, dict) or not all(isinstance(v, str) for v in body_metadata.values()):
        raise InvalidRequestError("vmx.metadata must be an object of strings", param="vmx.metadata")
    metadata.update(body_metadata)  # the body wins over headers
    if len(metadata) > MAX_METADATA_KEYS:
        raise InvalidRequestError(
            f"vmx.metadata has {len(metadata)} keys; at most {MAX_METADATA_KEYS} are allowed", param="vmx.metadata"
        )
    for key, value in metadata.items():
        if not key:
            raise InvalidRequestError("vmx.metadata keys must not be empty", param="vmx.metadata")
        _check_text(key, "vmx.metadata key", MAX_METADATA_KEY)
        _check_text(value, f"vmx.metadata.{key}", MAX_METADATA_VALUE)

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


def envelope_headers(headers: Mapping[str, str]) -> tuple[str, dict[str, str]]:
    """(correlation id, metadata) as the `x-vmx-*` headers give them, for the audit of a request
    refused before its envelope was read (bad JSON, 413, a malformed `vmx`). Held to the
    envelope's limits, value by value: one the envelope would refuse is left out (its keys in
    header order, at most `MAX_METADATA_KEYS`); it never raises."""
    correlation_id = _header_accepted(headers, "x-vmx-correlation-id", MAX_CORRELATION_ID)
    metadata: dict[str, str] = {}
    for name in headers:
        lowered = name.lower()
        if not lowered.startswith(METADATA_HEADER_PREFIX) or len(metadata) >= MAX_METADATA_KEYS:
            continue
        key = lowered[len(METADATA_HEADER_PREFIX) :]
        value = _header_accepted(headers, name, MAX_METADATA_VALUE)
        if key and value and len(key) <= MAX_METADATA_KEY and not has_control_characters(key):
            metadata[key] = value
    return correlation_id, metadata


def _header_accepted(headers: Mapping[str, str], name: str, limit: int) -> str:
    """The header's value when the envelope would accept it, else ""."""
    try:
        value = _header_decoded(headers.get(name, ""), name)
        _check_text(value, name, limit)
    except InvalidRequestError:
        return ""
    return value


def body_merge(*layers: Mapping[str, Any]) -> dict[str, Any]:
    """Shallow merge, later layers win (DESIGN.md 2.6); the gateway's reserved fields are removed
    afterwards, so `vmx.providerArgs` cannot smuggle them back to the upstream (2.13)."""
    merged: dict[str, Any] = {}
    for layer in layers:
        merged.update(layer)
    for name in RESERVED_FIELDS:
        merged.pop(name, None)
    return merged


def _check_text(value: str, name: str, limit: int) -> None:
    if len(value) > limit:
        raise InvalidRequestError(f"{name} is longer than {limit} characters", param=_param(name))
    if has_control_characters(value):
        raise InvalidRequestError(
            f"{name} must not contain control characters (C0, DEL, U+2028, U+2029)", param=_param(name)
        )


def _param(name: str) -> str:
    return "vmx.metadata" if name.startswith("vmx.metadata") else name


def _header_text(headers: Mapping[str, str], name: str) -> str:
    value = headers.get(name, "")
    return _header_decoded(value, name)


def _header_decoded(value: str, name: str) -> str:
    """Header values arrive as latin-1 text; clients send UTF-8 (e.g. a team name with accents)."""
    if value.isascii():
        return value
    try:
        return value.encode("latin-1").decode("utf-8")
    except (UnicodeEncodeError, UnicodeDecodeError):
        raise InvalidRequestError(f"the header {name} is not valid UTF-8", param=name) from None


def _header_metadata(headers: Mapping[str, str]) -> dict[str, str]:
    metadata: dict[str, str] = {}
    for name, value in headers.items():
        lowered = name.lower()
        if lowered.startswith(METADATA_HEADER_PREFIX) and len(lowered) > len(METADATA_HEADER_PREFIX):
            metadata[lowered[len(METADATA_HEADER_PREFIX) :]] = _header_decoded(value, lowered)
    return metadata
