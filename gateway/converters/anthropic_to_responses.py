"""Anthropic Messages request → OpenAI Responses request (spec sections 1.1-1.8).

Pure functions over plain JSON data: no Django, no I/O. The caller has already removed the
gateway's `vmx` envelope; it merges `providerArgs` into the result afterwards.

Invariants of the produced body (`ConvertedRequest.body`):

- `model` is `options.upstream_model`; `store` is always `False` (stateless on both sides) and
  `stream` is the client's boolean.
- `input` keeps the client's order exactly (spec 1.2): messages in order, blocks in order; only
  *adjacent* blocks that land in the same item are coalesced. Each `tool_result` and `tool_use`
  becomes its own top-level item at its position.
- Assistant text is always `output_text` (never `input_text`); mid-conversation `system`
  messages become `developer` messages in place.
- A replayed `reasoning` item is always immediately followed by the item it was paired with
  upstream when its envelope names one (spec 1.5); `fc_`/`msg_` ids are only sent next to their
  reasoning item. When the pairing cannot be honoured, reasoning item and ids are both dropped.
- Every function tool carries an explicit `strict` (spec 1.4); every function name matches
  `^[a-zA-Z0-9_-]{1,64}$` and `ConvertedRequest.tool_names` maps shortened names back.
- `temperature`/`top_p` never travel together with `reasoning`; `include` carries
  `"reasoning.encrypted_content"` whenever `reasoning` is sent.
- Things Responses cannot express (`stop_sequences`, prefill, `max_tokens: 0`) are reported on
  the `ConvertedRequest` for the response side to emulate, never sent upstream.

Every client value the converter reads is type-checked where it is read: a wrong one raises
`ConversionError` naming its dotted path in Anthropic's words (`messages.0.content.1.text: Input
should be a valid string`). No other exception may escape: it would reach the client as a 500.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Mapping
from typing import Any, TypeVar, cast

from gateway.converters.common import (
    ConversionError,
    ConvertedRequest,
    ConvertOptions,
    signature_decode,
    tool_name_shorten,
)

logger = logging.getLogger(__name__)
T = TypeVar("T")

MIN_OUTPUT_TOKENS = 16
"""Responses rejects `max_output_tokens < 16` (`integer_below_min_value`); spec 1.1."""

SAFETY_IDENTIFIER_MAX = 128
ENCRYPTED_CONTENT_INCLUDE = "reasoning.encrypted_content"
WEB_SEARCH_SOURCES_INCLUDE = "web_search_call.action.sources"

WEB_SEARCH_TOOL_TYPES = frozenset({"web_search_20250305", "web_search_20260209", "web_search_20260318"})
SERVICE_TIERS = {"auto": "auto", "standard_only": "default"}
THINKING_TYPES = frozenset({"enabled", "adaptive", "between_tools", "disabled"})

# Server-side tool blocks cannot be replayed statelessly (spec 1.2): dropped from history.
DROPPED_HISTORY_BLOCKS = frozenset(
    {
        "server_tool_use",
        "web_search_tool_result",
        "web_fetch_tool_result",
        "code_execution_tool_result",
        "bash_code_execution_tool_result",
        "text_editor_code_execution_tool_result",
        "container_upload",
        "tool_search_tool_result",
        "mcp_tool_use",
        "mcp_tool_result",
    }
)

# Top-level fields that have no Responses equivalent and are ignored on purpose (spec 1.1).
IGNORED_FIELDS = frozenset(
    {
        "cache_control",
        "container",
        "context_management",
        "diagnostics",
        "inference_geo",
        "mcp_servers",
        "user_profile_id",
        "workspace_id",
        "speed",
        "top_k",
    }
)


# --------------------------------------------------------------------------------------------
# Public API
# --------------------------------------------------------------------------------------------


def anthropic_to_responses(body: dict[str, Any], *, options: ConvertOptions) -> ConvertedRequest:
    """Convert a client's Anthropic Messages request into a Responses request (spec section 1).

    Raises `ConversionError` (rendered as Anthropic 400 `invalid_request_error`) for requests the
    gateway refuses (spec 1.8); everything else is left for upstream to judge.
    """
    body = _expect(body, dict, "body")
    _require_model(body)
    max_tokens = _require_max_tokens(body)
    messages = _required(body, "messages", list, "")
    if not messages:
        raise ConversionError("messages: List should have at least 1 item after validation, not 0")

    for key in sorted(IGNORED_FIELDS & body.keys()):
        logger.debug("anthropic_to_responses: ignoring %r (no Responses equivalent)", key)

    result = ConvertedRequest(body={})
    result.stop_sequences = _stop_sequences(body.get("stop_sequences"))
    # spec 1.1: max_tokens 0 is a cache pre-warm; still validate and convert the whole request.
    result.empty = max_tokens == 0

    tools, web_search_name, max_tool_calls = _convert_tools(body.get("tools"), result)
    tool_choice, parallel = _convert_tool_choice(body.get("tool_choice"), web_search_name, result.tool_names)

    builder = _InputBuilder(options, result.tool_names)
    for index, message in enumerate(messages):
        builder.add_message(index, message)
    items = builder.finish()
    if not items:
        raise ConversionError("messages: all messages are empty")
    result.prefill = _prefill(messages, items)

    out: dict[str, Any] = {"model": options.upstream_model}
    instructions = _instructions(body.get("system"))
    if instructions:
        out["instructions"] = instructions
    out["input"] = items
    # spec 1.1: clamp 1-15 (Claude Desktop probes with 1); 0 never reaches upstream (`empty`).
    out["max_output_tokens"] = max(max_tokens, MIN_OUTPUT_TOKENS)
    out["store"] = False
    out["stream"] = _stream(body.get("stream"))

    reasoning = _reasoning(body, options, result)
    if reasoning is None:
        for key in ("temperature", "top_p"):
            if body.get(key) is not None:
                out[key] = body[key]
    else:
        # spec 1.1/1.5: reasoning models reject sampling parameters.
        dropped = [key for key in ("temperature", "top_p") if body.get(key) is not None]
        if dropped:
            logger.debug("anthropic_to_responses: dropping %s because reasoning is sent", dropped)

    _tools_into(out, tools, tool_choice=tool_choice, parallel=parallel, max_tool_calls=max_tool_calls)
    _include_into(out, reasoning=reasoning, web_search=result.web_search)
    _options_into(out, body)
    result.body = out
    return result


def _tools_into(
    out: dict[str, Any],
    tools: list[dict[str, Any]],
    *,
    tool_choice: Any,
    parallel: bool | None,
    max_tool_calls: int | None,
) -> None:
    if tools:
        out["tools"] = tools
        if tool_choice is not None:
            out["tool_choice"] = tool_choice
        if parallel is not None:
            out["parallel_tool_calls"] = parallel
        if max_tool_calls is not None:
            out["max_tool_calls"] = max_tool_calls
    elif tool_choice is not None:
        # spec 1.4: OpenAI errors on a tool_choice without tools.
        logger.debug("anthropic_to_responses: dropping tool_choice without tools")


def _include_into(out: dict[str, Any], *, reasoning: dict[str, Any] | None, web_search: bool) -> None:
    include: list[str] = []
    if reasoning is not None:
        if reasoning:
            out["reasoning"] = reasoning
        include.append(ENCRYPTED_CONTENT_INCLUDE)
    if web_search:
        include.append(WEB_SEARCH_SOURCES_INCLUDE)
    if include:
        out["include"] = include


def _options_into(out: dict[str, Any], body: dict[str, Any]) -> None:
    """Structured output, the safety identifier and the service tier."""
    text_format = _text_format(body)
    if text_format is not None:
        out["text"] = {"format": text_format}

    safety_identifier = _safety_identifier(body.get("metadata"))
    if safety_identifier is not None:
        out["safety_identifier"] = safety_identifier

    service_tier = _optional(body, "service_tier", str, "")
    if service_tier is not None:
        if service_tier not in SERVICE_TIERS:
            raise ConversionError(f"service_tier: unknown value {_shown(service_tier)}")
        out["service_tier"] = SERVICE_TIERS[service_tier]


def reasoning_params_removed(body: dict[str, Any]) -> dict[str, Any]:
    """A copy of `body` without reasoning parameters (the one retry of spec 1.5).

    Drops `reasoning` and `"reasoning.encrypted_content"` from `include` (and `include` itself
    when nothing is left). Input items are kept as they are.
    """
    copy = {key: value for key, value in body.items() if key != "reasoning"}
    include = copy.pop("include", None)
    if isinstance(include, list):
        remaining = [entry for entry in include if entry != ENCRYPTED_CONTENT_INCLUDE]
        if remaining:
            copy["include"] = remaining
    elif include is not None:
        copy["include"] = include
    return copy


def reasoning_items_removed(body: dict[str, Any]) -> dict[str, Any]:
    """A copy of `body` with every `reasoning` input item and every output-item id removed.

    The fallback retry of spec 1.5 for an upstream 400 about a reasoning item: `fc_` ids on
    `function_call` items and `msg_` ids (plus the output-message `status`) on assistant
    messages are only valid next to their reasoning item, so they go too.
    """
    copy = dict(body)
    items = body.get("input")
    if not isinstance(items, list):
        return copy
    kept: list[Any] = []
    for item in items:
        if not isinstance(item, dict):
            kept.append(item)
            continue
        kind = item.get("type")
        if kind == "reasoning":
            continue
        if kind == "function_call" and "id" in item:
            item = {key: value for key, value in item.items() if key != "id"}
        elif kind == "message" and item.get("role") == "assistant" and "id" in item:
            item = {key: value for key, value in item.items() if key not in ("id", "status")}
        kept.append(item)
    copy["input"] = kept
    return copy


# --------------------------------------------------------------------------------------------
# Reading client values
# --------------------------------------------------------------------------------------------

_TYPE_NAMES: dict[type, str] = {str: "string", int: "integer", bool: "boolean", list: "list", dict: "dictionary"}
SHOWN_MAX = 80
"""Refusals quote the client's value; a huge one is cut to this many characters."""


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _join(where: str, key: str | int) -> str:
    return f"{where}.{key}" if where else str(key)


