"""Chat Completions and Responses: forwarded verbatim, relayed byte for byte (DESIGN.md 2.4-2.9).

The body goes upstream as the client sent it, minus the envelopes, merged with the resource's
`defaultArgs` and `vmx.providerArgs`, `model` rewritten. Answers come back unchanged; streams are
relayed event by event with their original bytes, except the usage chunk that the gateway itself
asked for (Chat) and the gateway's own error frame when a committed stream fails.
"""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from typing import Any, ClassVar

from gateway.audit.entry import AuditEntry
from gateway.core.errors import GatewayError, UpstreamUnavailableError, chat_error_frame, responses_error_frame
from gateway.core.sse import SSEEvent
from gateway.core.usage import Usage, usage_from_chat, usage_from_responses
from gateway.providers.base import UpstreamRequest, UpstreamResponse
from gateway.services.admission import EndpointRequest, request_admit
from gateway.services.routing import Leg, leg_request, route_call, upstream_args, upstream_body
from gateway.services.shutdown import CLIENT_GONE, CLIENT_GONE_MESSAGE, cancellation_outcome
from gateway.services.upstream import (
    GatewayResult,
    Primed,
    json_object,
    leg_headers,
    parse_json_body,
    prime_event_stream,
    responses_event_error,
    responses_event_type,
)

logger = logging.getLogger("vmx.passthrough")


@dataclass(slots=True)
class StreamState:
    usage: Usage | None = None
    terminal: bool = False
    """The upstream's clean end was seen ([DONE] or the final Responses event)."""
    error: str | None = None
    """An error the upstream reported in-stream (relayed as is)."""
    drop_usage_chunk: bool = False
    last_data: bytes = b""


class PassthroughEndpoint:
    name: ClassVar[str]
    path: ClassVar[str]

    def prepare(self, body: dict[str, Any], *, stream: bool, state: StreamState) -> dict[str, Any]:
        return body

    def usage_from_body(self, parsed: Any) -> Usage:
        raise NotImplementedError

    def event_error(self, event: SSEEvent) -> tuple[str, str | None] | None:
        """(message, code) when `event` is an upstream error report."""
        raise NotImplementedError

    def observe(self, event: SSEEvent, state: StreamState) -> bool:
        """Update `state` from `event`; False to drop the event."""
        raise NotImplementedError

    def error_frame(self, error: GatewayError, state: StreamState) -> bytes:
        raise NotImplementedError

    # --------------------------------------------------------------------------------------------

    async def serve(self, request: EndpointRequest) -> GatewayResult:
        body, envelope, audit = request.body, request.envelope, request.audit
        args = upstream_args(route=request.route, body=body, envelope=envelope)
        route = request_admit(request, sent=args)
        stream = body.get("stream") is True
        audit.stream = stream
        state = StreamState()

        def build(leg: Leg) -> UpstreamRequest:
            merged = self.prepare(upstream_body(args=args, leg=leg), stream=stream, state=state)
            return leg_request(leg=leg, envelope=envelope, path=self.path, body=merged, stream=stream)

        if not stream:
            leg, response, parsed = await route_call(route=route, audit=audit, build=build, prime=parse_json_body)
            audit.usage = self.usage_from_body(parsed)
            audit.response_body = parsed
            audit.first_byte()
            audit.finish(status_code=response.status)
            headers = {**request.headers, **leg_headers(leg, response, audit, relay_all=True)}
            return GatewayResult(status=response.status, headers=headers, body=response.body)

        async def prime(leg: Leg, response: UpstreamResponse) -> Primed:
            return await prime_event_stream(leg, response, self.event_error)

        leg, response, primed = await route_call(route=route, audit=audit, build=build, prime=prime)
        return GatewayResult(
            status=response.status,
            headers={**request.headers, **leg_headers(leg, response, audit, relay_all=True)},
            stream=self._relay(response, primed, state, audit),
        )

    async def _relay(
        self, response: UpstreamResponse, primed: Primed, state: StreamState, audit: AuditEntry
    ) -> AsyncIterator[bytes]:
        status, error_type, error_message = 200, "", ""
        try:
            out = [event.raw for event in primed.events if self.observe(event, state)]
            audit.first_byte()
            yield b"".join(out)
            assert primed.iterator is not None
            async for chunk in primed.iterator:
                out = [event.raw for event in primed.decoder.feed(chunk) if self.observe(event, state)]
                if out:
                    yield b"".join(out)
            if state.error is not None:
                error_type, error_message = "upstream_stream_error", state.error
            elif not state.terminal:
                cut = UpstreamUnavailableError(
                    "the upstream stream ended before it was complete", connection=audit.connection
                )
                error_type, error_message = cut.code or "", cut.message
                yield self.error_frame(cut, state)
        except GatewayError as exc:
            error_type, error_message = exc.code or exc.openai_type, exc.message
            yield self.error_frame(exc, state)
        except Exception:
            # An upstream event we cannot read (or a bug): still end as a failed stream, never cut.
            logger.exception("stream relay failed (request %s)", audit.request_id)
            unreadable = UpstreamUnavailableError(
                "the gateway could not read the upstream stream", connection=audit.connection
            )
            error_type, error_message = unreadable.code or "", unreadable.message
            yield self.error_frame(unreadable, state)
        except asyncio.CancelledError:
            status, error_type, error_message, error = cancellation_outcome()
            if error is None:
                raise
            yield self.error_frame(error, state)
        except GeneratorExit:
            status, error_type, error_message = 499, CLIENT_GONE, CLIENT_GONE_MESSAGE
            raise
        finally:
            await response.aclose()
            if state.usage is not None:
                audit.usage = state.usage
            audit.finish(status_code=status, error_type=error_type, error_message=error_message)


