"""Config as code, the other way (DESIGN.md 2.2): the configuration written as the file
`vmx_apply` reads, for `vmx_export` and the management API.

Invariants: applying an export changes nothing; secrets are `SECRET_MASK` unless asked for (a
masked value applied back keeps the stored secret); an API key's value is never written (only its
digest is stored); each `$` that the reader would expand is doubled (`dollars_escaped`).

One environment's document (DESIGN.md 2.15) names it at the top (`environment: acme/prod`) and
holds no `pricing` (prices are global); applied elsewhere with `vmx_apply --environment` it
promotes one environment to another. Without an environment: `default/default`'s objects and the
prices, as before environments existed.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from decimal import Decimal
from typing import Any, TypeVar, cast
from urllib.parse import urlsplit, urlunsplit

import yaml
from django.db.models import QuerySet

from connections.config_file import SECRET_MASK
from connections.models import (
    AIResource,
    APIKey,
    CapacityEntry,
    Connection,
    Environment,
    PricingEntry,
    environment_default,
)

_T = TypeVar("_T")


_EXPANDED_DOLLAR = re.compile(r"\$(?=[${])")


def dollars_escaped(value: _T) -> _T:
    """The inverse of `env_expand` for stored text: each `$` that it would read as the start of
    `$$` or `${` is doubled, so an exported `${HOME}` that someone typed literally stays literal."""
    escaped: Any = value
    if isinstance(value, str):
        escaped = _EXPANDED_DOLLAR.sub("$$", value)
    elif isinstance(value, list):
        escaped = [dollars_escaped(v) for v in value]
    elif isinstance(value, dict):
        escaped = {k: dollars_escaped(v) for k, v in value.items()}
    return cast(_T, escaped)


def url_credentials_masked(value: Any) -> Any:
    """A URL stored before credentials, queries and fragments in URLs were refused keeps them out
    of every read: the userinfo, each query value and the fragment become `SECRET_MASK`."""
    if not isinstance(value, str) or not any(c in value for c in "@?#"):
        return value
    try:
        parts = urlsplit(value)
    except ValueError:
        return SECRET_MASK
    netloc = parts.netloc
    if "@" in netloc:
        netloc = f"{SECRET_MASK}@{netloc.rpartition('@')[2]}"
    query = (
        "&".join(f"{pair.partition('=')[0]}={SECRET_MASK}" if pair else pair for pair in parts.query.split("&"))
        if parts.query
        else ""
    )
    fragment = SECRET_MASK if parts.fragment else ""
    return urlunsplit(parts._replace(netloc=netloc, query=query, fragment=fragment))


def connections_for_export(*, environment: Environment | None = None) -> QuerySet[Connection]:
    """Connections in export order, with what the export reads; `environment` narrows (None: all)."""
    connections = Connection.objects.order_by("name").prefetch_related("capacity_entries")
    return connections if environment is None else connections.filter(environment=environment)


def resources_for_export(*, environment: Environment | None = None) -> QuerySet[AIResource]:
    resources = AIResource.objects.order_by("name").prefetch_related("model_entries__connection", "capacity_entries")
    return resources if environment is None else resources.filter(environment=environment)


def api_keys_for_export(*, environment: Environment | None = None) -> QuerySet[APIKey]:
    keys = APIKey.objects.order_by("name").prefetch_related("resources", "capacity_entries")
    return keys if environment is None else keys.filter(environment=environment)


def connection_export(conn: Connection, *, include_secrets: bool = False) -> dict[str, Any]:
    """One connection as the file writes it; secrets are `SECRET_MASK` unless `include_secrets`."""
    item: dict[str, Any] = {"name": conn.name, "provider": conn.provider}
    if conn.description:
        item["description"] = conn.description
    secrets = conn.secrets_get()
    plain = conn.config if include_secrets else {k: url_credentials_masked(v) for k, v in conn.config.items()}
    item["config"] = {**{k: (v if include_secrets else SECRET_MASK) for k, v in secrets.items()}, **plain}
    if not conn.enabled:
        item["enabled"] = False
    _capacity_export(item, conn.capacity_entries.all())
    return dollars_escaped(item)


def resource_export(res: AIResource) -> dict[str, Any]:
    entries = []
    for entry in res.model_entries.all():
        spec: dict[str, Any] = {
            "connection": entry.connection.name,
            "model": entry.model,
            "maxRetries": entry.max_retries,
            "timeoutMs": entry.timeout_ms,
        }
        if not entry.reasoning:
            spec["reasoning"] = False
        entries.append(spec)
    item: dict[str, Any] = {"name": res.name}
    if res.description:
        item["description"] = res.description
    if entries:
        item["model"] = entries[0]
    if entries[1:]:
        item["fallbackModels"] = entries[1:]
    if res.default_args:
        item["defaultArgs"] = res.default_args
    if not res.enabled:
        item["enabled"] = False
    _capacity_export(item, res.capacity_entries.all())
    return dollars_escaped(item)


def api_key_export(key: APIKey) -> dict[str, Any]:
    """An API key as the file writes it: never its value (only its digest is stored)."""
    item: dict[str, Any] = {
        "name": key.name,
        "resources": "*" if key.all_resources else sorted(r.name for r in key.resources.all()),
    }
    if not key.enabled:
        item["enabled"] = False
    if key.expires_at:
        item["expiresAt"] = key.expires_at.isoformat().replace("+00:00", "Z")
    _capacity_export(item, key.capacity_entries.all())
    return dollars_escaped(item)


def config_export(*, environment: Environment | None = None, include_secrets: bool = False) -> dict[str, Any]:
    """One environment's configuration in the file format; applying it back changes nothing.

    `environment` given: its objects under `environment: <label>`, without `pricing`. None:
    `default/default`'s objects and the prices, with no `environment` (the document of before).
    """
    exported: dict[str, Any] = {} if environment is None else {"environment": environment.label}
    where = environment or environment_default()
    exported |= {
        "connections": [
            connection_export(c, include_secrets=include_secrets) for c in connections_for_export(environment=where)
        ],
        "resources": [resource_export(r) for r in resources_for_export(environment=where)],
        "apiKeys": [api_key_export(k) for k in api_keys_for_export(environment=where)],
    }
    if environment is None:
        pricing = [price_export(entry) for entry in PricingEntry.objects.order_by("model")]
        if pricing:
            exported["pricing"] = pricing
    return exported


def _capacity_export(item: dict[str, Any], entries: Iterable[CapacityEntry]) -> None:
    """Add `capacity` to an exported object when it has limits."""
    exported = [capacity_entry_export(entry) for entry in entries]
    if exported:
        item["capacity"] = exported


def capacity_entry_export(entry: CapacityEntry) -> dict[str, Any]:
    """One limit as the file writes it: only what is not a default."""
    limit: dict[str, Any] = {"period": entry.period}
    if entry.requests is not None:
        limit["requests"] = entry.requests
    if entry.tokens is not None:
        limit["tokens"] = entry.tokens
    if entry.cost_usd is not None:
        limit["costUsd"] = _number(entry.cost_usd)
    if entry.dimension:
        limit["dimension"] = entry.dimension
    if entry.dimension_field:
        limit["dimensionField"] = entry.dimension_field
    if not entry.enabled:
        limit["enabled"] = False
    return limit


def price_export(entry: PricingEntry) -> dict[str, Any]:
    item: dict[str, Any] = {"model": dollars_escaped(entry.model), "input": _number(entry.input)}
    if entry.cached_input is not None:
        item["cachedInput"] = _number(entry.cached_input)
    item["output"] = _number(entry.output)
    return item


def _number(value: Decimal) -> int | float:
    """2 rather than 2.000000 (the column's scale), exact for the prices people write."""
    normal = value.normalize()
    return int(normal) if normal == normal.to_integral_value() else float(normal)


def config_export_yaml(*, environment: Environment | None = None, include_secrets: bool = False) -> str:
    """`config_export` as the YAML file `vmx_export` writes."""
    exported = config_export(environment=environment, include_secrets=include_secrets)
    return config_yaml_dump(exported, masked=not include_secrets)


def config_yaml_dump(exported: Mapping[str, Any], *, masked: bool = True) -> str:
    """An exported configuration as the YAML file `vmx_export` writes."""
    header = "# VM-X gateway configuration (python manage.py vmx_export)\n"
    if masked:
        header += f"# Secrets are masked as '{SECRET_MASK}': applying this file keeps the stored values.\n"
    return header + yaml.safe_dump(dict(exported), sort_keys=False, allow_unicode=True)