def _shown(value: object) -> str:
    text = repr(value)
    return text if len(text) <= SHOWN_MAX else text[: SHOWN_MAX - 1] + "…"


def _expect(value: object, kind: type[T], where: str) -> T:
    """`value` when it is a `kind` (JSON has no bool/int overlap: `true` is not an integer)."""
    if not (_is_int(value) if kind is int else isinstance(value, kind)):
        raise ConversionError(f"{where}: Input should be a valid {_TYPE_NAMES[kind]}")
    return cast(T, value)


def _optional(mapping: Mapping[str, Any], key: str, kind: type[T], where: str) -> T | None:
    """`mapping[key]` checked to be a `kind`; None when absent or null."""
    value = mapping.get(key)
    return None if value is None else _expect(value, kind, _join(where, key))


def _required(mapping: Mapping[str, Any], key: str, kind: type[T], where: str) -> T:
    value = _optional(mapping, key, kind, where)
    if value is None:
        raise ConversionError(f"{_join(where, key)}: Field required")
    return value


def _non_empty(value: str, where: str) -> str:
    if not value:
        raise ConversionError(f"{where}: String should have at least 1 character")
    return value


def _tag(mapping: Mapping[str, Any], where: str) -> str | None:
    """The `type` of a block, tool or option object. A string or nothing: the tag is compared
    and looked up in sets, which an object or a list in its place must not reach."""
    return _optional(mapping, "type", str, where)


