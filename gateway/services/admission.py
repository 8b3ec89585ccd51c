"""The first step of every endpoint service: the checked request a view hands over, and its
admission through the capacity limits (DESIGN.md 2.10).

Invariants: a view checks the request (key, size, body, envelope, resource, scope) and builds an
`EndpointRequest`; the service admits it (`request_admit`) before its first leg, estimated from
the body the upstream is sent. A request whose key, resource and connections have no limits gets
its route back untouched, at the cost of three lookups. Whatever a gate counts is settled exactly
once, when the audit entry finishes.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, ClassVar, Protocol

from django.conf import settings

from connections.entities import ApiKeyInfo, EnvironmentSnapshot
from gateway.audit.entry import AuditEntry
from gateway.capacity.gate import CapacityGate, LegCapacity, capacity_gate_open
from gateway.services.envelope import Envelope
from gateway.services.routing import Route, leg_timeout
from gateway.services.upstream import GatewayResult


@dataclass(slots=True)
class EndpointRequest:
    """A client request that passed the view's checks, as an endpoint service receives it."""

    snapshot: EnvironmentSnapshot
    """The key's environment: everything the request may reach."""
    api_key: ApiKeyInfo
    body: dict[str, Any]
    """The client's body, envelopes removed."""
    envelope: Envelope
    route: Route
    audit: AuditEntry
    request_id: str
    headers: dict[str, str] = dataclasses.field(default_factory=dict)
    """Headers every answer carries (the correlation id), whatever the service adds."""


class EndpointService(Protocol):
    """What a `/v1/` view hands a checked request to: Chat Completions, Responses, Messages."""

    name: ClassVar[str]
    """The audit's endpoint name."""

    async def serve(self, request: EndpointRequest) -> GatewayResult: ...


def request_admit(request: EndpointRequest, *, sent: Mapping[str, Any] | None) -> Route:
    """`request.route` with the request's capacity gate, whose settling the audit entry runs.

    `sent` is the body as it goes upstream (envelope removed, `defaultArgs` and `providerArgs`
    merged, converted where the endpoint converts): tokens and cost are estimated from it, so no
    layer of the request escapes the estimate. None for a request that calls no model (token
    counting): it counts as a request, and reserves no tokens or cost."""
    gate = capacity_gate_get(request, sent=sent)
    if gate is None:
        return request.route
    request.route = dataclasses.replace(request.route, capacity=gate)
    request.audit.on_finish = gate.settle
    return request.route


def capacity_gate_get(request: EndpointRequest, *, sent: Mapping[str, Any] | None) -> CapacityGate | None:
    """The request's limits; None when nothing it touches has any (the common, free case)."""
    snapshot, api_key, route = request.snapshot, request.api_key, request.route
    resource = snapshot.resources.get(route.resource)
    resource_limits = resource.capacity if resource is not None else ()
    if not api_key.capacity and not resource_limits and not snapshot.connection_capacity:
        return None
    legs = [
        LegCapacity(
            connection=leg.connection.name,
            model=leg.entry.model,
            limits=snapshot.connection_capacity.get(leg.connection.name, ()),
            longest_seconds=leg_timeout(leg=leg, envelope=request.envelope) * (leg.entry.max_retries + 1),
        )
        for leg in route.legs
    ]
    return capacity_gate_open(
        api_key=api_key.name,
        api_key_limits=api_key.capacity,
        resource=resource.name if resource is not None else None,
        resource_limits=resource_limits,
        legs=legs,
        body=sent,
        source_ip=request.audit.source_ip,
        metadata=request.envelope.metadata,
        prices=snapshot.prices,
        fail_closed=settings.VMX_CAPACITY_FAIL_CLOSED,
        plan_key=(snapshot.revision, snapshot.environment.id, api_key.name, route.resource),
        environment=snapshot.environment.store_tag,
    )
