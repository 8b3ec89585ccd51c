"""Writing audit records to the database: one multi-row insert per batch, counted in the rollups
in the same transaction.

Invariants (DESIGN.md 2.9, 2.13):
- A record is counted in the rollups exactly when it is written; a replayed record that is
  already there (same request id) is neither written nor counted twice.
- A batch the database refuses for its content is written row by row; a refused row is cleaned
  (NULs, lone surrogates, over-long text, an invalid address) and written, or dropped, logged and
  counted (`audit_records_dropped()`). A database that refuses everything is "unavailable": the
  records stay with the caller, never dropped as if they were at fault.
"""

from __future__ import annotations

import ipaddress
import logging
import threading
from collections.abc import Mapping
from typing import Any

from django.db import DataError, connection, models, transaction

from gateway.audit.rollups import (
    BUCKETS,
    DIMENSIONS,
    TOKEN_FIELDS,
    Rollup,
    RollupKey,
    rollups_coarsened,
    rollups_from_rows,
)
from gateway.core.logs import ThrottledLog
from gateway.observability import metrics

logger = logging.getLogger("vmx.audit")
_failures = ThrottledLog(logger, interval=10.0)

BATCH_SIZE = 100
"""Records written in one INSERT (and queued before the writer wakes)."""

_dropped_lock = threading.Lock()
_dropped = 0


def audit_records_dropped_add(count: int) -> None:
    """Count records lost for good (refused even cleaned, overflowed, unspoolable)."""
    global _dropped
    with _dropped_lock:  # the writer thread and the event loop both drop
        _dropped += count
    metrics.audit_records_dropped_total.inc(count)


def audit_records_dropped() -> int:
    """Records refused by the database even cleaned, overflowed or lost at shutdown, since start."""
    return _dropped


class DatabaseUnavailableError(Exception):
    """The database could not be reached: records stay queued."""


def rows_write(rows: list[dict[str, Any]]) -> int:
    """Write `rows`; isolate and clean what the database refuses. Returns rows written (or already there).

    Raises `DatabaseUnavailableError` when nothing can be written (the database is unreachable, or
    refuses every record for a reason of its own, such as a schema older than this code): the
    records must then stay queued, never be dropped as if they were at fault.
    """
    from gateway.models import AuditRecord

    try:
        _insert_counted(AuditRecord, rows)
        return len(rows)
    except Exception as exc:
        if not _refused_for_content(exc):
            raise DatabaseUnavailableError(error_text(exc)) from exc
    # One row spoils the batch: find it, write the others.
    written = 0
    for row in rows:
        try:
            _insert_counted(AuditRecord, [row])
            written += 1
        except Exception as exc:
            if not _refused_for_content(exc):
                raise DatabaseUnavailableError(error_text(exc)) from exc
            written += _row_write_cleaned(AuditRecord, row)
    return written


def _insert_counted(model: Any, rows: list[dict[str, Any]]) -> None:
    """Insert audit rows and add them to the rollups, in one transaction: a record is counted
    exactly when it is written (a replayed record that is already there counts once)."""
    with transaction.atomic():
        inserted = _insert(model, rows)
        rollups_add([row for row in rows if row["request_id"] in inserted])


def rollups_add(rows: list[dict[str, Any]]) -> None:
    """Add `rows` to the per-minute, per-hour and per-day rollups: one upsert per rollup row, which
    the database adds to whatever other writers (workers, instances) added."""
    from gateway.models import DailyUsageRollup, HourlyUsageRollup, UsageRollup

    by_minute = rollups_from_rows(rows)
    rollups_upsert(by_minute, model=UsageRollup, period_field="minute")
    rollups_upsert(rollups_coarsened(by_minute, unit="hour"), model=HourlyUsageRollup, period_field="hour")
    rollups_upsert(rollups_coarsened(by_minute, unit="day"), model=DailyUsageRollup, period_field="day")


def rollups_upsert(grouped: Mapping[RollupKey, Rollup], *, model: Any, period_field: str) -> None:
    """Add `grouped` to `model`'s rows (`model` may be a migration's historical one)."""
    if not grouped:
        return
    sql, columns = _rollup_upsert_sql(model, period_field)
    date_field = model._meta.get_field(period_field)
    kept = _dimensions_kept(model)
    params = []
    # In key order, and minutes before hours before days (rollups_add): two writers adding to the
    # same rows lock them in the same order, so concurrent transactions on PostgreSQL wait for
    # each other instead of deadlocking.
    for key, rollup in sorted(grouped.items(), key=lambda item: item[0]):
        values: list[Any] = [date_field.get_db_prep_save(key[0], connection), *(key[i] for i in kept)]
        values += [rollup.requests, *(rollup.tokens[name] for name in TOKEN_FIELDS)]
        values += [rollup.cost_usd, rollup.priced, rollup.duration_ms_sum, rollup.ttft_ms_sum, rollup.ttft_count]
        values += [*rollup.latency, *rollup.ttft]
        assert len(values) == len(columns)
        params.append(values)
    with connection.cursor() as cursor:
        cursor.executemany(sql, params)


_ROLLUP_SUMS = (
    "requests",
    *TOKEN_FIELDS,
    "cost_usd",
    "priced",
    "duration_ms_sum",
    "ttft_ms_sum",
    "ttft_count",
    *(f"latency_{i:02d}" for i in range(BUCKETS)),
    *(f"ttft_{i:02d}" for i in range(BUCKETS)),
)


