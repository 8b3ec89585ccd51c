"""Management API tokens (`Authorization: Token <value>`), as DRF authentication.

Invariants: only a token's SHA-256 digest is stored (`ManagementToken`), compared in constant
time; an expired or revoked token, or one of an inactive user, is a 401 like an unknown one.
"""

from __future__ import annotations

import secrets
from datetime import timedelta
from typing import Any

from django.contrib.auth.models import User
from django.db import transaction
from django.utils import timezone
from rest_framework import authentication, exceptions

from connections.models import MANAGEMENT_TOKEN_PREFIX_LENGTH, ManagementToken, management_token_digest

TOKEN_VALUE_PREFIX = "vmxm-"  # noqa: S105 (a marker, not a secret)
DEFAULT_TOKEN_LIFETIME = timedelta(days=90)


def management_token_create(
    *, user: User, lifetime: timedelta | None = DEFAULT_TOKEN_LIFETIME, description: str = ""
) -> tuple[ManagementToken, str]:
    """A new token for `user` and its value, which is shown this once (only the digest is kept)."""
    value = TOKEN_VALUE_PREFIX + secrets.token_urlsafe(32)
    token = ManagementToken.objects.create(
        user=user,
        prefix=value[:MANAGEMENT_TOKEN_PREFIX_LENGTH],
        digest=management_token_digest(value),
        description=description,
        expires_at=timezone.now() + lifetime if lifetime else None,
    )
    return token, value


def management_tokens_revoke(*, user: User | None = None, prefix: str | None = None) -> int:
    """Revoke the live tokens of `user` and/or with `prefix`; the number revoked."""
    tokens = ManagementToken.objects.filter(revoked_at__isnull=True)
    if user is not None:
        tokens = tokens.filter(user=user)
    if prefix is not None:
        tokens = tokens.filter(prefix=prefix[:MANAGEMENT_TOKEN_PREFIX_LENGTH])
    with transaction.atomic():
        return tokens.update(revoked_at=timezone.now())


class ManagementTokenAuthentication(authentication.TokenAuthentication):
    """DRF's `Token` header, checked against the stored digests."""

    def authenticate_credentials(self, key: str) -> tuple[Any, ManagementToken]:
        digest = management_token_digest(key)
        token = (
            ManagementToken.objects.select_related("user")
            .filter(prefix=key[:MANAGEMENT_TOKEN_PREFIX_LENGTH], digest=digest)
            .first()
        )
        if token is None or not secrets.compare_digest(token.digest, digest):
            raise exceptions.AuthenticationFailed("Invalid token.")
        if token.revoked_at is not None:
            raise exceptions.AuthenticationFailed("Token revoked.")
        if token.expires_at is not None and token.expires_at <= timezone.now():
            raise exceptions.AuthenticationFailed("Token expired.")
        if not token.user.is_active:
            raise exceptions.AuthenticationFailed("User inactive or deleted.")
        return token.user, token
