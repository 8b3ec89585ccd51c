"""Learned upstream limits (DESIGN.md 2.10): what the upstream's `x-ratelimit-*` headers say is left.

Invariants:
- A response whose `x-ratelimit-remaining-requests` or `-remaining-tokens` is 0 marks its
  connection x model exhausted until the matching `x-ratelimit-reset-*`; legs skip it meanwhile.
- The request path reads only this process's memory (`upstream_limit_until`): a dictionary
  lookup, nothing when nothing was learned. With Redis, an exhaustion is also published: every
  worker's listener (`upstream_limits_listen`) adds what its siblings learned, and a worker that
  starts later loads the marks still running (keys that expire at their reset).
- The last headers seen per connection x model are saved to the database every few seconds
  (`upstream_limits_keep_saved`) for the admin; never on the request path.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import time
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import orjson

from gateway.capacity.stores.factory import redis_async_client, redis_url
from gateway.core.logs import ThrottledLog

logger = logging.getLogger("vmx.capacity")
_failures = ThrottledLog(logger, interval=10.0)

CHANNEL = "vmx:{cap}:learned"
KEY_PREFIX = "vmx:{cap}:learned:"
SAVE_SECONDS = 5.0
MAX_TRACKED = 10_000
"""Connection x model pairs kept in memory: few in practice, but a key allowed every resource can
name any `connection/model` it likes."""
FORGET_SECONDS = 3600.0
"""When the table is full, pairs not seen for this long make room."""

_DURATION_PART = re.compile(r"(\d+(?:\.\d+)?)(ms|h|m|s)")
_UNIT_MS = {"ms": 1.0, "s": 1000.0, "m": 60_000.0, "h": 3_600_000.0}


def duration_ms(text: str) -> float | None:
    """`1m30s`, `250ms`, `7s`, `2h`, `0.5s` → milliseconds; None when unreadable."""
    text = text.strip()
    if not text:
        return None
    position, total = 0, 0.0
    for match in _DURATION_PART.finditer(text):
        if match.start() != position:
            return None
        total += float(match.group(1)) * _UNIT_MS[match.group(2)]
        position = match.end()
    return total if position == len(text) else None


@dataclass(frozen=True, slots=True)
class UpstreamLimits:
    limit_requests: int | None
    remaining_requests: int | None
    reset_requests: str
    limit_tokens: int | None
    remaining_tokens: int | None
    reset_tokens: str
    seen_at: float
    exhausted_until: float | None = None


_exhausted: dict[tuple[str, str], float] = {}
"""(connection, model) → Unix time until which the upstream has nothing left for it."""
_seen: dict[tuple[str, str], UpstreamLimits] = {}
_unsaved: set[tuple[str, str]] = set()
_tasks: set[asyncio.Task[None]] = set()


def _int(value: str | None) -> int | None:
    if value is None:
        return None
    try:
        return int(value.strip())
    except ValueError:
        return None


def upstream_limits_observe(*, connection: str, model: str, headers: Mapping[str, str], publish: bool) -> None:
    """Learn from one upstream answer's headers (a success or an error)."""
    remaining_requests = _int(headers.get("x-ratelimit-remaining-requests"))
    remaining_tokens = _int(headers.get("x-ratelimit-remaining-tokens"))
    if remaining_requests is None and remaining_tokens is None:
        return
    now = time.time()
    key = (connection, model)
    reset_requests = headers.get("x-ratelimit-reset-requests", "")[:32]
    reset_tokens = headers.get("x-ratelimit-reset-tokens", "")[:32]
    until = None
    for remaining, reset in ((remaining_requests, reset_requests), (remaining_tokens, reset_tokens)):
        if remaining == 0:
            wait = duration_ms(reset)
            candidate = now + (wait if wait is not None else 1000.0) / 1000
            until = candidate if until is None else max(until, candidate)
    if len(_seen) >= MAX_TRACKED and key not in _seen:
        _forget_older_than(now - FORGET_SECONDS)
        if len(_seen) >= MAX_TRACKED:
            return
    _seen[key] = UpstreamLimits(
        limit_requests=_int(headers.get("x-ratelimit-limit-requests")),
        remaining_requests=remaining_requests,
        reset_requests=reset_requests,
        limit_tokens=_int(headers.get("x-ratelimit-limit-tokens")),
        remaining_tokens=remaining_tokens,
        reset_tokens=reset_tokens,
        seen_at=now,
        exhausted_until=until,
    )
    _unsaved.add(key)
    if until is not None:
        _exhausted[key] = max(until, _exhausted.get(key, 0.0))
        if publish:
            _spawn(_publish(connection, model, until))


def _forget_older_than(moment: float) -> None:
    for key in [key for key, seen in _seen.items() if seen.seen_at < moment]:
        _seen.pop(key, None)
        _unsaved.discard(key)


