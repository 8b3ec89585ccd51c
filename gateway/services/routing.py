"""Routing shared by every endpoint: resolve `model` to legs, try them in order, commit streams.

Invariants (DESIGN.md 2.4, 2.6):
- A leg is one model entry on one connection; within a leg the provider retries
  (`max_retries` = the entry's `maxRetries`); any upstream failure of a leg moves to the next.
- Gateway-side rejections (bad input, unknown resource, key not allowed) happen before any leg.
- A stream commits when its first event has been checked (`prime`); a failure up to then still
  moves to the next leg, after it the endpoint reports it in-stream.
- When every leg failed, the last leg's error is raised.
- Before a leg is called: a connection x model whose upstream said it has nothing left is skipped
  until its reset, and a connection whose own limits are used up is skipped (DESIGN.md 2.10);
  each skip is an audit attempt with no call (`tries` 0). A route without limits does no counting.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

import orjson

from connections.entities import ApiKeyInfo, ConnectionInfo, EnvironmentSnapshot, ModelEntryInfo
from gateway.audit.entry import AuditEntry
from gateway.capacity.gate import CapacityGate
from gateway.capacity.learned import duration_ms, upstream_limit_until, upstream_limits_observe
from gateway.capacity.stores.factory import redis_url
from gateway.core.errors import (
    CapacityExceededError,
    GatewayError,
    InvalidRequestError,
    ModelNotFoundError,
    NoAvailableModelError,
    PermissionDeniedError,
    UpstreamError,
    UpstreamStatusError,
    UpstreamUnavailableError,
)
from gateway.core.jsonchecks import has_control_characters
from gateway.core.logs import ThrottledLog
from gateway.providers import provider_get
from gateway.providers.base import Provider, UpstreamRequest, UpstreamResponse
from gateway.services.envelope import Envelope, body_merge

T = TypeVar("T")
logger = logging.getLogger("vmx.routing")
_provider_failures = ThrottledLog(logger, interval=10.0)


@dataclass(frozen=True, slots=True)
class Leg:
    connection: ConnectionInfo
    entry: ModelEntryInfo


@dataclass(frozen=True, slots=True)
class Route:
    resource: str
    """As audited: the resource name, or the literal `conn/model` string."""
    legs: tuple[Leg, ...]
    default_args: Mapping[str, Any]
    capacity: CapacityGate | None = None
    """The request's limits; None when nothing it touches has any."""
    direct: bool = False
    """Addressed `connection/model-id`: the model id is the client's text, not configuration."""
    environment: str = ""
    """The store tag of the environment whose connections the legs are (learned limits)."""


def route_resolve(*, snapshot: EnvironmentSnapshot, api_key: ApiKeyInfo, model: str) -> Route:
    """404 for an unknown resource, 403 when the key may not use it (in that order)."""
    resource = snapshot.resources.get(model)
    if resource is not None:
        if not resource.enabled:
            raise ModelNotFoundError(f"The model '{model}' is disabled on this gateway.", param="model")
        if not api_key.allows(model):
            raise PermissionDeniedError(f"This API key may not use the model '{model}'.", param="model")
        legs = tuple(
            Leg(snapshot.connections[entry.connection], entry)
            for entry in resource.models
            if entry.connection in snapshot.connections and snapshot.connections[entry.connection].enabled
        )
        if not legs:
            raise NoAvailableModelError(f"Every connection of the model '{model}' is disabled.")
        return Route(
            resource=model, legs=legs, default_args=resource.default_args, environment=snapshot.environment.store_tag
        )
    connection_name, _, model_id = model.partition("/")
    connection = snapshot.connections.get(connection_name) if model_id else None
    if connection is not None:
        if has_control_characters(model_id):
            # The address is audited and sent upstream: it must be plain text (DESIGN.md 2.13).
            raise InvalidRequestError("model must not contain control characters", param="model")
        # `connection/model-id` addresses a connection directly: only for keys allowed everything.
        if not api_key.all_resources:
            raise PermissionDeniedError(
                f"This API key may not address connections directly ('{model}'); it needs access to all resources.",
                param="model",
            )
        if not connection.enabled:
            raise NoAvailableModelError(f"The connection '{connection_name}' is disabled.")
        return Route(
            resource=model,
            legs=(Leg(connection, ModelEntryInfo(connection_name, model_id)),),
            default_args={},
            direct=True,
            environment=snapshot.environment.store_tag,
        )
    raise ModelNotFoundError(f"The model '{model}' does not exist or you do not have access to it.", param="model")


