"""Per-minute rollups of the audit: the pure aggregation (gateway/rollups.py) and the writer that
adds them in the same transaction as the records (gateway/audit.py)."""

from __future__ import annotations

import itertools
import math
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.audit.rollups import BUCKET_BOUNDS_MS, BUCKETS, bucket_of, percentile, rollups_coarsened, rollups_from_rows
from gateway.audit.store import rows_write
from gateway.models import AuditRecord, DailyUsageRollup, HourlyUsageRollup, UsageRollup

T0 = datetime(2026, 12, 1, 10, 0, 0, tzinfo=UTC)


def row(n: int, *, at: datetime = T0, **fields):
    return {
        "request_id": f"req_roll_{n}",
        "created_at": at,
        "endpoint": "chat.completions",
        "api_key": "ci",
        "resource": "default",
        "status_code": 200,
        "duration_ms": 120.0,
        "ttft_ms": None,
        "connection": "up",
        "model": "gpt-4.1",
        "input_tokens": 10,
        "cached_tokens": 2,
        "output_tokens": 5,
        "reasoning_tokens": 1,
        "total_tokens": 15,
        "cost_usd": 0.5,
        **fields,
    }


def test_buckets_grow_by_half_and_cover_two_minutes():
    assert BUCKET_BOUNDS_MS[0] == 10
    assert all(b / a == pytest.approx(1.5, rel=0.01) for a, b in itertools.pairwise(BUCKET_BOUNDS_MS))
    assert BUCKET_BOUNDS_MS[-1] > 100_000
    assert bucket_of(0) == 0 and bucket_of(10) == 0 and bucket_of(10.01) == 1
    assert bucket_of(10**9) == BUCKETS - 1


@settings(max_examples=60, deadline=None)
@given(st.lists(st.floats(min_value=1, max_value=100_000), min_size=20, max_size=400), st.sampled_from([0.5, 0.95]))
def test_a_percentile_read_back_is_within_one_bucket(durations, fraction):
    histogram = [0] * BUCKETS
    for duration in durations:
        histogram[bucket_of(duration)] += 1
    estimate = percentile(histogram, fraction)
    ordered = sorted(durations)
    true = ordered[max(0, math.ceil(fraction * len(ordered)) - 1)]
    assert estimate is not None
    # Both fall in the same bucket or a neighbour: within a factor of 1.5 (and 10 ms at the bottom).
    assert true / 1.5 - 10 <= estimate <= true * 1.5 + 10


def test_rollups_add_up_and_split_by_minute_and_status_class():
    rows = [row(1), row(2, status_code=502, cost_usd=None, ttft_ms=40.0), row(3, at=T0 + timedelta(seconds=59.9))]
    rows.append(row(4, at=T0 + timedelta(minutes=1)))
    grouped = rollups_from_rows(rows)
    first_ok = grouped[(T0, "default", "default", "chat.completions", "default", "ci", "up", "gpt-4.1", 2)]
    assert first_ok.requests == 2 and first_ok.tokens["input_tokens"] == 20
    assert first_ok.cost_usd == 1.0 and first_ok.priced == 2
    failed = grouped[(T0, "default", "default", "chat.completions", "default", "ci", "up", "gpt-4.1", 5)]
    assert failed.requests == 1 and failed.priced == 0 and failed.ttft_count == 1
    assert sum(failed.ttft) == 1 and sum(failed.latency) == 1
    assert (
        grouped[
            (T0 + timedelta(minutes=1), "default", "default", "chat.completions", "default", "ci", "up", "gpt-4.1", 2)
        ].requests
        == 1
    )
    # The same names in another environment are another row (DESIGN.md 2.15).
    tenants = rollups_from_rows([row(5), row(6, workspace="acme", environment="prod")])
    assert {key[1:3] for key in tenants} == {("default", "default"), ("acme", "prod")}
    assert all(rollup.requests == 1 for rollup in tenants.values())


@pytest.mark.django_db(transaction=True)
def test_the_writer_counts_each_record_once():
    written = rows_write([row(n) for n in range(5)] + [row(9, status_code=429, cost_usd=None)])
    assert written == 6
    # A replay of records already written (a spool after a partial write) adds nothing.
    rows_write([row(0), row(1), row(10)])
    rollups = {r.status_class: r for r in UsageRollup.objects.all()}
    assert rollups[2].requests == 6 and rollups[2].input_tokens == 60 and rollups[2].cost_usd == pytest.approx(3.0)
    assert rollups[4].requests == 1 and rollups[4].priced == 0
    assert AuditRecord.objects.count() == 7
    assert sum(getattr(rollups[2], f"latency_{i:02d}") for i in range(BUCKETS)) == 6


