"""Audit: one record per client request, queued in memory and written in batches off the request path.

Invariants: `AuditEntry.finish()` is idempotent and never raises into the request; a queued record
reaches the database within `FLUSH_SECONDS` (or as soon as `BATCH_SIZE` are waiting); `audit_flush()`
writes everything queued in the calling thread, and the process's shutdown calls it, so a graceful
stop loses nothing. If the database is down, records stay queued (up to `MAX_QUEUED`) and are
retried.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import logging
import os
import re
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from django.conf import settings
from django.db import close_old_connections, connection, models, transaction

from gateway.errors import GatewayError
from gateway.usage import Usage

logger = logging.getLogger("vmx.audit")

FLUSH_SECONDS = 0.1
BATCH_SIZE = 100
MAX_QUEUED = 100_000


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
    finished: bool = False

    def attempt(
        self,
        *,
        connection: str,
        model: str,
        started: float,
        error: GatewayError | None,
        status_code: int | None = None,
        notes: list[str] | None = None,
    ) -> None:
        """Record one leg. `notes` say how the leg's call was revised (e.g. retried without reasoning)."""
        if error is not None:
            # The upstream's own status when it answered; None for timeouts and connect errors.
            status_code = getattr(error, "upstream_status", None)
        entry: dict[str, Any] = {
            "connection": connection,
            "model": model,
            "status_code": status_code,
            "error": error.message if error is not None else None,
            "duration_ms": round((time.monotonic() - started) * 1000, 1),
        }
        if notes:
            entry["notes"] = notes
        self.attempts.append(entry)

    def first_byte(self) -> None:
        if self.ttft_ms is None:
            self.ttft_ms = round((time.monotonic() - self.started) * 1000, 1)

    def finish(self, *, status_code: int, error_type: str = "", error_message: str = "") -> None:
        if self.finished:
            return
        self.finished = True
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
        }
        if settings.VMX_AUDIT_BODIES:
            row["request_body"] = summarize_payloads(self.request_body)
            row["response_body"] = summarize_payloads(self.response_body)
        _writer.submit(row)

    def finish_error(self, error: GatewayError) -> None:
        self.finish(
            status_code=error.status_code, error_type=error.code or error.openai_type, error_message=error.message
        )


class _AuditWriter:
    def __init__(self) -> None:
        self._queue: deque[dict[str, Any]] = deque()
        self._wake = threading.Event()
        self._write_lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._pid = 0
        self._stopping = False

    def submit(self, row: dict[str, Any]) -> None:
        if len(self._queue) >= MAX_QUEUED:
            self._queue.popleft()
            logger.error("audit queue full (%d records): dropped the oldest record", MAX_QUEUED)
        self._queue.append(row)
        self._ensure_thread()
        if len(self._queue) >= BATCH_SIZE:
            self._wake.set()

    def _ensure_thread(self) -> None:
        # After a fork (gunicorn preload) the parent's thread is not ours: start a new one.
        if self._thread is None or self._pid != os.getpid() or not self._thread.is_alive():
            self._pid = os.getpid()
            self._stopping = False
            self._thread = threading.Thread(target=self._run, name="vmx-audit-writer", daemon=True)
            self._thread.start()

    def _run(self) -> None:
        while not self._stopping:
            self._wake.wait(FLUSH_SECONDS)
            self._wake.clear()
            try:
                self.flush()
            except Exception:  # the database may be down; keep the records and retry
                logger.exception("audit write failed; %d records stay queued", len(self._queue))
                close_old_connections()
                time.sleep(FLUSH_SECONDS)

    def flush(self) -> int:
        """Write every queued record now, in the calling thread. Returns how many were written."""
        from gateway.models import AuditRecord

        written = 0
        with self._write_lock:
            while self._queue:
                batch = [self._queue.popleft() for _ in range(min(BATCH_SIZE, len(self._queue)))]
                try:
                    _insert(AuditRecord, batch)
                except Exception:
                    self._queue.extendleft(reversed(batch))
                    raise
                written += len(batch)
        return written

    def stop(self) -> None:
        self._stopping = True
        self._wake.set()
        if self._thread is not None and self._thread.is_alive() and self._pid == os.getpid():
            self._thread.join(timeout=10)
        self.flush()

    def queued(self) -> int:
        return len(self._queue)


def _insert(model: Any, rows: list[dict[str, Any]]) -> None:
    """One multi-row INSERT … ON CONFLICT DO NOTHING in a transaction.

    Values are prepared by their fields (JSON, datetimes, per backend) as the ORM would, without
    building model instances and compiling the statement per batch: under load the ORM's
    bulk_create cost more CPU than the requests it recorded. Plain text, number and boolean
    values need no preparation and are passed as they are.
    """
    fields = [f for f in model._meta.concrete_fields if not f.primary_key]
    quote = connection.ops.quote_name
    columns = ", ".join(quote(f.column) for f in fields)
    placeholders = ", ".join(["%s"] * len(fields))
    # Identifiers come from the model and are quoted; every value is a parameter.
    sql = f"INSERT INTO {quote(model._meta.db_table)} ({columns}) VALUES ({placeholders}) ON CONFLICT DO NOTHING"  # noqa: S608
    plain = [isinstance(f, _PLAIN_FIELDS) and not isinstance(f, _PREPARED_FIELDS) for f in fields]
    defaults = [f.get_default() for f in fields]
    params = [
        [
            value if is_plain else field.get_db_prep_save(value, connection)
            for field, is_plain, value in zip(
                fields, plain, (row.get(f.attname, d) for f, d in zip(fields, defaults, strict=True)), strict=True
            )
        ]
        for row in rows
    ]
    with transaction.atomic(), connection.cursor() as cursor:
        cursor.executemany(sql, params)


_PLAIN_FIELDS = (models.CharField, models.TextField, models.BooleanField, models.IntegerField, models.FloatField)
_PREPARED_FIELDS = (models.GenericIPAddressField,)


_writer = _AuditWriter()


def audit_flush() -> int:
    return _writer.flush()


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
