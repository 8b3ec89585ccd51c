"""Retention: `vmx_audit_purge` and the daily purge remove exactly what is older than the
retention, in chunks, once a day across every process on the database."""

from __future__ import annotations

import io
from datetime import UTC, datetime, timedelta

import pytest
from django.core.management import call_command
from django.db import OperationalError, connection
from django.utils import timezone

from gateway.audit.retention import PURGE_EVERY, PURGE_JOB, audit_purge, maintenance_claim, purge_if_due
from gateway.audit.store import rows_write
from gateway.models import AuditRecord, DailyUsageRollup, HourlyUsageRollup, UsageRollup

pytestmark = pytest.mark.django_db(transaction=True)

NOW = datetime(2026, 12, 1, 12, 0, 0, tzinfo=UTC)


def write(n: int, created_at: datetime) -> None:
    rows_write(
        [
            {
                "request_id": f"req_ret_{n}",
                "created_at": created_at,
                "endpoint": "chat.completions",
                "resource": "default",
                "status_code": 200,
                "duration_ms": 10.0,
            }
        ]
    )


def test_exactly_what_is_older_than_the_retention_goes(settings):
    settings.VMX_AUDIT_RETENTION_DAYS = 30
    settings.VMX_ROLLUP_RETENTION_DAYS = 400
    cutoff = NOW - timedelta(days=30)
    write(1, cutoff - timedelta(microseconds=1))  # older than the retention: goes
    write(2, cutoff)  # exactly at the cut-off: stays
    write(3, cutoff + timedelta(seconds=1))
    write(4, NOW - timedelta(days=401))  # its rollup is older than the rollups' retention too
    report = audit_purge(now=NOW, chunk=1)  # one row per chunk: the loop, not one big delete
    assert report.audit_records == 2 and report.rollups == 3  # record 4's minute, hour and day
    assert sorted(AuditRecord.objects.values_list("request_id", flat=True)) == ["req_ret_2", "req_ret_3"]
    # Rollups stay longer than the records: usage of last month is still there.
    assert UsageRollup.objects.filter(minute__lt=cutoff).exists()
    assert not UsageRollup.objects.filter(minute__lt=NOW - timedelta(days=400)).exists()
    assert sorted(HourlyUsageRollup.objects.values_list("requests", flat=True)) == [1, 2]  # 11:00; 12:00 (two)
    assert not HourlyUsageRollup.objects.filter(hour__lt=NOW - timedelta(days=400)).exists()
    assert list(DailyUsageRollup.objects.values_list("requests", flat=True)) == [3]  # records 1 to 3: one day


def test_an_hour_goes_once_all_of_it_is_older_than_the_rollups_retention(settings):
    settings.VMX_AUDIT_RETENTION_DAYS = 0
    settings.VMX_ROLLUP_RETENTION_DAYS = 1
    day_before = NOW - timedelta(days=1)  # 12:00 the day before
    write(1, day_before - timedelta(minutes=1))  # 11:59
    write(2, day_before + timedelta(minutes=30))  # 12:30
    write(3, day_before - timedelta(minutes=61, seconds=1))  # 10:58:59
    report = audit_purge(now=NOW + timedelta(minutes=30))  # cut-off 12:30: hour 12:00 is half newer
    assert report.rollups == 2 + 2  # minutes 10:58 and 11:59; hours 10:00 and 11:00; no day yet
    assert list(UsageRollup.objects.values_list("requests", flat=True)) == [1]
    assert [h.hour for h in HourlyUsageRollup.objects.all()] == [day_before]
    # A cut-off exactly on the hour: the hour before it is all older, and goes.
    assert audit_purge(now=NOW + timedelta(hours=1)).rollups == 2  # minute 12:30, hour 12:00
    assert not UsageRollup.objects.exists() and not HourlyUsageRollup.objects.exists()
    # The day goes once all of it is older: at a cut-off of the next midnight, not a moment before.
    midnight = day_before.replace(hour=0) + timedelta(days=1)
    assert audit_purge(now=midnight + timedelta(days=1) - timedelta(seconds=1)).rollups == 0
    assert DailyUsageRollup.objects.get().requests == 3
    assert audit_purge(now=midnight + timedelta(days=1)).rollups == 1
    assert not DailyUsageRollup.objects.exists()


def test_zero_keeps_forever_and_a_dry_run_deletes_nothing(settings):
    settings.VMX_AUDIT_RETENTION_DAYS = 0
    settings.VMX_ROLLUP_RETENTION_DAYS = 1
    write(1, NOW - timedelta(days=1000))
    dry = audit_purge(now=NOW, dry_run=True)
    assert dry.audit_records == 0 and dry.rollups == 3
    # A retention longer than the calendar keeps everything, as 0 does, rather than failing.
    settings.VMX_AUDIT_RETENTION_DAYS = 10**9
    assert audit_purge(now=NOW, dry_run=True).audit_before is None
    settings.VMX_AUDIT_RETENTION_DAYS = 0
    assert UsageRollup.objects.count() == 1 and HourlyUsageRollup.objects.count() == 1
    out = io.StringIO()
    call_command("vmx_audit_purge", stdout=out)
    assert "audit records: deleted 0 kept forever" in out.getvalue()
    assert AuditRecord.objects.count() == 1 and UsageRollup.objects.count() == 0
    assert HourlyUsageRollup.objects.count() == 0 and DailyUsageRollup.objects.count() == 0