def upstream_args(
    *,
    route: Route,
    body: Mapping[str, Any],
    envelope: Envelope,
    default_args: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """defaultArgs ← client body ← providerArgs, shallow (DESIGN.md 2.6): what every leg sends,
    but for `model` (`upstream_body`). Built once per request: admission estimates from it.
    `default_args` replaces the resource's (an endpoint that must leave some out)."""
    defaults = route.default_args if default_args is None else default_args
    return body_merge(defaults, body, envelope.provider_args) if defaults or envelope.provider_args else dict(body)


def upstream_body(*, args: Mapping[str, Any], leg: Leg) -> dict[str, Any]:
    """The leg's body: `args` (from `upstream_args`) with `model` set to the leg's upstream id."""
    merged = dict(args)
    merged["model"] = leg.entry.model
    return merged


def leg_timeout(*, leg: Leg, envelope: Envelope) -> float:
    timeout_ms = leg.entry.timeout_ms if envelope.timeout_ms is None else min(leg.entry.timeout_ms, envelope.timeout_ms)
    return timeout_ms / 1000


def leg_request(
    *,
    leg: Leg,
    envelope: Envelope,
    path: str,
    body: Mapping[str, Any],
    stream: bool,
    max_retries: int | None = None,
) -> UpstreamRequest:
    """The leg's call: `body` serialised once, the leg's timeout and retries (or `max_retries`)."""
    return UpstreamRequest(
        path=path,
        body=orjson.dumps(body),
        stream=stream,
        timeout=leg_timeout(leg=leg, envelope=envelope),
        max_retries=leg.entry.max_retries if max_retries is None else max_retries,
    )


Revise = Callable[[Leg, UpstreamRequest, UpstreamError], tuple[UpstreamRequest, str] | None]
MAX_REVISIONS = 2


async def route_call(
    *,
    route: Route,
    audit: AuditEntry,
    build: Callable[[Leg], UpstreamRequest],
    prime: Callable[[Leg, UpstreamResponse], Awaitable[T]],
    revise: Revise | None = None,
    learn: bool = True,
) -> tuple[Leg, UpstreamResponse, T]:
    """Try each leg until one answers and `prime` accepts its start; raise the last leg's error.

    `prime` reads what must be checked before committing (a whole body, or a stream's first
    event) and raises an `UpstreamError` to reject the leg. The returned response is open for
    streams: the caller must `aclose()` it. `revise` may turn a failed call into a corrected one
    within the same leg (e.g. without parameters the model rejected), at most `MAX_REVISIONS`
    times; the leg's attempt entry notes it. `learn`: whether the upstream's rate-limit headers
    teach which connection x model to skip (not for side calls such as token counting).
    """
    return await _RouteCall(route, audit, build, prime, revise, learn).run()


class _RouteCall(Generic[T]):
    """One `route_call`: the legs in order, each skipped, failed or answered, all audited."""

    def __init__(
        self,
        route: Route,
        audit: AuditEntry,
        build: Callable[[Leg], UpstreamRequest],
        prime: Callable[[Leg, UpstreamResponse], Awaitable[T]],
        revise: Revise | None,
        learn: bool,
    ) -> None:
        self.route, self.audit, self.build, self.prime, self.revise, self.learn = (
            route,
            audit,
            build,
            prime,
            revise,
            learn,
        )
        self.publish = bool(redis_url())
        self.gate = route.capacity

    async def run(self) -> tuple[Leg, UpstreamResponse, T]:
        route = self.route
        last_error: UpstreamError | None = None
        skips: list[CapacityExceededError] = []
        start = 0
        while start < len(route.legs):
            index, skipped = await _next_leg(route, start)
            skips += self._skipped(range(start, len(route.legs) if index is None else index), skipped)
            if index is None:
                break
            start = index + 1
            try:
                response, primed = await self._leg(index)
            except UpstreamError as exc:
                last_error = exc
                continue
            return route.legs[index], response, primed
        if last_error is not None:  # the last leg called failed: its error, whatever was skipped after it
            raise with_retry_after(last_error)
        # Every leg was skipped: the one whose room comes back first (a route has at least one leg).
        raise min(skips, key=lambda error: math.inf if error.retry_after is None else error.retry_after)

    def _skipped(self, indexes: range, reasons: Mapping[int, CapacityExceededError]) -> list[CapacityExceededError]:
        """Audit the legs skipped without a call (`tries` 0); their reasons."""
        for index in indexes:
            leg, error = self.route.legs[index], reasons[index]
            self.audit.attempt(
                connection=leg.connection.name,
                model=leg.entry.model,
                started=time.monotonic(),
                # DESIGN.md 2.10: a connection's own limits read `capacity_exceeded` (dollars too).
                error=GatewayError(
                    "upstream_rate_limited" if error.code == "upstream_rate_limited" else "capacity_exceeded"
                ),
                notes=[error.message],
                tries=0,
            )
        return [reasons[index] for index in indexes]

    async def _leg(self, index: int) -> tuple[UpstreamResponse, T]:
        """Call leg `index` (revised at most `MAX_REVISIONS` times); its attempt is audited and the
        gate told how it went. Raises the leg's `UpstreamError` when it failed."""
        leg, audit, gate = self.route.legs[index], self.audit, self.gate
        if gate is not None:
            gate.calling(index)
        started = time.monotonic()
        provider = provider_get(leg.connection)
        request = self.build(leg)
        notes: list[str] = []
        tries = 0
        for revision in range(MAX_REVISIONS + 1):
            response: UpstreamResponse | None = None
            try:
                response, primed = await self._send(leg, provider, request)
            except UpstreamError as exc:
                tries += exc.tries
                revised = _revision(self.revise, leg, request, exc) if revision < MAX_REVISIONS else None
                if revised is not None:
                    request, note = revised
                    notes.append(note)
                    continue
                audit.attempt(
                    connection=leg.connection.name,
                    model=leg.entry.model,
                    started=started,
                    error=exc,
                    notes=notes,
                    tries=tries,
                )
                if gate is not None:
                    gate.failed(index)
                raise
            except asyncio.CancelledError:  # the client left: the leg is cut, not failed
                audit.attempt(
                    connection=leg.connection.name,
                    model=leg.entry.model,
                    started=started,
                    error=GatewayError("the client closed the connection before the upstream answered"),
                    notes=notes,
                    tries=tries + 1,
                )
                raise
            audit.attempt(
                connection=leg.connection.name,
                model=leg.entry.model,
                started=started,
                error=None,
                status_code=response.status,
                notes=notes,
                tries=tries + response.tries,
            )
            audit.connection, audit.model = leg.connection.name, leg.entry.model
            if gate is not None:
                gate.answered(index)
            return response, primed
        raise AssertionError("unreachable: the last revision either answers or raises")

    async def _send(self, leg: Leg, provider: Provider, request: UpstreamRequest) -> tuple[UpstreamResponse, T]:
        """One call and its priming. Whatever fails is an `UpstreamError` with its tries, masked
        of the connection's secrets, and the response is closed; what the upstream said of its
        limits is learned either way."""
        response: UpstreamResponse | None = None
        try:
            try:
                response = _redacted(provider, await provider.send(request))
                self._observe(leg, response.headers)
                return response, await self.prime(leg, response)
            except UpstreamError:
                raise
            except Exception as exc:  # a provider bug or an unforeseen client error: this leg failed
                raise _unexpected(leg, provider, exc) from exc
        except UpstreamError as exc:
            if response is not None:
                exc.tries = response.tries
                await response.aclose()
            elif isinstance(exc, UpstreamStatusError):
                self._observe(leg, exc.headers)
            exc.redact(provider.redactor.text, provider.redactor.data)
            raise
        except BaseException:
            if response is not None:
                await response.aclose()
            raise

    def _observe(self, leg: Leg, headers: Mapping[str, str]) -> None:
        if self.learn:
            upstream_limits_observe(
                connection=leg.connection.name,
                model=leg.entry.model,
                headers=headers,
                publish=self.publish,
                environment=self.route.environment,
            )


async def _next_leg(route: Route, start: int) -> tuple[int | None, dict[int, CapacityExceededError]]:
    """The next leg to call from `start` on, and why each leg before it is skipped (DESIGN.md 2.10)."""
    now = time.time()
    candidates: list[int] = []
    skipped: dict[int, CapacityExceededError] = {}
    for index in range(start, len(route.legs)):
        leg = route.legs[index]
        until = upstream_limit_until(
            connection=leg.connection.name, model=leg.entry.model, now=now, environment=route.environment
        )
        if until is None:
            candidates.append(index)
        else:
            skipped[index] = CapacityExceededError(
                f"The upstream of connection '{leg.connection.name}' has no capacity left for "
                f"'{leg.entry.model}' (x-ratelimit-remaining 0) until its reset.",
                code="upstream_rate_limited",
                retry_after=max(1, math.ceil(until - now)),
            )
    if route.capacity is None:
        return (candidates[0] if candidates else None), skipped
    chosen, over_capacity = await route.capacity.choose(candidates)
    skipped.update(over_capacity)
    return chosen, skipped


def _revision(
    revise: Revise | None, leg: Leg, request: UpstreamRequest, error: UpstreamError
) -> tuple[UpstreamRequest, str] | None:
    """The corrected call `revise` proposes, if any; a failure to revise is no revision."""
    if revise is None:
        return None
    try:
        return revise(leg, request, error)
    except Exception:
        _provider_failures.exception(f"revise:{leg.connection.name}", "revising a failed call raised; not revised")
        return None


def _redacted(provider: Provider, response: UpstreamResponse) -> UpstreamResponse:
    """`response` with the connection's secrets masked in its body or stream (DESIGN.md 2.13)."""
    redactor = provider.redactor
    if redactor:
        if response.body:
            response.body = redactor.data(response.body)
        if response.chunks is not None:
            response.chunks = redactor.stream(response.chunks)
    return response


def _unexpected(leg: Leg, provider: Provider, exc: Exception) -> UpstreamUnavailableError:
    name = leg.connection.name
    detail = provider.redactor.text(f"{type(exc).__name__}: {exc}")
    _provider_failures.exception(f"provider:{name}:{type(exc).__name__}", "connection '%s' failed: %s", name, detail)
    return UpstreamUnavailableError(f"the upstream call of connection '{name}' failed: {detail}", connection=name)


# ------------------------------------------------------------------------------------------------
# 429: tell the client when to come back (DESIGN.md 2.6).


def retry_after_ms(headers: Mapping[str, str]) -> float:
    for name, scale in (("retry-after-ms", 1.0), ("retry-after", 1000.0)):
        value = headers.get(name)
        if value is not None:
            try:
                return max(float(value) * scale, 0.0)
            except ValueError:
                pass
    resets = [duration_ms(headers.get(name, "")) for name in ("x-ratelimit-reset-requests", "x-ratelimit-reset-tokens")]
    known = [r for r in resets if r is not None]
    return max(known) if known else 1000.0


def with_retry_after(error: UpstreamError) -> UpstreamError:
    if isinstance(error, UpstreamStatusError) and error.upstream_status == 429:
        wait_ms = retry_after_ms(error.headers)
        error.headers["retry-after"] = str(max(1, math.ceil(wait_ms / 1000)))
        error.headers["retry-after-ms"] = str(max(1, math.ceil(wait_ms)))
    return error
