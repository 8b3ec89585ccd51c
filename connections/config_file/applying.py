"""Applying a parsed config document: references checked first, then every object written
through the services in one transaction (or, on a dry run, rolled back), with the paths of the
file in every complaint.

A document applies to one environment (DESIGN.md 2.15): the caller's (`environment=`, e.g.
`vmx_apply --environment` or an API route), else the one it names (`environment: acme/prod`,
created with its workspace if missing), else `default/default`. Names and references resolve
there only, and a prune deletes only there: another environment's objects are as ones that
exist nowhere. Prices are global, so only a document that targets no environment may hold them.
"""

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
    Environment,
    PricingEntry,
    Workspace,
    environment_default,
)
from connections.services import (
    api_key_save,
    capacity_entries_replace,
    config_object_delete,
    connection_save,
    environment_get_or_create,
    pricing_entry_save,
    resource_save,
    tenant_label_parse,
)
from gateway.providers.registry import UnknownProviderError, provider_class_get

CHANGE_KINDS = {"connection": "connections", "resource": "resources", "api key": "apiKeys", "pricing": "pricing"}
"""Report labels to the document's section names."""
CHANGE_STATUSES = ("created", "updated", "deleted", "unchanged")
PRICING_REFUSED = "prices are global; apply them in a file without an environment"
"""Why an environment's document may not hold `pricing` (the complaint is `pricing: ...`)."""


@dataclass
class ApplyReport:
    changes: list[tuple[str, str, str]] = field(default_factory=list)
    """(kind, name, status): kind is a key of CHANGE_KINDS, status one of CHANGE_STATUSES."""
    created_keys: dict[str, str] = field(default_factory=dict)
    """Generated key values by key name, to print once."""
    environment: str = ""
    """The label of the environment the document went to (`default/default` when none was named)."""
    targets: list[tuple[str, str, str]] = field(default_factory=list)
    """(kind, label, status) of the named target: `workspace acme: created`, `environment
    acme/prod: created` or `unchanged`; empty when nothing named one (today's reports, unchanged)."""
    overridden: str | None = None
    """The document's own `environment` when the caller's target won over it (and differed)."""

    def add(self, kind: str, name: str, status: str) -> None:
        self.changes.append((kind, name, status))

    @property
    def lines(self) -> list[str]:
        """`environment acme/prod: created`, then `connection main: updated`, … (`kind name: status`)."""
        return [f"{kind} {name}: {status}" for kind, name, status in [*self.targets, *self.changes]]

    @property
    def changed(self) -> bool:
        return any(status != "unchanged" for _, _, status in [*self.targets, *self.changes])

    def by_section(self) -> dict[str, dict[str, list[str]]]:
        """`{"resources": {"created": ["default"], "updated": [], ...}, ...}`, every section and status present."""
        sections: dict[str, dict[str, list[str]]] = {
            section: {status: [] for status in CHANGE_STATUSES} for section in CHANGE_KINDS.values()
        }
        for kind, name, status in self.changes:
            sections[CHANGE_KINDS[kind]][status].append(name)
        return sections


def config_apply(
    doc: ConfigDoc,
    *,
    environment: Environment | str | None = None,
    prune: bool = False,
    dry_run: bool = False,
    pricing_allowed: bool = True,
) -> ApplyReport:
    """Apply `doc` whole to one environment, or change nothing and raise `ConfigFileError`.

    The target: `environment` when given (an `Environment`, or a label such as `acme/prod`, made
    with its workspace if missing); it wins over `doc.environment`, and the report's `overridden`
    says so. Else `doc.environment` (made if missing), else `default/default`. `pricing` is
    accepted only when neither names an environment and `pricing_allowed` (an API route of one
    environment passes False even for `default/default`); otherwise the document is refused
    whole with `pricing: prices are global; ...`.

    Everything is checked before anything is written, in one transaction. A dry run does all the
    same work, validation included, and rolls it back: the report says what applying would change
    (a target that would be created included), and nothing is changed.
    """
    named = environment is not None or doc.environment is not None
    # With a named target `pricing` is not the document's: refused if present, left alone by a prune.
    prices = not named and pricing_allowed
    report = ApplyReport()
    with transaction.atomic():
        # Created inside the transaction: a refused document leaves no new environment behind.
        target = _target_resolve(doc, environment=environment, report=report)
        report.environment = target.label
        # `pricing: []` too: with a prune it would read as "delete every price".
        refused = not prices and (doc.pricing or "pricing" in doc.sections)
        problems = [f"pricing: {PRICING_REFUSED}"] if refused else []
        problems += _reference_problems(doc, environment=target, prune=prune)
        if prune:
            problems += _unmentioned_prune_problems(doc, environment=target, prices=prices)
        if problems:
            raise ConfigFileError(problems)
        for conn in doc.connections:
            with _problems_at(conn.path, _CONNECTION_FIELDS):
                _apply_connection(conn, report, environment=target)
        for res in doc.resources:
            with _problems_at(res.path, _RESOURCE_FIELDS):
                _apply_resource(res, report, environment=target)
        for key in doc.api_keys:
            with _problems_at(key.path, _API_KEY_FIELDS):
                _apply_api_key(key, report, environment=target)
        for price in doc.pricing:
            with _problems_at(price.path, _PRICING_FIELDS):
                _apply_pricing(price, report)
        if prune:
            _prune(doc, report, environment=target, prices=prices)
        if dry_run:
            # Only now: a transaction marked for rollback refuses every further query.
            transaction.set_rollback(True)
    return report


