"""Audit: one record per client request, queued in memory and written in batches off the request path.

Invariants (DESIGN.md 2.9, 2.13):
- `AuditEntry.finish()` is idempotent and never raises into the request; a queued record reaches
  the database within `FLUSH_SECONDS` (or as soon as `BATCH_SIZE` are waiting).
- The writer never stops and no record blocks the ones behind it: a batch the database refuses
  for its content is written row by row; a refused row is cleaned (NULs, lone surrogates, over-long
  text, an invalid address) and written, or dropped, logged and counted (`audit_records_dropped()`).
- If the database is unreachable, records stay queued (up to `MAX_QUEUED`) and are retried with
  a growing pause, logging one line per 10 s. At shutdown what cannot be written goes to the spool
  directory (`VMX_AUDIT_SPOOL_DIR`), and the next start writes it (`audit_spool_replay`).
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import hashlib
import ipaddress
import logging
import os
import re
import secrets
import threading
import time
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson
from django.conf import settings
from django.db import DataError, close_old_connections, connection, models, transaction

from gateway import metrics
from gateway.errors import CapacityExceededError, GatewayError
from gateway.logs import ThrottledLog
from gateway.pricing import PriceList
from gateway.rollups import BUCKETS, DIMENSIONS, TOKEN_FIELDS, Rollup, RollupKey, rollups_coarsened, rollups_from_rows
from gateway.usage import Usage

logger = logging.getLogger("vmx.audit")
_failures = ThrottledLog(logger, interval=10.0)

FLUSH_SECONDS = 0.1
BATCH_SIZE = 100
MAX_QUEUED = 100_000
MAX_RETRY_PAUSE = 5.0
STOP_WAIT_SECONDS = 2.0
"""At shutdown, how long to wait for a write in progress before spooling what is queued."""
STALE_CLAIM_SECONDS = 600.0
"""A spool file claimed this long ago by a worker that never finished it is replayed again."""

_dropped_lock = threading.Lock()
_dropped = 0


def _count_dropped(count: int) -> None:
    global _dropped
    with _dropped_lock:  # the writer thread and the event loop both drop
        _dropped += count
    metrics.audit_records_dropped_total.inc(count)


def audit_records_dropped() -> int:
    """Records refused by the database even cleaned, overflowed or lost at shutdown, since start."""
    return _dropped


@dataclass(slots=True)
class AuditEntry:
    request_id: str
    endpoint: str
    stream: bool = False
    api_key: str = ""
    resource: str = ""
    correlation_id: str = ""
    metadata: dict[str, str] = field(default_factory=dict)
    source_ip: str | None = None
    started: float = field(default_factory=time.monotonic)
    created_at: datetime = field(default_factory=lambda: datetime.now(UTC))
    ttft_ms: float | None = None
    connection: str = ""
    model: str = ""
    attempts: list[dict[str, Any]] = field(default_factory=list)
    usage: Usage = field(default_factory=Usage)
    request_body: Any = None
    response_body: Any = None
    prices: PriceList | None = None
    """The configuration's prices when the request started; None: the cost is not computed."""
    on_finish: Callable[[AuditEntry, float | None], None] | None = None
    """Called once with the entry and its cost when the request ends (capacity settles here)."""
    resource_known: bool = False
    """`resource` names a configured resource (metrics label it by name; otherwise `(unknown)`)."""
    finished: bool = False
    stream_open: bool = False
    """Counted in `vmx_open_streams` (from the first byte of a stream to its end)."""

    def attempt(
        self,
        *,
        connection: str,
        model: str,
        started: float,
        error: GatewayError | None,
        status_code: int | None = None,
        notes: list[str] | None = None,
        tries: int = 1,
    ) -> None:
        """Record one leg. `notes` say how the leg's call was revised (e.g. retried without reasoning);
        `tries` counts its HTTP calls (0 when the leg was skipped without calling)."""
        if error is not None:
            # The upstream's own status when it answered; None for timeouts and connect errors.
            status_code = getattr(error, "upstream_status", None)
        entry: dict[str, Any] = {
            "connection": connection,
            "model": model,
            "status_code": status_code,
            "error": error.message if error is not None else None,
            "duration_ms": round((time.monotonic() - started) * 1000, 1),
            "tries": tries,
        }
        if notes:
            entry["notes"] = notes
        self.attempts.append(entry)
        outcome = _outcome(error, tries=tries)
        metrics.attempt_finished(connection=connection, model=model, outcome=outcome)
        if tries == 0 and outcome in ("capacity_exceeded", "upstream_rate_limited"):
            metrics.capacity_rejected(scope="connection", code=outcome)

    def first_byte(self) -> None:
        if self.stream and not self.stream_open and not self.finished:
            self.stream_open = True
            metrics.open_streams.inc()
        if self.ttft_ms is None:
            self.ttft_ms = round((time.monotonic() - self.started) * 1000, 1)

    def finish(self, *, status_code: int, error_type: str = "", error_message: str = "") -> None:
        if self.finished:
            return
        self.finished = True
        cost_usd = self.cost_usd()
        if self.on_finish is not None:
            try:
                self.on_finish(self, cost_usd)
            except Exception:  # never into the request: the record below must still be written
                logger.exception("settling request %s failed", self.request_id)
        row = {
            "request_id": self.request_id,
            "created_at": self.created_at,
            "endpoint": self.endpoint,
            "stream": self.stream,
            "api_key": self.api_key,
            "resource": self.resource[:300],
            "correlation_id": self.correlation_id[:256],
            "metadata": self.metadata,
            "source_ip": self.source_ip,
            "status_code": status_code,
            "error_type": error_type[:64],
            "error_message": error_message[:4000],
            "duration_ms": round((time.monotonic() - self.started) * 1000, 1),
            "ttft_ms": self.ttft_ms,
            "connection": self.connection,
            "model": self.model[:200],
            "attempts": self.attempts,
            **self.usage.as_dict(),
            "cost_usd": cost_usd,
        }
        if settings.VMX_AUDIT_BODIES:
            row["request_body"] = summarize_payloads(self.request_body)
            row["response_body"] = summarize_payloads(self.response_body)
        _writer.submit(row)
        if self.stream_open:
            self.stream_open = False
            metrics.open_streams.dec()
        metrics.request_finished(row, resource_known=self.resource_known)

    def cost_usd(self) -> float | None:
        """What the answer cost at the model's price; None when no model answered or it has no price."""
        if not self.model or self.prices is None:
            return None
        price = self.prices.price(self.model)
        if price is None:
            _unpriced(self.model)
            return None
        usage = self.usage
        return price.cost_usd(
            input_tokens=usage.input_tokens, cached_tokens=usage.cached_tokens, output_tokens=usage.output_tokens
        )

    def finish_error(self, error: GatewayError) -> None:
        # Connection limits are counted per leg skipped (`attempt`); a 429 because every leg was
        # skipped is not counted again.
        if isinstance(error, CapacityExceededError) and not self.finished and error.scope != "connection":
            metrics.capacity_rejected(scope=error.scope or "api_key", code=error.code or "capacity_exceeded")
        self.finish(
            status_code=error.status_code, error_type=error.code or error.openai_type, error_message=error.message
        )


