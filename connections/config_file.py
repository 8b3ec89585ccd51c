"""Config as code (DESIGN.md 2.2): read, parse, validate and apply the YAML/JSON file; writing one
is `config_export`.

Invariants: a file is checked whole before anything is written, and applied in one transaction, so
an invalid file changes nothing; every complaint names its path in the file
(`resources[0].fallbackModels[1].connection: no connection 'x'`); secrets are masked on export
unless asked for, and a masked value in a file keeps the stored secret. The file describes each
object it lists whole: a connection, resource or API key without `capacity` has no limits. Export
then apply changes nothing.
"""

from __future__ import annotations

import difflib
import os
import re
import secrets
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any, TypeVar

import yaml
from django.core.exceptions import ValidationError
from django.db import transaction
from django.utils.dateparse import parse_datetime

from connections.models import (
    DEFAULT_TIMEOUT_MS,
    MAX_RETRIES_LIMIT,
    MIN_TIMEOUT_MS,
    AIResource,
    APIKey,
    Connection,
    PricingEntry,
)
from connections.services import (
    CapacitySpec,
    ModelEntrySpec,
    api_key_save,
    capacity_entries_replace,
    config_object_delete,
    connection_save,
    pricing_entry_save,
    resource_save,
)
from gateway.core.jsonchecks import MAX_JSON_DEPTH, depth_exceeds, has_unstorable_characters
from gateway.core.limits import DIMENSIONS, PERIODS
from gateway.providers.registry import UnknownProviderError, provider_class_get

_T = TypeVar("_T")
SECRET_MASK = "********"  # noqa: S105 - the placeholder, not a secret
_REFERENCE_SPAN = re.compile(r"(?<!\$)\$\{[^}\n]*\}")
_ENV_REFERENCE = re.compile(r"\$\$|\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")


class ConfigFileError(Exception):
    def __init__(self, problems: list[str]) -> None:
        super().__init__("\n".join(problems))
        self.problems = problems


# ---------------------------------------------------------------------------------------------
# Reading


def config_file_read(path: Path) -> Any:
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigFileError([f"{path}: {exc.strerror}"]) from exc
    return config_text_parse(text, source=str(path))


class _NoAliasLoader(yaml.SafeLoader):
    """Safe YAML without anchors' aliases: a few hundred bytes of nested aliases expand to
    gigabytes, so documents from the network may not use them (files on the server may)."""

    def compose_node(self, parent: Any, index: Any) -> Any:
        if self.check_event(yaml.AliasEvent):
            event = self.peek_event()  # type: ignore[no-untyped-call]
            raise yaml.composer.ComposerError(
                None, None, "aliases (*name) are not accepted here; write the value out", event.start_mark
            )
        return super().compose_node(parent, index)


def config_text_parse(text: str, *, source: str, allow_aliases: bool = True) -> Any:
    """YAML (or JSON) text into plain data; `source` names it in a complaint (a path, "the request body")."""
    # `${VAR}` is not a valid plain scalar inside YAML flow mappings (`config: {apiKey: ${KEY}}`,
    # as DESIGN.md 2.2 writes it), so references are swapped for inert tokens while parsing and
    # restored afterwards, for env_expand to resolve with paths.
    references: dict[str, str] = {}
    nonce = secrets.token_hex(4)

    def protect(match: re.Match[str]) -> str:
        token = f"vmxref{nonce}n{len(references)}"
        references[token] = match.group(0)
        return token

    try:
        loader = yaml.SafeLoader if allow_aliases else _NoAliasLoader
        data = yaml.load(_REFERENCE_SPAN.sub(protect, text), Loader=loader)  # noqa: S506 - both are safe loaders
    except RecursionError:
        raise ConfigFileError([f"{source}: nested too deeply (at most {MAX_JSON_DEPTH} levels)"]) from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark else ""
        problem = getattr(exc, "problem", None) or str(exc)
        raise ConfigFileError([f"{source}: {where}not valid YAML/JSON ({problem})"]) from exc
    return _restore(data, references, re.compile(f"vmxref{nonce}n\\d+")) if references else data


