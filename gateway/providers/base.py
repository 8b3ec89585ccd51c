"""The provider interface: what a connection's `provider` slug stands for.

A `Provider` subclass declares its config fields (which the admin renders and every write path
validates) and is instantiated once per connection version; instances hold pooled clients, so they
must be cheap to keep and safe to share between concurrent requests.

Providers own the shapes they consume: `ConnectionInfo` is defined here and the configuration
(`connections`) builds it, so nothing in this package imports the configuration.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass, field
from functools import cached_property
from types import MappingProxyType
from typing import Any, ClassVar, Literal
from urllib.parse import urlsplit

from gateway.core.redaction import Redactor


def empty_mapping() -> Mapping[str, Any]:
    """A read-only empty mapping: the default of frozen configuration fields."""
    return MappingProxyType({})


@dataclass(frozen=True, slots=True)
class ConnectionInfo:
    """What a provider needs of one connection: frozen, Django-free, secrets decrypted."""

    name: str
    provider: str
    enabled: bool
    config: Mapping[str, Any]
    """Non-secret provider settings (e.g. `baseURL`)."""
    secrets: Mapping[str, str] = field(default_factory=empty_mapping, repr=False)
    """Decrypted secret settings (e.g. `apiKey`). Never logged."""
    fingerprint: str = ""
    """Changes whenever any setting changes; providers rebuild their clients on a new one."""


@dataclass(frozen=True, slots=True)
class ConfigField:
    name: str
    """The key in the connection's `config` object, as written in the config file."""
    label: str
    required: bool = False
    secret: bool = False
    """Encrypted at rest and masked on every read."""
    kind: Literal["text", "url"] = "text"
    help_text: str = ""


@dataclass(frozen=True, slots=True)
class CheckResult:
    ok: bool
    latency_ms: float
    detail: str


@dataclass(frozen=True, slots=True)
class UpstreamRequest:
    """One upstream call, already serialised: providers forward `body` as it is."""

    path: str
    """Relative to the connection's base URL, e.g. `/chat/completions`."""
    body: bytes
    stream: bool
    timeout: float
    """Seconds per attempt; for a stream, also the longest wait for the next bytes."""
    max_retries: int


@dataclass(slots=True)
class UpstreamResponse:
    """A 2xx answer. For a stream, `chunks` yields the body as it arrives and must be closed."""

    status: int
    headers: Mapping[str, str]
    """The upstream headers worth passing to the client (lower-case names)."""
    body: bytes = b""
    chunks: AsyncIterator[bytes] | None = None
    closer: Any = field(default=None, repr=False)
    tries: int = 1
    """HTTP calls made to get this answer (1 + the provider's retries)."""

    async def aclose(self) -> None:
        if self.closer is not None:
            await self.closer()
            self.closer = None


PASSTHROUGH_HEADERS = frozenset(
    {"x-request-id", "openai-processing-ms", "openai-version", "retry-after", "retry-after-ms"}
)


def passthrough_headers(headers: Mapping[str, str]) -> dict[str, str]:
    """The upstream response headers a client may see (DESIGN.md 2.7): ids, timings, rate limits."""
    return {
        name: value
        for name, value in ((k.lower(), v) for k, v in headers.items())
        if name in PASSTHROUGH_HEADERS or name.startswith("x-ratelimit-")
    }


def url_problem(value: str) -> str | None:
    """Why `value` is not an acceptable base URL, or None."""
    try:
        parts = urlsplit(value)
        port = parts.port  # raises on a port that is not a number
    except ValueError:
        return "must be an http(s) URL"
    if parts.scheme not in ("http", "https") or not parts.hostname or port == 0:
        return "must be an http(s) URL"
    if parts.username is not None or parts.password is not None:
        # Credentials in a URL end up in logs and exports; the provider's secret fields are the place.
        return "must not contain credentials (user:password@); put the key in the secret field"
    if any(ord(c) < 0x21 or ord(c) == 0x7F for c in value):
        return "must not contain spaces or control characters"
    if "?" in value or "#" in value:
        # The SDKs append paths to the base URL (a query would end up mid-path), and a query is
        # where keys hide: every reader of the configuration would see it.
        return "must not contain a query string or fragment; put a key in the secret field"
    return None


class Provider:
    slug: ClassVar[str]
    label: ClassVar[str]
    description: ClassVar[str] = ""
    default_model: ClassVar[str]
    config_fields: ClassVar[tuple[ConfigField, ...]] = ()

    def __init__(self, connection: ConnectionInfo) -> None:
        self.connection = connection

    @cached_property
    def redactor(self) -> Redactor:
        """Masks this connection's secrets in upstream text (DESIGN.md 2.13)."""
        return Redactor(self.connection.secrets.values())

    @classmethod
    def destination_changed(cls, before: Mapping[str, Any], after: Mapping[str, Any]) -> bool:
        """Whether a URL setting differs: stored secrets are then not kept for the new address
        (whoever may edit a connection but not read its key could otherwise send the key to a
        server of theirs and read it there)."""
        return any(
            (before.get(f.name) or "") != (after.get(f.name) or "") for f in cls.config_fields if f.kind == "url"
        )

    @classmethod
    def secret_field_names(cls) -> frozenset[str]:
        return frozenset(f.name for f in cls.config_fields if f.secret)

    @classmethod
    def config_errors(cls, config: Mapping[str, Any]) -> dict[str, str]:
        """Problems with a full (secrets included) config, keyed by field name; empty when valid."""
        known = {f.name: f for f in cls.config_fields}
        errors: dict[str, str] = {}
        for name in config:
            if name not in known:
                expected = ", ".join(known) or "no settings"
                errors[name] = f"unknown setting for provider '{cls.slug}' (expected: {expected})"
        for spec in cls.config_fields:
            value = config.get(spec.name)
            if value is None or value == "":
                if spec.required:
                    errors[spec.name] = "required"
                continue
            if not isinstance(value, str):
                errors[spec.name] = "must be a string"
            elif spec.kind == "url":
                errors.update({spec.name: problem} if (problem := url_problem(value)) else {})
        return errors

    async def check(self) -> CheckResult:
        """Make one cheap upstream call and report how it went."""
        raise NotImplementedError

    async def send(self, request: UpstreamRequest) -> UpstreamResponse:
        """Make one call, retried by the provider up to `request.max_retries` times.

        Returns only 2xx answers; raises an `UpstreamError` subclass (gateway.core.errors) for anything
        else, so routing can move to the next leg without knowing the provider.
        """
        raise NotImplementedError

    async def aclose(self) -> None:
        """Release pooled resources; called when the connection changes or the process stops."""
