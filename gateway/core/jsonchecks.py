"""Checks on client-chosen JSON and text, shared by every way data comes in (DESIGN.md 2.13): the
`/v1/` body and envelope, the config file, the management API. Pure: no Django.

Invariants: a value that passes `depth_exceeds` / `json_depth_exceeds` for `MAX_JSON_DEPTH` can
always be serialised again (orjson refuses to write deeper than `ORJSON_MAX_DEPTH`); text without
`has_control_characters` can be echoed in a header, a log line and a PostgreSQL column; text
without `has_unstorable_characters` can be stored at all.
"""

from __future__ import annotations

import re
from typing import Any

import orjson

MAX_JSON_DEPTH = 200
"""How deeply a request body or a configuration document may nest (defaultArgs become part of a body)."""
ORJSON_MAX_DEPTH = 254
"""The most levels orjson.dumps writes (tests/gateway/core/test_hardening_units.py holds it to that)."""

# C0 controls, DEL and the Unicode line/paragraph separators: they break response headers, log
# lines and PostgreSQL text (NUL), so identifiers that are echoed or stored may not carry them.
_CONTROL = re.compile("[\x00-\x1f\x7f\u2028\u2029]")
# What no database column takes: NUL (PostgreSQL) and lone surrogates (not UTF-8).
_UNSTORABLE = re.compile("[\x00\ud800-\udfff]")


def has_control_characters(text: str) -> bool:
    return _CONTROL.search(text) is not None


def has_unstorable_characters(text: str) -> bool:
    return _UNSTORABLE.search(text) is not None


def json_depth_exceeds(raw: bytes, body: Any, limit: int) -> bool:
    """Whether `body` (parsed from `raw`) nests objects/arrays more than `limit` levels.

    Walking the tree in Python costs milliseconds on an agent's request (thousands of
    containers). orjson's writer refuses more than `ORJSON_MAX_DEPTH` levels at C speed, so the
    body is written once inside enough extra levels that only a body deeper than `limit` fails.
    """
    if raw.count(b"[") + raw.count(b"{") <= limit:  # most requests: too few brackets to be deep
        return False
    wrapped = body
    for _ in range(ORJSON_MAX_DEPTH - limit):
        wrapped = [wrapped]
    try:
        orjson.dumps(wrapped)
    except orjson.JSONEncodeError as exc:
        return "recursion" in str(exc).lower()
    return False


def depth_exceeds(value: Any, limit: int) -> bool:
    """Whether lists and mappings nest more than `limit` levels, for data that did not come as
    JSON bytes (a YAML document); iterative, so no recursion limit."""
    stack = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, dict):
            children: Any = item.values()
        elif isinstance(item, list):
            children = item
        else:
            continue
        if depth > limit:
            return True
        stack.extend((child, depth + 1) for child in children)
    return False
