"""Server-sent events: an incremental decoder that keeps each event's raw bytes, and framing.

Invariant: concatenating the `raw` of every decoded event, then `pending()`, gives back exactly
the bytes fed in, so a relay that forwards `raw` is byte-identical to its upstream. Events are
separated by a blank line (LF LF, CRLF CRLF or CR CR), as the SDKs' parsers read them.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

_EVENT_END = re.compile(rb"\r\n\r\n|\n\n|\r\r")
_LINE_END = re.compile(rb"\r\n|\n|\r")


@dataclass(slots=True)
class SSEEvent:
    raw: bytes
    """The event exactly as received, its terminating blank line included."""
    event: str | None
    data: bytes
    """The `data:` lines joined with LF; empty for a comment-only (keep-alive) event."""


class SSEDecoder:
    __slots__ = ("_buffer",)

    def __init__(self) -> None:
        self._buffer = b""

    def feed(self, chunk: bytes) -> list[SSEEvent]:
        buffer = self._buffer + chunk if self._buffer else chunk
        events = []
        start = 0
        while True:
            match = _EVENT_END.search(buffer, start)
            if match is None:
                break
            events.append(_parse(buffer[start : match.end()], buffer[start : match.start()]))
            start = match.end()
        self._buffer = buffer[start:]
        return events

    def pending(self) -> bytes:
        """Bytes of an event not yet terminated (at end of stream: a cut event)."""
        return self._buffer


def _parse(raw: bytes, body: bytes) -> SSEEvent:
    event: str | None = None
    data: list[bytes] = []
    for line in _LINE_END.split(body):
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