def _target_resolve(doc: ConfigDoc, *, environment: Environment | str | None, report: ApplyReport) -> Environment:
    """The environment `doc` goes to (see `config_apply`), with the report's target lines."""
    if isinstance(environment, Environment):
        label = environment.label
        if doc.environment is not None and doc.environment != label:
            report.overridden = doc.environment
        report.targets.append(("environment", label, "unchanged"))
        return environment
    if environment is None and doc.environment is None:
        return environment_default()
    label = environment if environment is not None else str(doc.environment)
    if environment is not None and doc.environment is not None and doc.environment != environment:
        report.overridden = doc.environment
    try:
        workspace_name, _ = tenant_label_parse(label)
    except ValidationError as exc:  # callers check their own (naming their flag or route)
        raise ConfigFileError([f"environment: {' '.join(exc.messages)}"]) from exc
    workspace_new = not Workspace.objects.filter(name=workspace_name).exists()
    target, created = environment_get_or_create(label=label)
    if workspace_new:
        report.targets.append(("workspace", workspace_name, "created"))
    report.targets.append(("environment", target.label, "created" if created else "unchanged"))
    return target


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


def _reference_problems(doc: ConfigDoc, *, environment: Environment, prune: bool) -> list[str]:
    """Every reference of `doc` that would not resolve in `environment`, and every masked secret
    with no stored value there to keep (so a promoted file keeps the target's secrets, never
    another environment's)."""
    problems: list[str] = []
    here = Connection.objects.filter(environment=environment)
    existing_connections = {} if prune else dict(here.values_list("name", "provider"))
    connections = {**existing_connections, **{c.name: c.provider for c in doc.connections}}
    stored = {c.name: c for c in here.filter(name__in=[c.name for c in doc.connections])}
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
    existing_resources = AIResource.objects.filter(environment=environment).values_list("name", flat=True)
    resources = ({} if prune else dict.fromkeys(existing_resources)) | {r.name: None for r in doc.resources}
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


def _apply_connection(doc: ConnectionDoc, report: ApplyReport, *, environment: Environment) -> None:
    existed = Connection.objects.filter(environment=environment, name=doc.name).exists()
    masked = [k for k, v in doc.config.items() if v == SECRET_MASK]
    connection, changed = connection_save(
        name=doc.name,
        provider=doc.provider,
        config=doc.config,
        description=doc.description,
        enabled=doc.enabled,
        keep_secrets=masked,
        environment=environment,
    )
    changed = capacity_entries_replace(owner=connection, specs=doc.capacity) or changed
    report.add("connection", doc.name, _status(not existed, changed))


def _apply_resource(doc: ResourceDoc, report: ApplyReport, *, environment: Environment) -> None:
    existed = AIResource.objects.filter(environment=environment, name=doc.name).exists()
    resource, changed = resource_save(
        name=doc.name,
        models=doc.models,
        description=doc.description,
        default_args=doc.default_args,
        enabled=doc.enabled,
        environment=environment,
    )
    changed = capacity_entries_replace(owner=resource, specs=doc.capacity) or changed
    report.add("resource", doc.name, _status(not existed, changed))


def _apply_api_key(doc: ApiKeyDoc, report: ApplyReport, *, environment: Environment) -> None:
    existed = APIKey.objects.filter(environment=environment, name=doc.name).exists()
    api_key, generated, changed = api_key_save(
        name=doc.name,
        resources=doc.resources,
        key=doc.key,
        enabled=doc.enabled,
        expires_at=doc.expires_at,
        environment=environment,
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
)
"""What a prune deletes in the target environment; prices (global) only with `prices`."""


def _unmentioned_prune_problems(doc: ConfigDoc, *, environment: Environment, prices: bool) -> list[str]:
    """A prune empties a kind only when the document names it (`pricing: []` says "none"): a
    document that leaves a kind out would otherwise delete all of it without a word."""
    kinds = [(section, label, model.objects.filter(environment=environment)) for section, label, model in _PRUNED_KINDS]
    if prices:
        kinds.append(("pricing", "pricing entry", PricingEntry.objects.all()))
    problems = []
    for section, label, objects in kinds:
        if section not in doc.sections and objects.exists():
            problems.append(
                f"{section}: not in the document, so a prune would delete every {label}; "
                f"list them, or write `{section}: []` to delete them all"
            )
    return problems


def _prune(doc: ConfigDoc, report: ApplyReport, *, environment: Environment, prices: bool) -> None:
    sections: list[tuple[str, Any, set[str]]] = [
        ("api key", APIKey, {k.name for k in doc.api_keys}),
        ("resource", AIResource, {r.name for r in doc.resources}),
        ("connection", Connection, {c.name for c in doc.connections}),
    ]
    for label, model, keep in sections:
        for obj in model.objects.filter(environment=environment).exclude(name__in=keep).order_by("name"):
            config_object_delete(obj=obj)
            report.add(label, obj.name, "deleted")
    if not prices:
        return
    for entry in PricingEntry.objects.exclude(model__in={p.name for p in doc.pricing}).order_by("model"):
        config_object_delete(obj=entry)
        report.add("pricing", entry.model, "deleted")
