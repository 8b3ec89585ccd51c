"""OpenAI Responses event stream → Anthropic Messages event stream (spec §3, §4.2 for errors,
§1.7 for stop sequences on the output side).

Pure code over plain data: no Django, no I/O, no SSE byte framing. The caller frames each
`(event_name, payload)` pair as `event: name\\ndata: json\\n\\n` and owns the upstream connection.

Invariants of `AnthropicStreamTranslator` (the anthropic SDK accumulator relies on them, §3.2):

- `message_start` is the first event, followed by exactly one `ping`.
- Content block indexes are `0..n-1` in start order; at most one block is open at a time (upstream
  items that interleave are buffered and replayed, §3.3); every `content_block_start` gets exactly
  one `content_block_stop`, and all deltas for a block come between the two.
- A thinking block whose reasoning item completed gets one `signature_delta` (envelope §1.5 with
  `nx` = the item that followed) immediately before its stop.
- The stream ends with exactly one of `message_delta` + `message_stop`, or `error`; after that
  `feed`/`end` emit nothing and `finished` is True (the caller then closes upstream — this is also
  how a matched stop sequence aborts generation early, §1.7).
- Text never shows a partial stop sequence: the longest suffix that could still grow into one is
  held back until it either completes (stop) or cannot (flushed) (§1.7).
- Text is handled as `str` (code points) end to end: no byte offsets, so emoji and other
  multi-byte characters are never split (§6.34).
- Linear in the size of the stream: text, arguments and thinking received so far are kept as
  pieces (`TextPieces`), never re-copied per delta, so one huge delta or a million small ones cost
  time proportional to their total size.
"""

from __future__ import annotations

import bisect
import json
import logging
import math
from dataclasses import dataclass, field
from typing import Any

from gateway.converters.common import ConvertedRequest, next_item_descriptor, signature_encode
from gateway.converters.responses_to_anthropic import (
    CUT_MESSAGE,
    TIMEOUT_MESSAGE,
    Event,
    anthropic_usage,
    as_dict,
    as_int,
    as_list,
    as_str,
    citation_of,
    error_fields,
    is_search,
    message_id_of,
    reasoning_text_of,
    refusal_details,
    service_tier_of,
    stop_find,
    stop_holdback,
    stop_reason_of,
    usage_zero,
    web_search_blocks,
)
from gateway.core.errors import POLICY_CODES, anthropic_error_object, anthropic_error_type

logger = logging.getLogger(__name__)


class TextPieces:
    """Text received in pieces. `text += piece` on an attribute copies everything so far (CPython
    only extends a string in place when it is held by a local variable), which made a long
    stream of deltas quadratic; here appending is O(piece) and reading is O(what is read)."""

    __slots__ = ("_ends", "_pieces")

    def __init__(self) -> None:
        self._pieces: list[str] = []
        self._ends: list[int] = []
        """`_ends[i]`: the length of the text up to and including `_pieces[i]` (for bisect)."""

    def __len__(self) -> int:
        return self._ends[-1] if self._ends else 0

    def __iadd__(self, piece: str) -> TextPieces:
        if piece:
            self._pieces.append(piece)
            self._ends.append(len(self) + len(piece))
        return self

    def __getitem__(self, span: slice) -> str:
        """`text[start:end]` (non-negative bounds, step 1), reading only the pieces it covers."""
        start, end, _ = span.indices(len(self))
        if start >= end:
            return ""
        first = bisect.bisect_right(self._ends, start)
        offset = self._ends[first - 1] if first else 0
        out: list[str] = []
        for index in range(first, len(self._pieces)):
            piece = self._pieces[index]
            out.append(piece[max(start - offset, 0) : end - offset])
            offset += len(piece)
            if offset >= end:
                break
        return "".join(out)

    def rest_of(self, final: str) -> str:
        """What `final` adds after this text when it starts with all of it; else "" (O(len(final)))."""
        if len(final) <= len(self):
            return ""
        position = 0
        for piece in self._pieces:
            if not final.startswith(piece, position):
                return ""
            position += len(piece)
        return final[position:]