def _restore(value: Any, references: Mapping[str, str], token: re.Pattern[str]) -> Any:
    if isinstance(value, str):
        return token.sub(lambda m: references[m.group(0)], value)
    if isinstance(value, list):
        return [_restore(v, references, token) for v in value]
    if isinstance(value, dict):
        return {_restore(k, references, token): _restore(v, references, token) for k, v in value.items()}
    return value


def env_expand(value: Any, *, path: str, problems: list[str], environ: Mapping[str, str] | None) -> Any:
    """`${VAR}` and `${VAR:-default}` in every string, recursively; `$$` is a literal `$`.

    With `environ=None` (documents from the management API) `$$` still means `$`, but a reference
    is a problem: the server's environment is not the caller's to read.
    """
    if isinstance(value, str):

        def substitute(match: re.Match[str]) -> str:
            if match.group(0) == "$$":
                return "$"
            name, default = match.group(1), match.group(2)
            if environ is None:
                problems.append(
                    f"{path or '(top level)'}: environment references like ${{{name}}} are expanded only by "
                    "vmx_apply on the server; send the value itself (a literal $ before { is written $$)"
                )
                return ""
            if name in environ:
                return environ[name]
            if default is not None:
                return default
            problems.append(f"{path}: environment variable {name} is not set")
            return ""

        return _ENV_REFERENCE.sub(substitute, value)
    if isinstance(value, list):
        return [env_expand(v, path=f"{path}[{i}]", problems=problems, environ=environ) for i, v in enumerate(value)]
    if isinstance(value, dict):
        return {
            k: env_expand(v, path=_join(path, str(k)), problems=problems, environ=environ) for k, v in value.items()
        }
    return value


# ---------------------------------------------------------------------------------------------
# Parsing into specs


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
    connections: list[ConnectionDoc] = field(default_factory=list)
    resources: list[ResourceDoc] = field(default_factory=list)
    api_keys: list[ApiKeyDoc] = field(default_factory=list)
    pricing: list[PricingDoc] = field(default_factory=list)


class _Reader:
    """Typed access to one mapping of the file that records problems instead of raising."""

    def __init__(self, data: Mapping[str, Any], path: str, problems: list[str], allowed: tuple[str, ...]) -> None:
        self.data, self.path, self.problems = data, path, problems
        for key in data:
            if key not in allowed:
                close = difflib.get_close_matches(str(key), allowed, n=1)
                hint = f" (did you mean '{close[0]}'?)" if close else f" (expected one of: {', '.join(allowed)})"
                problems.append(f"{_join(path, str(key))}: unknown key{hint}")

    def problem(self, key: str, message: str) -> None:
        self.problems.append(f"{_join(self.path, key)}: {message}")

    def get(self, key: str, kind: type | tuple[type, ...], *, required: bool = False, default: Any = None) -> Any:
        if key not in self.data or self.data[key] is None:
            if required:
                self.problem(key, "required")
            return default
        value = self.data[key]
        kinds = kind if isinstance(kind, tuple) else (kind,)
        if isinstance(value, bool) and bool not in kinds:
            value = None  # YAML's yes/no are not numbers or strings
        if value is None or not isinstance(value, kinds):
            self.problem(key, f"must be {_kind_name(kinds)}")
            return default
        return value

    def text(self, key: str, *, required: bool = False) -> str:
        value: str = self.get(key, str, required=required, default="")
        if required and key in self.data and isinstance(self.data[key], str) and not value.strip():
            self.problem(key, "must not be empty")
        return value


def _kind_name(kinds: tuple[type, ...]) -> str:
    names = {str: "a string", int: "an integer", bool: "true or false", dict: "a mapping", list: "a list"}
    return " or ".join(names.get(k, k.__name__) for k in kinds)


def _join(path: str, key: str) -> str:
    return f"{path}.{key}" if path else key


