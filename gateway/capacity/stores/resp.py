"""A small Redis client for the request path: one pipelined connection per event loop.

Why not redis-py's asyncio client here: measured on the capacity check (EVALSHA, c=64, uvloop),
redis-py spends about 170 µs of CPU per command in connection-pool bookkeeping, timeouts and
parsing; this client about 20 µs, which is the difference between a limit costing ~20 % and a
few percent of a gateway's throughput (docs/benchmarks.md). redis-py still serves everything off
the request path (the admin, pub/sub).

Invariants:
- Commands on a connection are answered in the order they were sent (Redis guarantees it), so
  each reply resolves the oldest waiting future; commands issued in one loop iteration go out in
  one write.
- A connection is never reused after any doubt: a reply that does not parse, a command waiting
  longer than `timeout`, or a lost connection fails every command in flight with
  `RedisUnavailableError` and the next command connects afresh.
- Only RESP2 and only what the capacity store needs: integers, simple and bulk strings, arrays,
  errors (`RedisReplyError`, e.g. NOSCRIPT, handled by `evalsha`).
"""

from __future__ import annotations

import asyncio
import collections
import hashlib
import ssl
import time
from collections.abc import Sequence
from typing import Any, cast
from urllib.parse import unquote, urlsplit


class RedisUnavailableError(Exception):
    """The command's outcome is unknown: no connection, lost, or too slow."""


class RedisReplyError(Exception):
    """Redis answered with an error (the command did not run, or the script raised)."""


Arg = str | bytes | int


def _encode(args: Sequence[Arg]) -> bytes:
    parts = [b"*%d\r\n" % len(args)]
    for arg in args:
        if isinstance(arg, int):
            data = b"%d" % arg
        elif isinstance(arg, str):
            data = arg.encode()
        else:
            data = arg
        parts.append(b"$%d\r\n%b\r\n" % (len(data), data))
    return b"".join(parts)


class _Incomplete(Exception):
    pass


class _Protocol(asyncio.Protocol):
    def __init__(self, loop: asyncio.AbstractEventLoop, timeout: float) -> None:
        self.loop = loop
        self.timeout = timeout
        self.transport: asyncio.Transport | None = None
        self.waiters: collections.deque[tuple[asyncio.Future[Any], float]] = collections.deque()
        self.buffer = bytearray()
        self.outgoing: list[bytes] = []
        self.flush_scheduled = False
        self.watching = False
        self.lost: str | None = None

    # asyncio.Protocol ---------------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's are not asyncio.Transport subclasses

    def connection_lost(self, exc: Exception | None) -> None:
        self._fail(f"connection lost ({exc})" if exc else "connection closed")

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        position = 0
        try:
            while self.waiters:
                value, position = self._parse(position)
                future, _ = self.waiters.popleft()
                if not future.done():
                    if isinstance(value, RedisReplyError):
                        future.set_exception(value)
                    else:
                        future.set_result(value)
        except _Incomplete:
            pass
        except (ValueError, IndexError) as exc:  # not RESP: nothing after this can be trusted
            self._abort(f"unreadable reply ({exc})")
            return
        del self.buffer[:position]

    # ---------------------------------------------------------------------------------------------

    def _parse(self, position: int) -> tuple[Any, int]:
        buffer = self.buffer
        end = buffer.find(b"\r\n", position)
        if end < 0:
            raise _Incomplete
        kind = buffer[position]
        line = bytes(buffer[position + 1 : end])
        after = end + 2
        if kind == 0x3A:  # ':' integer
            return int(line), after
        if kind == 0x2B:  # '+' simple string
            return line, after
        if kind == 0x2D:  # '-' error
            return RedisReplyError(line.decode("utf-8", "replace")), after
        if kind == 0x24:  # '$' bulk string
            length = int(line)
            if length < 0:
                return None, after
            if len(buffer) < after + length + 2:
                raise _Incomplete
            return bytes(buffer[after : after + length]), after + length + 2
        if kind == 0x2A:  # '*' array
            count = int(line)
            if count < 0:
                return None, after
            items = []
            for _ in range(count):
                item, after = self._parse(after)
                items.append(item)
            return items, after
        raise ValueError(f"unexpected reply type {chr(kind)!r}")

    def call(self, args: Sequence[Arg]) -> asyncio.Future[Any]:
        future: asyncio.Future[Any] = self.loop.create_future()
        if self.lost is not None:
            future.set_exception(RedisUnavailableError(self.lost))
            return future
        self.waiters.append((future, time.monotonic() + self.timeout))
        self.outgoing.append(_encode(args))
        if not self.flush_scheduled:
            self.flush_scheduled = True
            self.loop.call_soon(self._flush)
        if not self.watching:
            self.watching = True
            self.loop.call_later(self.timeout / 2, self._watch)
        return future

    def _flush(self) -> None:
        self.flush_scheduled = False
        if self.outgoing and self.transport is not None and self.lost is None:
            data = b"".join(self.outgoing)
            self.outgoing.clear()
            self.transport.write(data)

    def _watch(self) -> None:
        """One timer per connection, not one per command: the oldest command decides."""
        self.watching = False
        if not self.waiters or self.lost is not None:
            return
        if self.waiters[0][1] <= time.monotonic():
            self._abort(f"no answer within {self.timeout:g} s")
            return
        self.watching = True
        self.loop.call_later(self.timeout / 2, self._watch)

    def _abort(self, reason: str) -> None:
        self._fail(reason)
        if self.transport is not None:
            self.transport.abort()

    def _fail(self, reason: str) -> None:
        if self.lost is None:
            self.lost = reason
        while self.waiters:
            future, _ = self.waiters.popleft()
            if not future.done():
                future.set_exception(RedisUnavailableError(reason))
        self.outgoing.clear()

    @property
    def usable(self) -> bool:
        return self.lost is None and self.transport is not None and not self.transport.is_closing()


