"""Every Redis client the gateway opens, configured in one place (DESIGN.md 2.10): the address
(`REDIS_URL`), timeouts and client options are decided here and nowhere else.

- `redis_script_client`: the request path's client for the capacity scripts. The hand-written
  RESP client (`resp.py`, one pipelined connection per event loop) unless
  `VMX_CAPACITY_REDIS_CLIENT=redis-py` picks redis-py's asyncio client (with hiredis when it is
  installed): a switch for measuring one against the other (docs/architecture.md has the figures).
- `redis_sync_client`: synchronous reads for people looking at a page (the admin, the API).
- `redis_async_client`: the learned upstream limits' marks and their pub/sub channel.

Invariant: a client is never shared between event loops (a connection belongs to its loop);
callers keep one per loop.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Sequence
from typing import Any, Protocol

import redis
import redis.asyncio
import redis.exceptions
from django.conf import settings

from gateway.capacity.stores.resp import Arg, RedisReplyError, RedisUnavailableError, RespClient

REDIS_TIMEOUT_SECONDS = 3.0
"""The longest a command (or a connection attempt) may take before the store counts as down."""
LISTENER_HEALTH_CHECK_SECONDS = 30


class ScriptClient(Protocol):
    async def evalsha(self, script: str, keys: Sequence[str], args: Sequence[Arg]) -> Any:
        """Run `script` (loading it when Redis does not know it); `RedisReplyError` when Redis
        refuses it, `RedisUnavailableError` when the outcome is unknown."""
        ...


def redis_url() -> str:
    """The configured Redis (`REDIS_URL`); empty when there is none."""
    return str(settings.REDIS_URL)


def redis_script_client(url: str, *, timeout: float = REDIS_TIMEOUT_SECONDS) -> ScriptClient:
    if os.environ.get("VMX_CAPACITY_REDIS_CLIENT", "resp") == "redis-py":
        return RedisPyScriptClient(url, timeout=timeout)
    return RespClient(url, timeout=timeout)


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


class RedisPyScriptClient:
    """redis-py's asyncio client behind the RESP client's `evalsha`, with its errors."""

    def __init__(self, url: str, *, timeout: float) -> None:
        self._client = redis.asyncio.Redis.from_url(
            url, socket_timeout=timeout, socket_connect_timeout=timeout, driver_info=None
        )
        self._digests: dict[str, str] = {}

    async def evalsha(self, script: str, keys: Sequence[str], args: Sequence[Arg]) -> Any:
        digest = self._digests.get(script)
        if digest is None:
            digest = self._digests[script] = hashlib.sha1(script.encode()).hexdigest()  # noqa: S324  (Redis names scripts so)
        try:
            try:
                return await self._client.evalsha(digest, len(keys), *keys, *args)
            except redis.exceptions.NoScriptError:
                await self._client.script_load(script)
                return await self._client.evalsha(digest, len(keys), *keys, *args)
        except redis.exceptions.ResponseError as exc:
            raise RedisReplyError(str(exc)) from exc
        except (redis.exceptions.RedisError, OSError) as exc:
            raise RedisUnavailableError(f"{type(exc).__name__}: {exc}") from exc
