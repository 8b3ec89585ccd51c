"""Pieces shared by both directions of the Anthropic ⇄ Responses conversion.

- `ConversionError`: a client request the gateway refuses (rendered as Anthropic 400).
- `ConvertOptions` / `ConvertedRequest`: what the request converter needs and produces, and what
  the response converters need to know about the request (tool-name map, stop sequences, …).
- The thinking-signature envelope (spec 1.5): `oai1.` + base64url(JSON), carrying the reasoning
  item id, its encrypted content, the upstream model and the item that followed it.
- Tool-name shortening (spec 1.4): OpenAI function names are `^[a-zA-Z0-9_-]{1,64}$`.
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
from dataclasses import dataclass, field
from typing import Any

SIGNATURE_PREFIX = "oai1."
TOOL_NAME_PATTERN = re.compile(r"^[a-zA-Z0-9_-]{1,64}$")


class ConversionError(ValueError):
    """The client's request cannot be converted; the message is shown to the client (400)."""


@dataclass(frozen=True, slots=True)
class ConvertOptions:
    upstream_model: str
    """The upstream model id of the leg being called (signatures from other models are dropped)."""
    reasoning: bool = True
    """False when the model entry says `reasoning: false`: no reasoning parameters are sent."""
    summary: str = "auto"
    """`reasoning.summary` when thinking is requested and displayed ("auto" or "detailed")."""
    effort_buckets: tuple[tuple[int, str], ...] = ((4096, "low"), (16384, "medium"), (32768, "high"))
    """budget_tokens below the bound → effort; at or above the last bound → "xhigh"."""


@dataclass(slots=True)
class ConvertedRequest:
    body: dict[str, Any]
    """The Responses request body (without `model` precedence concerns: `model` is set)."""
    thinking: bool = False
    """Thinking was requested (and reasoning is allowed): reasoning items become thinking blocks."""
    display_omitted: bool = False
    """`thinking.display == "omitted"`: thinking blocks carry "" and only the signature."""
    tool_names: dict[str, str] = field(default_factory=dict)
    """Shortened upstream function name → the client's original name."""
    stop_sequences: list[str] = field(default_factory=list)
    prefill: str = ""
    """Assistant prefill (trailing assistant text) to strip from the start of the answer."""
    empty: bool = False
    """`max_tokens: 0`: answer an empty message without calling upstream."""
    web_search: bool = False


def tool_name_shorten(name: str) -> str:
    """A valid OpenAI function name for `name`: itself if valid, else a stable shortening."""
    if TOOL_NAME_PATTERN.match(name):
        return name
    cleaned = re.sub(r"[^a-zA-Z0-9_-]", "_", name) or "tool"
    digest = hashlib.sha1(name.encode("utf-8")).hexdigest()[:8]  # noqa: S324 - a name, not security
    return f"{cleaned[:55]}_{digest}"


def signature_encode(
    *, reasoning_id: str, encrypted_content: str | None, model: str, next_item: dict[str, Any] | None
) -> str:
    """The thinking block signature for a reasoning item (spec 1.5)."""
    payload = {"rs": reasoning_id, "ec": encrypted_content, "m": model, "nx": next_item}
    raw = json.dumps(payload, separators=(",", ":"), ensure_ascii=False).encode("utf-8")
    return SIGNATURE_PREFIX + base64.urlsafe_b64encode(raw).decode("ascii").rstrip("=")


def signature_decode(signature: str) -> dict[str, Any] | None:
    """The envelope of a gateway signature; None for foreign (genuine Claude) or garbled ones."""
    if not isinstance(signature, str) or not signature.startswith(SIGNATURE_PREFIX):
        return None
    encoded = signature[len(SIGNATURE_PREFIX) :]
    try:
        payload = json.loads(base64.urlsafe_b64decode(encoded + "=" * (-len(encoded) % 4)))
    except (ValueError, RecursionError):  # garbled: bad base64, not JSON, or nested past the parser's limit
        return None
    if not isinstance(payload, dict) or not isinstance(payload.get("rs"), str):
        return None
    next_item = payload.get("nx")
    if next_item is not None and not isinstance(next_item, dict):
        return None
    return payload


def next_item_descriptor(item: dict[str, Any]) -> dict[str, Any] | None:
    """`nx` for the output item that followed a reasoning item (spec 1.5)."""
    if item.get("type") == "function_call":
        return {"t": "function_call", "id": item.get("id"), "cid": item.get("call_id")}
    if item.get("type") == "message":
        return {"t": "message", "id": item.get("id"), "ph": item.get("phase")}
    return None
