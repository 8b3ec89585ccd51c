"""Learned upstream limits (DESIGN.md 2.10): what the upstream's `x-ratelimit-*` headers say is left.

Invariants:
- A response whose `x-ratelimit-remaining-requests` or `-remaining-tokens` is 0 marks its
  connection x model exhausted until the matching `x-ratelimit-reset-*`, but never for longer than
  `VMX_UPSTREAM_LIMIT_MAX_WAIT_SECONDS`: one header must not switch a connection off for a year.
  A reset that cannot be read, or is absurd, is survived (never raises, never loses a save).
- An operator can clear a mark (`upstream_limit_clear`, the admin's action, the API's DELETE):
  with Redis every worker hears it at once; without, each worker drops its own mark at its next
  save (a few seconds), when the database row says it was cleared after the mark was learned.
- The request path reads only this process's memory (`upstream_limit_until`): a dictionary
  lookup, nothing when nothing was learned. With Redis, an exhaustion is also published: every
  worker's listener (`upstream_limits_listen`) adds what its siblings learned, and a worker that
  starts later loads the marks still running (keys that expire at their reset).
- Marks are per environment x connection x model (DESIGN.md 2.15): two environments may each
  have a connection `main` on different upstreams. `default/default`'s environment tag is empty,
  so its Redis keys and rows are those of before environments existed.
- The last headers seen per connection x model are saved to the database every few seconds
  (`upstream_limits_keep_saved`) for the admin; never on the request path. Rows not seen for
  `VMX_UPSTREAM_LIMITS_RETENTION_DAYS` are deleted by the daily maintenance.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import math
import re
import time
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import orjson
from django.conf import settings

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


def longest_wait_seconds() -> float:
    """The longest an upstream's reset may keep a connection x model skipped."""
    return max(1.0, float(settings.VMX_UPSTREAM_LIMIT_MAX_WAIT_SECONDS))


def _capped(until: float, now: float) -> float:
    """`until`, no later than the longest wait from `now` (an infinite or NaN one included)."""
    latest = now + longest_wait_seconds()
    return until if math.isfinite(until) and until <= latest else latest


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


_Pair = tuple[str, str, str]
"""(environment tag, connection, model)."""
_exhausted: dict[_Pair, float] = {}
"""(environment, connection, model) → Unix time until which the upstream has nothing left for it."""
_seen: dict[_Pair, UpstreamLimits] = {}
_unsaved: set[_Pair] = set()
_marked_at: dict[_Pair, float] = {}
"""When this worker learned each of its marks: a clear saved after that moment removes it."""
_tasks: set[asyncio.Task[None]] = set()


def _int(value: str | None) -> int | None:
    if value is None:
        return None
    try:
        return int(value.strip())
    except ValueError:
        return None


def upstream_limits_observe(
    *, connection: str, model: str, headers: Mapping[str, str], publish: bool, environment: str = ""
) -> None:
    """Learn from one upstream answer's headers (a success or an error). `environment` is the
    connection's environment store tag (`EnvironmentInfo.store_tag`)."""
    remaining_requests = _int(headers.get("x-ratelimit-remaining-requests"))
    remaining_tokens = _int(headers.get("x-ratelimit-remaining-tokens"))
    if remaining_requests is None and remaining_tokens is None:
        return
    now = time.time()
    key = (environment, connection, model)
    reset_requests = headers.get("x-ratelimit-reset-requests", "")[:32]
    reset_tokens = headers.get("x-ratelimit-reset-tokens", "")[:32]
    until = None
    for remaining, reset in ((remaining_requests, reset_requests), (remaining_tokens, reset_tokens)):
        if remaining == 0:
            wait = duration_ms(reset)
            candidate = _capped(now + (wait if wait is not None else 1000.0) / 1000, now)
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
        _marked_at[key] = now
        if publish:
            _spawn(_publish(key, until))


def _forget_older_than(moment: float) -> None:
    for key in [key for key, seen in _seen.items() if seen.seen_at < moment]:
        _seen.pop(key, None)
        _unsaved.discard(key)


def upstream_limit_until(*, connection: str, model: str, now: float, environment: str = "") -> float | None:
    """When the upstream's limit for this connection x model resets, if it is exhausted now."""
    if not _exhausted:
        return None
    key = (environment, connection, model)
    until = _exhausted.get(key)
    if until is None:
        return None
    if until <= now:
        _exhausted.pop(key, None)
        _marked_at.pop(key, None)
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


def _message(key: _Pair, **fields: Any) -> bytes:
    environment, connection, model = key
    # default/default's messages carry no environment: as instances before environments wrote them.
    where = {"environment": environment} if environment else {}
    return orjson.dumps({**where, "connection": connection, "model": model, **fields})


def _redis_key(key: _Pair) -> str:
    environment, connection, model = key
    return (
        f"{KEY_PREFIX}{environment}\x1f{connection}\x1f{model}"
        if environment
        else f"{KEY_PREFIX}{connection}\x1f{model}"
    )