@dataclass(eq=False)
class _Part:
    """One message content part (`output_text` or `refusal`) → one Anthropic text block."""

    refusal: bool = False
    raw: TextPieces = field(default_factory=TextPieces)
    """Upstream text so far (citations slice it, §2.2)."""
    index: int | None = None
    """Anthropic block index once opened (blocks open lazily, at the first visible text)."""
    held: str = ""
    """Stop-sequence hold-back: a suffix that could still become a stop sequence (§1.7)."""
    prefill: int | None = None
    """How much of the prefill the text repeated so far, while it may still be the prefill (§6.5);
    None when not (or no longer) matching. A count, not the text: no copy grows per delta."""
    closed: bool = False


@dataclass(eq=False)
class _Item:
    """One upstream output item."""

    kind: str
    data: dict[str, Any] = field(default_factory=dict)
    index: int | None = None
    sent: TextPieces = field(default_factory=TextPieces)
    """Arguments / thinking text already emitted (to emit only a missing remainder at `done`)."""
    parts: dict[int, _Part] = field(default_factory=dict)
    separators: set[int] = field(default_factory=set)
    source: str | None = None
    """Reasoning: "summary" or "content" — whichever streamed first is the thinking text."""
    done: bool = False


class AnthropicStreamTranslator:
    """Responses stream events → Anthropic Messages stream events (§3.3). See module docstring."""

    def __init__(self, *, request: ConvertedRequest, model: str, upstream_model: str) -> None:
        self._request = request
        self._model = model
        self._upstream_model = upstream_model
        self._stops = [s for s in request.stop_sequences if s]
        self._prefill_armed = bool(request.prefill)
        self._out: list[Event] = []
        self._started = False
        self._finished = False
        self._next_index = 0
        self._open: _Part | _Item | None = None
        self._items: dict[int, _Item] = {}
        self._active: int | None = None
        self._queued: dict[int, list[dict[str, Any]]] = {}
        self._done_items: list[dict[str, Any]] = []
        self._had_tool = False
        self._had_refusal = False
        self._chars = 0
        self._response_usage: dict[str, Any] | None = None
        self._error: tuple[str, str] | None = None

    # -- public API ----------------------------------------------------------------------------

    @property
    def finished(self) -> bool:
        """A terminal `message_stop` or `error` was emitted: stop reading, close upstream."""
        return self._finished

    @property
    def response_usage(self) -> dict[str, Any] | None:
        """The raw Responses `usage` of the terminal event (for the audit record)."""
        return self._response_usage

    @property
    def error(self) -> tuple[str, str] | None:
        """(Anthropic error type, message) when the stream ended in an `error` event."""
        return self._error

    def feed(self, event: dict[str, Any]) -> list[Event]:
        """Translate one upstream event (the JSON of one SSE `data:`)."""
        if self._finished or not isinstance(event, dict):
            return []
        kind = as_str(event.get("type"))
        if kind in ("response.completed", "response.incomplete", "response.failed"):
            self._terminal(event)
        elif kind == "error":
            self._fail(*error_fields(event), usage=None)
        elif kind == "response.created":
            self._ensure_started(as_dict(event.get("response")))
        elif isinstance(event.get("output_index"), int):
            self._route(event["output_index"], event)
        return self._take()

    def end(self, *, reason: str = "cut") -> list[Event]:
        """The upstream ended without a terminal event (EOF, connection error, read timeout).

        A cut stream must never look complete (§3.3, §6.23): emit an `error` event.
        """
        if self._finished:
            return []
        if reason == "timeout":
            self._emit_error("timeout_error", TIMEOUT_MESSAGE)
        else:
            self._emit_error("api_error", CUT_MESSAGE)
        return self._take()

    # -- plumbing ------------------------------------------------------------------------------

    def _take(self) -> list[Event]:
        out, self._out = self._out, []
        return out

    def _emit(self, name: str, payload: dict[str, Any]) -> None:
        # Nested handlers may still try to emit after a stop-sequence finish; nothing may follow
        # the terminal event.
        if not self._finished:
            self._out.append((name, payload))

    def _ensure_started(self, response: dict[str, Any]) -> None:
        if self._started:
            return
        self._started = True
        usage = usage_zero()
        if response.get("service_tier") is not None:
            usage["service_tier"] = service_tier_of(response)
        message: dict[str, Any] = {
            "id": message_id_of(response),
            "type": "message",
            "role": "assistant",
            "model": self._model,
            "content": [],
            "stop_reason": None,
            "stop_sequence": None,
            "stop_details": None,
            "usage": usage,
        }
        self._emit("message_start", {"type": "message_start", "message": message})
        self._emit("ping", {"type": "ping"})

    def _route(self, output_index: int, event: dict[str, Any]) -> None:
        """Process events of one item at a time; buffer interleaved items and replay them (§3.3)."""
        self._ensure_started({})
        item = self._items.get(output_index)
        if item is not None and item.done:
            self._process(output_index, event)  # late event of a finished item: never reactivate it
        elif self._active is None or self._active == output_index:
            self._active = output_index
            self._process(output_index, event)
        else:
            self._queued.setdefault(output_index, []).append(event)
        while self._active is None and self._queued and not self._finished:
            output_index = min(self._queued)
            self._active = output_index
            for queued in self._queued.pop(output_index):
                self._process(output_index, queued)

    def _delta(self, index: int, delta: dict[str, Any]) -> None:
        self._emit("content_block_delta", {"type": "content_block_delta", "index": index, "delta": delta})

    def _start_block(self, block: dict[str, Any], owner: _Part | _Item) -> int:
        self._close_open()
        index = self._next_index
        self._next_index += 1
        self._emit("content_block_start", {"type": "content_block_start", "index": index, "content_block": block})
        self._open = owner
        owner.index = index
        return index

    def _close_open(self, *, nx: dict[str, Any] | None = None, flush: bool = True) -> None:
        """Close the open block. Text: flush the hold-back first. Thinking: signature first."""
        owner = self._open
        if owner is None:
            return
        if isinstance(owner, _Part) and flush:
            self._flush(owner)
            if self._open is not owner:
                return  # the flush completed a stop sequence, which closed everything
        if isinstance(owner, _Item) and owner.kind == "reasoning" and owner.done:
            # §1.5 / §3.3: the signature carries `nx`, known only once the next item started.
            signature = signature_encode(
                reasoning_id=as_str(owner.data.get("id")),
                encrypted_content=owner.data.get("encrypted_content"),
                model=self._upstream_model,
                next_item=nx,
            )
            assert owner.index is not None
            self._delta(owner.index, {"type": "signature_delta", "signature": signature})
        self._open = None
        assert owner.index is not None
        self._emit("content_block_stop", {"type": "content_block_stop", "index": owner.index})

    # -- per-item processing -------------------------------------------------------------------

    def _item(self, output_index: int, kind: str) -> _Item:
        item = self._items.get(output_index)
        if item is None:
            item = self._items[output_index] = _Item(kind=kind)
        return item

    def _process(self, output_index: int, event: dict[str, Any]) -> None:
        if self._finished:
            return
        kind = as_str(event.get("type"))
        if kind == "response.output_item.added":
            self._item_added(output_index, as_dict(event.get("item")))
        elif kind == "response.output_item.done":
            self._item_done(output_index, as_dict(event.get("item")))
        elif kind in ("response.output_text.delta", "response.refusal.delta"):
            part = self._part(output_index, event, refusal=kind == "response.refusal.delta")
            self._text_in(part, as_str(event.get("delta")))
        elif kind == "response.output_text.done":
            self._text_final(self._part(output_index, event, refusal=False), as_str(event.get("text")))
        elif kind == "response.refusal.done":
            self._text_final(self._part(output_index, event, refusal=True), as_str(event.get("refusal")))
        elif kind == "response.content_part.added":
            ptype = as_dict(event.get("part")).get("type")
            if ptype in ("output_text", "refusal"):
                self._part(output_index, event, refusal=ptype == "refusal")
        elif kind == "response.content_part.done":
            part_data = as_dict(event.get("part"))
            if part_data.get("type") in ("output_text", "refusal"):
                refusal = part_data.get("type") == "refusal"
                part = self._part(output_index, event, refusal=refusal)
                self._text_final(part, as_str(part_data.get("refusal" if refusal else "text")))
                self._end_part(part)
        elif kind == "response.output_text.annotation.added":
            self._annotation(self._part(output_index, event, refusal=False), as_dict(event.get("annotation")))
        elif kind == "response.function_call_arguments.delta":
            self._arguments(self._function_item(output_index, event), as_str(event.get("delta")), final=False)
        elif kind == "response.function_call_arguments.done":
            self._arguments(self._function_item(output_index, event), as_str(event.get("arguments")), final=True)
        elif kind in ("response.reasoning_summary_part.added", "response.reasoning_summary_text.delta"):
            self._thinking(output_index, "summary", as_int(event.get("summary_index")), as_str(event.get("delta")))
        elif kind == "response.reasoning_text.delta":
            self._thinking(output_index, "content", as_int(event.get("content_index")), as_str(event.get("delta")))
        # Everything else (web_search_call.*, *.done echoes, other tools' events) carries nothing
        # the Anthropic stream needs (§3.1 "ignore").

    def _item_added(self, output_index: int, data: dict[str, Any]) -> None:
        kind = as_str(data.get("type"))
        if isinstance(self._open, _Item) and self._open.kind == "reasoning" and self._open.done:
            # §3.3: the item after a reasoning item fixes its `nx`; close the thinking block now.
            self._close_open(nx=next_item_descriptor(data))
        item = self._item(output_index, kind)
        item.kind = kind
        item.data = data
        if kind == "reasoning" and self._request.thinking:
            self._start_block({"type": "thinking", "thinking": "", "signature": ""}, item)
        elif kind == "function_call":
            self._open_tool(item)

    def _item_done(self, output_index: int, data: dict[str, Any]) -> None:
        kind = as_str(data.get("type"))
        item = self._item(output_index, kind)
        if data:
            item.data = data
            self._done_items.append(data)
        if kind == "message":
            # Parts that never streamed (or streamed short) still reach the client (§3.3 part.done).
            for content_index, part_data in enumerate(as_list(data.get("content"))):
                part_data = as_dict(part_data)
                if part_data.get("type") not in ("output_text", "refusal"):
                    continue
                refusal = part_data.get("type") == "refusal"
                part = self._part_at(item, content_index, refusal=refusal)
                self._text_final(part, as_str(part_data.get("refusal" if refusal else "text")))
            for _, part in sorted(item.parts.items()):
                self._end_part(part)
        elif kind == "function_call":
            self._arguments(self._function_item(output_index, {}), as_str(data.get("arguments")), final=True)
            if self._open is item:
                self._close_open()
        elif kind == "reasoning":
            if self._open is item and not self._request.display_omitted:
                self._thinking_delta(item, item.sent.rest_of(reasoning_text_of(data)))
            # Keep the thinking block open: its signature needs the next item (§3.3 pending_thinking).
        elif kind == "web_search_call" and is_search(data):
            tool_id, tool_input, result = web_search_blocks(data)
            start = {"type": "server_tool_use", "id": tool_id, "name": "web_search", "input": {}}
            index = self._start_block(start, item)
            if tool_input:
                partial = json.dumps(tool_input, ensure_ascii=False, separators=(",", ":"))
                self._delta(index, {"type": "input_json_delta", "partial_json": partial})
            self._close_open()
            self._start_block(result, _Item(kind="web_search_tool_result"))
            self._close_open()
        item.done = True
        if self._active == output_index:
            self._active = None

    # -- text ----------------------------------------------------------------------------------

    def _part_at(self, item: _Item, content_index: int, *, refusal: bool) -> _Part:
        part = item.parts.get(content_index)
        if part is None:
            part = item.parts[content_index] = _Part(refusal=refusal)
        if refusal:
            part.refusal = True
            self._had_refusal = True
        return part

    def _part(self, output_index: int, event: dict[str, Any], *, refusal: bool) -> _Part:
        return self._part_at(self._item(output_index, "message"), as_int(event.get("content_index")), refusal=refusal)

    def _text_in(self, part: _Part, delta: str) -> None:
        """New upstream text for a part: prefill strip → stop-sequence hold-back → emit."""
        if not delta or part.closed:
            return
        part.raw += delta
        self._chars += len(delta)
        text = delta
        if not part.refusal and self._prefill_armed:
            self._prefill_armed = False
            part.prefill = 0  # this is the first answer text: it may repeat the prefill
        if part.prefill is not None:
            prefill, matched = self._request.prefill, part.prefill
            if matched + len(text) < len(prefill) and prefill.startswith(text, matched):
                part.prefill = matched + len(text)  # undecided yet: show nothing
                return
            part.prefill = None
            rest = prefill[matched:]
            text = text[len(rest) :] if text.startswith(rest) else prefill[:matched] + text
        self._hold(part, text)

    def _hold(self, part: _Part, text: str) -> None:
        """Emit text, keeping back any suffix that may still become a stop sequence (§1.7)."""
        if not self._stops:
            self._emit_text(part, text)
            return
        buffer = part.held + text
        found = stop_find(buffer, self._stops)
        if found:
            part.held = ""
            self._emit_text(part, buffer[: found[0]])
            self._stop_sequence(found[1])
            return
        keep = stop_holdback(buffer, self._stops)
        part.held = buffer[len(buffer) - keep :] if keep else ""
        self._emit_text(part, buffer[: len(buffer) - keep])

    def _emit_text(self, part: _Part, text: str) -> None:
        if not text:
            return
        if self._open is not part:
            self._start_block({"type": "text", "text": ""}, part)
        assert part.index is not None
        self._delta(part.index, {"type": "text_delta", "text": text})

    def _text_final(self, part: _Part, final: str) -> None:
        # Upstream `*.done` carries the whole text; send only what the deltas did not.
        self._text_in(part, part.raw.rest_of(final))

    def _flush(self, part: _Part) -> None:
        """End of a part: undecided prefill text was not the prefill; held text was no stop."""
        if part.prefill is not None:
            text, part.prefill = self._request.prefill[: part.prefill], None
            self._hold(part, text)
        if part.held and not self._finished:
            text, part.held = part.held, ""
            self._emit_text(part, text)

    def _end_part(self, part: _Part) -> None:
        if part.closed:
            return
        self._flush(part)
        if self._open is part:
            self._close_open()
        part.closed = True

    def _annotation(self, part: _Part, annotation: dict[str, Any]) -> None:
        cited = citation_of(annotation, part.raw)
        if cited is None or part.closed:
            return
        if self._open is not part:
            self._start_block({"type": "text", "text": ""}, part)
        assert part.index is not None
        self._delta(part.index, {"type": "citations_delta", "citation": cited[0]})

    def _stop_sequence(self, sequence: str) -> None:
        """§1.7: a stop sequence completed — close, report it and end (caller closes upstream)."""
        self._close_open()
        # No upstream usage yet: output_tokens is an estimate (ceil(chars / 4)), documented as
        # approximate; input counts stay as message_start's zeros.
        usage = {"output_tokens": math.ceil(self._chars / 4)}
        self._finish_message("stop_sequence", None, usage, stop_sequence=sequence)

    # -- tools and thinking --------------------------------------------------------------------

    def _open_tool(self, item: _Item) -> None:
        self._had_tool = True
        name = as_str(item.data.get("name"))
        call_id = as_str(item.data.get("call_id")) or as_str(item.data.get("id"))
        block = {"type": "tool_use", "id": call_id, "name": self._request.tool_names.get(name, name), "input": {}}
        self._start_block(block, item)

    def _function_item(self, output_index: int, event: dict[str, Any]) -> _Item:
        item = self._item(output_index, "function_call")
        if item.index is None:
            # Arguments without `output_item.added`: open with what we know.
            item.kind = "function_call"
            item.data = item.data or {"type": "function_call", "id": as_str(event.get("item_id"))}
            self._open_tool(item)
        return item

    def _arguments(self, item: _Item, text: str, *, final: bool) -> None:
        """§6.15: upstream argument deltas pass verbatim, so their concatenation == arguments."""
        if self._open is not item:
            return
        if final:
            text = item.sent.rest_of(text)
        if not text:
            return
        item.sent += text
        self._chars += len(text)
        assert item.index is not None
        self._delta(item.index, {"type": "input_json_delta", "partial_json": text})

    def _thinking(self, output_index: int, source: str, position: int, delta: str) -> None:
        item = self._items.get(output_index)
        if item is None or self._open is not item or item.kind != "reasoning":
            return  # thinking not requested (no block), or a stray event
        if item.source is None:
            item.source = source
        elif item.source != source:
            return  # summary and raw reasoning text are alternatives, never mixed (§1.5)
        if position > 0 and position not in item.separators:
            item.separators.add(position)
            self._thinking_delta(item, "\n\n")  # §6.18: parts joined by a blank line
        self._chars += len(delta)
        self._thinking_delta(item, delta)

    def _thinking_delta(self, item: _Item, text: str) -> None:
        if not text or self._request.display_omitted:
            return  # display "omitted": the block carries only its signature (§6.18)
        item.sent += text
        assert item.index is not None
        self._delta(item.index, {"type": "thinking_delta", "thinking": text})

    # -- endings -------------------------------------------------------------------------------

    def _terminal(self, event: dict[str, Any]) -> None:
        response = as_dict(event.get("response"))
        self._ensure_started(response)
        # Replay anything still buffered from interleaved items before closing (§3.3).
        for output_index in sorted(self._queued):
            self._active = output_index
            for queued in self._queued.pop(output_index):
                self._process(output_index, queued)
        if self._finished:
            return
        usage = response.get("usage")
        self._response_usage = usage if isinstance(usage, dict) else None
        if event.get("type") == "response.failed":
            self._fail(*error_fields(response.get("error")), usage=self._response_usage)
            return
        self._close_open()
        if self._finished:
            return
        output = as_list(response.get("output")) or self._done_items
        stop_reason, stop_details = stop_reason_of(
            response, matched=None, had_tool=self._had_tool, had_refusal=self._had_refusal, policy=None
        )
        full = anthropic_usage(self._response_usage, output=output, tool_usage=response.get("tool_usage"))
        self._finish_message(stop_reason, stop_details, full)

    def _fail(self, code: str | None, message: str, *, usage: dict[str, Any] | None) -> None:
        """`response.failed` / `error` — whichever comes first; later ones are ignored (§6.24)."""
        if code in POLICY_CODES:
            # A policy failure is the model refusing: end the message normally as a refusal.
            self._ensure_started({})
            self._close_open()
            if usage is None:
                full: dict[str, Any] = {"output_tokens": math.ceil(self._chars / 4)}
            else:
                full = anthropic_usage(usage, output=self._done_items)
            self._finish_message("refusal", refusal_details(code, message), full)
            return
        self._emit_error(anthropic_error_type(code=code)[1], message)

    def _finish_message(
        self,
        stop_reason: str,
        stop_details: dict[str, Any] | None,
        usage: dict[str, Any],
        *,
        stop_sequence: str | None = None,
    ) -> None:
        delta = {"stop_reason": stop_reason, "stop_sequence": stop_sequence, "stop_details": stop_details}
        self._emit("message_delta", {"type": "message_delta", "delta": delta, "usage": usage})
        self._emit("message_stop", {"type": "message_stop"})
        self._finished = True

    def _emit_error(self, error_type: str, message: str) -> None:
        # Close the open block so every start still has its stop; no flush — the message is void.
        self._close_open(flush=False)
        self._emit("error", anthropic_error_object(error_type, message))
        self._error = (error_type, message)
        self._finished = True