class RespClient:
    """Commands to the Redis at `url` (`redis://`, `rediss://` or `unix://`, with user, password
    and database), from one event loop."""

    def __init__(self, url: str, *, timeout: float) -> None:
        parts = urlsplit(url)
        if parts.scheme not in ("redis", "rediss", "unix"):
            raise ValueError(f"unsupported Redis URL scheme {parts.scheme!r}")
        self.scheme = parts.scheme
        self.host = parts.hostname or "127.0.0.1"
        self.port = parts.port or 6379
        self.path = parts.path if parts.scheme == "unix" else ""
        self.username = unquote(parts.username) if parts.username else None
        self.password = unquote(parts.password) if parts.password else None
        database = parts.path.strip("/") if parts.scheme != "unix" else ""
        query = dict(item.partition("=")[::2] for item in parts.query.split("&") if item)
        self.database = int(database or query.get("db") or 0)
        self.timeout = timeout
        self._protocol: _Protocol | None = None
        self._connecting: asyncio.Future[_Protocol] | None = None
        self._scripts: dict[str, str] = {}

    async def call(self, *args: Arg) -> Any:
        protocol = self._protocol
        if protocol is None or not protocol.usable:
            protocol = await self._connected()
        return await protocol.call(args)

    async def evalsha(self, script: str, keys: Sequence[str], args: Sequence[Arg]) -> Any:
        """Run `script` by its digest, loading it when Redis does not know it (restart, flush)."""
        sha = self._scripts.get(script)
        if sha is None:
            sha = self._scripts[script] = hashlib.sha1(script.encode()).hexdigest()  # noqa: S324  (Redis names scripts so)
        try:
            return await self.call("EVALSHA", sha, len(keys), *keys, *args)
        except RedisReplyError as exc:
            if not str(exc).startswith("NOSCRIPT"):
                raise
        await self.call("SCRIPT", "LOAD", script)
        return await self.call("EVALSHA", sha, len(keys), *keys, *args)

    async def _connected(self) -> _Protocol:
        if self._connecting is None:  # one connection attempt shared by every caller waiting
            self._connecting = asyncio.ensure_future(self._connect())
        connecting = self._connecting
        try:
            return await asyncio.shield(connecting)
        finally:
            if connecting.done() and self._connecting is connecting:
                self._connecting = None

    async def _connect(self) -> _Protocol:
        loop = asyncio.get_running_loop()

        def factory() -> _Protocol:
            return _Protocol(loop, self.timeout)

        try:
            if self.scheme == "unix":
                opening = loop.create_unix_connection(factory, self.path)
            else:
                context = ssl.create_default_context() if self.scheme == "rediss" else None
                opening = loop.create_connection(factory, self.host, self.port, ssl=context)
            _, protocol = await asyncio.wait_for(opening, self.timeout)
        except (OSError, TimeoutError) as exc:
            raise RedisUnavailableError(f"cannot connect: {type(exc).__name__}: {exc}") from exc
        try:
            if self.password is not None:
                credentials = [self.username, self.password] if self.username else [self.password]
                await protocol.call(["AUTH", *credentials])
            if self.database:
                await protocol.call(["SELECT", self.database])
        except RedisReplyError as exc:
            protocol._abort("refused")
            raise RedisUnavailableError(f"Redis refused the connection's setup: {exc}") from exc
        self._protocol = protocol
        return protocol

    def close(self) -> None:
        if self._protocol is not None:
            self._protocol._abort("closed")
            self._protocol = None