class ChatCompletionsEndpoint(PassthroughEndpoint):
    name = "chat.completions"
    path = "/chat/completions"

    def prepare(self, body: dict[str, Any], *, stream: bool, state: StreamState) -> dict[str, Any]:
        if stream:
            options = body.get("stream_options")
            options = options if isinstance(options, Mapping) else {}
            if options.get("include_usage") is not True:
                # Usage is always counted: ask for it, and hide the extra chunk from the client.
                body["stream_options"] = {**options, "include_usage": True}
                state.drop_usage_chunk = True
        return body

    def usage_from_body(self, parsed: Any) -> Usage:
        return usage_from_chat(parsed.get("usage") if isinstance(parsed, dict) else None)

    def event_error(self, event: SSEEvent) -> tuple[str, str | None] | None:
        if b'"error"' not in event.data:
            return None
        parsed = json_object(event.data)
        error = parsed.get("error") if parsed else None
        if not error:
            return None
        if isinstance(error, dict):
            code = error.get("code")
            return str(error.get("message") or "upstream stream error"), str(code) if code is not None else None
        return str(error), None

    def observe(self, event: SSEEvent, state: StreamState) -> bool:
        data = event.data
        if data == b"[DONE]":
            state.terminal = True
            return True
        if data and b'"usage"' in data and not re.search(rb'"usage"\s*:\s*null', data):
            parsed = json_object(data)
            usage = parsed.get("usage") if parsed else None
            if isinstance(usage, dict):
                state.usage = usage_from_chat(usage)
                if state.drop_usage_chunk and not parsed.get("choices"):  # type: ignore[union-attr]
                    return False
        if data and state.error is None:
            reported = self.event_error(event)
            if reported is not None:
                state.error = reported[0]
        return True

    def error_frame(self, error: GatewayError, state: StreamState) -> bytes:
        return chat_error_frame(error)


_SEQUENCE = re.compile(rb'"sequence_number"\s*:\s*(\d+)')
_TERMINAL_RESPONSE_EVENTS = frozenset({"response.completed", "response.incomplete", "response.failed", "error"})


class ResponsesEndpoint(PassthroughEndpoint):
    name = "responses"
    path = "/responses"

    def usage_from_body(self, parsed: Any) -> Usage:
        return usage_from_responses(parsed.get("usage") if isinstance(parsed, dict) else None)

    def event_error(self, event: SSEEvent) -> tuple[str, str | None] | None:
        return responses_event_error(event)

    def observe(self, event: SSEEvent, state: StreamState) -> bool:
        if not event.data:
            return True
        state.last_data = event.data
        kind = responses_event_type(event)
        if kind in _TERMINAL_RESPONSE_EVENTS:
            state.terminal = True
            parsed = json_object(event.data) or {}
            response = parsed.get("response")
            if isinstance(response, dict):
                state.usage = usage_from_responses(response.get("usage"))
            if kind in ("error", "response.failed") and state.error is None:
                reported = self.event_error(event)
                state.error = reported[0] if reported else "upstream stream error"
        return True

    def error_frame(self, error: GatewayError, state: StreamState) -> bytes:
        match = _SEQUENCE.search(state.last_data)
        return responses_error_frame(error, sequence_number=int(match.group(1)) + 1 if match else 0)


CHAT_COMPLETIONS = ChatCompletionsEndpoint()
RESPONSES = ResponsesEndpoint()
