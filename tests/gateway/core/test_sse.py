"""SSEDecoder: the same events whatever the chunking, every byte kept, and linear cost.

Feeding a stream whole is the reference: any other chunking must decode the same events (raw
bytes, name and data) and leave the same pending bytes. The cost test compares CPU time, not
wall-clock time against a fixed budget, so that a slow or busy machine does not make it flaky.
"""

from __future__ import annotations

import random
import time

import pytest

from gateway.core.sse import SSEDecoder, SSEEvent

# Every separator form, and the byte runs where a chunk boundary could confuse a resumed search:
# CRLF CRLF cut anywhere, LF LF LF and CR CR CR (one separator, then a byte of the next event),
# CRLF LF (its LF LF ends the event) and LF CRLF (no separator: the SDKs do not split there).
# Other bytes that some splitters take for line breaks (VT, FF, FS, NEL, U+2028) stay in the data.
MIXED = (
    b": keep-alive\n\n"
    b'event: response.created\ndata: {"a": 1}\r\n\r\n'
    b"data: one\ndata: two\r\r"
    b"data:no-space\r\n\n"
    b"data: x\n\n\n"
    b"data: y\r\r\r"
    b"data: z\n\r\ndata: still z\r\n\r\n"
    b"event: ping\r\ndata: \r\n\r\n"
    b"data: \xf0\x9f\x91\x8b\n\n"
    b"data: \x0b\x0c\x1c\x85\xe2\x80\xa8 are not line breaks\n\n"
    b"data: cut"
)


def decode(chunks: list[bytes]) -> tuple[list[tuple[bytes, str | None, bytes]], bytes]:
    decoder = SSEDecoder()
    events: list[SSEEvent] = []
    for chunk in chunks:
        events += decoder.feed(chunk)
    return [(e.raw, e.event, e.data) for e in events], decoder.pending()


_WHOLE: dict[bytes, tuple[list[tuple[bytes, str | None, bytes]], bytes]] = {}


def assert_same_as_whole(stream: bytes, chunks: list[bytes]) -> None:
    assert b"".join(chunks) == stream
    if stream not in _WHOLE:
        _WHOLE[stream] = decode([stream])
    events, pending = decode(chunks)
    assert (events, pending) == _WHOLE[stream]
    assert b"".join(raw for raw, _, _ in events) + pending == stream


def test_whole_stream_reference():
    events, pending = decode([MIXED])
    assert events == [
        (b": keep-alive\n\n", None, b""),
        (b'event: response.created\ndata: {"a": 1}\r\n\r\n', "response.created", b'{"a": 1}'),
        (b"data: one\ndata: two\r\r", None, b"one\ntwo"),
        (b"data:no-space\r\n\n", None, b"no-space"),
        (b"data: x\n\n", None, b"x"),
        # The third LF / CR of a run opens the next event, as an empty line the parser skips.
        (b"\ndata: y\r\r", None, b"y"),
        (b"\rdata: z\n\r\ndata: still z\r\n\r\n", None, b"z\nstill z"),
        (b"event: ping\r\ndata: \r\n\r\n", "ping", b""),
        (b"data: \xf0\x9f\x91\x8b\n\n", None, "\N{WAVING HAND SIGN}".encode()),
        (
            b"data: \x0b\x0c\x1c\x85\xe2\x80\xa8 are not line breaks\n\n",
            None,
            b"\x0b\x0c\x1c\x85\xe2\x80\xa8 are not line breaks",
        ),
    ]
    assert pending == b"data: cut"


def test_every_single_split_point():
    for cut in range(len(MIXED) + 1):
        assert_same_as_whole(MIXED, [MIXED[:cut], MIXED[cut:]])


def test_every_pair_of_split_points():
    for first in range(len(MIXED) + 1):
        for second in range(first, len(MIXED) + 1):
            assert_same_as_whole(MIXED, [MIXED[:first], MIXED[first:second], MIXED[second:]])


