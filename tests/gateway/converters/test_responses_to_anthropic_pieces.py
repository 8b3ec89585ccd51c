"""Responses → Anthropic stream: the result does not depend on how upstream split its deltas, and
the cost is linear in the size of the stream.

The translator keeps text, arguments and thinking received so far as pieces (citations slice them,
`*.done` events are compared with them, the prefill is matched against them); re-splitting every
recorded delta into single code points exercises all of that across piece boundaries. The cost
test compares CPU times (1 MiB against 16 MiB of deltas), not a wall-clock budget.
"""

from __future__ import annotations

import time
from typing import Any

import pytest

from gateway.converters.common import ConvertedRequest
from gateway.converters.responses_to_anthropic_stream import AnthropicStreamTranslator
from tests.gateway.converters.test_responses_to_anthropic import (
    CASES,
    MODEL,
    UPSTREAM,
    Case,
    accumulate,
    load_sse,
    request,
    run_stream,
)


def one_code_point_per_delta(events: list[dict[str, Any]]) -> list[dict[str, Any]]:
    out = []
    for event in events:
        delta = event.get("delta")
        if event["type"].endswith(".delta") and isinstance(delta, str) and len(delta) > 1:
            out += [{**event, "delta": char} for char in delta]
        else:
            out.append(event)
    return out


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_deltas_split_into_code_points_give_the_same_message(case: Case) -> None:
    events = load_sse(case.fixture)
    whole = run_stream(events, request(**case.req))
    split = run_stream(one_code_point_per_delta(events), request(**case.req))
    expected, got = accumulate(whole.events), accumulate(split.events)
    if case.usage is None:
        # A stop sequence ends the stream before upstream usage: output_tokens is an estimate from
        # the characters read so far, which stops earlier when the deltas are smaller.
        expected.pop("usage"), got.pop("usage")
    assert got == expected


def test_citation_spanning_many_deltas() -> None:
    events = load_sse("web_search")
    run = run_stream(one_code_point_per_delta(events), request(web_search=True))
    citations = [p["delta"]["citation"]["cited_text"] for n, p in run.events if p.get("delta", {}).get("citation")]
    assert citations == ["sunny, 21°C."]


# -- cost ----------------------------------------------------------------------------------------

PIECE = 1024


def _translate(kind: str, size: int) -> tuple[float, str]:
    """(CPU seconds, what the client got) for `size` characters sent as PIECE-sized deltas of
    `kind`, followed by the matching `done` event that repeats the whole text."""
    translator = AnthropicStreamTranslator(
        request=ConvertedRequest(body={"model": UPSTREAM}, thinking=True), model=MODEL, upstream_model=UPSTREAM
    )
    piece = "ab\u00e9\U0001f44b" * (PIECE // 4)
    count = size // PIECE
    full = piece * count
    item: dict[str, Any]
    delta: dict[str, Any]
    done: dict[str, Any]
    if kind == "text":
        item = {"type": "message", "id": "msg_1", "role": "assistant", "content": []}
        delta = {"type": "response.output_text.delta", "output_index": 0, "content_index": 0}
        done = {"type": "response.output_text.done", "output_index": 0, "content_index": 0, "text": full}
        field_name = "text"
    elif kind == "arguments":
        item = {"type": "function_call", "id": "fc_1", "call_id": "call_1", "name": "f", "arguments": ""}
        delta = {"type": "response.function_call_arguments.delta", "output_index": 0}
        done = {"type": "response.function_call_arguments.done", "output_index": 0, "arguments": full}
        field_name = "partial_json"
    else:
        item = {"type": "reasoning", "id": "rs_1", "summary": []}
        delta = {"type": "response.reasoning_summary_text.delta", "output_index": 0, "summary_index": 0}
        done_item = {**item, "summary": [{"type": "summary_text", "text": full}]}
        done = {"type": "response.output_item.done", "output_index": 0, "item": done_item}
        field_name = "thinking"
    upstream: list[dict[str, Any]] = [
        {"type": "response.created", "response": {"id": "resp_1"}},
        {"type": "response.output_item.added", "output_index": 0, "item": item},
        *({**delta, "delta": piece} for _ in range(count)),
        done,
    ]
    got: list[str] = []
    started = time.process_time()
    for event in upstream:
        for _, payload in translator.feed(event):
            value = payload.get("delta", {}).get(field_name)
            if value is not None:
                got.append(value)
    return time.process_time() - started, "".join(got)


@pytest.mark.parametrize("kind", ["text", "arguments", "thinking"])
def test_translation_cost_is_linear_in_the_stream_size(kind: str) -> None:
    # 16 times the deltas: linear ~16 times the CPU; appending to one string per delta (as before)
    # was quadratic, ~256 times. The best of a few runs keeps the ratio clear of noise.
    small = min(_translate(kind, 1 << 20)[0] for _ in range(3))
    runs = [_translate(kind, 16 << 20) for _ in range(2)]
    large, got = min(run[0] for run in runs), runs[0][1]
    assert got == "ab\u00e9\U0001f44b" * (4 << 20)  # every delta once, the `done` event adds nothing
    ratio = large / max(small, 1e-4)
    print(f"{kind}: 1 MiB {small * 1000:.1f} ms, 16 MiB {large * 1000:.1f} ms, ratio {ratio:.1f}")
    assert ratio < 64
