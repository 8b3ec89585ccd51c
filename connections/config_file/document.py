"""The config document's shapes (DESIGN.md 2.2): each object as the file describes it, with the
path it has in the file, and the error that lists every problem found."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from typing import Any

from connections.services import (
    CapacitySpec,
    ModelEntrySpec,
)

SECRET_MASK = "********"  # noqa: S105 - the placeholder, not a secret
"""Where the file shows a secret that is stored but not written out; applied back, it keeps it."""


class ConfigFileError(Exception):
    def __init__(self, problems: list[str]) -> None:
        super().__init__("\n".join(problems))
        self.problems = problems


@dataclass
class ConnectionDoc:
    path: str
    name: str
    provider: str
    description: str = ""
    config: dict[str, Any] = field(default_factory=dict)
    enabled: bool = True
    capacity: list[CapacitySpec] = field(default_factory=list)


@dataclass
class ResourceDoc:
    path: str
    name: str
    models: list[ModelEntrySpec]
    description: str = ""
    default_args: dict[str, Any] = field(default_factory=dict)
    enabled: bool = True
    capacity: list[CapacitySpec] = field(default_factory=list)


@dataclass
class ApiKeyDoc:
    path: str
    name: str
    resources: list[str] | None
    key: str | None = None
    enabled: bool = True
    expires_at: datetime | None = None
    capacity: list[CapacitySpec] = field(default_factory=list)


@dataclass
class PricingDoc:
    path: str
    name: str
    """The model id or `prefix*` (called `model` in the file)."""
    input: Decimal
    output: Decimal
    cached_input: Decimal | None = None


@dataclass
class ConfigDoc:
    environment: str | None = None
    """The `environment: acme/prod` at the top of the file (checked by `tenant_label_parse`), or
    None: the caller's target, else `default/default`."""
    sections: frozenset[str] = frozenset({"connections", "resources", "apiKeys", "pricing"})
    """The kinds the document names (each as a list, empty ones included); a prune deletes
    only within these, and refuses to empty a kind the document does not mention."""
    connections: list[ConnectionDoc] = field(default_factory=list)
    resources: list[ResourceDoc] = field(default_factory=list)
    api_keys: list[ApiKeyDoc] = field(default_factory=list)
    pricing: list[PricingDoc] = field(default_factory=list)


def path_join(path: str, key: str) -> str:
    """`resources[0]` and `name` → `resources[0].name`: how complaints name a place in the file."""
    return f"{path}.{key}" if path else key
