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

__all__ = [
    "ApiKeyInfo",
    "ConfigSnapshot",
    "ConnectionInfo",
    "EnvironmentInfo",
    "EnvironmentSnapshot",
    "ModelEntryInfo",
    "ResourceInfo",
]


@dataclass(frozen=True, slots=True)
class EnvironmentInfo:
    """Which environment of which workspace (DESIGN.md 2.15): names as records and labels carry
    them, ids as VM-X base URLs and the capacity store's keys do."""

    id: str
    """The environment's UUID, hex without dashes."""
    name: str
    workspace: str
    workspace_id: str
    is_default: bool = False

    @property
    def label(self) -> str:
        return f"{self.workspace}/{self.name}"

    @property
    def store_tag(self) -> str:
        """What the capacity store's keys and learned upstream limits carry of the environment:
        nothing for `default/default`, so its counters and budgets survive the upgrade."""
        return "" if self.is_default else self.id


DEFAULT_ENVIRONMENT_INFO = EnvironmentInfo(id="", name="default", workspace="default", workspace_id="", is_default=True)
"""Stands for `default/default` where no snapshot is at hand (tests, tools)."""


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
    environment: str = ""
    """The id of the environment the key belongs to: it decides everything the key reaches."""

    def allows(self, resource: str) -> bool:
        return self.all_resources or resource in self.resources


@dataclass(frozen=True, slots=True)
class EnvironmentSnapshot:
    """One environment's configuration: all a request with one of its keys can reach. The request
    path reads only this, so no lookup can find another environment's object."""

    revision: int
    environment: EnvironmentInfo
    connections: Mapping[str, ConnectionInfo]
    resources: Mapping[str, ResourceInfo]
    prices: PriceList = EMPTY_PRICE_LIST
    """Configured model prices over the bundled table (global: for the audit's cost)."""
    connection_capacity: Mapping[str, tuple[CapacityLimit, ...]] = field(default_factory=empty_mapping)
    """Enabled limits per connection name; connections without limits are absent."""


@dataclass(frozen=True, slots=True)
class ConfigSnapshot:
    """The whole configuration as one worker holds it: every environment, and every key by its
    digest (digests are unique installation-wide, so the flat paths serve every environment)."""

    revision: int
    environments: Mapping[str, EnvironmentSnapshot]
    """By environment id."""
    api_keys_by_digest: Mapping[str, ApiKeyInfo] = field(repr=False)
    environments_by_path: Mapping[tuple[str, str], str] = field(default_factory=dict)
    """(workspace segment, environment segment) → environment id, for names and ids alike."""
    prices: PriceList = EMPTY_PRICE_LIST

    def environment_of(self, api_key: ApiKeyInfo) -> EnvironmentSnapshot:
        return self.environments[api_key.environment]

    def environment_named(self, workspace: str = "default", environment: str = "default") -> EnvironmentSnapshot:
        """One environment by its workspace and name (or ids); `KeyError` when there is none."""
        return self.environments[self.environments_by_path[(workspace, environment)]]
