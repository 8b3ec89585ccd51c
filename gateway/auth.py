"""Gateway API keys on `/v1/`: `Authorization: Bearer <key>` or `x-api-key: <key>` (DESIGN.md 2.4).

Keys are looked up by SHA-256 digest in the in-process snapshot: no database query and no slow
password hash on the request path.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime

from connections.entities import ApiKeyInfo, ConfigSnapshot
from connections.selectors import aconfig_snapshot, api_key_lookup
from gateway.errors import AuthenticationError


def api_key_from_headers(headers: Mapping[str, str]) -> str:
    authorization = headers.get("authorization", "")
    scheme, _, token = authorization.partition(" ")
    if scheme.lower() == "bearer" and token.strip():
        return token.strip()
    return headers.get("x-api-key", "").strip()


async def authenticate(headers: Mapping[str, str]) -> tuple[ConfigSnapshot, ApiKeyInfo]:
    """The current snapshot and the caller's key; 401 when missing, unknown, disabled or expired."""
    key = api_key_from_headers(headers)
    if not key:
        raise AuthenticationError(
            "You didn't provide an API key. Send it as 'Authorization: Bearer <key>' or 'x-api-key: <key>'."
        )
    snapshot = await aconfig_snapshot()
    api_key = api_key_lookup(snapshot=snapshot, key=key)
    if api_key is None:
        raise AuthenticationError("Incorrect API key provided.")
    if not api_key.enabled:
        raise AuthenticationError(f"The API key '{api_key.name}' is disabled.")
    if api_key.expires_at is not None and api_key.expires_at <= datetime.now(UTC):
        raise AuthenticationError(f"The API key '{api_key.name}' has expired.")
    return snapshot, api_key