def _json_text(value: object, where: str) -> str:
    """Compact JSON text of a client value (tool arguments, input examples)."""
    try:
        return json.dumps(value, separators=(",", ":"), ensure_ascii=False)
    except RecursionError:
        # The request's parser accepts deeper nesting than the encoder writes back.
        raise ConversionError(f"{where}: nested too deeply") from None


# --------------------------------------------------------------------------------------------
# Top-level fields (spec 1.1)
# --------------------------------------------------------------------------------------------


def _require_model(body: Mapping[str, Any]) -> None:
    _non_empty(_required(body, "model", str, ""), "model")


def _require_max_tokens(body: Mapping[str, Any]) -> int:
    value = _required(body, "max_tokens", int, "")
    if value < 0:
        raise ConversionError("max_tokens: Input should be greater than or equal to 0")
    return value


def _stream(value: object) -> bool:
    return False if value is None else _expect(value, bool, "stream")


def _stop_sequences(value: object) -> list[str]:
    """spec 1.7: emulated by the gateway, never sent upstream (Responses has no `stop`)."""
    if value is None:
        return []
    entries = [
        _expect(entry, str, f"stop_sequences.{index}")
        for index, entry in enumerate(_expect(value, list, "stop_sequences"))
    ]
    # An empty sequence would match everywhere; Anthropic has no such semantics.
    return [entry for entry in entries if entry]


def _instructions(system: object) -> str:
    """spec 1.1: string as-is; text blocks joined with a blank line; `cache_control` ignored."""
    if system is None:
        return ""
    if isinstance(system, str):
        return system if system.strip() else ""
    if not isinstance(system, list):
        raise ConversionError("system: Input should be a valid string or a list of text blocks")
    texts: list[str] = []
    for index, block in enumerate(system):
        text = _text_of(block, f"system.{index}")
        if text.strip():
            texts.append(text)
    return "\n\n".join(texts)


def _safety_identifier(metadata: object) -> str | None:
    """spec 1.1: `metadata.user_id` → `safety_identifier`, hashed when over 128 chars."""
    if metadata is None:
        return None
    user_id = _optional(_expect(metadata, dict, "metadata"), "user_id", str, "metadata")
    if not user_id:
        return None
    if len(user_id) <= SAFETY_IDENTIFIER_MAX:
        return user_id
    return hashlib.sha256(user_id.encode("utf-8")).hexdigest()


# --------------------------------------------------------------------------------------------
# Thinking → reasoning (spec 1.5)
# --------------------------------------------------------------------------------------------


