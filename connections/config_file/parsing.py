"""Parsing a config document into its objects (`document.py`): every key checked, every
complaint with its path, nothing written."""

from __future__ import annotations

import difflib
import math
import os
from collections.abc import Mapping
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

from django.core.exceptions import ValidationError
from django.utils.dateparse import parse_datetime

from connections.config_file.document import (
    ApiKeyDoc,
    ConfigDoc,
    ConfigFileError,
    ConnectionDoc,
    PricingDoc,
    ResourceDoc,
    path_join,
)
from connections.config_file.reading import env_expand
from connections.models import (
    DEFAULT_TIMEOUT_MS,
    MAX_RETRIES_LIMIT,
    MIN_TIMEOUT_MS,
)
from connections.services import (
    CapacitySpec,
    ModelEntrySpec,
    tenant_label_parse,
)
from gateway.core.jsonchecks import MAX_JSON_DEPTH, depth_exceeds, has_unstorable_characters
from gateway.core.limits import DIMENSIONS, PERIODS


class _Reader:
    """Typed access to one mapping of the file that records problems instead of raising."""

    def __init__(self, data: Mapping[str, Any], path: str, problems: list[str], allowed: tuple[str, ...]) -> None:
        self.data, self.path, self.problems = data, path, problems
        for key in data:
            if key not in allowed:
                close = difflib.get_close_matches(str(key), allowed, n=1)
                hint = f" (did you mean '{close[0]}'?)" if close else f" (expected one of: {', '.join(allowed)})"
                problems.append(f"{path_join(path, str(key))}: unknown key{hint}")

    def problem(self, key: str, message: str) -> None:
        self.problems.append(f"{path_join(self.path, key)}: {message}")

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


def _items(container: Mapping[str, Any], key: str, problems: list[str]) -> list[tuple[str, Mapping[str, Any]]]:
    if key not in container:
        return []
    value = container[key]
    if value is None:  # `connections:` with nothing after it: say none with [] (it matters to a prune)
        problems.append(f"{key}: must be a list (write [] for none)")
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
        path = f"{path_join(r.path, 'capacity')}[{index}]"
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


_SECTIONS = ("connections", "resources", "apiKeys", "pricing")
_TOP_LEVEL = ("environment", *_SECTIONS)


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
    _Reader(data, "", problems, _TOP_LEVEL)
    if expand_env:
        data = env_expand(data, path="", problems=problems, environ=os.environ if environ is None else environ)
    else:
        data = env_expand(data, path="", problems=problems, environ=None)
    _nul_problems(data, "", problems)
    doc = ConfigDoc(
        environment=_environment_read(data, problems),
        sections=frozenset(section for section in _SECTIONS if isinstance(data.get(section), list)),
        connections=_connections_read(data, problems),
        resources=_resources_read(data, problems),
        api_keys=_api_keys_read(data, problems),
        pricing=_pricing_read(data, problems),
    )

    problems.extend(_duplicate_names(doc))
    if problems:
        raise ConfigFileError(problems)
    return doc


def _environment_read(data: Mapping[str, Any], problems: list[str]) -> str | None:
    """The file's own target, `environment: acme/prod` (`tenant_label_parse`'s rule; the caller's
    target, e.g. `vmx_apply --environment`, wins over it)."""
    if "environment" not in data:
        return None
    label = data["environment"]
    try:
        tenant_label_parse(label)
    except ValidationError as exc:
        problems.append(f"environment: {' '.join(exc.messages)}")
        return None
    return str(label)


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
    """NUL characters or lone surrogates anywhere (a name, a description, defaultArgs), and
    non-finite numbers (YAML's `.nan`, `.inf`): the database cannot store them (JSON has no NaN),
    so they are a problem of the document, named by its path, not an error while writing it.
    The file reader and the management API both parse through here: the rule is written once."""
    if isinstance(value, float) and not math.isfinite(value):
        problems.append(f"{path or '(top level)'}: must be a finite number")
    elif isinstance(value, str):
        if has_unstorable_characters(value):
            problems.append(f"{path or '(top level)'}: must not contain NUL characters or lone surrogates")
    elif isinstance(value, dict):
        for key, item in value.items():
            _nul_problems(key, path, problems)
            _nul_problems(item, path_join(path, str(key)), problems)
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
