"""OpenAI Responses result / event stream → Anthropic Message / Messages event stream.

Spec: docs/anthropic-mapping.md §2 (non-stream), §3 (stream), §4.2 (errors),
§1.7 (stop-sequence emulation, output side) and the output-side edge cases of §6.

Pure code over plain data: no Django, no I/O, no SSE byte framing. The caller frames each
`(event_name, payload)` pair as `event: name\\ndata: json\\n\\n` and owns the upstream connection.

The stream translator (§3) is `responses_to_anthropic_stream`; what both share (usage, stop
reasons, citations, refusals, stop-sequence search) is here.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from pydantic_core import from_json

from gateway.converters.common import ConvertedRequest, next_item_descriptor, signature_encode
from gateway.core.errors import POLICY_CODES, anthropic_error_type

if TYPE_CHECKING:  # the stream's text accumulates in pieces; citations read it like a str
    from gateway.converters.responses_to_anthropic_stream import TextPieces

logger = logging.getLogger(__name__)

Event = tuple[str, dict[str, Any]]

_POLICY_CATEGORY = {"bio_policy": "bio"}

CUT_MESSAGE = "upstream stream terminated unexpectedly"
TIMEOUT_MESSAGE = "upstream stream timed out"


class UpstreamFailure(Exception):
    """A Responses result with `status: "failed"` (non-policy code): render as an HTTP error."""

    def __init__(self, code: str | None, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message

    @property
    def status(self) -> int:
        return anthropic_error_type(code=self.code)[0]

    @property
    def error_type(self) -> str:
        return anthropic_error_type(code=self.code)[1]


# ---------------------------------------------------------------------------------------------
# Small helpers over untyped JSON
# ---------------------------------------------------------------------------------------------


def as_int(value: Any) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) else 0


def as_str(value: Any) -> str:
    return value if isinstance(value, str) else ""


def as_dict(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def as_list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else []


def error_fields(obj: Any) -> tuple[str | None, str]:
    """(code, message) of an error, flat `{code,message}` or nested `{"error":{…}}` (§3.1)."""
    err = as_dict(obj)
    if isinstance(err.get("error"), dict):
        err = err["error"]
    code = err.get("code")
    code = code if isinstance(code, str) and code else None
    message = as_str(err.get("message")) or code or "upstream error"
    return code, message


def refusal_details(code: str | None, explanation: str | None) -> dict[str, Any]:
    # anthropic RefusalStopDetails: category is a closed literal set, so only map what fits.
    return {"type": "refusal", "category": _POLICY_CATEGORY.get(code or ""), "explanation": explanation}


def message_id_of(response: dict[str, Any]) -> str:
    return "msg_" + as_str(response.get("id")).removeprefix("resp_")


def service_tier_of(response: dict[str, Any]) -> str:
    return "priority" if response.get("service_tier") == "priority" else "standard"


def usage_zero() -> dict[str, Any]:
    return {"input_tokens": 0, "output_tokens": 0, "cache_read_input_tokens": 0, "cache_creation_input_tokens": 0}


def is_search(item: dict[str, Any]) -> bool:
    # Only `search` actions are Anthropic web searches; `open_page` / `find_in_page` are sub-steps
    # with no Anthropic counterpart (§2.2 "anything else: drop").
    action = as_dict(item.get("action"))
    return bool(action.get("type", "search") == "search")


def anthropic_usage(
    usage: dict[str, Any] | None,
    *,
    output: list[Any] | None = None,
    tool_usage: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Anthropic `usage` from a Responses `usage` (§2.4). Missing → zeros.

    OpenAI `input_tokens` include cached tokens; Anthropic's exclude cache reads and writes.
    """
    u = as_dict(usage)
    in_details = as_dict(u.get("input_tokens_details"))
    cached = as_int(in_details.get("cached_tokens"))
    written = as_int(in_details.get("cache_write_tokens"))
    result: dict[str, Any] = {
        "input_tokens": max(0, as_int(u.get("input_tokens")) - cached - written),
        "cache_read_input_tokens": cached,
        "cache_creation_input_tokens": written,
        "output_tokens": as_int(u.get("output_tokens")),
        "output_tokens_details": {
            "thinking_tokens": as_int(as_dict(u.get("output_tokens_details")).get("reasoning_tokens"))
        },
    }
    searches = as_dict(as_dict(tool_usage).get("web_search")).get("num_requests")
    if not isinstance(searches, int) or isinstance(searches, bool):
        searches = sum(
            1 for item in as_list(output) if as_dict(item).get("type") == "web_search_call" and is_search(as_dict(item))
        )
    if searches:
        result["server_tool_use"] = {"web_search_requests": searches, "web_fetch_requests": 0}
    return result