def _effort_for_budget(budget: int, buckets: tuple[tuple[int, str], ...]) -> str:
    for bound, effort in buckets:
        if budget < bound:
            return effort
    return "xhigh"


def _reasoning(body: Mapping[str, Any], options: ConvertOptions, result: ConvertedRequest) -> dict[str, Any] | None:
    """The `reasoning` object to send, or None to send no reasoning parameters at all.

    Also sets `result.thinking` / `result.display_omitted`. An explicit `output_config.effort`
    wins over the `budget_tokens` bucket (it is the client's literal choice, spec 1.1).
    """
    thinking = _optional(body, "thinking", dict, "")
    thinking_type: str | None = None
    display: str | None = None
    budget: int | None = None
    if thinking is not None:
        thinking_type = _tag(thinking, "thinking")
        if thinking_type not in THINKING_TYPES:
            raise ConversionError(f"thinking.type: unknown thinking type {_shown(thinking_type)}")
        display = _optional(thinking, "display", str, "thinking")
        if display not in (None, "summarized", "omitted"):
            raise ConversionError(f"thinking.display: unknown value {_shown(display)}")
        if thinking_type == "enabled":
            budget = _required(thinking, "budget_tokens", int, "thinking")

    effort = _output_effort(body.get("output_config"))
    requested = thinking_type in ("enabled", "adaptive", "between_tools")
    if not options.reasoning:
        # DESIGN.md 2.2: the model entry says `reasoning: false`: no reasoning params, no thinking.
        if requested or effort is not None:
            logger.debug("anthropic_to_responses: model entry has reasoning disabled; not sending reasoning")
        return None
    if budget is not None and effort is None:
        effort = _effort_for_budget(budget, options.effort_buckets)
    if not requested:
        # spec 1.1: output_config.effort alone still maps to reasoning.effort (no summaries).
        return {"effort": effort} if effort is not None else None

    result.thinking = True
    result.display_omitted = display == "omitted"
    reasoning: dict[str, Any] = {}
    if effort is not None:
        reasoning["effort"] = effort
    if not result.display_omitted:
        reasoning["summary"] = options.summary
    return reasoning


def _output_effort(output_config: object) -> str | None:
    if output_config is None:
        return None
    return _optional(_expect(output_config, dict, "output_config"), "effort", str, "output_config")


# --------------------------------------------------------------------------------------------
# Structured outputs (spec 1.6)
# --------------------------------------------------------------------------------------------


def _text_format(body: Mapping[str, Any]) -> dict[str, Any] | None:
    output_config = _optional(body, "output_config", dict, "")
    fmt = _optional(output_config, "format", dict, "output_config") if output_config is not None else None
    field = "output_config.format"
    if fmt is None:
        fmt, field = _optional(body, "output_format", dict, ""), "output_format"
    if fmt is None:
        return None
    kind = _tag(fmt, field)
    if kind != "json_schema":
        raise ConversionError(f"{field}.type: unsupported format type {_shown(kind)}")
    schema = _required(fmt, "schema", dict, field)
    return {"type": "json_schema", "name": "output", "schema": schema, "strict": _strict_compatible(schema)}


def _strict_compatible(schema: object) -> bool:
    """OpenAI strict mode needs `additionalProperties: false` and every property required.

    The schema is the client's, of any shape: walked with a stack of pending subschemas rather
    than by recursion, which a deeply nested schema would exhaust.
    """
    pending = [schema]
    while pending:
        node = pending.pop()
        if isinstance(node, list):
            pending.extend(node)
            continue
        if not isinstance(node, dict):
            continue
        kind = node.get("type")
        is_object = kind == "object" or (isinstance(kind, list) and "object" in kind) or "properties" in node
        properties = node.get("properties")
        if is_object:
            if node.get("additionalProperties") is not False:
                return False
            names = set(properties) if isinstance(properties, dict) else set()
            required = node.get("required")
            required = required if isinstance(required, list) else []
            # Only strings name properties (and only they are sure to fit in a set).
            if not all(isinstance(entry, str) for entry in required) or names != set(required):
                return False
        if isinstance(properties, dict):
            pending.extend(properties.values())
        for key in ("$defs", "definitions"):
            defs = node.get(key)
            if isinstance(defs, dict):
                pending.extend(defs.values())
        for key in ("items", "prefixItems", "anyOf", "oneOf", "allOf", "not", "if", "then", "else"):
            if key in node:
                pending.append(node[key])
        if isinstance(node.get("additionalProperties"), dict):
            pending.append(node["additionalProperties"])
    return True


# --------------------------------------------------------------------------------------------
# Tools and tool_choice (spec 1.4)
# --------------------------------------------------------------------------------------------


