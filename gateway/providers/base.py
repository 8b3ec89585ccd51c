"""The provider interface: what a connection's `provider` slug stands for.

A `Provider` subclass declares its config fields (which the admin renders and every write path
validates) and is instantiated once per connection version; instances hold pooled clients, so they
must be cheap to keep and safe to share between concurrent requests.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal
from urllib.parse import urlsplit

from connections.entities import ConnectionInfo


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


class Provider:
    slug: ClassVar[str]
    label: ClassVar[str]
    description: ClassVar[str] = ""
    default_model: ClassVar[str]
    config_fields: ClassVar[tuple[ConfigField, ...]] = ()

    def __init__(self, connection: ConnectionInfo) -> None:
        self.connection = connection

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
                parts = urlsplit(value)
                if parts.scheme not in ("http", "https") or not parts.netloc:
                    errors[spec.name] = "must be an http(s) URL"
        return errors

    async def check(self) -> CheckResult:
        """Make one cheap upstream call and report how it went."""
        raise NotImplementedError

    async def send(self, request: UpstreamRequest) -> UpstreamResponse:
        """Make one call, retried by the provider up to `request.max_retries` times.

        Returns only 2xx answers; raises an `UpstreamError` subclass (gateway.errors) for anything
        else, so routing can move to the next leg without knowing the provider.
        """
        raise NotImplementedError

    async def aclose(self) -> None:
        """Release pooled resources; called when the connection changes or the process stops."""