def _parse_arguments(arguments: str) -> dict[str, Any]:
    """Tool input from (possibly truncated) JSON arguments (§2.2): "" → {}, partial → partial parse."""
    if not arguments:
        return {}
    try:
        value = from_json(arguments, allow_partial=True)
    except ValueError:
        logger.info("unparseable function_call arguments; using {}")
        return {}
    if not isinstance(value, dict):
        logger.info("function_call arguments are not a JSON object; using {}")
        return {}
    return value


def reasoning_text_of(item: dict[str, Any]) -> str:
    """Thinking text: summaries joined by a blank line, else the reasoning_text content (§1.5)."""
    summary = [
        as_str(as_dict(s).get("text")) for s in as_list(item.get("summary")) if as_dict(s).get("type") == "summary_text"
    ]
    if summary:
        return "\n\n".join(summary)
    content = [
        as_str(as_dict(c).get("text"))
        for c in as_list(item.get("content"))
        if as_dict(c).get("type") == "reasoning_text"
    ]
    return "\n\n".join(content)


def citation_of(annotation: dict[str, Any], text: str | TextPieces) -> tuple[dict[str, Any], int] | None:
    """(web_search_result_location citation, end index) for a `url_citation`; else None (§2.2).

    Indices are Python str (code point) indices, clamped to the text (spec §7 open item).
    """
    if annotation.get("type") != "url_citation":
        return None
    start = min(max(as_int(annotation.get("start_index")), 0), len(text))
    end = min(max(as_int(annotation.get("end_index")), start), len(text))
    title = annotation.get("title")
    citation = {
        "type": "web_search_result_location",
        "url": as_str(annotation.get("url")),
        "title": title if isinstance(title, str) else None,
        "cited_text": text[start:end],
        "encrypted_index": "",
    }
    return citation, end


def web_search_blocks(item: dict[str, Any]) -> tuple[str, dict[str, Any], dict[str, Any]]:
    """(server tool id, server_tool_use input, web_search_tool_result content) (§2.2)."""
    tool_id = "srvtoolu_" + as_str(item.get("id"))
    action = as_dict(item.get("action"))
    query = action.get("query")
    if not isinstance(query, str) or not query:
        queries = [q for q in as_list(action.get("queries")) if isinstance(q, str)]
        query = queries[0] if queries else None
    tool_input: dict[str, Any] = {"query": query} if query is not None else {}
    content: Any
    if item.get("status") == "failed":
        content = {"type": "web_search_tool_result_error", "error_code": "unavailable"}
    else:
        content = [
            {
                "type": "web_search_result",
                "url": as_str(as_dict(src).get("url")),
                "title": as_str(as_dict(src).get("title")) or as_str(as_dict(src).get("url")),
                "encrypted_content": "",
                "page_age": None,
            }
            for src in as_list(action.get("sources"))
            if as_str(as_dict(src).get("url"))
        ]
    return tool_id, tool_input, {"type": "web_search_tool_result", "tool_use_id": tool_id, "content": content}


def stop_find(text: str, sequences: list[str]) -> tuple[int, str] | None:
    """The first stop sequence to *complete* in `text`: (start, sequence), or None (§1.7).

    "First to complete" (earliest end, then longest) is what incremental generation would stop
    at, so the result does not depend on how the text was split into deltas.
    """
    best: tuple[int, int, str] | None = None
    for seq in sequences:
        pos = text.find(seq)
        if pos < 0:
            continue
        end = pos + len(seq)
        if best is None or end < best[0] or (end == best[0] and pos < best[1]):
            best = (end, pos, seq)
    return (best[1], best[2]) if best else None


def stop_holdback(text: str, sequences: list[str]) -> int:
    """Length of the longest suffix of `text` that is a proper prefix of some stop sequence."""
    longest = max((len(s) for s in sequences), default=0)
    for k in range(min(len(text), longest - 1), 0, -1):
        tail = text[-k:]
        if any(len(s) > k and s.startswith(tail) for s in sequences):
            return k
    return 0


# ---------------------------------------------------------------------------------------------
# Non-stream (§2)
# ---------------------------------------------------------------------------------------------


def anthropic_message(
    response: dict[str, Any], *, request: ConvertedRequest, model: str, upstream_model: str
) -> dict[str, Any]:
    """The Anthropic Message for a non-stream Responses result (§2.1-2.4).

    Raises `UpstreamFailure` for `status: "failed"`, except policy codes, which are a refusal
    (same as the stream, §3.3 / §4.2).
    """
    policy: tuple[str | None, str] | None = None
    if response.get("status") == "failed":
        code, message = error_fields(response.get("error"))
        if code not in POLICY_CODES:
            raise UpstreamFailure(code, message)
        policy = (code, message)

    output = [item for item in as_list(response.get("output")) if isinstance(item, dict)]
    answer = _blocks_of(output, request=request, upstream_model=upstream_model)
    stop_reason, stop_details = stop_reason_of(
        response, matched=answer.matched, had_tool=answer.had_tool, had_refusal=answer.had_refusal, policy=policy
    )
    usage = anthropic_usage(response.get("usage"), output=output, tool_usage=response.get("tool_usage"))
    usage["service_tier"] = service_tier_of(response)
    return {
        "id": message_id_of(response),
        "type": "message",
        "role": "assistant",
        "model": model,
        "content": answer.content,
        "stop_reason": stop_reason,
        "stop_sequence": answer.matched,
        "stop_details": stop_details,
        "usage": usage,
    }