def _convert_tools(tools: object, result: ConvertedRequest) -> tuple[list[dict[str, Any]], str | None, int | None]:
    """Responses tools, the client's web-search tool name (if any) and `max_tool_calls`."""
    if tools is None:
        return [], None, None
    converted: list[dict[str, Any]] = []
    web_search_name: str | None = None
    max_tool_calls: int | None = None
    for index, entry in enumerate(_expect(tools, list, "tools")):
        where = f"tools.{index}"
        tool = _expect(entry, dict, where)
        kind = _tag(tool, where)
        if kind is None or kind == "custom":
            converted.append(_function_tool(tool, where, result))
        elif kind in WEB_SEARCH_TOOL_TYPES:
            web_tool, max_uses = _web_search_tool(tool, where)
            converted.append(web_tool)
            web_search_name = _optional(tool, "name", str, where) or "web_search"
            if max_uses is not None:
                # spec 1.4: approximate, max_tool_calls applies to all built-in tools.
                max_tool_calls = max_uses
            result.web_search = True
        else:
            raise ConversionError(f"{where}: tool type {_shown(kind)} is not supported")
    return converted, web_search_name, max_tool_calls


def _shorten(name: str, tool_names: dict[str, str]) -> str:
    """spec 1.4: a valid OpenAI function name; shortened ones are recorded for the reverse map."""
    short = tool_name_shorten(name)
    if short != name:
        tool_names[short] = name
    return short


def _function_tool(tool: Mapping[str, Any], where: str, result: ConvertedRequest) -> dict[str, Any]:
    name = _non_empty(_required(tool, "name", str, where), f"{where}.name")
    schema = _required(tool, "input_schema", dict, where)
    out: dict[str, Any] = {"type": "function", "name": _shorten(name, result.tool_names)}
    description = _optional(tool, "description", str, where)
    examples = _optional(tool, "input_examples", list, where)
    if examples:
        # spec 1.4: no Responses field for examples; they are useful to the model as text.
        rendered = "\n".join(
            _json_text(example, f"{where}.input_examples.{index}") for index, example in enumerate(examples)
        )
        description = f"{description}\n\nInput examples:\n{rendered}" if description else f"Input examples:\n{rendered}"
    if description:
        out["description"] = description
    out["parameters"] = schema
    # spec 1.4: always explicit, otherwise Responses normalises the schema into strict mode.
    out["strict"] = _optional(tool, "strict", bool, where) is True
    return out


def _strings(values: list[Any], where: str) -> list[str]:
    return [_expect(value, str, f"{where}.{index}") for index, value in enumerate(values)]


def _web_search_tool(tool: Mapping[str, Any], where: str) -> tuple[dict[str, Any], int | None]:
    out: dict[str, Any] = {"type": "web_search"}
    allowed = _optional(tool, "allowed_domains", list, where)
    if allowed is not None:
        out["filters"] = {"allowed_domains": _strings(allowed, f"{where}.allowed_domains")}
    if tool.get("blocked_domains"):
        logger.debug("anthropic_to_responses: %s.blocked_domains has no Responses equivalent; dropped", where)
    location = _optional(tool, "user_location", dict, where)
    if location is not None:
        mapped = {
            key: location[key]
            for key in ("type", "city", "region", "country", "timezone")
            if location.get(key) is not None
        }
        mapped.setdefault("type", "approximate")
        out["user_location"] = mapped
    return out, _optional(tool, "max_uses", int, where)


def _convert_tool_choice(
    choice: object, web_search_name: str | None, tool_names: dict[str, str]
) -> tuple[Any, bool | None]:
    """(`tool_choice`, `parallel_tool_calls`), each None to omit."""
    if choice is None:
        return None, None
    choice = _expect(choice, dict, "tool_choice")
    kind = _tag(choice, "tool_choice")
    mapped: Any
    if kind == "auto":
        mapped = "auto"
    elif kind == "any":
        mapped = "required"
    elif kind == "none":
        mapped = "none"
    elif kind == "tool":
        name = _non_empty(_required(choice, "name", str, "tool_choice"), "tool_choice.name")
        if web_search_name is not None and name == web_search_name:
            mapped = {"type": "allowed_tools", "mode": "required", "tools": [{"type": "web_search"}]}
        else:
            mapped = {"type": "function", "name": _shorten(name, tool_names)}
    else:
        raise ConversionError(f"tool_choice.type: unknown tool_choice type {_shown(kind)}")
    disable_parallel = _optional(choice, "disable_parallel_tool_use", bool, "tool_choice")
    return mapped, (False if disable_parallel else None)


# --------------------------------------------------------------------------------------------
# Messages → input items (spec 1.2, 1.3, 1.5)
# --------------------------------------------------------------------------------------------