_unpriced_models: set[str] = set()
MAX_UNPRICED_REPORTED = 1_000


def _outcome(error: GatewayError | None, *, tries: int) -> str:
    """A leg's outcome as a metric label: a small fixed set, never text from the upstream."""
    if error is None:
        return "ok"
    if tries == 0:  # skipped without a call: the error names why (routing's two reasons)
        return error.message if error.message in ("capacity_exceeded", "upstream_rate_limited") else "skipped"
    status = getattr(error, "upstream_status", None)
    if isinstance(status, int):
        return f"http_{status}"
    return type(error).default_code or "error"


def _unpriced(model: str) -> None:
    """One log line per model without a price (per process), so an operator learns to add one."""
    if model in _unpriced_models or len(_unpriced_models) >= MAX_UNPRICED_REPORTED:
        return
    _unpriced_models.add(model)
    logger.warning("no price for model '%s': its audit records have no cost_usd; add a `pricing` entry for it", model)


def _closing_connection(target: Callable[[], None]) -> Callable[[], None]:
    """`target`, then close the database connection its thread opened (a thread's connection is
    its own and would otherwise stay open, holding a server slot, after the thread ended)."""

    def run() -> None:
        try:
            target()
        finally:
            connection.close()

    return run


class DatabaseUnavailableError(Exception):
    """The database could not be reached: records stay queued."""