def _items(container: Mapping[str, Any], key: str, problems: list[str]) -> list[tuple[str, Mapping[str, Any]]]:
    value = container.get(key)
    if value is None:
        return []
    if not isinstance(value, list):
        problems.append(f"{key}: must be a list")
        return []
    items: list[tuple[str, Mapping[str, Any]]] = []
    for index, item in enumerate(value):
        path = f"{key}[{index}]"
        if isinstance(item, dict):
            items.append((path, item))
        else:
            problems.append(f"{path}: must be a mapping")
    return items


def _model_entry(value: Any, path: str, problems: list[str]) -> ModelEntrySpec | None:
    if not isinstance(value, dict):
        problems.append(f"{path}: must be a mapping with connection and model")
        return None
    r = _Reader(value, path, problems, ("connection", "model", "maxRetries", "timeoutMs", "reasoning"))
    max_retries = r.get("maxRetries", int, default=0)
    if not 0 <= max_retries <= MAX_RETRIES_LIMIT:
        r.problem("maxRetries", f"must be between 0 and {MAX_RETRIES_LIMIT}")
    timeout_ms = r.get("timeoutMs", int, default=DEFAULT_TIMEOUT_MS)
    if timeout_ms < MIN_TIMEOUT_MS:
        r.problem("timeoutMs", "must be a positive number of milliseconds")
    return ModelEntrySpec(
        connection=r.text("connection", required=True),
        model=r.text("model", required=True).strip(),
        max_retries=max_retries,
        timeout_ms=timeout_ms,
        reasoning=r.get("reasoning", bool, default=True),
    )


_CAPACITY_KEYS = ("period", "requests", "tokens", "costUsd", "dimension", "dimensionField", "enabled")
_CAPACITY_AMOUNTS = ("requests", "tokens", "costUsd")


def _capacity(r: _Reader) -> list[CapacitySpec]:
    """The optional `capacity` list of the object `r` reads (DESIGN.md 2.10)."""
    specs: list[CapacitySpec] = []
    for index, value in enumerate(r.get("capacity", list, default=[])):
        path = f"{_join(r.path, 'capacity')}[{index}]"
        if not isinstance(value, dict):
            r.problems.append(f"{path}: must be a mapping with period and at least one of requests, tokens, costUsd")
            continue
        entry = _Reader(value, path, r.problems, _CAPACITY_KEYS)
        period = entry.text("period", required=True)
        if period and period not in PERIODS:
            entry.problem("period", f"must be one of {', '.join(PERIODS)}")
        if all(value.get(key) is None for key in _CAPACITY_AMOUNTS):
            r.problems.append(f"{path}: give at least one of {', '.join(_CAPACITY_AMOUNTS)}")
        dimension = entry.text("dimension")
        if dimension not in DIMENSIONS:
            entry.problem("dimension", "must be source-ip or metadata (or left out for the whole scope)")
        dimension_field = entry.text("dimensionField")
        if dimension == "metadata" and not dimension_field.strip():
            entry.problem("dimensionField", "required when dimension is metadata")
        elif dimension != "metadata" and dimension_field:
            entry.problem("dimensionField", "only allowed when dimension is metadata")
        specs.append(
            CapacitySpec(
                period=period,
                requests=_count(entry, "requests"),
                tokens=_count(entry, "tokens"),
                cost_usd=_amount(entry, "costUsd", unit="USD"),
                dimension=dimension,
                dimension_field=dimension_field,
                enabled=entry.get("enabled", bool, default=True),
            )
        )
    return specs


def _count(r: _Reader, key: str) -> int | None:
    """A whole number >= 0 (never a bool: YAML's `true` is not 1)."""
    value: int | None = r.get(key, int)
    if value is not None and value < 0:
        r.problem(key, "must be an integer >= 0")
        return None
    return value