def _text_of(block: object, where: str) -> str:
    """The text of a `text` block (used where only text blocks are allowed)."""
    block = _expect(block, dict, where)
    kind = _tag(block, where)
    if kind != "text":
        raise ConversionError(f"{where}: expected a text block, got {_shown(kind)}")
    return _required(block, "text", str, where)


def _blocks(content: object, where: str) -> list[Any]:
    """`content` as a block list: a string is shorthand for one text block (spec 1.2)."""
    if isinstance(content, str):
        return [{"type": "text", "text": content}]
    if isinstance(content, list):
        return content
    raise ConversionError(f"{where}: Input should be a valid string or a list of content blocks")


def _image_part(block: Mapping[str, Any], where: str) -> dict[str, Any]:
    """spec 1.3: `detail` is required in message content parts, so it is always set."""
    source = _required(block, "source", dict, where)
    source_where = f"{where}.source"
    kind = _tag(source, source_where)
    if kind == "base64":
        media_type = _required(source, "media_type", str, source_where)
        data = _required(source, "data", str, source_where)
        return {"type": "input_image", "image_url": f"data:{media_type};base64,{data}", "detail": "auto"}
    if kind == "url":
        return {"type": "input_image", "image_url": _required(source, "url", str, source_where), "detail": "auto"}
    # `file` (Anthropic Files API ids) cannot be transferred to OpenAI.
    raise ConversionError(f"{where}: image source type {_shown(kind)} is not supported")


def _xml_attr(value: str) -> str:
    return value.replace("&", "&amp;").replace('"', "&quot;").replace("<", "&lt;")


def _document_parts(block: Mapping[str, Any], where: str) -> list[dict[str, Any]]:
    """spec 1.3 documents; `citations` config is ignored."""
    source = _required(block, "source", dict, where)
    source_where = f"{where}.source"
    kind = _tag(source, source_where)
    title = _optional(block, "title", str, where)
    if kind == "base64":
        media_type = _required(source, "media_type", str, source_where)
        data = _required(source, "data", str, source_where)
        filename = title or ("document.pdf" if media_type == "application/pdf" else "document")
        return [{"type": "input_file", "filename": filename, "file_data": f"data:{media_type};base64,{data}"}]
    if kind == "url":
        return [{"type": "input_file", "file_url": _required(source, "url", str, source_where)}]
    if kind == "text":
        data = _required(source, "data", str, source_where)
        context = _optional(block, "context", str, where)
        if title or context:
            # Pinned format: the title/context would otherwise be lost (spec 1.3).
            attrs = "".join(
                f' {name}="{_xml_attr(value)}"' for name, value in (("title", title), ("context", context)) if value
            )
            data = f"<document{attrs}>\n{data}\n</document>"
        return [{"type": "input_text", "text": data}]
    if kind == "content":
        inner = _blocks(source.get("content"), f"{source_where}.content")
        parts: list[dict[str, Any]] = []
        for index, entry in enumerate(inner):
            item_where = f"{source_where}.content.{index}"
            item = _expect(entry, dict, item_where)
            item_kind = _tag(item, item_where)
            if item_kind == "text":
                text = _text_of(item, item_where)
                if text.strip():
                    parts.append({"type": "input_text", "text": text})
            elif item_kind == "image":
                parts.append(_image_part(item, item_where))
            else:
                raise ConversionError(f"{item_where}: block type {_shown(item_kind)} is not supported in a document")
        return parts
    raise ConversionError(f"{where}: document source type {_shown(kind)} is not supported")


def _search_result_text(block: Mapping[str, Any], where: str) -> str:
    """spec 1.3: pinned rendering of a `search_result` block as text."""
    source = _required(block, "source", str, where)
    title = _required(block, "title", str, where)
    content = _required(block, "content", list, where)
    texts = [_text_of(item, f"{where}.content.{index}") for index, item in enumerate(content)]
    body = "\n\n".join(text for text in texts if text.strip())
    return f'<search_result title="{_xml_attr(title)}" source="{_xml_attr(source)}">\n{body}\n</search_result>'


def _user_parts(block: Mapping[str, Any], where: str) -> list[dict[str, Any]]:
    """Input parts for a user-side content block (message content or tool_result content)."""
    kind = _tag(block, where)
    if kind == "text":
        text = _text_of(block, where)
        return [{"type": "input_text", "text": text}] if text.strip() else []
    if kind == "image":
        return [_image_part(block, where)]
    if kind == "document":
        return _document_parts(block, where)
    if kind == "search_result":
        return [{"type": "input_text", "text": _search_result_text(block, where)}]
    raise ConversionError(f"{where}: block type {_shown(kind)} is not supported here")


