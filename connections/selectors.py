"""Reads of the configuration, served from an in-process snapshot.

Invariant: the request path never queries the ORM in steady state. A worker holds one immutable
`ConfigSnapshot`; at most once per `VMX_CONFIG_REFRESH_SECONDS` it reads the single-row
`ConfigRevision` counter and rebuilds the snapshot only when the counter moved. A change made in
any process is therefore visible everywhere within two refresh periods (2 s by default).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import threading
import time
import uuid
from types import MappingProxyType

from asgiref.sync import sync_to_async
from django.conf import settings
from django.db import DatabaseError
from django.db.models import Prefetch

from connections.crypto import EncryptionKeyError
from connections.entities import (
    ApiKeyInfo,
    ConfigSnapshot,
    ConnectionInfo,
    EnvironmentInfo,
    EnvironmentSnapshot,
    ModelEntryInfo,
    ResourceInfo,
)
from connections.models import (
    AIResource,
    APIKey,
    CapacityEntry,
    ConfigRevision,
    Connection,
    Environment,
    ModelEntry,
    PricingEntry,
)
from gateway.core.limits import CapacityLimit
from gateway.core.logs import ThrottledLog
from gateway.core.pricing import Price, PriceList

logger = logging.getLogger("vmx.config")
_refresh_failures = ThrottledLog(logger, interval=10.0)
RETRY_WITHOUT_SNAPSHOT_SECONDS = 1.0
"""With no configuration at all (database down at start), requests fail fast between attempts."""
RECHECK_SPACING_SECONDS = 0.01
"""Re-reads for unknown keys start at most this often per worker (see `aconfig_snapshot_recheck`)."""


class ConfigurationUnavailableError(Exception):
    """There is no configuration to serve from: the database could not be read yet."""


def config_revision_get() -> int:
    value = ConfigRevision.objects.filter(pk=1).values_list("value", flat=True).first()
    return value or 0


def connection_info_get(*, connection: Connection) -> ConnectionInfo:
    """The frozen view of one row, secrets decrypted (raises `EncryptionKeyError` on a bad key)."""
    fingerprint_source = f"{connection.provider}|{sorted(connection.config.items())}|{connection.secrets_encrypted}"
    return ConnectionInfo(
        name=connection.name,
        provider=connection.provider,
        enabled=connection.enabled,
        config=MappingProxyType(dict(connection.config)),
        secrets=MappingProxyType(connection.secrets_get()),
        fingerprint=hashlib.sha256(fingerprint_source.encode()).hexdigest(),
    )


def _hex(environment_id: uuid.UUID | None) -> str:
    assert environment_id is not None  # a saved row always has its environment
    return environment_id.hex


def environment_info_get(*, environment: Environment) -> EnvironmentInfo:
    """The frozen view of one environment row (its workspace selected with it)."""
    return EnvironmentInfo(
        id=environment.pk.hex,
        name=environment.name,
        workspace=environment.workspace.name,
        workspace_id=environment.workspace_id.hex,
        is_default=environment.is_default,
    )


def config_snapshot_build() -> ConfigSnapshot:
    """Read the whole configuration in a fixed number of queries, however much there is and
    however many environments hold it.

    Raises `EncryptionKeyError` on a bad key.
    """
    revision = config_revision_get()
    limits = capacity_limits_by_owner()
    prices = price_list_build()
    infos = {
        env.pk.hex: environment_info_get(environment=env) for env in Environment.objects.select_related("workspace")
    }
    connections: dict[str, dict[str, ConnectionInfo]] = {env_id: {} for env_id in infos}
    connection_capacity: dict[str, dict[str, tuple[CapacityLimit, ...]]] = {env_id: {} for env_id in infos}
    for conn in Connection.objects.all():
        env_id = _hex(conn.environment_id)
        connections[env_id][conn.name] = connection_info_get(connection=conn)
        if ("connection", conn.pk) in limits:
            connection_capacity[env_id][conn.name] = limits[("connection", conn.pk)]
    resources: dict[str, dict[str, ResourceInfo]] = {env_id: {} for env_id in infos}
    entries = Prefetch("model_entries", queryset=ModelEntry.objects.select_related("connection"))
    for res in AIResource.objects.prefetch_related(entries):
        resources[_hex(res.environment_id)][res.name] = ResourceInfo(
            name=res.name,
            enabled=res.enabled,
            models=tuple(
                ModelEntryInfo(
                    connection=entry.connection.name,
                    model=entry.model,
                    max_retries=entry.max_retries,
                    timeout_ms=entry.timeout_ms,
                    reasoning=entry.reasoning,
                )
                for entry in res.model_entries.all()
                # The models' checks keep entries in their resource's environment; a row written
                # around them must still never route to another environment's connection.
                if entry.connection.environment_id == res.environment_id
            ),
            default_args=MappingProxyType(dict(res.default_args)),
            created=int(res.created_at.timestamp()),
            capacity=limits.get(("resource", res.pk), ()),
        )
    keys: dict[str, ApiKeyInfo] = {}
    for key in APIKey.objects.prefetch_related("resources"):
        keys[key.digest] = ApiKeyInfo(
            name=key.name,
            enabled=key.enabled,
            all_resources=key.all_resources,
            resources=frozenset(r.name for r in key.resources.all() if r.environment_id == key.environment_id),
            expires_at=key.expires_at,
            capacity=limits.get(("api_key", key.pk), ()),
            environment=_hex(key.environment_id),
        )
    environments = {
        env_id: EnvironmentSnapshot(
            revision=revision,
            environment=info,
            connections=MappingProxyType(connections[env_id]),
            resources=MappingProxyType(resources[env_id]),
            prices=prices,
            connection_capacity=MappingProxyType(connection_capacity[env_id]),
        )
        for env_id, info in infos.items()
    }
    by_path: dict[tuple[str, str], str] = {}
    for env_id, info in infos.items():
        # A segment is the name or the id (VM-X base URLs hold ids, with or without dashes).
        for workspace in {info.workspace, info.workspace_id, str(uuid.UUID(info.workspace_id))}:
            for environment in {info.name, env_id, str(uuid.UUID(env_id))}:
                by_path[(workspace, environment)] = env_id
    return ConfigSnapshot(
        revision=revision,
        environments=MappingProxyType(environments),
        api_keys_by_digest=MappingProxyType(keys),
        environments_by_path=MappingProxyType(by_path),
        prices=prices,
    )


def capacity_limits_by_owner() -> dict[tuple[str, int], tuple[CapacityLimit, ...]]:
    """Enabled capacity limits in position order, by (scope kind, owner id), in one query.

    Disabled entries are left out here, so the request path never has to look at them.
    """
    grouped: dict[tuple[str, int], list[CapacityLimit]] = {}
    for entry in CapacityEntry.objects.filter(enabled=True).order_by("position", "id"):
        kind = entry.scope_kind
        grouped.setdefault((kind, getattr(entry, f"{kind}_id")), []).append(entry.limit_get())
    return {owner: tuple(found) for owner, found in grouped.items()}


def price_list_build() -> PriceList:
    return PriceList.from_entries(
        {
            entry.model: Price(
                input=float(entry.input),
                output=float(entry.output),
                cached_input=None if entry.cached_input is None else float(entry.cached_input),
            )
            for entry in PricingEntry.objects.all()
        }
    )


class _SnapshotCache:
    def __init__(self) -> None:
        self.snapshot: ConfigSnapshot | None = None
        self.checked_at = 0.0
        self.lock = threading.Lock()
        self.kept_fresh = False
        """A background task keeps the snapshot fresh: readers need not check."""
        self.refreshed_at: float | None = None
        """When the revision was last read successfully (monotonic)."""
        self.failed_at = 0.0
        self.failures = 0

    def is_fresh(self) -> bool:
        return self.snapshot is not None and time.monotonic() - self.checked_at < settings.VMX_CONFIG_REFRESH_SECONDS

    def refresh(self) -> ConfigSnapshot:
        with self.lock:
            snapshot = self.snapshot
            if snapshot is not None and self.is_fresh():
                return snapshot
            try:
                revision = config_revision_get()
                if snapshot is None or snapshot.revision != revision:
                    snapshot = self.snapshot = config_snapshot_build()
            except Exception:
                self.failed_at = time.monotonic()
                self.failures += 1
                raise
            self.checked_at = self.refreshed_at = time.monotonic()
            self.failures = 0
            return snapshot

    def reread(self) -> ConfigSnapshot:
        """Read the revision now, whenever it was last read; rebuild if it moved."""
        with self.lock:
            self.checked_at = 0.0
        return self.refresh()


_cache = _SnapshotCache()


class _Rechecks:
    """Single-flight re-reads of the revision for lookups that missed, in one event loop.

    A request that arrived at `t` needs a read that started at or after `t`: such a read sees every
    change committed before the client sent the request (a key whose create it already got an
    answer to). Requests share reads: one in flight that started late enough serves them all, and
    a new one starts at most every RECHECK_SPACING_SECONDS, so a flood of bad keys costs at most a
    hundred revision reads a second per worker, and no new key is ever refused.
    """

    def __init__(self) -> None:
        self.loop: asyncio.AbstractEventLoop | None = None
        self.task: asyncio.Future[ConfigSnapshot] | None = None
        self.started_at = float("-inf")

    async def after(self, arrived: float) -> ConfigSnapshot | None:
        loop = asyncio.get_running_loop()
        if self.loop is not loop:  # a new loop (tests): nothing of the old one can be awaited here
            self.loop, self.task, self.started_at = loop, None, float("-inf")
        while True:
            task = self.task
            if task is not None and self.started_at >= arrived:
                try:
                    return await asyncio.shield(task)
                except Exception:  # the database cannot say: the caller answers with what it has
                    return None
            if task is not None and not task.done():
                with contextlib.suppress(Exception):
                    await asyncio.shield(task)
                continue
            wait = self.started_at + RECHECK_SPACING_SECONDS - time.monotonic()
            if wait > 0:
                await asyncio.sleep(wait)
                continue
            self.started_at = time.monotonic()
            self.task = asyncio.ensure_future(sync_to_async(_cache.reread, thread_sensitive=False)())


_rechecks = _Rechecks()


def config_snapshot() -> ConfigSnapshot:
    """The current configuration (sync callers: commands, admin, startup)."""
    if _cache.is_fresh():
        assert _cache.snapshot is not None
        return _cache.snapshot
    return _cache.refresh()


async def aconfig_snapshot() -> ConfigSnapshot:
    """The current configuration for async views.

    In a server process a background task (`config_snapshot_keep_fresh`) re-checks the revision
    every period, so a request never waits for the database; elsewhere the check happens here, at
    most once a period.
    """
    snapshot = _cache.snapshot
    if snapshot is not None and (_cache.kept_fresh or _cache.is_fresh()):
        return snapshot
    if snapshot is None and time.monotonic() - _cache.failed_at < RETRY_WITHOUT_SNAPSHOT_SECONDS:
        raise ConfigurationUnavailableError("the configuration could not be read from the database yet")
    try:
        return await sync_to_async(_cache.refresh, thread_sensitive=False)()
    except (DatabaseError, EncryptionKeyError) as exc:
        if _cache.snapshot is not None:  # serve from the last configuration (DESIGN.md 2.13)
            return _cache.snapshot
        raise ConfigurationUnavailableError(f"the configuration could not be read: {type(exc).__name__}") from exc


async def aconfig_snapshot_recheck(*, arrived: float) -> ConfigSnapshot | None:
    """For a lookup that missed (an unknown key): the configuration as of a read that started at
    or after `arrived` (the request's `time.monotonic()`); None when the database cannot say."""
    return await _rechecks.after(arrived)


async def config_snapshot_keep_fresh() -> None:
    """Re-check the revision every `VMX_CONFIG_REFRESH_SECONDS` until cancelled (server lifespan).

    A failed check (database briefly down) keeps serving the last snapshot and tries again.
    """
    _cache.kept_fresh = True
    try:
        while True:
            await asyncio.sleep(settings.VMX_CONFIG_REFRESH_SECONDS)
            _cache.checked_at = 0.0
            try:
                await sync_to_async(_cache.refresh, thread_sensitive=False)()
            except Exception as exc:
                state = "serving the last configuration" if _cache.snapshot is not None else "no configuration yet"
                _refresh_failures.warning(
                    "refresh", "configuration refresh failed (%s: %s); %s", type(exc).__name__, exc, state
                )
    finally:
        _cache.kept_fresh = False


def config_snapshot_age() -> float | None:
    """Seconds since the configuration was last read successfully; None if it never was."""
    if _cache.refreshed_at is None:
        return None
    return time.monotonic() - _cache.refreshed_at


def config_snapshot_invalidate() -> None:
    """Make the next read re-check the revision (and rebuild the snapshot if it moved)."""
    with _cache.lock:
        _cache.checked_at = 0.0
        _cache.snapshot = None


def api_key_lookup(*, snapshot: ConfigSnapshot, key: str) -> ApiKeyInfo | None:
    return snapshot.api_keys_by_digest.get(APIKey.digest_of(key))
