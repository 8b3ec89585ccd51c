"""Server-sent events: an incremental decoder that keeps each event's raw bytes, and framing.

Invariants of `SSEDecoder`:

- Concatenating the `raw` of every decoded event, then `pending()`, gives back exactly the bytes
  fed in, so a relay that forwards `raw` is byte-identical to its upstream.
- Events are separated by a blank line (LF LF, CRLF CRLF or CR CR), as the SDKs' parsers read
  them: an event ends at the leftmost separator. The events decoded do not depend on how the
  stream was cut into chunks.
- Linear in the bytes fed: each byte is copied into the pending buffer at most once, and searched
  for each separator form a bounded number of times (a separator is at most 4 bytes, so only the
  last 3 bytes already searched are searched again when a chunk arrives). One huge event sent in
  many small chunks costs time proportional to its size, not to its size times the chunk count.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

_SEPARATORS = (b"\r\n\r\n", b"\n\n", b"\r\r")
# Whether a separator starts at a position depends on at most this many bytes from there on.
_SEPARATOR_MAX = 4


@dataclass(slots=True)
class SSEEvent:
    raw: bytes
    """The event exactly as received, its terminating blank line included."""
    event: str | None
    data: bytes
    """The `data:` lines joined with LF; empty for a comment-only (keep-alive) event."""


class SSEDecoder:
    __slots__ = ("_pending",)

    def __init__(self) -> None:
        self._pending = bytearray()
        """The start of an event not yet terminated; it holds no whole separator."""

    def feed(self, chunk: bytes) -> list[SSEEvent]:
        events: list[SSEEvent] = []
        pending = self._pending
        start = 0  # where the next event begins in `chunk`
        if pending:
            searched = len(pending)
            pending += chunk  # amortised O(len(chunk)): a bytearray grows in place
            # No separator starts before `searched - 3`: those positions were searched already.
            end = next(_separator_ends(pending, max(searched - _SEPARATOR_MAX + 1, 0)), -1)
            if end < 0:
                return events
            with memoryview(pending) as view:  # one copy; the view must be released before clear()
                raw = view[:end].tobytes()
            pending.clear()
            events.append(_parse(raw))
            start = end - searched  # the separator ends in `chunk`: the rest of it is plain bytes
        # Events that lie wholly in `chunk` are sliced from it directly, never buffered.
        for end in _separator_ends(chunk, start):
            events.append(_parse(chunk[start:end]))
            start = end
        if start < len(chunk):
            pending += memoryview(chunk)[start:]
        return events

    def pending(self) -> bytes:
        """Bytes of an event not yet terminated (at end of stream: a cut event)."""
        return bytes(self._pending)


def _separator_ends(buffer: bytes | bytearray, start: int) -> Iterator[int]:
    """Where each successive event of `buffer[start:]` ends (just after its separator).

    No two separator forms can start at the same position (their first two bytes differ), so
    the leftmost separator is the nearest of the three forms' next occurrences. A form's next
    occurrence is searched for again only once an event boundary passes it, so each form scans
    every byte at most once however many events `buffer` holds (`bytes.find` is much faster than
    a regular expression over a large event).
    """
    found = [buffer.find(separator, start) for separator in _SEPARATORS]
    while True:
        nearest, length = -1, 0
        for separator, position in zip(_SEPARATORS, found, strict=True):
            if position >= 0 and (nearest < 0 or position < nearest):
                nearest, length = position, len(separator)
        if nearest < 0:
            return
        start = nearest + length
        yield start
        for form, position in enumerate(found):
            if 0 <= position < start:
                found[form] = buffer.find(_SEPARATORS[form], start)


def _parse(raw: bytes) -> SSEEvent:
    event: str | None = None
    data: list[bytes] = []
    # bytes.splitlines breaks at LF, CRLF and CR, like the separators; the blank line that ends
    # the event adds only empty lines, which carry no field.
    for line in raw.splitlines():
        if line.startswith(b"data:"):
            data.append(line[6:] if line[5:6] == b" " else line[5:])
        elif line.startswith(b"event:"):
            event = (line[7:] if line[6:7] == b" " else line[6:]).decode("utf-8", "replace")
    return SSEEvent(raw=raw, event=event, data=b"\n".join(data))


def sse_data(payload: bytes) -> bytes:
    return b"data: " + payload + b"\n\n"


def sse_event(name: str, payload: bytes) -> bytes:
    return b"event: " + name.encode() + b"\ndata: " + payload + b"\n\n"


SSE_HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