def _tool_result_item(block: Mapping[str, Any], where: str) -> dict[str, Any]:
    """spec 1.3: string output unless an image/document is present; `is_error` prefixes."""
    call_id = _required(block, "tool_use_id", str, where)
    content = block.get("content")
    is_error = _optional(block, "is_error", bool, where) is True
    output: str | list[dict[str, Any]]
    if content is None or isinstance(content, str):
        text = content or ""
        output = (f"Error: {text}" if text else "Error:") if is_error else text
    elif isinstance(content, list):
        parts: list[dict[str, Any]] = []
        for index, item in enumerate(content):
            item_where = f"{where}.content.{index}"
            parts.extend(_user_parts(_expect(item, dict, item_where), item_where))
        if all(part["type"] == "input_text" for part in parts):
            text = "\n".join(part["text"] for part in parts)
            output = (f"Error: {text}" if text else "Error:") if is_error else text
        else:
            output = [{"type": "input_text", "text": "Error:"}, *parts] if is_error else parts
    else:
        raise ConversionError(f"{where}.content: Input should be a valid string or a list of content blocks")
    return {"type": "function_call_output", "call_id": call_id, "output": output}


def _tool_use_item(block: Mapping[str, Any], where: str, tool_names: dict[str, str]) -> dict[str, Any]:
    call_id = _required(block, "id", str, where)
    name = _required(block, "name", str, where)
    arguments = _expect(block.get("input", {}), dict, f"{where}.input")
    return {
        "type": "function_call",
        "call_id": call_id,
        # spec 1.4: history names are shortened like the tool definitions.
        "name": _shorten(name, tool_names),
        "arguments": _json_text(arguments, f"{where}.input"),
    }