def test_byte_by_byte_and_empty_chunks():
    assert_same_as_whole(MIXED, [MIXED[i : i + 1] for i in range(len(MIXED))])
    assert_same_as_whole(MIXED, [b"", *(piece for i in range(len(MIXED)) for piece in (MIXED[i : i + 1], b""))])


def test_random_chunk_sizes():
    rng = random.Random(20240601)  # fixed seed: a failure reproduces
    separators = [b"\n\n", b"\r\n\r\n", b"\r\r"]
    newlines = [b"\n", b"\r\n", b"\r"]
    parts = []
    for n in range(300):
        lines = [b"data: " + bytes(rng.choice(b"ab\r\n{}") for _ in range(rng.randrange(0, 40)))]
        if n % 7 == 0:
            lines.insert(0, b"event: e%d" % n)
        parts.append(rng.choice(newlines).join(lines) + rng.choice(separators))
    stream = b"".join(parts) + b"data: unterminated\r\n"
    for _ in range(300):
        chunks, position = [], 0
        while position < len(stream):
            size = rng.choice([1, 2, 3, 4, 5, rng.randrange(1, 64), rng.randrange(1, 4096)])
            chunks.append(stream[position : position + size])
            position += size
        assert_same_as_whole(stream, chunks)


def test_a_huge_event_in_small_chunks_arrives_intact():
    payload = b"{" + b"x" * (16 << 20) + b"}"
    stream = b"event: big\ndata: " + payload + b"\n\nevent: next\ndata: 1\n\n"
    chunks = [stream[i : i + 16384] for i in range(0, len(stream), 16384)]
    events, pending = decode(chunks)
    assert [(event, data) for _, event, data in events] == [("big", payload), ("next", b"1")]
    assert b"".join(raw for raw, _, _ in events) == stream and pending == b""


def _decode_cpu_seconds(size: int) -> float:
    """CPU time to decode one `size`-byte event fed in 16 KiB chunks (the best of a few runs)."""
    stream = b"data: " + b"x" * size + b"\n\n"
    chunks = [stream[i : i + 16384] for i in range(0, len(stream), 16384)]
    best = float("inf")
    for _ in range(3):
        decoder = SSEDecoder()
        started = time.process_time()
        events = [event for chunk in chunks for event in decoder.feed(chunk)]
        best = min(best, time.process_time() - started)
        assert len(events) == 1 and len(events[0].data) == size and decoder.pending() == b""
    return best


def test_decoding_cost_is_linear_in_the_event_size():
    # 16 times the bytes: linear costs ~16 times the CPU, quadratic (re-searching the whole
    # buffer for every chunk, as before) ~256 times. 64 leaves room for noise and caches.
    small = _decode_cpu_seconds(1 << 20)
    large = _decode_cpu_seconds(16 << 20)
    ratio = large / max(small, 1e-4)
    print(f"decode CPU: 1 MiB {small * 1000:.1f} ms, 16 MiB {large * 1000:.1f} ms, ratio {ratio:.1f}")
    assert ratio < 64
    assert large < 1.0  # the contract: a 16 MB event costs well under a second


STREAM = (
    b": comment\n\n"
    b'event: response.created\ndata: {"a": 1}\n\n'
    b"data: line one\ndata: line two\r\n\r\n"
    b"data:no-space\r\r"
    b"data: [DONE]\n\n"
    b"data: partial"
)


@pytest.mark.parametrize("size", [1, 2, 3, 7, 64, len(STREAM)])
def test_sse_decoder_keeps_bytes_whatever_the_chunking(size):
    decoder = SSEDecoder()
    events = []
    for start in range(0, len(STREAM), size):
        events += decoder.feed(STREAM[start : start + size])
    assert b"".join(e.raw for e in events) + decoder.pending() == STREAM
    assert [(e.event, e.data) for e in events] == [
        (None, b""),
        ("response.created", b'{"a": 1}'),
        (None, b"line one\nline two"),
        (None, b"no-space"),
        (None, b"[DONE]"),
    ]
    assert decoder.pending() == b"data: partial"