@dataclass(slots=True)
class _Answer:
    """The content blocks of a non-stream answer as they are collected, and what decides its stop."""

    prefill: str
    """The assistant prefill still to strip from the first non-empty answer text (§6.5)."""
    stops: list[str]
    content: list[dict[str, Any]] = field(default_factory=list)
    had_tool: bool = False
    had_refusal: bool = False
    matched: str | None = None
    """The stop sequence found (§1.7): nothing after it is kept."""


def _blocks_of(output: list[dict[str, Any]], *, request: ConvertedRequest, upstream_model: str) -> _Answer:
    answer = _Answer(prefill=request.prefill, stops=[s for s in request.stop_sequences if s])
    for position, item in enumerate(output):
        kind = item.get("type")
        if kind == "reasoning":
            if not request.thinking:
                continue  # §1.5: thinking not requested → reasoning is not surfaced
            following = output[position + 1] if position + 1 < len(output) else None
            signature = signature_encode(
                reasoning_id=as_str(item.get("id")),
                encrypted_content=item.get("encrypted_content"),
                model=upstream_model,
                next_item=next_item_descriptor(following) if following else None,
            )
            thinking = "" if request.display_omitted else reasoning_text_of(item)
            answer.content.append({"type": "thinking", "thinking": thinking, "signature": signature})
        elif kind == "message":
            _message_blocks(item, answer)
        elif kind == "function_call":
            answer.had_tool = True
            name = as_str(item.get("name"))
            answer.content.append(
                {
                    "type": "tool_use",
                    "id": as_str(item.get("call_id")),
                    "name": request.tool_names.get(name, name),
                    "input": _parse_arguments(as_str(item.get("arguments"))),
                }
            )
        elif kind == "web_search_call":
            if not is_search(item):
                continue
            tool_id, tool_input, result = web_search_blocks(item)
            answer.content.append({"type": "server_tool_use", "id": tool_id, "name": "web_search", "input": tool_input})
            answer.content.append(result)
        else:
            logger.debug("dropping Responses output item of type %r", kind)
        if answer.matched is not None:
            break  # §1.7: everything after the stop sequence is dropped
    return answer


def _message_blocks(item: dict[str, Any], answer: _Answer) -> None:
    """The text blocks of one `message` output item, up to a stop sequence."""
    for part in as_list(item.get("content")):
        part = as_dict(part)
        if part.get("type") == "output_text":
            text = as_str(part.get("text"))
            cites = [c for a in as_list(part.get("annotations")) if (c := citation_of(as_dict(a), text))]
            offset = 0
            # §6.5: strip the prefill from the first non-empty answer text.
            if answer.prefill and text:
                if text.startswith(answer.prefill):
                    offset = len(answer.prefill)
                answer.prefill = ""
            visible = text[offset:]
        elif part.get("type") == "refusal":
            answer.had_refusal = True
            text = visible = as_str(part.get("refusal"))
            cites, offset = [], 0
        else:
            continue
        found = stop_find(visible, answer.stops) if answer.stops else None
        if found:
            # §1.7: truncate before the match; citations past the cut go with the text.
            visible = visible[: found[0]]
            cites = [c for c in cites if c[1] <= offset + found[0]]
            answer.matched = found[1]
        if visible or cites:
            block: dict[str, Any] = {"type": "text", "text": visible}
            if cites:
                block["citations"] = [c[0] for c in cites]
            answer.content.append(block)
        if answer.matched is not None:
            break


def stop_reason_of(
    response: dict[str, Any],
    *,
    matched: str | None,
    had_tool: bool,
    had_refusal: bool,
    policy: tuple[str | None, str] | None,
) -> tuple[str, dict[str, Any] | None]:
    """stop_reason and stop_details (§2.3).

    A matched stop sequence comes first: generation "stopped" there, and the stream — which
    aborts at the match and never sees the terminal status — must agree with the non-stream form.
    """
    if policy is not None:
        return "refusal", refusal_details(policy[0], policy[1])
    if matched is not None:
        return "stop_sequence", None
    if response.get("status") == "incomplete":
        reason = as_dict(response.get("incomplete_details")).get("reason")
        if reason == "max_output_tokens":
            return "max_tokens", None
        if reason == "content_filter":
            return "refusal", refusal_details(None, None)
    if had_tool:
        return "tool_use", None
    if had_refusal:
        return "refusal", refusal_details(None, None)
    return "end_turn", None