def config_parse(data: Any, *, environ: Mapping[str, str] | None = None, expand_env: bool = True) -> ConfigDoc:
    """Check the file's structure and expand environment references; raise with every problem.

    With `expand_env=False` (documents sent over the management API) a `${VAR}` reference is a
    problem rather than a lookup: the server's environment holds its own secrets, and a caller
    who may write a description must not be able to read them back through one.
    """
    problems: list[str] = []
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigFileError(["(top level): must be a mapping with connections, resources, apiKeys and pricing"])
    if depth_exceeds(data, MAX_JSON_DEPTH):
        raise ConfigFileError([f"(top level): nested deeper than {MAX_JSON_DEPTH} levels"])
    _Reader(data, "", problems, ("connections", "resources", "apiKeys", "pricing"))
    if expand_env:
        data = env_expand(data, path="", problems=problems, environ=os.environ if environ is None else environ)
    else:
        data = env_expand(data, path="", problems=problems, environ=None)
    _nul_problems(data, "", problems)
    doc = ConfigDoc(
        connections=_connections_read(data, problems),
        resources=_resources_read(data, problems),
        api_keys=_api_keys_read(data, problems),
        pricing=_pricing_read(data, problems),
    )

    problems.extend(_duplicate_names(doc))
    if problems:
        raise ConfigFileError(problems)
    return doc


def _connections_read(data: Mapping[str, Any], problems: list[str]) -> list[ConnectionDoc]:
    items: list[ConnectionDoc] = []
    for path, item in _items(data, "connections", problems):
        r = _Reader(item, path, problems, ("name", "provider", "description", "config", "enabled", "capacity"))
        items.append(
            ConnectionDoc(
                path=path,
                name=r.text("name", required=True),
                provider=r.text("provider", required=True),
                description=r.text("description"),
                config=dict(r.get("config", dict, default={})),
                enabled=r.get("enabled", bool, default=True),
                capacity=_capacity(r),
            )
        )
    return items


def _resources_read(data: Mapping[str, Any], problems: list[str]) -> list[ResourceDoc]:
    items: list[ResourceDoc] = []
    for path, item in _items(data, "resources", problems):
        allowed = ("name", "description", "model", "fallbackModels", "defaultArgs", "enabled", "capacity")
        r = _Reader(item, path, problems, allowed)
        primary = _model_entry(item.get("model"), f"{path}.model", problems) if "model" in item else None
        if "model" not in item:
            r.problem("model", "required")
        fallbacks = [
            _model_entry(entry, f"{path}.fallbackModels[{i}]", problems)
            for i, entry in enumerate(r.get("fallbackModels", list, default=[]))
        ]
        items.append(
            ResourceDoc(
                path=path,
                name=r.text("name", required=True),
                models=[m for m in [primary, *fallbacks] if m is not None],
                description=r.text("description"),
                default_args=dict(r.get("defaultArgs", dict, default={})),
                enabled=r.get("enabled", bool, default=True),
                capacity=_capacity(r),
            )
        )
    return items


def _api_keys_read(data: Mapping[str, Any], problems: list[str]) -> list[ApiKeyDoc]:
    items: list[ApiKeyDoc] = []
    for path, item in _items(data, "apiKeys", problems):
        r = _Reader(item, path, problems, ("name", "key", "resources", "enabled", "expiresAt", "capacity"))
        raw_resources = r.get("resources", (list, str), required=True, default=[])
        resources: list[str] | None
        if raw_resources == "*":
            resources = None
        elif isinstance(raw_resources, str):
            r.problem("resources", 'must be a list of resource names or "*"')
            resources = []
        else:
            resources = []
            for i, name in enumerate(raw_resources):
                if isinstance(name, str):
                    resources.append(name)
                else:
                    problems.append(f"{path}.resources[{i}]: must be a resource name")
        expires_at = None
        raw_expiry = r.get("expiresAt", (str, datetime))
        if isinstance(raw_expiry, datetime):
            expires_at = raw_expiry
        elif isinstance(raw_expiry, str):
            try:
                expires_at = parse_datetime(raw_expiry)
            except ValueError:  # well-formed but impossible: February 30th, an offset of 99 hours
                expires_at = None
            if expires_at is None:
                r.problem("expiresAt", "must be an ISO 8601 date-time, e.g. 2027-01-31T00:00:00Z")
        if expires_at is not None and expires_at.tzinfo is None:
            r.problem("expiresAt", "must include a time zone, e.g. 2027-01-31T00:00:00Z")
            expires_at = None
        if expires_at is not None:
            try:
                expires_at.astimezone(UTC)
            except OverflowError:  # year 9999 west of UTC, or year 1 east of it
                r.problem("expiresAt", "must be a date-time between the years 1 and 9999 in UTC")
                expires_at = None
        key = r.get("key", str)
        items.append(
            ApiKeyDoc(
                path=path,
                name=r.text("name", required=True),
                resources=resources,
                key=key,
                enabled=r.get("enabled", bool, default=True),
                expires_at=expires_at,
                capacity=_capacity(r),
            )
        )
    return items


