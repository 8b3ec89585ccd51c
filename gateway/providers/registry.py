"""Provider registry: slug → `Provider` class, and one live instance per connection version.

Instances are keyed by connection name and rebuilt when the connection's fingerprint changes, so
a pooled client is reused across requests but never outlives a credential change.
"""

from __future__ import annotations

from gateway.providers.base import ConnectionInfo, Provider

_classes: dict[str, type[Provider]] = {}
_instances: dict[str, Provider] = {}


class UnknownProviderError(LookupError):
    pass


def provider_register(cls: type[Provider]) -> type[Provider]:
    """Class decorator: make `cls` available under `cls.slug`."""
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
    if not _classes:
        from gateway.providers import mock, openai  # noqa: F401  (modules register themselves)


async def providers_close() -> None:
    """Close every live provider's pooled clients (process shutdown)."""
    instances = list(_instances.values())
    _instances.clear()
    for instance in instances:
        await instance.aclose()
