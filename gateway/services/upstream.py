"""What every endpoint service does with an upstream answer before and while relaying it: read a
non-stream body, prime a stream up to its first event, and say which leg answered.

Invariant: a stream commits only after `prime_event_stream` saw a first event that is not an
error (DESIGN.md 2.6); everything decoded while priming is kept for the relay.
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any

import orjson

from gateway.audit.entry import AuditEntry
from gateway.core.errors import UpstreamStreamError, UpstreamUnavailableError
from gateway.core.sse import SSEDecoder, SSEEvent
from gateway.providers.base import UpstreamResponse
from gateway.services.routing import Leg


@dataclass(slots=True)
class GatewayResult:
    """What the view sends: a complete body, or an async iterator of bytes for a stream."""

    status: int
    headers: dict[str, str]
    body: bytes = b""
    stream: AsyncIterator[bytes] | None = None


@dataclass(slots=True)
class Primed:
    events: list[SSEEvent] = field(default_factory=list)
    decoder: SSEDecoder = field(default_factory=SSEDecoder)
    iterator: AsyncIterator[bytes] | None = None


async def prime_event_stream(
    leg: Leg, response: UpstreamResponse, event_error: Callable[[SSEEvent], tuple[str, str | None] | None]
) -> Primed:
    """Read up to the first event that carries data; reject the leg if that event is an error.

    Every event decoded so far is kept (an upstream often sends several in one chunk): the relay
    starts from all of them.
    """
    assert response.chunks is not None
    iterator = aiter(response.chunks)
    primed = Primed(iterator=iterator)
    while True:
        try:
            chunk = await anext(iterator)
        except StopAsyncIteration:
            raise UpstreamUnavailableError(
                f"the upstream of connection '{leg.connection.name}' ended its stream before the first event",
                connection=leg.connection.name,
            ) from None
        events = primed.decoder.feed(chunk)
        primed.events.extend(events)
        first = next((event for event in events if event.data), None)
        if first is not None:
            reported = event_error(first)
            if reported is not None:
                raise UpstreamStreamError(reported[0], connection=leg.connection.name, code=reported[1])
            return primed


async def parse_json_body(leg: Leg, response: UpstreamResponse) -> Any:
    """`prime` for non-stream calls: a body that is not JSON rejects the leg (502)."""
    try:
        return orjson.loads(response.body)
    except orjson.JSONDecodeError:
        raise UpstreamUnavailableError(
            f"the upstream of connection '{leg.connection.name}' answered with something that is not JSON",
            connection=leg.connection.name,
        ) from None


def leg_headers(leg: Leg, response: UpstreamResponse, audit: AuditEntry, *, relay_all: bool) -> dict[str, str]:
    """The headers an answer carries about the leg that gave it (DESIGN.md 2.7). `relay_all`: the
    upstream's own headers too (the passthrough endpoints); otherwise only its rate limits and its
    request id (as `x-upstream-request-id`), which mean the same in the client's protocol."""
    if relay_all:
        relayed = dict(response.headers)
    else:
        relayed = {name: value for name, value in response.headers.items() if name.startswith("x-ratelimit-")}
        upstream_id = response.headers.get("x-request-id")
        if upstream_id:
            relayed["x-upstream-request-id"] = upstream_id
    return {
        **relayed,
        "x-vmx-model": leg.entry.model,
        "x-vmx-connection": leg.connection.name,
        "x-vmx-attempts": str(len(audit.attempts)),
    }


def json_object(data: bytes) -> dict[str, Any] | None:
    """`data` parsed as a JSON object, or None for anything else."""
    try:
        parsed = orjson.loads(data)
    except orjson.JSONDecodeError:
        return None
    return parsed if isinstance(parsed, dict) else None


_EVENT_TYPE = re.compile(rb'"type"\s*:\s*"([^"]+)"')


def responses_event_type(event: SSEEvent) -> str | None:
    if event.event:
        return event.event
    match = _EVENT_TYPE.search(event.data)
    return match.group(1).decode() if match else None


def responses_event_error(event: SSEEvent) -> tuple[str, str | None] | None:
    """(message, code) when a Responses stream event reports a failure (`error`, `response.failed`)."""
    kind = responses_event_type(event)
    if kind not in ("error", "response.failed"):
        return None
    parsed: Any = json_object(event.data) or {}
    # Flat `{"type":"error","code","message"}`, nested `{"error":{...}}`, or a failed response.
    if kind == "response.failed":
        parsed = parsed.get("response")
        parsed = parsed if isinstance(parsed, dict) else {}
    error = parsed.get("error") if isinstance(parsed.get("error"), dict) else parsed
    code = error.get("code")
    return str(error.get("message") or "upstream stream error"), str(code) if code is not None else None