def _pricing_read(data: Mapping[str, Any], problems: list[str]) -> list[PricingDoc]:
    items: list[PricingDoc] = []
    for path, item in _items(data, "pricing", problems):
        r = _Reader(item, path, problems, ("model", "input", "cachedInput", "output"))
        cached = _amount(r, "cachedInput", unit=_PRICE_UNIT)
        items.append(
            PricingDoc(
                path=path,
                name=r.text("model", required=True),
                input=_amount(r, "input", required=True, unit=_PRICE_UNIT) or Decimal(0),
                output=_amount(r, "output", required=True, unit=_PRICE_UNIT) or Decimal(0),
                cached_input=cached,
            )
        )
    return items


def _nul_problems(value: Any, path: str, problems: list[str]) -> None:
    """NUL characters or lone surrogates anywhere (a name, a description, defaultArgs): the
    database cannot store them, so they are a problem of the file, named by its path, not an
    error while writing it."""
    if isinstance(value, str):
        if has_unstorable_characters(value):
            problems.append(f"{path or '(top level)'}: must not contain NUL characters or lone surrogates")
    elif isinstance(value, dict):
        for key, item in value.items():
            _nul_problems(key, path, problems)
            _nul_problems(item, _join(path, str(key)), problems)
    elif isinstance(value, list):
        for index, item in enumerate(value):
            _nul_problems(item, f"{path}[{index}]", problems)


_PRICE_UNIT = "USD per 1M tokens"


def _amount(r: _Reader, key: str, *, unit: str, required: bool = False) -> Decimal | None:
    """A money amount: a number >= 0 (never a bool), kept exact as a Decimal."""
    value = r.get(key, (int, float), required=required)
    if value is None:
        return None
    if isinstance(value, bool) or value < 0 or value != value or value in (float("inf"), float("-inf")):
        r.problem(key, f"must be a number >= 0 ({unit})")
        return None
    return Decimal(str(value))


def _duplicate_names(doc: ConfigDoc) -> list[str]:
    problems: list[str] = []
    sections: list[tuple[str, list[Any]]] = [
        ("connection", doc.connections),
        ("resource", doc.resources),
        ("API key", doc.api_keys),
        ("pricing model", doc.pricing),
    ]
    for label, items in sections:
        first_path: dict[str, str] = {}
        for item in items:
            if item.name in first_path:
                problems.append(
                    f"{item.path}.name: duplicate {label} name '{item.name}' (first at {first_path[item.name]})"
                )
            else:
                first_path.setdefault(item.name, item.path)
    return problems


# ---------------------------------------------------------------------------------------------
# Applying


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
            target = where if name == "__all__" else _join(where, _CAPACITY_FIELDS.get(name, name))
        elif entry:
            index = int(entry.group(1))
            where = f"{path}.model" if index == 0 else f"{path}.fallbackModels[{index - 1}]"
            target = _join(where, _ENTRY_FIELDS.get(entry.group(2), entry.group(2)))
        elif key == "__all__":
            target = path
        else:
            target = _join(path, fields.get(key, key))
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
