"""Provider registry: slug → `Provider` class, and one live instance per connection version.

The built-in providers are listed here (`BUILTIN_PROVIDERS`) and imported on first use (the
OpenAI SDK is not loaded by commands that never call a model); another provider registers its
class with `provider_register`. Providers never import the registry.

Instances are keyed by connection name and rebuilt when the connection's fingerprint changes, so
a pooled client is reused across requests but never outlives a credential change.
"""

from __future__ import annotations

from importlib import import_module

from gateway.providers.base import ConnectionInfo, Provider

BUILTIN_PROVIDERS = {
    "mock": "gateway.providers.mock.MockProvider",
    "openai": "gateway.providers.openai.OpenAIProvider",
}
"""Slug → the dotted path of its class."""

_classes: dict[str, type[Provider]] = {}
_instances: dict[str, Provider] = {}


class UnknownProviderError(LookupError):
    pass


def provider_register(cls: type[Provider]) -> type[Provider]:
    """Make `cls` available under `cls.slug` (a class decorator for providers outside this package)."""
    _classes[cls.slug] = cls
    return cls


def provider_class_get(slug: str) -> type[Provider]:
    _ensure_builtin_loaded()
    try:
        return _classes[slug]
    except KeyError:
        known = ", ".join(sorted(_classes))
        raise UnknownProviderError(f"unknown provider '{slug}' (known: {known})") from None


def provider_choices() -> list[tuple[str, str]]:
    _ensure_builtin_loaded()
    return [(slug, cls.label) for slug, cls in sorted(_classes.items())]


def provider_get(connection: ConnectionInfo) -> Provider:
    """The live provider for `connection`, rebuilt when its settings changed."""
    current = _instances.get(connection.name)
    if current is not None and current.connection.fingerprint == connection.fingerprint:
        return current
    instance = provider_class_get(connection.provider)(connection)
    _instances[connection.name] = instance
    # The replaced instance may still be serving in-flight requests; its pool is released when it
    # is garbage-collected rather than cut here.
    return instance


def _ensure_builtin_loaded() -> None:
    for slug, path in BUILTIN_PROVIDERS.items():
        if slug not in _classes:
            module, _, name = path.rpartition(".")
            provider_register(getattr(import_module(module), name))


async def providers_close() -> None:
    """Close every live provider's pooled clients (process shutdown)."""
    instances = list(_instances.values())
    _instances.clear()
    for instance in instances:
        await instance.aclose()
