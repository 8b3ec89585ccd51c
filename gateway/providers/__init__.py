"""Upstream providers behind one interface, looked up by slug in the registry.

Adding a provider means a module here that subclasses `Provider` and registers itself; nothing
outside this package changes.
"""

from gateway.providers.base import CheckResult, ConfigField, Provider
from gateway.providers.registry import provider_choices, provider_class_get, provider_get, provider_register

__all__ = [
    "CheckResult",
    "ConfigField",
    "Provider",
    "provider_choices",
    "provider_class_get",
    "provider_get",
    "provider_register",
]