def _dimensions_kept(model: Any) -> list[int]:
    """The positions (in a rollup key) of the dimensions `model` has: all of them, but for a
    migration's historical model from before workspaces (the backfill of 0005), which has no
    `workspace` or `environment` (its rows are default/default's when the columns come)."""
    fields = {field.name for field in model._meta.get_fields()}
    return [index for index, name in enumerate(DIMENSIONS) if index and name in fields]


def _rollup_upsert_sql(model: Any, period_field: str) -> tuple[str, list[str]]:
    quote = connection.ops.quote_name
    table = quote(model._meta.db_table)
    dimensions = [period_field, *(DIMENSIONS[i] for i in _dimensions_kept(model))]
    columns = [*dimensions, *_ROLLUP_SUMS]
    conflict = ", ".join(quote(name) for name in dimensions)
    added = ", ".join(f"{quote(name)} = {table}.{quote(name)} + excluded.{quote(name)}" for name in _ROLLUP_SUMS)
    # Identifiers come from the model and are quoted; every value is a parameter.
    sql = (
        f"INSERT INTO {table} ({', '.join(quote(c) for c in columns)}) VALUES ({', '.join(['%s'] * len(columns))}) "  # noqa: S608
        f"ON CONFLICT ({conflict}) DO UPDATE SET {added}"
    )
    return sql, columns


def _refused_for_content(exc: Exception) -> bool:
    """Whether the database refused the values (NUL, an invalid address, an unadaptable object)
    rather than the write itself (connection, permissions, schema)."""
    return isinstance(exc, DataError | TypeError | ValueError | OverflowError)


def _row_write_cleaned(model: Any, row: dict[str, Any]) -> int:
    try:
        _insert_counted(model, [row_cleaned(model, row)])
        return 1
    except Exception as exc:
        if not _refused_for_content(exc):
            raise DatabaseUnavailableError(error_text(exc)) from exc
        audit_records_dropped_add(1)
        _failures.warning(
            "dropped",
            "audit record %s dropped: the database refused it even cleaned (%s)",
            row.get("request_id", "?"),
            error_text(exc),
        )
        return 0


def row_cleaned(model: Any, row: dict[str, Any]) -> dict[str, Any]:
    """`row` as the database will take it: no NUL or lone surrogate anywhere, text cut to its column."""
    cleaned: dict[str, Any] = {}
    for name, value in row.items():
        value = _clean_value(value)
        try:
            column = model._meta.get_field(name)
        except Exception:
            column = None
        if isinstance(column, models.GenericIPAddressField) and value is not None:
            try:
                value = str(ipaddress.ip_address(value))
            except ValueError:
                value = None
        elif isinstance(column, models.CharField) and isinstance(value, str) and column.max_length:
            value = value[: column.max_length]
        cleaned[name] = value
    return cleaned


def _clean_value(value: Any) -> Any:
    if isinstance(value, str):
        return value.replace("\x00", "").encode("utf-8", "replace").decode("utf-8")
    if isinstance(value, dict):
        return {_clean_value(str(k)): _clean_value(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_clean_value(v) for v in value]
    return value


def error_text(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {str(exc).strip().splitlines()[0] if str(exc).strip() else ''}"[:300]


def _insert(model: Any, rows: list[dict[str, Any]]) -> set[str]:
    """One multi-row INSERT … ON CONFLICT DO NOTHING RETURNING request_id, in a transaction:
    returns the request ids actually inserted (not those already there).

    Values are prepared by their fields (JSON, datetimes, per backend) as the ORM would, without
    building model instances and compiling the statement per batch: under load the ORM's
    bulk_create cost more CPU than the requests it recorded. Plain text, number and boolean
    values need no preparation and are passed as they are.
    """
    fields = [f for f in model._meta.concrete_fields if not f.primary_key]
    quote = connection.ops.quote_name
    columns = ", ".join(quote(f.column) for f in fields)
    row_placeholders = "(" + ", ".join(["%s"] * len(fields)) + ")"
    # Identifiers come from the model and are quoted; every value is a parameter.
    sql = (
        f"INSERT INTO {quote(model._meta.db_table)} ({columns}) VALUES {', '.join([row_placeholders] * len(rows))} "  # noqa: S608
        f"ON CONFLICT DO NOTHING RETURNING {quote('request_id')}"
    )
    plain = [isinstance(f, _PLAIN_FIELDS) and not isinstance(f, _PREPARED_FIELDS) for f in fields]
    defaults = [f.get_default() for f in fields]
    params = [
        value if is_plain else field.get_db_prep_save(value, connection)
        for row in rows
        for field, is_plain, value in zip(
            fields, plain, (row.get(f.attname, d) for f, d in zip(fields, defaults, strict=True)), strict=True
        )
    ]
    with transaction.atomic(), connection.cursor() as cursor:
        cursor.execute(sql, params)
        return {found[0] for found in cursor.fetchall()}


_PLAIN_FIELDS = (models.CharField, models.TextField, models.BooleanField, models.IntegerField, models.FloatField)
_PREPARED_FIELDS = (models.GenericIPAddressField,)
