"""Applying a parsed config document: references checked first, then every object written
through the services in one transaction (or, on a dry run, rolled back), with the paths of the
file in every complaint."""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from django.core.exceptions import ValidationError
from django.db import transaction

from connections.config_file.document import (
    SECRET_MASK,
    ApiKeyDoc,
    ConfigDoc,
    ConfigFileError,
    ConnectionDoc,
    PricingDoc,
    ResourceDoc,
    path_join,
)
from connections.models import (
    AIResource,
    APIKey,
    Connection,
    PricingEntry,
)
from connections.services import (
    api_key_save,
    capacity_entries_replace,
    config_object_delete,
    connection_save,
    pricing_entry_save,
    resource_save,
)
from gateway.providers.registry import UnknownProviderError, provider_class_get

CHANGE_KINDS = {"connection": "connections", "resource": "resources", "api key": "apiKeys", "pricing": "pricing"}
"""Report labels to the document's section names."""
CHANGE_STATUSES = ("created", "updated", "deleted", "unchanged")


@dataclass
class ApplyReport:
    changes: list[tuple[str, str, str]] = field(default_factory=list)
    """(kind, name, status): kind is a key of CHANGE_KINDS, status one of CHANGE_STATUSES."""
    created_keys: dict[str, str] = field(default_factory=dict)
    """Generated key values by key name, to print once."""

    def add(self, kind: str, name: str, status: str) -> None:
        self.changes.append((kind, name, status))

    @property
    def lines(self) -> list[str]:
        return [f"{kind} {name}: {status}" for kind, name, status in self.changes]

    @property
    def changed(self) -> bool:
        return any(status != "unchanged" for _, _, status in self.changes)

    def by_section(self) -> dict[str, dict[str, list[str]]]:
        """`{"resources": {"created": ["default"], "updated": [], ...}, ...}`, every section and status present."""
        sections: dict[str, dict[str, list[str]]] = {
            section: {status: [] for status in CHANGE_STATUSES} for section in CHANGE_KINDS.values()
        }
        for kind, name, status in self.changes:
            sections[CHANGE_KINDS[kind]][status].append(name)
        return sections


def config_apply(doc: ConfigDoc, *, prune: bool = False, dry_run: bool = False) -> ApplyReport:
    """Apply `doc` whole, or change nothing and raise `ConfigFileError`.

    A dry run does all the same work, validation included, in a transaction it then rolls back:
    the report says what applying would change, and nothing is changed.
    """
    problems = _reference_problems(doc, prune=prune)
    if prune:
        problems += _unmentioned_prune_problems(doc)
    if problems:
        raise ConfigFileError(problems)
    report = ApplyReport()
    with transaction.atomic():
        for conn in doc.connections:
            with _problems_at(conn.path, _CONNECTION_FIELDS):
                _apply_connection(conn, report)
        for res in doc.resources:
            with _problems_at(res.path, _RESOURCE_FIELDS):
                _apply_resource(res, report)
        for key in doc.api_keys:
            with _problems_at(key.path, _API_KEY_FIELDS):
                _apply_api_key(key, report)
        for price in doc.pricing:
            with _problems_at(price.path, _PRICING_FIELDS):
                _apply_pricing(price, report)
        if prune:
            _prune(doc, report)
        if dry_run:
            # Only now: a transaction marked for rollback refuses every further query.
            transaction.set_rollback(True)
    return report


_CONNECTION_FIELDS = {"config": "config", "provider": "provider", "name": "name", "description": "description"}
_RESOURCE_FIELDS = {"name": "name", "default_args": "defaultArgs", "description": "description", "model": "model"}
_API_KEY_FIELDS = {"name": "name", "key": "key", "resources": "resources", "expires_at": "expiresAt"}
_PRICING_FIELDS = {"model": "model", "input": "input", "cached_input": "cachedInput", "output": "output"}
_ENTRY_FIELDS = {"connection": "connection", "model": "model", "max_retries": "maxRetries", "timeout_ms": "timeoutMs"}
_CAPACITY_FIELDS = {"cost_usd": "costUsd", "dimension_field": "dimensionField"}


@contextmanager
def _problems_at(path: str, fields: Mapping[str, str]) -> Iterator[None]:
    """Re-raise a model ValidationError as a ConfigFileError naming paths in the file."""
    try:
        yield
    except ValidationError as exc:
        raise ConfigFileError(_validation_problems(path, exc, fields)) from exc


def _validation_problems(path: str, exc: ValidationError, fields: Mapping[str, str]) -> list[str]:
    if not hasattr(exc, "error_dict"):
        return [f"{path}: {message}" for message in exc.messages]
    problems: list[str] = []
    for key, errors in exc.message_dict.items():
        entry = re.fullmatch(r"models\.(\d+)\.(\w+)", key)
        limit = re.fullmatch(r"capacity\.(\d+)\.(\w+)", key)
        if limit:
            where = f"{path}.capacity[{limit.group(1)}]"
            name = limit.group(2)
            target = where if name == "__all__" else path_join(where, _CAPACITY_FIELDS.get(name, name))
        elif entry:
            index = int(entry.group(1))
            where = f"{path}.model" if index == 0 else f"{path}.fallbackModels[{index - 1}]"
            target = path_join(where, _ENTRY_FIELDS.get(entry.group(2), entry.group(2)))
        elif key == "__all__":
            target = path
        else:
            target = path_join(path, fields.get(key, key))
        problems.extend(f"{target}: {message}" for message in errors)
    return problems


