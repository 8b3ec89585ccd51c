"""Frozen, Django-free views of the configuration, as the gateway's hot path reads them.

Selectors build these from the database; everything downstream (routing, providers) sees only
these, so no ORM row ever crosses into request handling. Secrets are excluded from `repr` so a
stray log line or traceback cannot print them.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from connections.models import DEFAULT_TIMEOUT_MS
from gateway.core.limits import CapacityLimit
from gateway.core.pricing import EMPTY_PRICE_LIST, PriceList

# Defined by the providers, which consume it (the provider registry owns that shape).
from gateway.providers.base import ConnectionInfo, empty_mapping

__all__ = ["ApiKeyInfo", "ConfigSnapshot", "ConnectionInfo", "ModelEntryInfo", "ResourceInfo"]


@dataclass(frozen=True, slots=True)
class ModelEntryInfo:
    connection: str
    model: str
    max_retries: int = 0
    timeout_ms: int = DEFAULT_TIMEOUT_MS
    reasoning: bool = True


@dataclass(frozen=True, slots=True)
class ResourceInfo:
    name: str
    enabled: bool
    models: tuple[ModelEntryInfo, ...]
    """The primary model first, then the fallbacks in order."""
    default_args: Mapping[str, Any] = field(default_factory=empty_mapping)
    created: int = 0
    """Creation time, Unix seconds (for /v1/models)."""
    capacity: tuple[CapacityLimit, ...] = ()
    """Enabled limits (DESIGN.md 2.10)."""


@dataclass(frozen=True, slots=True)
class ApiKeyInfo:
    name: str
    enabled: bool
    all_resources: bool
    resources: frozenset[str]
    expires_at: datetime | None = None
    capacity: tuple[CapacityLimit, ...] = ()
    """Enabled limits (DESIGN.md 2.10)."""

    def allows(self, resource: str) -> bool:
        return self.all_resources or resource in self.resources


@dataclass(frozen=True, slots=True)
class ConfigSnapshot:
    revision: int
    connections: Mapping[str, ConnectionInfo]
    resources: Mapping[str, ResourceInfo]
    api_keys_by_digest: Mapping[str, ApiKeyInfo] = field(repr=False)
    prices: PriceList = EMPTY_PRICE_LIST
    """Configured model prices over the bundled table (for the audit's cost)."""
    connection_capacity: Mapping[str, tuple[CapacityLimit, ...]] = field(default_factory=empty_mapping)
    """Enabled limits per connection name; connections without limits are absent."""
