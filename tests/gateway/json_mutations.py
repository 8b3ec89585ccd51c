"""Hypothesis strategies that damage valid JSON request bodies in the ways clients get them wrong.

A mutation picks a place in the document (the root included; half the time a field the gateway
reads, such as `type`, `content` or `vmx`) and replaces its value with one of another JSON type,
replaces it with a plausible but wrong value (another block `type`, an empty or huge string, a
boundary integer…), deletes it, or adds a key or list element there. Only values JSON can carry
are produced: text without lone surrogates, finite floats and integers in the range a JSON parser
(orjson) keeps as integers.
"""

from __future__ import annotations

import copy
from collections.abc import Iterator, Sequence
from typing import Any

from hypothesis import strategies as st

JsonPath = tuple[str | int, ...]

INT64_MIN, UINT64_MAX = -(2**63), 2**64 - 1

# Values that mean something to the gateway or its upstreams: mutating a `type` to another known
# tag (or a role, a source kind…) reaches the code paths behind that tag with the wrong fields.
DOMAIN_WORDS = (
    "text",
    "image",
    "document",
    "search_result",
    "tool_use",
    "tool_result",
    "thinking",
    "redacted_thinking",
    "server_tool_use",
    "web_search_tool_result",
    "base64",
    "url",
    "content",
    "file",
    "user",
    "assistant",
    "system",
    "developer",
    "tool",
    "enabled",
    "adaptive",
    "disabled",
    "summarized",
    "omitted",
    "auto",
    "any",
    "none",
    "json_schema",
    "custom",
    "function",
    "web_search_20250305",
    "object",
    "string",
    "input_text",
    "message",
    "function_call",
    "standard_only",
    "application/pdf",
    "image/png",
    "oai1.",
)
ODD_STRINGS = (
    "",
    " ",
    "\n\n",
    "\x00",
    "a\x00b",
    "\x1b[31mred\x1b[0m",
    "\u202eevil",
    "\ufeff",
    "🙂" * 3,
)
# Keys that the converter or the envelope read, so that added keys land on real code paths.
DOMAIN_KEYS = (
    "type",
    "text",
    "content",
    "source",
    "data",
    "media_type",
    "url",
    "title",
    "context",
    "citations",
    "cache_control",
    "is_error",
    "tool_use_id",
    "id",
    "name",
    "input",
    "input_schema",
    "input_examples",
    "description",
    "strict",
    "signature",
    "thinking",
    "budget_tokens",
    "display",
    "effort",
    "format",
    "schema",
    "user_id",
    "allowed_domains",
    "blocked_domains",
    "user_location",
    "max_uses",
    "disable_parallel_tool_use",
    "role",
    "system",
    "metadata",
    "stop_sequences",
    "output_config",
    "output_format",
    "service_tier",
    "temperature",
    "top_p",
    "top_k",
    "stream",
    "stream_options",
    "tools",
    "tool_choice",
    "messages",
    "max_tokens",
    "vmx",
    "correlationId",
    "providerArgs",
    "timeoutMs",
)

strings = st.one_of(
    st.text(max_size=24),
    st.sampled_from(DOMAIN_WORDS),
    st.sampled_from(ODD_STRINGS),
    st.integers(min_value=10_000, max_value=200_000).map("x".__mul__),  # huge
)
integers = st.one_of(
    st.integers(min_value=-1_000, max_value=100_000),
    st.sampled_from([0, -1, 1, 15, 16, 2**31, 2**53 + 1, INT64_MIN, 2**63 - 1, UINT64_MAX]),
)
floats = st.floats(allow_nan=False, allow_infinity=False)
booleans = st.booleans()
nulls = st.none()
keys = st.one_of(st.text(max_size=12), st.sampled_from(DOMAIN_KEYS))

scalars = st.one_of(strings, integers, floats, booleans, nulls)
json_values = st.recursive(
    scalars,
    lambda children: st.one_of(st.lists(children, max_size=4), st.dictionaries(keys, children, max_size=4)),
    max_leaves=12,
)
lists = st.lists(json_values, max_size=4)
objects = st.dictionaries(keys, json_values, max_size=4)

# One strategy per JSON type, to draw a value whose type differs from the one it replaces.
BY_TYPE: dict[str, st.SearchStrategy[Any]] = {
    "string": strings,
    "integer": integers,
    "float": floats,
    "boolean": booleans,
    "null": nulls,
    "list": lists,
    "object": objects,
}


def json_type(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int):
        return "integer"
    if isinstance(value, float):
        return "float"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "list"
    return "object"


def json_paths(value: Any, prefix: JsonPath = ()) -> Iterator[JsonPath]:
    """Every path in `value`, parents before children, the root (`()`) first."""
    yield prefix
    if isinstance(value, dict):
        for key, child in value.items():
            yield from json_paths(child, (*prefix, key))
    elif isinstance(value, list):
        for index, child in enumerate(value):
            yield from json_paths(child, (*prefix, index))


def _at(document: Any, path: JsonPath) -> Any:
    for step in path:
        document = document[step]
    return document


MUTATIONS = ("retype", "replace", "delete", "add")


@st.composite
def mutate(draw: st.DrawFn, document: Any, *, max_mutations: int = 3) -> Any:
    """`document` (deep-copied) with one to `max_mutations` random mutations applied."""
    document = copy.deepcopy(document)
    for _ in range(draw(st.integers(min_value=1, max_value=max_mutations))):
        paths = list(json_paths(document))
        # Half the time, a field the gateway reads, picked by name first: each gets the same
        # chance however often it occurs (a request holds hundreds of schema properties and one
        # `thinking.type`). Otherwise any place, the root included.
        known: dict[str, list[JsonPath]] = {}
        for path in paths:
            if path and path[-1] in DOMAIN_KEYS:
                known.setdefault(str(path[-1]), []).append(path)
        focused = draw(st.booleans())
        if focused and known:
            paths = known[draw(st.sampled_from(sorted(known)))]
        path = draw(st.sampled_from(paths))
        current = _at(document, path)
        mutation = draw(st.sampled_from(MUTATIONS))
        if mutation == "add":
            if isinstance(current, dict):
                current[draw(keys)] = draw(json_values)
                continue
            if isinstance(current, list):
                current.insert(draw(st.integers(min_value=0, max_value=len(current))), draw(json_values))
                continue
            mutation = "retype"  # nothing to add to a scalar
        if mutation == "delete" and path:
            parent = _at(document, path[:-1])
            del parent[path[-1]]
            continue
        if mutation == "replace":
            value = draw(json_values)
        else:
            other = [name for name in BY_TYPE if name != json_type(current)]
            value = draw(BY_TYPE[draw(st.sampled_from(other))])
        if not path:
            document = value
        else:
            _at(document, path[:-1])[path[-1]] = value
    return document


def mutated(documents: Sequence[Any], *, max_mutations: int = 3) -> st.SearchStrategy[Any]:
    """One of `documents`, mutated."""
    return st.sampled_from(documents).flatmap(lambda document: mutate(document, max_mutations=max_mutations))