class _AuditWriter:
    def __init__(self) -> None:
        self._queue: deque[dict[str, Any]] = deque()
        self._wake = threading.Event()
        self._write_lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._pid = 0
        self._stopping = False
        self._stopped = False
        self._failing = False
        """The last write failed (the database is down): at shutdown, spool without trying again."""
        self._writing: list[dict[str, Any]] = []
        """The batch being written now: spooled too if that write hangs at shutdown."""

    def submit(self, row: dict[str, Any]) -> None:
        if len(self._queue) >= MAX_QUEUED:
            self._queue.popleft()
            _count_dropped(1)
            _failures.warning("queue-full", "audit queue full (%d records): dropped the oldest record", MAX_QUEUED)
        self._queue.append(row)
        metrics.audit_queue_depth.set(len(self._queue))
        if self._stopped and self._pid == os.getpid():
            # A request that ended after the last flush: write or spool it now, off the event loop
            # (the ORM may not run there), and wait: the process is about to exit.
            late = threading.Thread(target=_closing_connection(self._drain), name="vmx-audit-late", daemon=True)
            late.start()
            late.join(timeout=2 * STOP_WAIT_SECONDS)
            return
        self._ensure_thread()
        if len(self._queue) >= BATCH_SIZE:
            self._wake.set()

    def _ensure_thread(self) -> None:
        # After a fork (gunicorn preload) the parent's thread is not ours: start a new one.
        if self._thread is None or self._pid != os.getpid() or not self._thread.is_alive():
            self._pid = os.getpid()
            self._stopping = self._stopped = False
            self._thread = threading.Thread(target=_closing_connection(self._run), name="vmx-audit-writer", daemon=True)
            self._thread.start()

    def _run(self) -> None:
        pause = FLUSH_SECONDS
        while not self._stopping:
            self._wake.wait(pause)
            self._wake.clear()
            try:
                self.flush()
                pause = FLUSH_SECONDS
                self._failing = False
            except Exception as exc:  # the database is down (or worse): keep the records, retry later
                self._failing = True
                _failures.warning(
                    "write", "audit write failed (%s); %d records stay queued", _error_text(exc), len(self._queue)
                )
                close_old_connections()
                pause = min(pause * 2, MAX_RETRY_PAUSE)

    def flush(self) -> int:
        """Write every queued record now, in the calling thread. Returns how many were written.

        Raises `DatabaseUnavailableError` (records kept) when the database cannot be reached.
        """
        with self._write_lock:
            return self._flush_locked()

    def _flush_locked(self) -> int:
        written = 0
        while self._queue:
            batch = [self._queue.popleft() for _ in range(min(BATCH_SIZE, len(self._queue)))]
            self._writing = batch
            try:
                written += rows_write(batch)
            except DatabaseUnavailableError:
                self._queue.extendleft(reversed(batch))
                raise
            finally:
                self._writing = []
                metrics.audit_queue_depth.set(len(self._queue))
        return written

    def stop(self) -> None:
        self._stopping = True
        self._wake.set()
        if self._thread is not None and self._thread.is_alive() and self._pid == os.getpid():
            self._thread.join(timeout=1.0)
        self._stopped = True
        self._drain()

    def _drain(self) -> None:
        """Write what is queued, or spool it: the process is about to exit (DESIGN.md 2.13).

        Within the few seconds left: when the last write failed, spool at once; a write stuck on
        a database that does not answer holds the lock, so its batch is spooled too (if that
        write completes after all, the replay finds the records there and writes nothing twice).
        """
        if self._failing:
            self._spool([*self._writing, *self._queue], "the database was unreachable")
            return
        if not self._write_lock.acquire(timeout=STOP_WAIT_SECONDS):
            self._spool([*self._writing, *self._queue], "a write to the database did not finish")
            return
        try:
            self._flush_locked()
        except Exception as exc:
            self._spool(list(self._queue), _error_text(exc))
        finally:
            self._write_lock.release()

    def _spool(self, rows: list[dict[str, Any]], reason: str) -> None:
        self._queue.clear()
        try:
            path = spool_write(rows)
        except OSError as exc:  # nowhere left to keep them: say so, loudly and once
            _count_dropped(len(rows))
            logger.error(
                "audit: cannot write to the database at shutdown (%s) nor the spool (%s): %d records lost",
                reason,
                _error_text(exc),
                len(rows),
            )
            return
        if path is not None:
            logger.error(
                "audit: cannot write to the database at shutdown (%s); %d records spooled to %s",
                reason,
                len(rows),
                path,
            )

    def queued(self) -> int:
        return len(self._queue)


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
            raise DatabaseUnavailableError(_error_text(exc)) from exc
    # One row spoils the batch: find it, write the others.
    written = 0
    for row in rows:
        try:
            _insert_counted(AuditRecord, [row])
            written += 1
        except Exception as exc:
            if not _refused_for_content(exc):
                raise DatabaseUnavailableError(_error_text(exc)) from exc
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
    params = []
    # In key order, and minutes before hours before days (rollups_add): two writers adding to the
    # same rows lock them in the same order, so concurrent transactions on PostgreSQL wait for
    # each other instead of deadlocking.
    for key, rollup in sorted(grouped.items(), key=lambda item: item[0]):
        values: list[Any] = [date_field.get_db_prep_save(key[0], connection), *key[1:]]
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