def upstream_limit_until(*, connection: str, model: str, now: float) -> float | None:
    """When the upstream's limit for this connection x model resets, if it is exhausted now."""
    if not _exhausted:
        return None
    until = _exhausted.get((connection, model))
    if until is None:
        return None
    if until <= now:
        _exhausted.pop((connection, model), None)
        return None
    return until


def _spawn(work: Any) -> None:
    try:
        task = asyncio.get_running_loop().create_task(work)
    except RuntimeError:
        work.close()
        return
    _tasks.add(task)
    task.add_done_callback(_tasks.discard)


def _redis(*, listening: bool = False) -> Any:
    return redis_async_client(redis_url(), listening=listening)


_publishers: dict[int, Any] = {}


async def _publish(connection: str, model: str, until: float) -> None:
    message = orjson.dumps({"connection": connection, "model": model, "until": until})
    loop = id(asyncio.get_running_loop())
    client = _publishers.get(loop)
    if client is None:  # one pooled client per event loop, kept for the next marks
        _publishers.clear()
        client = _publishers[loop] = _redis()
    try:
        ttl_ms = max(1, int((until - time.time()) * 1000))
        await client.set(f"{KEY_PREFIX}{connection}\x1f{model}", message, px=ttl_ms)
        await client.publish(CHANNEL, message)
    except Exception as exc:
        _failures.warning(
            "publish", "could not share a learned upstream limit through Redis (%s: %s)", type(exc).__name__, exc
        )


def _learn(message: bytes) -> None:
    try:
        data = orjson.loads(message)
        key = (str(data["connection"]), str(data["model"]))
        until = float(data["until"])
    except (orjson.JSONDecodeError, KeyError, TypeError, ValueError):
        return
    if until > time.time() and (key in _exhausted or len(_exhausted) < MAX_TRACKED):
        _exhausted[key] = max(until, _exhausted.get(key, 0.0))


async def upstream_limits_listen() -> None:
    """Keep this worker's marks in step with what other workers learn (server lifespan, Redis only)."""
    while True:
        client = _redis(listening=True)
        try:
            pubsub = client.pubsub()
            await pubsub.subscribe(CHANNEL)
            async for key in client.scan_iter(
                match=KEY_PREFIX + "*",
                count=1000,  # no glob characters in it: braces are literal
            ):
                value = await client.get(key)
                if value:
                    _learn(value)
            async for message in pubsub.listen():
                if message.get("type") == "message":
                    _learn(message["data"])
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            _failures.warning(
                "listen", "not receiving learned upstream limits from Redis (%s: %s)", type(exc).__name__, exc
            )
            await asyncio.sleep(2.0)
        finally:
            await client.aclose()


def upstream_limits_save() -> int:
    """Write the limits seen since the last save to the database; returns how many pairs."""
    from gateway.models import UpstreamRateLimit

    keys = list(_unsaved)
    _unsaved.difference_update(keys)
    rows = []
    for connection, model in keys:
        seen = _seen.get((connection, model))
        if seen is None:
            continue
        rows.append(
            UpstreamRateLimit(
                connection=connection[:64],
                model=model[:200],
                limit_requests=seen.limit_requests,
                remaining_requests=seen.remaining_requests,
                reset_requests=seen.reset_requests,
                limit_tokens=seen.limit_tokens,
                remaining_tokens=seen.remaining_tokens,
                reset_tokens=seen.reset_tokens,
                exhausted_until=None
                if seen.exhausted_until is None
                else datetime.fromtimestamp(seen.exhausted_until, UTC),
                seen_at=datetime.fromtimestamp(seen.seen_at, UTC),
            )
        )
    if rows:
        try:
            UpstreamRateLimit.objects.bulk_create(
                rows,
                update_conflicts=True,
                unique_fields=["connection", "model"],
                update_fields=[
                    "limit_requests",
                    "remaining_requests",
                    "reset_requests",
                    "limit_tokens",
                    "remaining_tokens",
                    "reset_tokens",
                    "exhausted_until",
                    "seen_at",
                ],
            )
        except Exception:
            _unsaved.update(keys)  # try again next time
            raise
    return len(rows)


async def upstream_limits_keep_saved() -> None:
    """Save what was seen every `SAVE_SECONDS` until cancelled, then once more (server lifespan)."""
    from asgiref.sync import sync_to_async

    save = sync_to_async(upstream_limits_save, thread_sensitive=False)
    try:
        while True:
            await asyncio.sleep(SAVE_SECONDS)
            try:
                await save()
            except Exception as exc:
                _failures.warning("save", "could not save upstream rate limits (%s: %s)", type(exc).__name__, exc)
    finally:
        if _unsaved:
            # The last limits seen are worth a try, never worth delaying shutdown for.
            with contextlib.suppress(Exception, asyncio.CancelledError):
                await asyncio.wait_for(save(), 2.0)
