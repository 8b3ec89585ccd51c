"""Every Redis client the gateway opens, configured in one place (DESIGN.md 2.10): the address
(`REDIS_URL`), timeouts and client options are decided here and nowhere else.

All of them are redis-py clients made with `from_url`, as Django's cache makes its own, so every
option of the URL (`rediss://`, `ssl_cert_reqs`, `ssl_ca_certs`, `ssl_certfile`, `ssl_keyfile`,
`ssl_check_hostname`, `socket_timeout`, `db`, user and password, ...) means the same for the
limits, the learned limits and the cache; an option in the URL wins over the defaults set here.

- `redis_script_client`: the request path's client for the capacity scripts, behind the
  process's circuit breaker for that Redis (`breaker.py`).
- `redis_sync_client`: synchronous reads for people looking at a page (the admin, the API).
- `redis_async_client`: the learned upstream limits' marks and their pub/sub channel.

Invariants:
- A client is never shared between event loops (a connection belongs to its loop); callers keep
  one per loop.
- A reply always belongs to its command: a connection whose command was cut (timeout, cancel,
  lost) is closed by redis-py, not reused, and a command that cannot be encoded is refused before
  a byte of it is sent (`RedisCommandError`).
- No automatic retries of a capacity script: one that timed out may have counted.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from typing import Any, Protocol

import redis
import redis.asyncio
import redis.exceptions
from django.conf import settings

from gateway.capacity.stores.breaker import CircuitBreaker, breaker_for

REDIS_TIMEOUT_SECONDS = 3.0
"""The longest a command (or a connection attempt) may take before the store counts as down."""
LISTENER_HEALTH_CHECK_SECONDS = 30
SCRIPT_CONNECTIONS = 100
"""Connections per worker for the capacity scripts (`max_connections` in the URL overrides it)."""

Arg = str | bytes | int


class RedisUnavailableError(Exception):
    """The command's outcome is unknown: no connection, lost, too slow, or not sent because the
    breaker is open."""


class RedisTimeoutError(RedisUnavailableError):
    """No answer (or no connection) within the timeout: the sign of a Redis that hangs."""


class RedisReplyError(Exception):
    """The command did not run: Redis answered with an error (a script refused, out of memory)."""


class RedisCommandError(RedisReplyError):
    """The command could not be sent as given (e.g. text that is not valid Unicode); nothing was
    sent, and the connection is as it was."""


class ScriptClient(Protocol):
    async def evalsha(self, script: str, keys: Sequence[str], args: Sequence[Arg]) -> Any:
        """Run `script` (loading it when Redis does not know it); `RedisReplyError` when Redis
        refuses it, `RedisUnavailableError` when the outcome is unknown."""
        ...

    async def ping(self) -> None:
        """Whether this client's connection answers (for `/readyz`; the breaker is not asked)."""
        ...

    @property
    def breaker(self) -> CircuitBreaker: ...


def redis_url() -> str:
    """The configured Redis (`REDIS_URL`); empty when there is none."""
    return str(settings.REDIS_URL)


def capacity_breaker(url: str) -> CircuitBreaker:
    """This process's breaker for the limits' Redis at `url`."""
    return breaker_for(url, open_seconds=float(settings.VMX_CAPACITY_BREAKER_SECONDS))


def redis_script_client(url: str, *, timeout: float = REDIS_TIMEOUT_SECONDS) -> ScriptClient:
    return RedisScriptClient(url, timeout=timeout, breaker=capacity_breaker(url))


def redis_sync_client(url: str, *, timeout: float = REDIS_TIMEOUT_SECONDS) -> redis.Redis:
    return redis.Redis.from_url(url, socket_timeout=timeout, socket_connect_timeout=timeout, driver_info=None)


