"""Anthropic Messages (`POST /v1/messages`) over OpenAI Responses (spec: docs/anthropic-mapping.md).

The request is converted per leg (thinking signatures replay only to the model that made them),
sent through the shared routing (retries, fallback, commit), and the result or event stream is
converted back. Invariants: the client gets Anthropic shapes only, errors included; a stream
starts only after the upstream answered 2xx and sent a non-error first event, and always ends
with `message_stop` or `event: error`; the upstream stream is closed whatever happens.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import re
from collections.abc import AsyncIterator
from typing import Any

import orjson
from django.conf import settings

from gateway.audit import AuditEntry
from gateway.converters.anthropic_to_responses import (
    anthropic_to_responses,
    reasoning_items_removed,
    reasoning_params_removed,
)
from gateway.converters.common import ConversionError, ConvertedRequest, ConvertOptions
from gateway.converters.responses_to_anthropic import (
    AnthropicStreamTranslator,
    UpstreamFailure,
    anthropic_message,
)
from gateway.errors import (
    CapacityExceededError,
    InvalidRequestError,
    UpstreamError,
    UpstreamStatusError,
    UpstreamStreamError,
    UpstreamTimeoutError,
    UpstreamUnavailableError,
)
from gateway.providers.base import UpstreamRequest, UpstreamResponse
from gateway.services.envelope import Envelope, body_merge
from gateway.services.passthrough import (
    RESPONSES,
    GatewayResult,
    Primed,
    json_object,
    parse_json_body,
    prime_event_stream,
)
from gateway.services.routing import Leg, Route, leg_timeout, route_call
from gateway.services.shutdown import CLIENT_GONE, CLIENT_GONE_MESSAGE, cancellation_outcome
from gateway.sse import SSEEvent, sse_event
from gateway.usage import Usage, usage_from_responses

logger = logging.getLogger("vmx.messages")
# Upstream 400s that name a reasoning parameter, or a replayed reasoning item (spec 1.5).
_REASONING_PARAM = re.compile(
    r"reasoning\.(effort|summary)|'reasoning'|unsupported parameter.*reasoning"
    r"|\breasoning\b.*\b(not supported|unsupported)",
    re.I,
)
_REASONING_ITEM = re.compile(
    r"required following item|encrypted[ _]content|item with id '?rs_|reasoning item|'rs_", re.I
)
COUNT_TOKENS_FIELDS = (
    "model",
    "input",
    "instructions",
    "tools",
    "tool_choice",
    "parallel_tool_calls",
    "reasoning",
    "text",
)


def _convert(body: dict[str, Any], leg: Leg) -> ConvertedRequest:
    try:
        return anthropic_to_responses(
            body, options=ConvertOptions(upstream_model=leg.entry.model, reasoning=leg.entry.reasoning)
        )
    except ConversionError as exc:
        raise InvalidRequestError(str(exc)) from None


SAMPLING_WITH_REASONING = ("temperature", "top_p")


def _upstream_body(route: Route, converted: ConvertedRequest, envelope: Envelope, leg: Leg) -> dict[str, Any]:
    # defaultArgs (Responses names) under the converted body, providerArgs over it (DESIGN.md 2.6).
    defaults = route.default_args
    if "reasoning" in converted.body:
        # The converter dropped sampling parameters that reasoning models reject (spec 1.5); a
        # resource default must not bring them back.
        defaults = {k: v for k, v in defaults.items() if k not in SAMPLING_WITH_REASONING}
    merged = body_merge(defaults, converted.body, envelope.provider_args)
    merged["model"] = leg.entry.model
    return merged


def _revise(leg: Leg, request: UpstreamRequest, error: UpstreamError) -> tuple[UpstreamRequest, str] | None:
    """One retry without what the upstream rejected (spec 1.5, 7): replayed reasoning items, the
    reasoning summary (organisations must be verified for it), or all reasoning parameters."""
    if not isinstance(error, UpstreamStatusError) or error.upstream_status != 400:
        return None
    body = orjson.loads(request.body)
    message, param = error.message, str(error.parsed.get("param") or "")
    reasoning = body.get("reasoning")
    replays_reasoning = any(item.get("type") == "reasoning" for item in body.get("input", []) if isinstance(item, dict))
    if replays_reasoning and _REASONING_ITEM.search(message):
        revised, note = reasoning_items_removed(body), "retried without replayed reasoning items"
    elif (
        isinstance(reasoning, dict)
        and "summary" in reasoning
        and (param == "reasoning.summary" or "summar" in message.lower())
    ):
        revised = {**body, "reasoning": {k: v for k, v in reasoning.items() if k != "summary"}}
        note = "retried without the reasoning summary"
    elif (reasoning is not None or "reasoning.encrypted_content" in body.get("include", [])) and (
        param.startswith("reasoning") or _REASONING_PARAM.search(message)
    ):
        revised, note = reasoning_params_removed(body), "retried without reasoning parameters"
    else:
        return None
    revised_request = UpstreamRequest(
        path=request.path,
        body=orjson.dumps(revised),
        stream=request.stream,
        timeout=request.timeout,
        max_retries=request.max_retries,
    )
    return revised_request, note


POLICY_CODES = frozenset({"bio_policy", "misalignment_policy_violation"})


async def _prime_response(leg: Leg, response: UpstreamResponse) -> dict[str, Any]:
    """The parsed Responses object; a failed response rejects the leg like an HTTP error would
    (DESIGN.md 2.6), except policy refusals, which are answers (spec 4.2)."""
    parsed = await parse_json_body(leg, response)
    if not isinstance(parsed, dict):
        raise UpstreamUnavailableError(
            f"the upstream of connection '{leg.connection.name}' answered JSON that is not a response object",
            connection=leg.connection.name,
        )
    if parsed.get("status") == "failed":
        error: dict[str, Any] = parsed["error"] if isinstance(parsed.get("error"), dict) else {}
        code = error.get("code")
        if code not in POLICY_CODES:
            message = str(error.get("message") or "the upstream response failed")
            raise UpstreamStreamError(message, connection=leg.connection.name, code=str(code) if code else None)
    return parsed


class MessagesService:
    name = "messages"

    async def serve(
        self,
        *,
        route: Route,
        body: dict[str, Any],
        envelope: Envelope,
        audit: AuditEntry,
        headers: dict[str, str],
        request_id: str,
    ) -> GatewayResult:
        stream = body.get("stream") is True
        audit.stream = stream
        model = str(body["model"])
        converted_by_leg: dict[int, ConvertedRequest] = {}

        first = _convert(body, route.legs[0])  # validates the request before any upstream call
        if first.empty:
            return self._empty(model=model, stream=stream, audit=audit, headers=headers, request_id=request_id)

        def build(leg: Leg) -> UpstreamRequest:
            converted = first if leg is route.legs[0] else _convert(body, leg)
            converted_by_leg[id(leg)] = converted
            merged = _upstream_body(route, converted, envelope, leg)
            return UpstreamRequest(
                path="/responses",
                body=orjson.dumps(merged),
                stream=stream,
                timeout=leg_timeout(leg=leg, envelope=envelope),
                max_retries=leg.entry.max_retries,
            )

        answer_headers = {**headers, "request-id": request_id}
        if not stream:
            leg, response, parsed = await route_call(
                route=route, audit=audit, build=build, prime=_prime_response, revise=_revise
            )
            audit.usage = usage_from_responses(parsed.get("usage"))
            try:
                message = anthropic_message(
                    parsed, request=converted_by_leg[id(leg)], model=model, upstream_model=leg.entry.model
                )
            except UpstreamFailure as failure:  # a failed response that _prime_response let through
                error = UpstreamStreamError(failure.message, connection=leg.connection.name, code=failure.code)
                error.headers.update(_leg_headers(leg, response, audit))
                raise error from None
            audit.response_body = message
            audit.first_byte()
            audit.finish(status_code=200)
            return GatewayResult(
                status=200, headers={**answer_headers, **_leg_headers(leg, response, audit)}, body=orjson.dumps(message)
            )

        async def prime(leg: Leg, response: UpstreamResponse) -> Primed:
            return await prime_event_stream(leg, response, RESPONSES.event_error)

        leg, response, primed = await route_call(route=route, audit=audit, build=build, prime=prime, revise=_revise)
        translator = AnthropicStreamTranslator(
            request=converted_by_leg[id(leg)], model=model, upstream_model=leg.entry.model
        )
        return GatewayResult(
            status=200,
            headers={**answer_headers, **_leg_headers(leg, response, audit)},
            stream=_relay(response, primed, translator, audit),
        )

    def _empty(
        self, *, model: str, stream: bool, audit: AuditEntry, headers: dict[str, str], request_id: str
    ) -> GatewayResult:
        """`max_tokens: 0` (cache pre-warm): an empty message, no upstream call (spec 1.1)."""
        usage = {"input_tokens": 0, "output_tokens": 0, "cache_read_input_tokens": 0, "cache_creation_input_tokens": 0}
        message: dict[str, Any] = {
            "id": "msg_" + request_id.removeprefix("req_"),
            "type": "message",
            "role": "assistant",
            "model": model,
            "content": [],
            "stop_reason": "max_tokens",
            "stop_sequence": None,
            "usage": usage,
        }
        audit.first_byte()
        audit.finish(status_code=200)
        answer_headers = {**headers, "request-id": request_id, "x-vmx-attempts": "0"}
        if not stream:
            return GatewayResult(status=200, headers=answer_headers, body=orjson.dumps(message))

        async def events() -> AsyncIterator[bytes]:
            yield (
                sse_event(
                    "message_start",
                    orjson.dumps({"type": "message_start", "message": {**message, "stop_reason": None}}),
                )
                + sse_event(
                    "message_delta",
                    orjson.dumps(
                        {
                            "type": "message_delta",
                            "delta": {"stop_reason": "max_tokens", "stop_sequence": None},
                            "usage": usage,
                        }
                    ),
                )
                + sse_event("message_stop", b'{"type":"message_stop"}')
            )

        return GatewayResult(status=200, headers=answer_headers, stream=events())


def _leg_headers(leg: Leg, response: UpstreamResponse, audit: AuditEntry) -> dict[str, str]:
    upstream_id = response.headers.get("x-request-id")
    headers = {
        "x-vmx-model": leg.entry.model,
        "x-vmx-connection": leg.connection.name,
        "x-vmx-attempts": str(len(audit.attempts)),
        **{k: v for k, v in response.headers.items() if k.startswith("x-ratelimit-")},
    }
    if upstream_id:
        headers["x-upstream-request-id"] = upstream_id
    return headers


async def _relay(
    response: UpstreamResponse,
    primed: Primed,
    translator: AnthropicStreamTranslator,
    audit: AuditEntry,
) -> AsyncIterator[bytes]:
    """Translate the upstream stream; `ping` after every `VMX_STREAM_PING_SECONDS` of upstream
    silence (spec 3.3). Always ends with `message_stop` or `event: error`."""
    assert primed.iterator is not None
    iterator = primed.iterator
    queue: asyncio.Queue[bytes | BaseException | None] = asyncio.Queue(maxsize=64)
    ping_seconds = float(settings.VMX_STREAM_PING_SECONDS)
    emitted_usage: dict[str, Any] = {}

    async def read() -> None:
        # A separate reader, so that waiting for the next upstream bytes can time out into a ping
        # without cancelling (and so breaking) the upstream read itself.
        try:
            async for chunk in iterator:
                await queue.put(chunk)
            await queue.put(None)
        except Exception as exc:  # handed to the consumer, which ends the stream with an error event
            await queue.put(exc)

    def frames(events: list[tuple[str, dict[str, Any]]]) -> bytes:
        for name, payload in events:
            if name == "message_delta" and isinstance(payload.get("usage"), dict):
                emitted_usage.update(payload["usage"])
        return b"".join(sse_event(name, orjson.dumps(payload)) for name, payload in events)

    def translate(batch: list[SSEEvent]) -> bytes:
        out: list[tuple[str, dict[str, Any]]] = []
        for event in batch:
            if translator.finished or not event.data:
                continue
            parsed = json_object(event.data)
            if parsed is None:
                continue
            if "type" not in parsed and event.event:
                parsed["type"] = event.event
            out.extend(translator.feed(parsed))
        return frames(out)

    reader = asyncio.create_task(read())
    status, error_type, error_message = 200, "", ""
    try:
        try:
            first = translate(primed.events)
            audit.first_byte()
            yield first
            while not translator.finished:
                try:
                    item = await asyncio.wait_for(queue.get(), timeout=ping_seconds)
                except TimeoutError:
                    yield sse_event("ping", b'{"type": "ping"}')
                    continue
                if item is None:
                    yield frames(translator.end(reason="cut"))
                elif isinstance(item, BaseException):
                    yield frames(translator.end(reason="timeout" if isinstance(item, UpstreamTimeoutError) else "cut"))
                else:
                    out = translate(primed.decoder.feed(item))
                    if out:
                        yield out
        except Exception:
            # A bug or an upstream event we cannot read: still end the stream as Anthropic would.
            logger.exception("stream translation failed (request %s)", audit.request_id)
            if not translator.finished:
                payload = {
                    "type": "error",
                    "error": {"type": "api_error", "message": "the gateway could not translate the upstream stream"},
                }
                yield sse_event("error", orjson.dumps(payload))
            error_type, error_message = "translation_error", "the gateway could not translate the upstream stream"
        if translator.error is not None:
            error_type, error_message = translator.error
    except asyncio.CancelledError:
        status, error_type, error_message, error = cancellation_outcome()
        if error is None:
            raise
        if not translator.finished:
            payload = {"type": "error", "error": {"type": error.anthropic_type, "message": error.message}}
            yield sse_event("error", orjson.dumps(payload))
    except GeneratorExit:
        status, error_type, error_message = 499, CLIENT_GONE, CLIENT_GONE_MESSAGE
        raise
    finally:
        reader.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await reader
        await response.aclose()
        if translator.response_usage is not None:
            audit.usage = usage_from_responses(translator.response_usage)
        elif emitted_usage:  # ended early (stop sequence): what the client was told, approximate
            output = int(emitted_usage.get("output_tokens") or 0)
            audit.usage = Usage(output_tokens=output, total_tokens=output)
        audit.finish(status_code=status, error_type=error_type, error_message=error_message)


def estimate_input_tokens(body: dict[str, Any]) -> int:
    """Characters / 4 of everything the model would read (DESIGN.md 2.4: count_tokens fallback)."""
    text = orjson.dumps({k: body.get(k) for k in ("system", "messages", "tools") if k in body}).decode()
    return max(1, math.ceil(len(text) / 4))


async def count_tokens(
    *, route: Route, body: dict[str, Any], envelope: Envelope, audit: AuditEntry
) -> tuple[int, bool]:
    """(input tokens, estimated): the upstream's Responses input-token count, else an estimate."""
    counted = {**body, "max_tokens": body.get("max_tokens", 1)}
    first = _convert(counted, route.legs[0])

    def build(leg: Leg) -> UpstreamRequest:
        converted = first if leg is route.legs[0] else _convert(counted, leg)
        merged = _upstream_body(route, converted, envelope, leg)
        payload = {k: merged[k] for k in COUNT_TOKENS_FIELDS if k in merged}
        return UpstreamRequest(
            path="/responses/input_tokens",
            body=orjson.dumps(payload),
            stream=False,
            timeout=leg_timeout(leg=leg, envelope=envelope),
            max_retries=0,
        )

    try:
        _, _, parsed = await route_call(route=route, audit=audit, build=build, prime=parse_json_body, learn=False)
    except (UpstreamError, CapacityExceededError):  # no upstream to ask right now: estimate
        return estimate_input_tokens(body), True
    tokens = parsed.get("input_tokens") if isinstance(parsed, dict) else None
    if not isinstance(tokens, int):
        return estimate_input_tokens(body), True
    return tokens, False


MESSAGES = MessagesService()
