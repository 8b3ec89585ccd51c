"""Process start and stop: what the ASGI lifespan wrapper (vmx_project/asgi.py) runs.

Startup loads the configuration snapshot once, so a wrong `VMX_ENCRYPTION_KEY` stops the worker
with a clear message instead of failing on the first request, and writes audit records that an
earlier process spooled because its database was down. A database that is down at startup is not
fatal: the worker answers 503 until the background refresh reads the configuration. Shutdown
releases pooled upstream clients, settles the capacity counters of the last requests and writes
(or spools) the queued audit records.
"""

from __future__ import annotations

import asyncio
import gc
import logging

from asgiref.sync import sync_to_async
from django.conf import settings
from django.db import DatabaseError

from connections.crypto import EncryptionKeyError
from connections.selectors import config_snapshot, config_snapshot_keep_fresh
from gateway.audit.retention import purge_keep_scheduled
from gateway.capacity.learned import upstream_limits_keep_saved, upstream_limits_listen
from gateway.capacity.stores import settlements_finished

logger = logging.getLogger("vmx.lifecycle")


class StartupError(Exception):
    pass


_background: set[asyncio.Task[None]] = set()


async def gateway_startup() -> None:
    try:
        await _configuration_load()
        await _audit_spool_replay()
        # Requests read the in-process snapshot; this task keeps it fresh off the request path.
        _background.add(asyncio.create_task(config_snapshot_keep_fresh(), name="vmx-config-refresh"))
        # Learned upstream limits: saved for the admin, and shared between instances through Redis.
        _background.add(asyncio.create_task(upstream_limits_keep_saved(), name="vmx-upstream-limits-save"))
        if settings.REDIS_URL:
            _background.add(asyncio.create_task(upstream_limits_listen(), name="vmx-upstream-limits-listen"))
        # Retention: once a day, by whichever worker of whichever instance claims it first.
        _background.add(asyncio.create_task(purge_keep_scheduled(), name="vmx-retention"))
    finally:
        # Everything loaded so far (Django, the SDKs, the URLconf) lives as long as the process:
        # move it out of the collector's view, so collections under load only scan request garbage.
        gc.collect()
        gc.freeze()


async def _configuration_load() -> None:
    try:
        snapshot = await sync_to_async(config_snapshot, thread_sensitive=False)()
    except EncryptionKeyError as exc:
        raise StartupError(str(exc)) from exc
    except DatabaseError as exc:
        # Not fatal: /readyz reports it, and the worker recovers when the database comes back.
        logger.warning("configuration not loaded at startup (database unavailable: %s)", exc)
        return
    environments = snapshot.environments.values()
    logger.info(
        "configuration loaded: %d connections, %d resources, %d API keys in %d environments",
        sum(len(env.connections) for env in environments),
        sum(len(env.resources) for env in environments),
        len(snapshot.api_keys_by_digest),
        len(environments),
    )


async def _audit_spool_replay() -> None:
    from gateway.audit.spool import audit_spool_replay

    try:
        await sync_to_async(audit_spool_replay, thread_sensitive=False)()
    except Exception as exc:  # never fatal: the files stay for the next start
        logger.warning("spooled audit records not written yet (%s: %s)", type(exc).__name__, exc)


DRAIN_SECONDS = 1.5
"""After the server gave up on open requests: how long they have to finish their audit entry."""


async def gateway_shutdown() -> None:
    from gateway.asgi.handler import requests_drained
    from gateway.audit.writer import audit_shutdown
    from gateway.providers.registry import providers_close

    stopping = list(_background)
    for task in stopping:
        task.cancel()
    _background.clear()
    # The server starts this right after cancelling what was still open: let those requests end
    # (error event, audit entry) before the audit's last flush, and before their clients close.
    await requests_drained(DRAIN_SECONDS)
    await settlements_finished(1.0)  # their usage replaces their reservations
    if stopping:  # the upstream limits' last save
        await asyncio.wait(stopping, timeout=2.5)
    await providers_close()
    await sync_to_async(audit_shutdown, thread_sensitive=False)()