def redis_async_client(url: str, *, listening: bool = False) -> redis.asyncio.Redis:
    # A subscriber waits for messages as long as there are none: no read timeout, but a ping
    # now and then so a connection Redis dropped is noticed and made again.
    return redis.asyncio.Redis.from_url(
        url,
        socket_timeout=None if listening else REDIS_TIMEOUT_SECONDS,
        socket_connect_timeout=REDIS_TIMEOUT_SECONDS,
        health_check_interval=LISTENER_HEALTH_CHECK_SECONDS if listening else 0,
        driver_info=None,
    )


class RedisScriptClient:
    """The capacity scripts through redis-py's asyncio client (with hiredis when installed), its
    errors translated, behind the breaker."""

    def __init__(self, url: str, *, timeout: float, breaker: CircuitBreaker) -> None:
        # A blocking pool: a burst beyond its size waits (at most `timeout`) for a connection to be
        # free instead of failing at once, which would read as an outage.
        pool = redis.asyncio.BlockingConnectionPool.from_url(
            url,
            max_connections=SCRIPT_CONNECTIONS,
            timeout=timeout,
            socket_timeout=timeout,
            socket_connect_timeout=timeout,
            driver_info=None,
        )
        self._client = redis.asyncio.Redis(connection_pool=pool)
        self._digests: dict[str, str] = {}
        self._breaker = breaker

    @property
    def breaker(self) -> CircuitBreaker:
        return self._breaker

    async def evalsha(self, script: str, keys: Sequence[str], args: Sequence[Arg]) -> Any:
        breaker = self._breaker
        if not breaker.allow():
            raise RedisUnavailableError(f"not asked: it failed moments ago (asked again in {breaker.retry_in():.1f} s)")
        try:
            result = await self._evalsha(script, keys, args)
        except RedisCommandError:
            breaker.abandoned()  # nothing was sent: nothing learned about Redis
            raise
        except RedisReplyError:
            breaker.succeeded()  # Redis answered
            raise
        except RedisTimeoutError:
            breaker.failed()
            raise
        except RedisUnavailableError:
            # Lost or refused. A connection Redis (or a proxy) closed while idle is no outage: if a
            # fresh connection answers, nothing more is learned; if not, Redis is down.
            if await self._answers():
                breaker.succeeded()
            else:
                breaker.failed()
            raise
        except BaseException:  # cancelled: the outcome is unknown
            breaker.abandoned()
            raise
        breaker.succeeded()
        return result

    async def _evalsha(self, script: str, keys: Sequence[str], args: Sequence[Arg]) -> Any:
        digest = self._digests.get(script)
        if digest is None:
            digest = self._digests[script] = hashlib.sha1(script.encode()).hexdigest()  # noqa: S324  (Redis names scripts so)
        try:
            try:
                return await self._client.evalsha(digest, len(keys), *keys, *args)
            except redis.exceptions.NoScriptError:
                await self._client.script_load(script)
                return await self._client.evalsha(digest, len(keys), *keys, *args)
        except (redis.exceptions.DataError, UnicodeError) as exc:
            raise RedisCommandError(f"the command cannot be sent: {exc}") from exc
        except Exception as exc:
            translated = _translated(exc)
            if translated is None:
                raise
            raise translated from exc

    async def ping(self) -> None:
        try:
            await self._client.ping()
        except Exception as exc:
            translated = _translated(exc)
            if translated is None:
                raise
            raise translated from exc

    async def _answers(self) -> bool:
        try:
            await self.ping()
        except (RedisUnavailableError, RedisReplyError):
            return False
        return True

    async def aclose(self) -> None:
        await self._client.aclose()


def _translated(exc: Exception) -> Exception | None:
    """redis-py's errors as the store's: refused, unknown outcome, or too slow."""
    if isinstance(exc, redis.exceptions.ResponseError):
        return RedisReplyError(str(exc))
    if isinstance(exc, redis.exceptions.TimeoutError | TimeoutError):
        return RedisTimeoutError(f"{type(exc).__name__}: {exc}")
    if isinstance(exc, redis.exceptions.RedisError | OSError):
        return RedisUnavailableError(f"{type(exc).__name__}: {exc}")
    return None
