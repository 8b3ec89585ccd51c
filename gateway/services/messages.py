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
import dataclasses
import logging
import math
import re
from collections.abc import AsyncIterator
from typing import Any, ClassVar

import orjson
from django.conf import settings

from gateway.audit.entry import AuditEntry
from gateway.converters.anthropic_to_responses import (
    anthropic_to_responses,
    reasoning_items_removed,
    reasoning_params_removed,
)
from gateway.converters.common import ConversionError, ConvertedRequest, ConvertOptions
from gateway.converters.responses_to_anthropic import UpstreamFailure, anthropic_message
from gateway.converters.responses_to_anthropic_stream import AnthropicStreamTranslator
from gateway.core.errors import (
    POLICY_CODES,
    CapacityExceededError,
    InvalidRequestError,
    UpstreamError,
    UpstreamStatusError,
    UpstreamStreamError,
    UpstreamTimeoutError,
    UpstreamUnavailableError,
    anthropic_error_frame,
)
from gateway.core.sse import SSEEvent, sse_event
from gateway.core.usage import Usage, usage_from_responses
from gateway.providers.base import UpstreamRequest, UpstreamResponse
from gateway.services.admission import EndpointRequest, request_admit
from gateway.services.envelope import Envelope
from gateway.services.routing import Leg, Route, leg_request, route_call, upstream_args, upstream_body
from gateway.services.shutdown import CLIENT_GONE, CLIENT_GONE_MESSAGE, cancellation_outcome
from gateway.services.upstream import (
    GatewayResult,
    Primed,
    json_object,
    leg_headers,
    parse_json_body,
    prime_event_stream,
    responses_event_error,
)

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


def _upstream_args(route: Route, converted: ConvertedRequest, envelope: Envelope) -> dict[str, Any]:
    # defaultArgs (Responses names) under the converted body, providerArgs over it (DESIGN.md 2.6).
    defaults = route.default_args
    if "reasoning" in converted.body:
        # The converter dropped sampling parameters that reasoning models reject (spec 1.5); a
        # resource default must not bring them back.
        defaults = {k: v for k, v in defaults.items() if k not in SAMPLING_WITH_REASONING}
    return upstream_args(route=route, body=converted.body, envelope=envelope, default_args=defaults)


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
    return dataclasses.replace(request, body=orjson.dumps(revised)), note


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


def _message(
    parsed: dict[str, Any],
    *,
    leg: Leg,
    response: UpstreamResponse,
    audit: AuditEntry,
    request: ConvertedRequest,
    model: str,
) -> dict[str, Any]:
    """The Anthropic message for a whole Responses result, audited as answered."""
    audit.usage = usage_from_responses(parsed.get("usage"))
    try:
        message = anthropic_message(parsed, request=request, model=model, upstream_model=leg.entry.model)
    except UpstreamFailure as failure:  # a failed response that _prime_response let through
        error = UpstreamStreamError(failure.message, connection=leg.connection.name, code=failure.code)
        error.headers.update(leg_headers(leg, response, audit, relay_all=False))
        raise error from None
    audit.response_body = message
    audit.first_byte()
    audit.finish(status_code=200)
    return message