class _InputBuilder:
    """Walks messages and blocks in order, coalescing only adjacent parts of the same item."""

    def __init__(self, options: ConvertOptions, tool_names: dict[str, str]) -> None:
        self.options = options
        self.tool_names = tool_names
        self.items: list[dict[str, Any]] = []
        self._open: dict[str, Any] | None = None
        """The message item currently receiving adjacent parts (not yet in `items`)."""

    # -- item assembly --------------------------------------------------------------------

    def _flush(self) -> None:
        if self._open is not None and self._open["content"]:
            self.items.append(self._open)
        self._open = None

    def _append_parts(self, role: str, parts: list[dict[str, Any]]) -> None:
        if not parts:
            return
        # A paired (id-carrying) assistant message keeps receiving adjacent text: it was one upstream message.
        if self._open is None or self._open["role"] != role:
            self._flush()
            self._open = {"type": "message", "role": role, "content": []}
        self._open["content"].extend(parts)

    def _append_item(self, item: dict[str, Any]) -> None:
        self._flush()
        self.items.append(item)

    def finish(self) -> list[dict[str, Any]]:
        self._flush()
        return self.items

    # -- messages -------------------------------------------------------------------------

    def add_message(self, index: int, message: object) -> None:
        where = f"messages.{index}"
        message = _expect(message, dict, where)
        role = _required(message, "role", str, where)
        if "content" not in message:
            raise ConversionError(f"{where}.content: Field required")
        blocks = _blocks(message["content"], f"{where}.content")
        # Never merge across messages: consecutive same-role messages stay separate (spec 1.2).
        self._flush()
        if role == "user":
            self._add_user(blocks, where)
        elif role == "assistant":
            self._add_assistant(blocks, where)
        elif role == "system":
            self._add_system(blocks, where)
        else:
            raise ConversionError(f"{where}.role: unknown role {_shown(role)}")
        self._flush()

    def _add_user(self, blocks: list[Any], where: str) -> None:
        for index, entry in enumerate(blocks):
            block_where = f"{where}.content.{index}"
            block = _expect(entry, dict, block_where)
            kind = _tag(block, block_where)
            if kind in DROPPED_HISTORY_BLOCKS:
                continue
            if kind == "tool_result":
                self._append_item(_tool_result_item(block, block_where))
            elif kind in ("text", "image", "document", "search_result"):
                self._append_parts("user", _user_parts(block, block_where))
            else:
                raise ConversionError(f"{block_where}: block type {_shown(kind)} is not allowed in a user message")

    def _add_system(self, blocks: list[Any], where: str) -> None:
        # anthropic 2.x SystemMessageParam: text only; becomes a developer message in place (spec 1.2).
        for index, block in enumerate(blocks):
            text = _text_of(block, f"{where}.content.{index}")
            if text.strip():
                self._append_parts("developer", [{"type": "input_text", "text": text}])

    def _add_assistant(self, blocks: list[Any], where: str) -> None:
        index = 0
        while index < len(blocks):
            block_where = f"{where}.content.{index}"
            block = _expect(blocks[index], dict, block_where)
            kind = _tag(block, block_where)
            if kind in DROPPED_HISTORY_BLOCKS:
                pass
            elif kind == "text":
                self._add_assistant_text(block, block_where, item_id=None)
            elif kind == "tool_use":
                self._append_item(_tool_use_item(block, block_where, self.tool_names))
            elif kind in ("thinking", "redacted_thinking"):
                # A paired reasoning item consumes the following block as well.
                index += self._add_reasoning(blocks, index, where)
            elif kind in ("tool_result", "image", "document", "search_result"):
                raise ConversionError(
                    f"{block_where}: block type {_shown(kind)} is not allowed in an assistant message"
                )
            else:
                raise ConversionError(f"{block_where}: block type {_shown(kind)} is not supported")
            index += 1

    def _add_assistant_text(self, block: Mapping[str, Any], where: str, *, item_id: dict[str, Any] | None) -> None:
        # Citations are stripped: assistant content must be output_text (spec 1.2/1.3).
        text = _text_of(block, where)
        if not text.strip():
            return
        part = {"type": "output_text", "text": text, "annotations": []}
        if item_id is None:
            self._append_parts("assistant", [part])
            return
        # Full output-message form, so the paired msg_ id travels with its reasoning (spec 1.5).
        self._flush()
        self._open = {"type": "message", "role": "assistant", "id": item_id["id"], "status": "completed"}
        if item_id.get("ph") is not None:
            self._open["phase"] = item_id["ph"]
        self._open["content"] = [part]

    def _add_reasoning(self, blocks: list[Any], index: int, where: str) -> int:
        """Replay a thinking block as a reasoning item; returns how many *extra* blocks it used.

        spec 1.5: only gateway envelopes for this leg's upstream model are replayed. When the
        envelope names a following item, that item must be the very next block (matching
        `tool_use` id / a text block); it is then emitted with its upstream id right after the
        reasoning item. Otherwise the reasoning item is dropped (a reasoning item without its
        following item, or an id without its reasoning item, is an upstream 400).
        """
        block = blocks[index]
        block_where = f"{where}.content.{index}"
        if block["type"] == "thinking":
            signature = _required(block, "signature", str, block_where)
            thinking = _required(block, "thinking", str, block_where)
        else:
            signature = _required(block, "data", str, block_where)
            thinking = ""
        envelope = signature_decode(signature)
        if envelope is None or envelope.get("m") != self.options.upstream_model:
            logger.debug("anthropic_to_responses: %s: foreign or other-model signature; block dropped", block_where)
            return 0
        encrypted = envelope.get("ec")
        if not isinstance(encrypted, str) or not encrypted:
            # With store:false an id-only reasoning item cannot be resolved upstream.
            logger.debug("anthropic_to_responses: %s: no encrypted content; block dropped", block_where)
            return 0
        reasoning: dict[str, Any] = {
            "type": "reasoning",
            "id": envelope["rs"],
            "summary": [{"type": "summary_text", "text": thinking}] if thinking else [],
            "encrypted_content": encrypted,
        }
        following = envelope.get("nx")
        if following is None:
            self._append_item(reasoning)
            return 0
        nxt = blocks[index + 1] if index + 1 < len(blocks) else None
        nxt_where = f"{where}.content.{index + 1}"
        kind = following.get("t")
        item_id = following.get("id")
        if not isinstance(nxt, dict) or not isinstance(item_id, str):
            logger.debug("anthropic_to_responses: %s: paired item missing; reasoning dropped", block_where)
            return 0
        if kind == "function_call" and nxt.get("type") == "tool_use" and nxt.get("id") == following.get("cid"):
            call = _tool_use_item(nxt, nxt_where, self.tool_names)
            call["id"] = item_id
            self._append_item(reasoning)
            self._append_item(call)
            return 1
        if kind == "message" and nxt.get("type") == "text" and _text_of(nxt, nxt_where).strip():
            self._append_item(reasoning)
            self._add_assistant_text(nxt, nxt_where, item_id=following)
            return 1
        logger.debug("anthropic_to_responses: %s: pairing with the next block failed; reasoning dropped", block_where)
        return 0


def _prefill(messages: list[Any], items: list[dict[str, Any]]) -> str:
    """spec 1.2/6.5: a final assistant message ending in text is a prefill.

    The trailing `output_text` loses its trailing whitespace (Anthropic rejects it, and the
    answer continues right after it); the response side strips this text from the answer.
    """
    last = messages[-1]
    if not isinstance(last, dict) or last.get("role") != "assistant":
        return ""
    item = items[-1]
    if item.get("type") != "message" or item.get("role") != "assistant":
        return ""
    part = item["content"][-1]
    part["text"] = part["text"].rstrip()
    text: str = part["text"]
    return text