def _rollup_upsert_sql(model: Any, period_field: str) -> tuple[str, list[str]]:
    quote = connection.ops.quote_name
    table = quote(model._meta.db_table)
    dimensions = [period_field, *DIMENSIONS[1:]]
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
            raise DatabaseUnavailableError(_error_text(exc)) from exc
        _count_dropped(1)
        _failures.warning(
            "dropped",
            "audit record %s dropped: the database refused it even cleaned (%s)",
            row.get("request_id", "?"),
            _error_text(exc),
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


def _error_text(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {str(exc).strip().splitlines()[0] if str(exc).strip() else ''}"[:300]


# ------------------------------------------------------------------------------------------------
# Spool: records that could not be written at shutdown, replayed at the next start.


def spool_dir() -> Path:
    return Path(settings.VMX_AUDIT_SPOOL_DIR)


def spool_write(rows: list[dict[str, Any]]) -> Path | None:
    if not rows:
        return None
    directory = spool_dir()
    directory.mkdir(parents=True, exist_ok=True)
    name = f"audit-{datetime.now(UTC):%Y%m%dT%H%M%S}-{os.getpid()}-{secrets.token_hex(4)}"
    partial, final = directory / f"{name}.partial", directory / f"{name}.jsonl"
    with partial.open("wb") as out:
        for row in rows:
            out.write(orjson.dumps(row, default=str) + b"\n")
        out.flush()
        os.fsync(out.fileno())
    partial.rename(final)  # only complete files are ever replayed
    return final


def audit_spool_replay() -> int:
    """Write the records spooled by earlier processes; returns how many. Safe to run in every worker
    at once: each file is claimed by an atomic rename, and request ids make a second write a no-op."""
    directory = spool_dir()
    if not directory.is_dir():
        return 0
    now = time.time()
    for stale in directory.glob("audit-*.jsonl.*.replaying"):
        # Claimed by a worker that died before finishing (process ids are reused, ages are not).
        with contextlib.suppress(FileNotFoundError):
            if now - stale.stat().st_mtime > STALE_CLAIM_SECONDS:
                stale.rename(stale.with_name(stale.name.split(".jsonl.", 1)[0] + ".jsonl"))
    replayed = 0
    for path in sorted(directory.glob("audit-*.jsonl")):
        claimed = path.with_name(f"{path.name}.{os.getpid()}-{secrets.token_hex(4)}.replaying")
        try:
            path.rename(claimed)
            os.utime(claimed)  # the claim's age, not the file's: a sibling must not take it back
        except FileNotFoundError:
            continue  # another worker took it
        rows = []
        for number, line in enumerate(claimed.read_bytes().splitlines(), 1):
            if line.strip():
                try:
                    rows.append(_spooled_row(line))
                except (orjson.JSONDecodeError, ValueError, TypeError):
                    _count_dropped(1)
                    logger.error("audit: %s line %d is not a record; skipped", path.name, number)
        try:
            for start in range(0, len(rows), BATCH_SIZE):
                replayed += rows_write(rows[start : start + BATCH_SIZE])
        except DatabaseUnavailableError:
            with contextlib.suppress(FileNotFoundError):
                claimed.rename(path)  # keep it for the next start
            raise
        claimed.unlink(missing_ok=True)
        logger.info("audit: wrote %d spooled records from %s", len(rows), path.name)
    return replayed


def _spooled_row(line: bytes) -> dict[str, Any]:
    row: dict[str, Any] = orjson.loads(line)
    if isinstance(row.get("created_at"), str):
        row["created_at"] = datetime.fromisoformat(row["created_at"])
    return row


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


_writer = _AuditWriter()


def audit_flush() -> int:
    return _writer.flush()


def audit_queue_depth() -> int:
    return _writer.queued()


def audit_shutdown() -> None:
    """Stop the writer thread and write what is queued (process shutdown)."""
    _writer.stop()


# ------------------------------------------------------------------------------------------------
# Optional body storage: inline base64 payloads are summarised, never stored.

_DATA_URL = re.compile(r"^data:([\w.+-]+/[\w.+-]+)?(;[\w=.+-]+)*;base64,", re.ASCII)
_BASE64ISH = re.compile(r"^[A-Za-z0-9+/=_-]+$", re.ASCII)
MIN_BASE64_SUMMARY = 512


def summarize_payloads(value: Any) -> Any:
    """`value` with data URLs and long base64 strings replaced by a size and sha256 summary."""
    if isinstance(value, dict):
        return {k: summarize_payloads(v) for k, v in value.items()}
    if isinstance(value, list):
        return [summarize_payloads(v) for v in value]
    if isinstance(value, str) and len(value) >= MIN_BASE64_SUMMARY:
        match = _DATA_URL.match(value)
        payload = value[match.end() :] if match else value
        if match or _BASE64ISH.match(payload):
            try:
                size = len(
                    base64.b64decode(
                        payload + "=" * (-len(payload) % 4),
                        altchars=b"-_" if "-" in payload or "_" in payload else None,
                    )
                )
            except (binascii.Error, ValueError):
                return value
            digest = hashlib.sha256(payload.encode("ascii")).hexdigest()
            kind = match.group(1) if match and match.group(1) else "base64"
            return f"[{kind}: {size} bytes, sha256 {digest}]"
    return value