def test_the_daily_purge_runs_once_a_day_whoever_asks(settings):
    settings.VMX_AUDIT_RETENTION_DAYS = 30
    write(1, timezone.now() - timedelta(days=31))
    assert purge_if_due() is not None  # the first asker runs it
    write(2, timezone.now() - timedelta(days=31))
    assert purge_if_due() is None  # every other worker and instance, the same day, does not
    assert AuditRecord.objects.filter(request_id="req_ret_2").exists()
    tomorrow = timezone.now() + PURGE_EVERY
    assert maintenance_claim(name=PURGE_JOB, every=PURGE_EVERY, now=tomorrow)
    assert not maintenance_claim(name=PURGE_JOB, every=PURGE_EVERY, now=tomorrow)


def test_learned_upstream_limits_not_heard_of_for_the_retention_are_purged(settings):
    from gateway.models import UpstreamRateLimit

    settings.VMX_UPSTREAM_LIMITS_RETENTION_DAYS = 7
    now = timezone.now()
    for name, seen, until in (
        ("stale", now - timedelta(days=8), None),
        ("recent", now - timedelta(days=6), None),
        ("stale-but-marked", now - timedelta(days=8), now + timedelta(minutes=1)),
    ):
        UpstreamRateLimit.objects.create(connection="c", model=name, seen_at=seen, exhausted_until=until)
    report = audit_purge(now=now)
    assert report.upstream_limits == 1
    assert sorted(UpstreamRateLimit.objects.values_list("model", flat=True)) == ["recent", "stale-but-marked"]


def test_a_failed_purge_is_retried_after_its_lease_not_a_day_later(settings):
    """The database refuses the purge's DELETE: the next check after the lease (15 minutes)
    purges, instead of the old records staying a whole day."""
    settings.VMX_AUDIT_RETENTION_DAYS = 30
    write(1, NOW - timedelta(days=31))

    def refuse_deletes(execute, sql, params, many, context):
        if sql.lstrip().upper().startswith("DELETE"):
            raise OperationalError("database is locked")
        return execute(sql, params, many, context)

    with connection.execute_wrapper(refuse_deletes), pytest.raises(OperationalError):
        purge_if_due(now=NOW, pause=0.0)
    assert AuditRecord.objects.filter(request_id="req_ret_1").exists()

    # While the failed run's lease lasts, nobody runs it (it could still be running elsewhere).
    assert purge_if_due(now=NOW + timedelta(minutes=5), pause=0.0) is None
    report = purge_if_due(now=NOW + timedelta(minutes=16), pause=0.0)
    assert report is not None and report.audit_records == 1
    assert not AuditRecord.objects.filter(request_id="req_ret_1").exists()
    # Having succeeded, the next run is due a day after.
    assert purge_if_due(now=NOW + timedelta(hours=2), pause=0.0) is None
    assert purge_if_due(now=NOW + timedelta(minutes=16) + PURGE_EVERY, pause=0.0) is not None


def test_two_instances_cannot_both_claim_a_due_run(settings):
    later = NOW + timedelta(days=3)
    claims = [maintenance_claim(name="two-instances", every=PURGE_EVERY, now=later) for _ in range(2)]
    assert claims == [True, False]


def test_a_long_purge_renews_its_lease_so_no_other_worker_starts_it_beside_itself(settings, monkeypatch):
    """A purge whose first chunk takes 20 minutes (a big table, a slow disk): another worker asking
    after the 15-minute lease must not claim it while it still runs."""
    import gateway.audit.retention as retention

    settings.VMX_AUDIT_RETENTION_DAYS = 30
    settings.VMX_ROLLUP_RETENTION_DAYS = 30
    write(1, NOW - timedelta(days=31))
    elapsed = [0.0]
    monkeypatch.setattr(retention.time, "monotonic", lambda: elapsed[0])
    claims_while_running: list[bool] = []

    def slow_deletes(execute, sql, params, many, context):
        result = execute(sql, params, many, context)
        if sql.lstrip().upper().startswith("DELETE"):
            if not elapsed[0]:
                elapsed[0] = 20 * 60.0  # the first chunk took 20 minutes
            else:  # a later chunk: another worker asks, past the first claim's lease
                later = NOW + timedelta(minutes=21)
                claims_while_running.append(maintenance_claim(name=PURGE_JOB, every=PURGE_EVERY, now=later))
        return result

    with connection.execute_wrapper(slow_deletes):
        report = purge_if_due(now=NOW, pause=0.0)
    assert report is not None and report.audit_records == 1 and report.rollups >= 1
    assert claims_while_running and not any(claims_while_running)
