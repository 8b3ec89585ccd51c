"""Retention (DESIGN.md 2.12): audit records older than `VMX_AUDIT_RETENTION_DAYS` and rollups
(per minute, hour and day) older than `VMX_ROLLUP_RETENTION_DAYS` are deleted (0 keeps them
forever); so are the learned upstream limits not heard of for `VMX_UPSTREAM_LIMITS_RETENTION_DAYS`
whose mark (if any) has ended.

Invariants:
- Exactly what is older than the retention goes: a record of the cut-off instant stays.
- Deletes run in chunks of `PURGE_CHUNK` rows, each its own short transaction, with a pause
  between them: a purge of millions of rows never holds the database (SQLite's single writer
  included) long enough to stall the audit writer, so it is safe while serving.
- The server runs it itself, once a day across every worker and instance on one database: a
  worker runs it only when its conditional update of the `MaintenanceRun` row claims it, which
  needs no success in 24 hours and no claim within the lease (15 minutes). A failed purge is thus
  retried at the first hourly check after its lease, never a day later; a run renews its lease
  after every chunk, so a long one is not started a second time beside itself.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from asgiref.sync import sync_to_async
from django.conf import settings
from django.db import IntegrityError, connection, models, transaction
from django.utils import timezone

from gateway.core.logs import ThrottledLog
from gateway.models import (
    AuditRecord,
    DailyUsageRollup,
    HourlyUsageRollup,
    MaintenanceRun,
    UpstreamRateLimit,
    UsageRollup,
)

logger = logging.getLogger("vmx.retention")
_failures = ThrottledLog(logger, interval=3600.0)

PURGE_CHUNK = 5_000
PURGE_PAUSE_SECONDS = 0.05
"""Between chunks when serving: the audit writer's batches get the database in between."""
PURGE_EVERY = timedelta(hours=24)
PURGE_JOB = "audit_purge"
PURGE_LEASE = timedelta(minutes=15)
"""A claimed run that has not succeeded within this is claimed again (its worker failed or died)."""
NEVER = datetime(2000, 1, 1, tzinfo=UTC)
CHECK_EVERY_SECONDS = 3600.0
"""How often a worker asks whether today's purge is still to run (with jitter, see below)."""


@dataclass(frozen=True, slots=True)
class PurgeReport:
    audit_before: datetime | None
    """Records created before this were deleted (None: kept forever)."""
    audit_records: int
    rollups_before: datetime | None
    rollups: int
    """Per-minute, per-hour and per-day rollup rows deleted."""
    upstream_limits: int = 0
    """Learned upstream limits deleted (not heard of for the retention, no mark running)."""


def retention_cutoffs(*, now: datetime | None = None) -> tuple[datetime | None, datetime | None]:
    now = now or timezone.now()
    return (
        _cutoff(now, settings.VMX_AUDIT_RETENTION_DAYS),
        _cutoff(now, settings.VMX_ROLLUP_RETENTION_DAYS),
    )


def _cutoff(now: datetime, days: int) -> datetime | None:
    """`days` before `now`; None (keep forever) for 0 or less, or a retention reaching before the
    calendar's first day (nothing can be older)."""
    if days <= 0:
        return None
    try:
        return now - timedelta(days=days)
    except OverflowError:
        return None


def audit_purge(
    *,
    now: datetime | None = None,
    dry_run: bool = False,
    chunk: int = PURGE_CHUNK,
    pause: float = 0.0,
    heartbeat: Callable[[], None] | None = None,
) -> PurgeReport:
    """Delete what is older than the retention (or, with `dry_run`, count it); `heartbeat` is
    called after every chunk (the scheduled run renews its lease with it)."""
    audit_before, rollups_before = retention_cutoffs(now=now)
    purge = functools.partial(_purge, dry_run=dry_run, chunk=chunk, pause=pause, heartbeat=heartbeat)
    return PurgeReport(
        audit_before=audit_before,
        audit_records=purge(AuditRecord, "created_at", audit_before),
        rollups_before=rollups_before,
        rollups=purge(UsageRollup, "minute", rollups_before)
        # An hour or a day goes once all of it is older than the cut-off (they start on the hour
        # and at midnight, UTC).
        + purge(HourlyUsageRollup, "hour", _floor(rollups_before, "hour"))
        + purge(DailyUsageRollup, "day", _floor(rollups_before, "day")),
        upstream_limits=_upstream_limits_purge(now=now or timezone.now(), dry_run=dry_run),
    )


