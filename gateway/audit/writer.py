"""The audit writer: records queued in memory and written in batches off the request path.

Invariants (DESIGN.md 2.9, 2.13):
- A queued record reaches the database within `FLUSH_SECONDS` (or as soon as `BATCH_SIZE` are
  waiting); the writer thread never stops, and no record blocks the ones behind it (`store.py`).
- If the database is unreachable, records stay queued (up to `MAX_QUEUED`) and are retried with
  a growing pause, logging one line per 10 s. At shutdown what cannot be written goes to the spool
  directory (`spool.py`), and the next start writes it.
"""

from __future__ import annotations

import logging
import os
import threading
from collections import deque
from collections.abc import Callable
from typing import Any

from django.db import close_old_connections, connection

from gateway.audit.spool import spool_write
from gateway.audit.store import BATCH_SIZE, DatabaseUnavailableError, audit_records_dropped_add, error_text, rows_write
from gateway.core.logs import ThrottledLog
from gateway.observability import metrics

logger = logging.getLogger("vmx.audit")
_failures = ThrottledLog(logger, interval=10.0)

FLUSH_SECONDS = 0.1
MAX_QUEUED = 100_000
MAX_RETRY_PAUSE = 5.0
STOP_WAIT_SECONDS = 2.0
"""At shutdown, how long to wait for a write in progress before spooling what is queued."""


def _closing_connection(target: Callable[[], None]) -> Callable[[], None]:
    """`target`, then close the database connection its thread opened (a thread's connection is
    its own and would otherwise stay open, holding a server slot, after the thread ended)."""

    def run() -> None:
        try:
            target()
        finally:
            connection.close()

    return run


class AuditWriter:
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
            audit_records_dropped_add(1)
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
                    "write", "audit write failed (%s); %d records stay queued", error_text(exc), len(self._queue)
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
            self._spool(list(self._queue), error_text(exc))
        finally:
            self._write_lock.release()

    def _spool(self, rows: list[dict[str, Any]], reason: str) -> None:
        self._queue.clear()
        try:
            path = spool_write(rows)
        except OSError as exc:  # nowhere left to keep them: say so, loudly and once
            audit_records_dropped_add(len(rows))
            logger.error(
                "audit: cannot write to the database at shutdown (%s) nor the spool (%s): %d records lost",
                reason,
                error_text(exc),
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


audit_writer = AuditWriter()


def audit_flush() -> int:
    return audit_writer.flush()


def audit_queue_depth() -> int:
    return audit_writer.queued()


def audit_shutdown() -> None:
    """Stop the writer thread and write what is queued (process shutdown)."""
    audit_writer.stop()
