"""Removing a connection's secrets from what the gateway relays or stores (DESIGN.md 2.13).

Some OpenAI-compatible servers quote the caller's API key in their error text. Whatever comes
back from an upstream (error bodies and messages, response bodies, stream bytes) passes through
the connection's `Redactor` before a client, the audit or a log line sees it.

Invariant for streams: the concatenated output equals the concatenated input with every secret
replaced by `MASK`, whatever the chunking; bytes are held back only while the tail of a chunk
could be the start of a secret, so event boundaries (blank lines) are never delayed.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterable

MASK = "********"
MIN_SECRET_LENGTH = 8
"""Shorter values are not redacted: masking every 'abc' in a stream would corrupt answers."""


class Redactor:
    __slots__ = ("_secrets", "_secrets_bytes")

    def __init__(self, secrets: Iterable[str]) -> None:
        # Longest first, so a secret that contains another is masked whole.
        unique = sorted({s for s in secrets if isinstance(s, str) and len(s) >= MIN_SECRET_LENGTH}, key=len)[::-1]
        self._secrets = tuple(unique)
        self._secrets_bytes = tuple(s.encode() for s in unique)

    def __bool__(self) -> bool:
        return bool(self._secrets)

    def text(self, value: str) -> str:
        for secret in self._secrets:
            if secret in value:
                value = value.replace(secret, MASK)
        return value

    def data(self, value: bytes) -> bytes:
        for secret in self._secrets_bytes:
            if secret in value:
                value = value.replace(secret, MASK.encode())
        return value

    async def stream(self, chunks: AsyncIterator[bytes]) -> AsyncIterator[bytes]:
        held = b""
        async for chunk in chunks:
            ready, held = self._split(held + chunk if held else chunk)
            if ready:
                yield ready
        if held:
            yield held  # the start of a secret that never completed: not a secret

    def _split(self, data: bytes) -> tuple[bytes, bytes]:
        """(`data` redacted up to a tail that may be the start of a secret, that tail)."""
        data = self.data(data)
        keep = 0
        for secret in self._secrets_bytes:
            # The longest suffix of `data` that is a proper prefix of `secret`.
            start = max(0, len(data) - len(secret) + 1)
            position = data.find(secret[:1], start)
            while position != -1:
                if secret.startswith(data[position:]):
                    keep = max(keep, len(data) - position)
                    break
                position = data.find(secret[:1], position + 1)
        if keep == 0:
            return data, b""
        return data[:-keep], data[-keep:]