async def _publish(key: _Pair, until: float) -> None:
    message = _message(key, until=until)
    loop = id(asyncio.get_running_loop())
    client = _publishers.get(loop)
    if client is None:  # one pooled client per event loop, kept for the next marks
        _publishers.clear()
        client = _publishers[loop] = _redis()
    try:
        ttl_ms = max(1, int((until - time.time()) * 1000))
        await client.set(_redis_key(key), message, px=ttl_ms)
        await client.publish(CHANNEL, message)
    except Exception as exc:
        _failures.warning(
            "publish", "could not share a learned upstream limit through Redis (%s: %s)", type(exc).__name__, exc
        )


def _learn(message: bytes) -> None:
    try:
        data = orjson.loads(message)
        key = (str(data.get("environment", "")), str(data["connection"]), str(data["model"]))
        if data.get("clear") is True:
            _forget_mark(key)
            return
        until = float(data["until"])
    except (orjson.JSONDecodeError, KeyError, TypeError, ValueError, AttributeError):
        return
    now = time.time()
    if until > now and (key in _exhausted or len(_exhausted) < MAX_TRACKED):
        _exhausted[key] = max(_capped(until, now), _exhausted.get(key, 0.0))
        _marked_at[key] = now


def _forget_mark(key: _Pair) -> None:
    _exhausted.pop(key, None)
    _marked_at.pop(key, None)
    seen = _seen.get(key)
    if seen is not None and seen.exhausted_until is not None:
        _seen[key] = dataclasses.replace(seen, exhausted_until=None)


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
    for key in keys:
        seen = _seen.get(key)
        if seen is None:
            continue
        environment, connection, model = key
        rows.append(
            UpstreamRateLimit(
                environment=environment,
                connection=connection[:64],
                model=model[:200],
                limit_requests=seen.limit_requests,
                remaining_requests=seen.remaining_requests,
                reset_requests=seen.reset_requests,
                limit_tokens=seen.limit_tokens,
                remaining_tokens=seen.remaining_tokens,
                reset_tokens=seen.reset_tokens,
                exhausted_until=None if seen.exhausted_until is None else _moment(seen.exhausted_until),
                seen_at=_moment(seen.seen_at),
            )
        )
    if rows:
        try:
            UpstreamRateLimit.objects.bulk_create(
                rows,
                update_conflicts=True,
                unique_fields=["environment", "connection", "model"],
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


def _moment(seconds: float) -> datetime:
    """A Unix time as a database date-time (marks are capped; this never raises on one that is not)."""
    try:
        return datetime.fromtimestamp(seconds, UTC)
    except (OverflowError, OSError, ValueError):
        return datetime.fromtimestamp(time.time() + longest_wait_seconds(), UTC)


def upstream_limit_clear(*, connection: str, model: str, environment: str = "") -> bool:
    """Forget that the upstream said this connection x model is exhausted, on every worker (at
    once with Redis; without it, at each worker's next save). False when nothing was known of it."""
    from django.utils import timezone

    from gateway.capacity.stores.factory import redis_sync_client
    from gateway.models import UpstreamRateLimit

    key = (environment, connection, model)
    known = key in _exhausted or key in _seen
    _forget_mark(key)
    cleared = UpstreamRateLimit.objects.filter(environment=environment, connection=connection, model=model).update(
        exhausted_until=None, cleared_at=timezone.now()
    )
    url = redis_url()
    if url:
        client = redis_sync_client(url)
        try:
            client.delete(_redis_key(key))
            client.publish(CHANNEL, _message(key, clear=True))
        except Exception as exc:  # the database row is cleared; the workers' marks end within the cap
            _failures.warning(
                "clear", "could not share a cleared upstream limit through Redis (%s)", type(exc).__name__
            )
        finally:
            client.close()
    return known or cleared > 0


def upstream_limits_reconcile() -> int:
    """Drop this worker's marks that an operator cleared after they were learned; how many."""
    from gateway.models import UpstreamRateLimit

    if not _marked_at:
        return 0
    keys = list(_marked_at)
    rows = UpstreamRateLimit.objects.filter(
        cleared_at__isnull=False,
        environment__in={environment for environment, _, _ in keys},
        connection__in={connection for _, connection, _ in keys},
        model__in={model for _, _, model in keys},
    ).values_list("environment", "connection", "model", "cleared_at")
    dropped = 0
    for environment, connection, model, cleared_at in rows:
        key = (environment, connection, model)
        marked = _marked_at.get(key)
        if marked is not None and cleared_at is not None and cleared_at.timestamp() >= marked:
            _forget_mark(key)
            dropped += 1
    return dropped


async def upstream_limits_keep_saved() -> None:
    """Save what was seen every `SAVE_SECONDS` until cancelled, then once more (server lifespan)."""
    from asgiref.sync import sync_to_async

    save = sync_to_async(upstream_limits_save, thread_sensitive=False)
    reconcile = sync_to_async(upstream_limits_reconcile, thread_sensitive=False)
    try:
        while True:
            await asyncio.sleep(SAVE_SECONDS)
            try:
                await save()
                await reconcile()
            except Exception as exc:
                _failures.warning("save", "could not save upstream rate limits (%s: %s)", type(exc).__name__, exc)
    finally:
        if _unsaved:
            # The last limits seen are worth a try, never worth delaying shutdown for.
            with contextlib.suppress(Exception, asyncio.CancelledError):
                await asyncio.wait_for(save(), 2.0)
