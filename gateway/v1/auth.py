"""Gateway API keys on `/v1/`: `Authorization: Bearer <key>` or `x-api-key: <key>` (DESIGN.md 2.4).

Keys are looked up by SHA-256 digest in the in-process snapshot: no database query and no slow
password hash on the request path. A key belongs to one environment, and the request sees only that
environment's configuration (DESIGN.md 2.15). On a tenant path (`/v1/completion/{ws}/{env}/…`)
the path must name the key's environment, by name or id; any mismatch is answered exactly as an
unknown key is, so no answer tells whether another environment exists. Refusals are not audited
(there is no key to charge them to): they are counted in `vmx_auth_failures_total` and logged at
most once a second per client address.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from datetime import UTC, datetime

from django.conf import settings

from connections.entities import ApiKeyInfo, EnvironmentSnapshot
from connections.selectors import (
    ConfigurationUnavailableError,
    aconfig_snapshot,
    aconfig_snapshot_recheck,
    api_key_lookup,
)
from gateway.core.addresses import forwarded_client_address
from gateway.core.errors import AuthenticationError, ServiceUnavailableError
from gateway.core.logs import ThrottledLog
from gateway.observability import metrics

logger = logging.getLogger("vmx.auth")
_refusals = ThrottledLog(logger, interval=1.0)


def api_key_from_headers(headers: Mapping[str, str]) -> str:
    authorization = headers.get("authorization", "")
    scheme, _, token = authorization.partition(" ")
    if scheme.lower() == "bearer" and token.strip():
        return token.strip()
    return headers.get("x-api-key", "").strip()


UNKNOWN_KEY_MESSAGE = "Incorrect API key provided."


async def authenticate(
    headers: Mapping[str, str], *, tenant: tuple[str, str] | None = None
) -> tuple[EnvironmentSnapshot, ApiKeyInfo]:
    """The key's environment and the key; 401 when missing, unknown, disabled or expired, or when
    `tenant` (the path's workspace and environment segments) is not the key's environment; 503
    when the worker has no configuration to check it against (database down since start)."""
    arrived = time.monotonic()
    key = api_key_from_headers(headers)
    if not key:
        raise AuthenticationError(
            "You didn't provide an API key. Send it as 'Authorization: Bearer <key>' or 'x-api-key: <key>'."
        )
    try:
        snapshot = await aconfig_snapshot()
    except ConfigurationUnavailableError:
        raise ServiceUnavailableError(
            "The gateway cannot serve yet: its configuration database is unreachable. Try again shortly.",
            headers={"retry-after": "5"},
        ) from None
    api_key = api_key_lookup(snapshot=snapshot, key=key)
    if api_key is None:
        # Perhaps created a moment ago (the management API, another worker or instance): a key
        # committed before this request arrived works at once.
        fresher = await aconfig_snapshot_recheck(arrived=arrived)
        if fresher is not None and fresher is not snapshot:
            snapshot, api_key = fresher, api_key_lookup(snapshot=fresher, key=key)
    if api_key is None:
        raise AuthenticationError(UNKNOWN_KEY_MESSAGE)
    environment = snapshot.environments.get(api_key.environment)
    if environment is None or (tenant is not None and snapshot.environments_by_path.get(tenant) != api_key.environment):
        # Before the key's own state: a disabled key of another environment tells nothing either.
        raise AuthenticationError(UNKNOWN_KEY_MESSAGE)
    if not api_key.enabled:
        raise AuthenticationError(f"The API key '{api_key.name}' is disabled.")
    if api_key.expires_at is not None and api_key.expires_at <= datetime.now(UTC):
        raise AuthenticationError(f"The API key '{api_key.name}' has expired.")
    return environment, api_key


def authentication_failed(*, source_ip: str | None, path: str, error: AuthenticationError) -> None:
    """Count a 401 and log it, at most once a second per address (a flood leaves one line a second)."""
    metrics.auth_failures_total.inc()
    address = source_ip or "unknown"
    _refusals.warning(f"401:{address}", "401 for %s on %s: %s", address, path, error.message)


def client_address(*, peer: str | None, forwarded_for: str | None) -> str | None:
    """The caller's address under this installation's `VMX_TRUSTED_PROXIES` (gateway.core.addresses)."""
    return forwarded_client_address(
        peer=peer, forwarded_for=forwarded_for, trusted_proxies=settings.VMX_TRUSTED_PROXIES
    )