def _upstream_limits_purge(*, now: datetime, dry_run: bool) -> int:
    before = _cutoff(now, settings.VMX_UPSTREAM_LIMITS_RETENTION_DAYS)
    if before is None:
        return 0
    stale = UpstreamRateLimit.objects.filter(seen_at__lt=before).exclude(exhausted_until__gt=now)
    if dry_run:
        return stale.count()
    deleted, _ = stale.delete()  # one row per connection x model that was ever seen: few
    return deleted


def _floor(moment: datetime | None, unit: str) -> datetime | None:
    if moment is None:
        return None
    start = moment.astimezone(UTC).replace(minute=0, second=0, microsecond=0)
    return start.replace(hour=0) if unit == "day" else start


def _purge(
    model: type[models.Model],
    field: str,
    before: datetime | None,
    *,
    dry_run: bool,
    chunk: int,
    pause: float,
    heartbeat: Callable[[], None] | None,
) -> int:
    if before is None:
        return 0
    older = model._default_manager.filter(**{f"{field}__lt": before})
    if dry_run:
        return older.count()
    table = connection.ops.quote_name(model._meta.db_table)
    deleted = 0
    while True:
        ids = list(older.order_by(field).values_list("pk", flat=True)[:chunk])
        if not ids:
            return deleted
        # A plain DELETE by primary key: nothing refers to these rows, and the ORM's delete()
        # would load every row first to send signals nobody needs here.
        with transaction.atomic(), connection.cursor() as cursor:
            cursor.execute(f"DELETE FROM {table} WHERE id IN ({', '.join(['%s'] * len(ids))})", ids)  # noqa: S608
            deleted += cursor.rowcount
        if heartbeat is not None:
            heartbeat()
        if pause:
            time.sleep(pause)


def maintenance_claim(
    *, name: str, every: timedelta, lease: timedelta = PURGE_LEASE, now: datetime | None = None
) -> bool:
    """Whether this caller runs job `name` now: when it has not succeeded within `every` and no
    other caller claimed it within `lease`, across every process on this database. A failed run
    is therefore retried after its lease, not after `every`; the caller reports success with
    `maintenance_succeeded`."""
    now = now or timezone.now()
    for _ in range(2):  # the row may be created by someone else between our read and insert
        try:
            with transaction.atomic():
                MaintenanceRun.objects.get_or_create(
                    name=name, defaults={"last_started_at": datetime(2000, 1, 1, tzinfo=UTC)}
                )
            break
        except IntegrityError:
            continue
    claimed = (
        MaintenanceRun.objects.filter(name=name, last_started_at__lte=now - lease)
        .filter(models.Q(last_succeeded_at__isnull=True) | models.Q(last_succeeded_at__lte=now - every))
        .update(last_started_at=now)
    )
    return claimed == 1


def maintenance_renew(*, name: str, now: datetime) -> None:
    """Extend a running job's lease: a long run is not claimed again by another worker."""
    MaintenanceRun.objects.filter(name=name).update(last_started_at=now)


def maintenance_succeeded(*, name: str, now: datetime | None = None) -> None:
    MaintenanceRun.objects.filter(name=name).update(last_succeeded_at=now or timezone.now())


def purge_if_due(*, now: datetime | None = None, pause: float = PURGE_PAUSE_SECONDS) -> PurgeReport | None:
    """Today's purge, if none succeeded in the last 24 hours and no other worker or instance is
    running it (claimed within its lease). A purge that fails is tried again at a check after
    its lease."""
    if not maintenance_claim(name=PURGE_JOB, every=PURGE_EVERY, now=now):
        return None
    started = time.monotonic()
    claimed_at = now or timezone.now()

    def renew_lease() -> None:
        maintenance_renew(name=PURGE_JOB, now=claimed_at + timedelta(seconds=time.monotonic() - started))

    report = audit_purge(now=now, pause=pause, heartbeat=renew_lease)
    maintenance_succeeded(name=PURGE_JOB, now=now)
    logger.info(
        "retention: deleted %d audit records before %s, %d rollups before %s and %d learned upstream limits in %.1f s",
        report.audit_records,
        report.audit_before,
        report.rollups,
        report.rollups_before,
        report.upstream_limits,
        time.monotonic() - started,
    )
    return report


async def purge_keep_scheduled() -> None:
    """Run the purge when it is due, checking hourly until cancelled (server lifespan). The first
    check waits a random part of a minute to an hour, so workers starting together do not all
    ask at once (only one would run it anyway)."""
    await asyncio.sleep(random.uniform(60.0, CHECK_EVERY_SECONDS))
    while True:
        try:
            await sync_to_async(purge_if_due, thread_sensitive=False)()
        except Exception as exc:  # the database is down: try again at the next check
            _failures.warning("purge", "retention purge failed (%s: %s)", type(exc).__name__, exc)
        await asyncio.sleep(CHECK_EVERY_SECONDS)