def _reference_problems(doc: ConfigDoc, *, prune: bool) -> list[str]:
    problems: list[str] = []
    existing_connections = {} if prune else dict(Connection.objects.values_list("name", "provider"))
    connections = {**existing_connections, **{c.name: c.provider for c in doc.connections}}
    stored = {c.name: c for c in Connection.objects.filter(name__in=[c.name for c in doc.connections])}
    for conn in doc.connections:
        try:
            provider = provider_class_get(conn.provider)
        except UnknownProviderError as exc:
            problems.append(f"{conn.path}.provider: {exc}")
            continue
        masked = {k for k, v in conn.config.items() if v == SECRET_MASK and k in provider.secret_field_names()}
        stored_secrets = stored[conn.name].secrets_get() if conn.name in stored else {}
        unkeepable = masked - stored_secrets.keys()
        for name in sorted(unkeepable):
            problems.append(
                f"{conn.path}.config.{name}: is the export mask '{SECRET_MASK}', but connection "
                f"'{conn.name}' has no stored value to keep; give the real value"
            )
        before = stored.get(conn.name)
        if before is not None and (
            before.provider != conn.provider or provider.destination_changed(before.config, conn.config)
        ):
            moved = sorted(masked - unkeepable)
            unkeepable |= set(moved)
            for name in moved:
                problems.append(
                    f"{conn.path}.config.{name}: is the export mask '{SECRET_MASK}', but the connection's "
                    "address or provider changes, and a stored secret only goes where it went before; "
                    "give the real value"
                )
        merged = {**conn.config, **{k: stored_secrets.get(k, "") for k in masked}}
        for name, message in provider.config_errors(merged).items():
            if name not in unkeepable:
                problems.append(f"{conn.path}.config.{name}: {message}")
    resources = ({} if prune else dict.fromkeys(AIResource.objects.values_list("name", flat=True))) | {
        r.name: None for r in doc.resources
    }
    for res in doc.resources:
        for index, entry in enumerate(res.models):
            where = f"{res.path}.model" if index == 0 else f"{res.path}.fallbackModels[{index - 1}]"
            if entry.connection not in connections:
                problems.append(f"{where}.connection: no connection '{entry.connection}'")
    for key in doc.api_keys:
        for index, name in enumerate(key.resources or []):
            if name not in resources:
                problems.append(f"{key.path}.resources[{index}]: no resource '{name}'")
    return problems


def _status(created: bool, changed: bool) -> str:
    return "created" if created else "updated" if changed else "unchanged"


def _apply_connection(doc: ConnectionDoc, report: ApplyReport) -> None:
    existed = Connection.objects.filter(name=doc.name).exists()
    masked = [k for k, v in doc.config.items() if v == SECRET_MASK]
    connection, changed = connection_save(
        name=doc.name,
        provider=doc.provider,
        config=doc.config,
        description=doc.description,
        enabled=doc.enabled,
        keep_secrets=masked,
    )
    changed = capacity_entries_replace(owner=connection, specs=doc.capacity) or changed
    report.add("connection", doc.name, _status(not existed, changed))


def _apply_resource(doc: ResourceDoc, report: ApplyReport) -> None:
    existed = AIResource.objects.filter(name=doc.name).exists()
    resource, changed = resource_save(
        name=doc.name,
        models=doc.models,
        description=doc.description,
        default_args=doc.default_args,
        enabled=doc.enabled,
    )
    changed = capacity_entries_replace(owner=resource, specs=doc.capacity) or changed
    report.add("resource", doc.name, _status(not existed, changed))


def _apply_api_key(doc: ApiKeyDoc, report: ApplyReport) -> None:
    existed = APIKey.objects.filter(name=doc.name).exists()
    api_key, generated, changed = api_key_save(
        name=doc.name,
        resources=doc.resources,
        key=doc.key,
        enabled=doc.enabled,
        expires_at=doc.expires_at,
    )
    changed = capacity_entries_replace(owner=api_key, specs=doc.capacity) or changed
    report.add("api key", doc.name, _status(not existed, changed))
    if generated:
        report.created_keys[doc.name] = generated


def _apply_pricing(doc: PricingDoc, report: ApplyReport) -> None:
    existed = PricingEntry.objects.filter(model=doc.name).exists()
    _, changed = pricing_entry_save(model=doc.name, input=doc.input, output=doc.output, cached_input=doc.cached_input)
    report.add("pricing", doc.name, _status(not existed, changed))


_PRUNED_KINDS: tuple[tuple[str, str, Any], ...] = (
    ("connections", "connection", Connection),
    ("resources", "resource", AIResource),
    ("apiKeys", "API key", APIKey),
    ("pricing", "pricing entry", PricingEntry),
)


def _unmentioned_prune_problems(doc: ConfigDoc) -> list[str]:
    """A prune empties a kind only when the document names it (`pricing: []` says "none"): a
    document that leaves a kind out would otherwise delete all of it without a word."""
    problems = []
    for section, label, model in _PRUNED_KINDS:
        if section not in doc.sections and model.objects.exists():
            problems.append(
                f"{section}: not in the document, so a prune would delete every {label}; "
                f"list them, or write `{section}: []` to delete them all"
            )
    return problems


def _prune(doc: ConfigDoc, report: ApplyReport) -> None:
    sections: list[tuple[str, Any, set[str]]] = [
        ("api key", APIKey, {k.name for k in doc.api_keys}),
        ("resource", AIResource, {r.name for r in doc.resources}),
        ("connection", Connection, {c.name for c in doc.connections}),
    ]
    for label, model, keep in sections:
        for obj in model.objects.exclude(name__in=keep).order_by("name"):
            config_object_delete(obj=obj)
            report.add(label, obj.name, "deleted")
    for entry in PricingEntry.objects.exclude(model__in={p.name for p in doc.pricing}).order_by("model"):
        config_object_delete(obj=entry)
        report.add("pricing", entry.model, "deleted")
