"""Token usage as the audit records it, read from Chat Completions and Responses usage objects.

Pure functions over parsed JSON; a missing or malformed field counts as zero.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any


@dataclass(slots=True)
class Usage:
    input_tokens: int = 0
    cached_tokens: int = 0
    output_tokens: int = 0
    reasoning_tokens: int = 0
    audio_tokens: int = 0
    accepted_prediction_tokens: int = 0
    rejected_prediction_tokens: int = 0
    total_tokens: int = 0

    def as_dict(self) -> dict[str, int]:
        return asdict(self)


MAX_TOKENS = 2**31 - 1
"""The largest count the audit's columns hold; some servers report 2**64 - 1 for 'unknown'."""


def _int(mapping: Any, key: str) -> int:
    value = mapping.get(key) if isinstance(mapping, Mapping) else None
    return min(value, MAX_TOKENS) if isinstance(value, int) and not isinstance(value, bool) and value > 0 else 0


def usage_from_chat(usage: Any) -> Usage:
    """From a Chat Completions `usage` object (non-stream body or the stream's usage chunk)."""
    prompt = usage.get("prompt_tokens_details") if isinstance(usage, Mapping) else None
    completion = usage.get("completion_tokens_details") if isinstance(usage, Mapping) else None
    input_tokens, output_tokens = _int(usage, "prompt_tokens"), _int(usage, "completion_tokens")
    return Usage(
        input_tokens=input_tokens,
        cached_tokens=_int(prompt, "cached_tokens"),
        output_tokens=output_tokens,
        reasoning_tokens=_int(completion, "reasoning_tokens"),
        audio_tokens=_int(prompt, "audio_tokens") + _int(completion, "audio_tokens"),
        accepted_prediction_tokens=_int(completion, "accepted_prediction_tokens"),
        rejected_prediction_tokens=_int(completion, "rejected_prediction_tokens"),
        total_tokens=_int(usage, "total_tokens") or input_tokens + output_tokens,
    )


def usage_from_responses(usage: Any) -> Usage:
    """From a Responses `usage` object (response body or the terminal stream event's response)."""
    details_in = usage.get("input_tokens_details") if isinstance(usage, Mapping) else None
    details_out = usage.get("output_tokens_details") if isinstance(usage, Mapping) else None
    input_tokens, output_tokens = _int(usage, "input_tokens"), _int(usage, "output_tokens")
    return Usage(
        input_tokens=input_tokens,
        cached_tokens=_int(details_in, "cached_tokens"),
        output_tokens=output_tokens,
        reasoning_tokens=_int(details_out, "reasoning_tokens"),
        audio_tokens=_int(details_in, "audio_tokens") + _int(details_out, "audio_tokens"),
        total_tokens=_int(usage, "total_tokens") or input_tokens + output_tokens,
    )
