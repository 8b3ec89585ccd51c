"""Startup checks that need no database: a malformed encryption key fails `manage.py check` and boot."""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.core.checks import CheckMessage, Error, Warning, register

from connections.crypto import EncryptionKeyError, encryption_key_validate


@register()
def encryption_key_check(app_configs: Any = None, **kwargs: Any) -> list[CheckMessage]:
    if not settings.VMX_ENCRYPTION_KEY:
        return [
            Warning(
                "VMX_ENCRYPTION_KEY is not set: connections with secrets (API keys) cannot be saved or used.",
                hint="Set VMX_ENCRYPTION_KEY to a Fernet key (`make run` generates one under var/).",
                id="connections.W001",
            )
        ]
    try:
        encryption_key_validate()
    except EncryptionKeyError as exc:
        return [Error(str(exc), id="connections.E001")]
    return []