class MessagesService:
    name: ClassVar[str] = "messages"

    async def serve(self, request: EndpointRequest) -> GatewayResult:
        body, envelope, audit = request.body, request.envelope, request.audit
        stream = body.get("stream") is True
        audit.stream = stream
        model = str(body["model"])
        converted_by_leg: dict[int, ConvertedRequest] = {}

        first = _convert(body, request.route.legs[0])  # validates the request before any upstream call
        first_args = _upstream_args(request.route, first, envelope)
        # Estimated from what the first leg sends: the converted body, defaults and providerArgs.
        route = request_admit(request, sent=first_args)
        if first.empty:
            return self._empty(
                model=model, stream=stream, audit=audit, headers=request.headers, request_id=request.request_id
            )

        def build(leg: Leg) -> UpstreamRequest:
            if leg is route.legs[0]:
                converted, args = first, first_args
            else:
                converted = _convert(body, leg)
                args = _upstream_args(route, converted, envelope)
            converted_by_leg[id(leg)] = converted
            merged = upstream_body(args=args, leg=leg)
            return leg_request(leg=leg, envelope=envelope, path="/responses", body=merged, stream=stream)

        answer_headers = {**request.headers, "request-id": request.request_id}
        if not stream:
            leg, response, parsed = await route_call(
                route=route, audit=audit, build=build, prime=_prime_response, revise=_revise
            )
            message = _message(
                parsed, leg=leg, response=response, audit=audit, request=converted_by_leg[id(leg)], model=model
            )
            headers = {**answer_headers, **leg_headers(leg, response, audit, relay_all=False)}
            return GatewayResult(status=200, headers=headers, body=orjson.dumps(message))

        async def prime(leg: Leg, response: UpstreamResponse) -> Primed:
            return await prime_event_stream(leg, response, responses_event_error)

        leg, response, primed = await route_call(route=route, audit=audit, build=build, prime=prime, revise=_revise)
        translator = AnthropicStreamTranslator(
            request=converted_by_leg[id(leg)], model=model, upstream_model=leg.entry.model
        )
        return GatewayResult(
            status=200,
            headers={**answer_headers, **leg_headers(leg, response, audit, relay_all=False)},
            stream=_TranslatedStream(response, primed, translator, audit).relay(),
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


TRANSLATION_FAILED = "the gateway could not translate the upstream stream"
PING = sse_event("ping", b'{"type": "ping"}')


class _TranslatedStream:
    """One upstream Responses stream relayed as Anthropic events: `ping` after every
    `VMX_STREAM_PING_SECONDS` of upstream silence (spec 3.3); always ends with `message_stop` or
    `event: error`; the upstream is closed and the request audited however it ends."""

    def __init__(
        self, response: UpstreamResponse, primed: Primed, translator: AnthropicStreamTranslator, audit: AuditEntry
    ) -> None:
        assert primed.iterator is not None
        self.response, self.primed, self.translator, self.audit = response, primed, translator, audit
        self.iterator = primed.iterator
        self.queue: asyncio.Queue[bytes | BaseException | None] = asyncio.Queue(maxsize=64)
        self.ping_seconds = float(settings.VMX_STREAM_PING_SECONDS)
        self.emitted_usage: dict[str, Any] = {}

    async def relay(self) -> AsyncIterator[bytes]:
        translator, audit = self.translator, self.audit
        reader = asyncio.create_task(self._read())
        status, error_type, error_message = 200, "", ""
        try:
            try:
                first = self._translate(self.primed.events)
                audit.first_byte()
                yield first
                while not translator.finished:
                    out = await self._next()
                    if out:
                        yield out
            except Exception:
                # A bug or an upstream event we cannot read: still end the stream as Anthropic would.
                logger.exception("stream translation failed (request %s)", audit.request_id)
                if not translator.finished:
                    yield anthropic_error_frame("api_error", TRANSLATION_FAILED)
                error_type, error_message = "translation_error", TRANSLATION_FAILED
            if translator.error is not None:
                error_type, error_message = translator.error
        except asyncio.CancelledError:
            status, error_type, error_message, error = cancellation_outcome()
            if error is None:
                raise
            if not translator.finished:
                yield anthropic_error_frame(error.anthropic_type, error.message)
        except GeneratorExit:
            status, error_type, error_message = 499, CLIENT_GONE, CLIENT_GONE_MESSAGE
            raise
        finally:
            reader.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await reader
            await self.response.aclose()
            self._audit_usage()
            audit.finish(status_code=status, error_type=error_type, error_message=error_message)

    async def _read(self) -> None:
        # A separate reader, so that waiting for the next upstream bytes can time out into a ping
        # without cancelling (and so breaking) the upstream read itself.
        try:
            async for chunk in self.iterator:
                await self.queue.put(chunk)
            await self.queue.put(None)
        except Exception as exc:  # handed to the consumer, which ends the stream with an error event
            await self.queue.put(exc)

    async def _next(self) -> bytes:
        """What to send next: the translation of the next upstream bytes, the end, or a ping."""
        try:
            item = await asyncio.wait_for(self.queue.get(), timeout=self.ping_seconds)
        except TimeoutError:
            return PING
        if item is None:
            return self._frames(self.translator.end(reason="cut"))
        if isinstance(item, BaseException):
            return self._frames(
                self.translator.end(reason="timeout" if isinstance(item, UpstreamTimeoutError) else "cut")
            )
        return self._translate(self.primed.decoder.feed(item))

    def _frames(self, events: list[tuple[str, dict[str, Any]]]) -> bytes:
        for name, payload in events:
            if name == "message_delta" and isinstance(payload.get("usage"), dict):
                self.emitted_usage.update(payload["usage"])
        return b"".join(sse_event(name, orjson.dumps(payload)) for name, payload in events)

    def _translate(self, batch: list[SSEEvent]) -> bytes:
        out: list[tuple[str, dict[str, Any]]] = []
        for event in batch:
            if self.translator.finished or not event.data:
                continue
            parsed = json_object(event.data)
            if parsed is None:
                continue
            if "type" not in parsed and event.event:
                parsed["type"] = event.event
            out.extend(self.translator.feed(parsed))
        return self._frames(out)

    def _audit_usage(self) -> None:
        if self.translator.response_usage is not None:
            self.audit.usage = usage_from_responses(self.translator.response_usage)
        elif self.emitted_usage:  # ended early (stop sequence): what the client was told, approximate
            output = int(self.emitted_usage.get("output_tokens") or 0)
            self.audit.usage = Usage(output_tokens=output, total_tokens=output)


def estimate_input_tokens(body: dict[str, Any]) -> int:
    """Characters / 4 of everything the model would read (DESIGN.md 2.4: count_tokens fallback)."""
    text = orjson.dumps({k: body.get(k) for k in ("system", "messages", "tools") if k in body}).decode()
    return max(1, math.ceil(len(text) / 4))


class CountTokensService:
    """`POST /v1/messages/count_tokens`: the upstream's Responses input-token count, else an
    estimate (DESIGN.md 2.4). Admitted like any request (key and resource limits, and the limits
    of the connection it asks), counting as one request and reserving no tokens or cost: it calls
    no model. Nothing is learned of upstream limits from it. Audited as `messages.count_tokens`."""

    name: ClassVar[str] = "messages.count_tokens"

    async def serve(self, request: EndpointRequest) -> GatewayResult:
        body, envelope, audit = request.body, request.envelope, request.audit
        counted = {**body, "max_tokens": body.get("max_tokens", 1)}
        first = _convert(counted, request.route.legs[0])
        route = request_admit(request, sent=None)

        def build(leg: Leg) -> UpstreamRequest:
            converted = first if leg is route.legs[0] else _convert(counted, leg)
            merged = upstream_body(args=_upstream_args(route, converted, envelope), leg=leg)
            payload = {k: merged[k] for k in COUNT_TOKENS_FIELDS if k in merged}
            return leg_request(
                leg=leg, envelope=envelope, path="/responses/input_tokens", body=payload, stream=False, max_retries=0
            )

        tokens: int | None = None
        try:
            _, _, parsed = await route_call(route=route, audit=audit, build=build, prime=parse_json_body, learn=False)
            tokens = parsed.get("input_tokens") if isinstance(parsed, dict) else None
        except CapacityExceededError as exc:
            if exc.scope in ("api_key", "resource"):  # the client's own limits: a 429, as anywhere
                raise
        except UpstreamError:  # no upstream to ask right now: estimate
            pass
        headers = {**request.headers, "request-id": request.request_id}
        if not isinstance(tokens, int):
            tokens = estimate_input_tokens(body)
            headers["x-vmx-estimate"] = "true"
        audit.first_byte()
        audit.finish(status_code=200)
        return GatewayResult(status=200, headers=headers, body=orjson.dumps({"input_tokens": tokens}))


MESSAGES = MessagesService()
COUNT_TOKENS = CountTokensService()