@pytest.mark.django_db(transaction=True)
def test_a_record_the_database_refuses_is_counted_as_it_is_written():
    rows_write([row(1), row(2, resource="bad\x00name"), row(3)])
    assert AuditRecord.objects.count() == 3  # the NUL was cleaned, the record written
    assert sum(UsageRollup.objects.values_list("requests", flat=True)) == 3


@pytest.mark.django_db(transaction=True)
def test_the_migration_counts_the_records_written_before_rollups_existed():
    from django.core.management import call_command
    from django.db import connection
    from django.db.migrations.executor import MigrationExecutor

    call_command("migrate", "gateway", "0003", verbosity=0)
    old_apps = MigrationExecutor(connection).loader.project_state(("gateway", "0003_capacity_counters")).apps
    old_audit = old_apps.get_model("gateway", "AuditRecord")
    for n in range(12):
        old_audit.objects.create(
            request_id=f"req_old_{n}",
            created_at=T0 + timedelta(seconds=20 * n),
            endpoint="responses",
            resource="default",
            status_code=200 if n % 4 else 500,
            duration_ms=50.0,
            input_tokens=3,
            total_tokens=3,
        )
    call_command("migrate", "gateway", verbosity=0)
    assert sum(UsageRollup.objects.values_list("requests", flat=True)) == 12
    assert sum(UsageRollup.objects.filter(status_class=5).values_list("requests", flat=True)) == 3
    assert UsageRollup.objects.values("minute").distinct().count() == 4  # 12 records, 20 s apart
    # ... and the per-hour rollups from those minutes (0006).
    hours = {h.status_class: h for h in HourlyUsageRollup.objects.all()}
    assert hours[2].hour == T0 and hours[2].requests == 9 and hours[5].requests == 3
    assert hours[2].input_tokens == 27 and hours[2].latency_04 + hours[5].latency_04 == 12  # 50 ms: bucket 4
    days = {d.status_class: d for d in DailyUsageRollup.objects.all()}
    assert days[2].day == T0.replace(hour=0) and days[2].requests == 9 and days[5].requests == 3


@pytest.mark.django_db(transaction=True)
def test_an_hour_holds_the_sums_of_its_minutes_and_a_day_of_its_hours():
    # From 10:00 every 55 minutes to 00:40 the next day, in two batches: 16 records on the first
    # day, 1 on the next; 10:00 and 10:55 share an hour, and so do 21:00 and 21:55.
    rows = [row(n, at=T0 + timedelta(minutes=55 * n), duration_ms=15.0 * n, ttft_ms=9.0 * n) for n in range(17)]
    rows_write(rows[:13])  # the 21:00 hour gets one record from each batch
    rows_write(rows[13:])
    sums = ["requests", "input_tokens", "priced", "ttft_count", *(f"latency_{i:02d}" for i in range(BUCKETS))]
    minutes = list(UsageRollup.objects.all())
    hours = {h.hour: h for h in HourlyUsageRollup.objects.all()}
    days = {d.day: d for d in DailyUsageRollup.objects.all()}
    first_day = T0.replace(hour=0)
    assert sorted(days) == [first_day, first_day + timedelta(days=1)]
    assert days[first_day].requests == 16 and len(hours) == 15
    assert hours[T0.replace(hour=21)].requests == 2
    for rows_of, width in ((hours, timedelta(hours=1)), (days, timedelta(days=1))):
        for start, total in rows_of.items():
            parts = [m for m in minutes if start <= m.minute < start + width]
            for name in sums:
                assert getattr(total, name) == sum(getattr(m, name) for m in parts), name
            assert total.cost_usd == pytest.approx(sum(m.cost_usd for m in parts))
    # The pure coarsening agrees with the database's sums.
    by_day = rollups_coarsened(rollups_from_rows(rows), unit="day")
    assert (
        by_day[(first_day, "default", "default", "chat.completions", "default", "ci", "up", "gpt-4.1", 2)].requests
        == 16
    )
    with pytest.raises(ValueError, match="no rollups per week"):
        rollups_coarsened({}, unit="week")
