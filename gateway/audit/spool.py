"""The audit spool: records that could not be written at shutdown, kept as files and written by
the next start (`audit_spool_replay`).

Invariant: only complete files are replayed, each by one worker (claimed by an atomic rename),
and request ids make a second write of a record a no-op, so every worker may replay at once.
"""

from __future__ import annotations

import contextlib
import logging
import os
import secrets
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson
from django.conf import settings

from gateway.audit.store import BATCH_SIZE, DatabaseUnavailableError, audit_records_dropped_add, rows_write

logger = logging.getLogger("vmx.audit")

STALE_CLAIM_SECONDS = 600.0
"""A spool file claimed this long ago by a worker that never finished it is replayed again."""


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
                    audit_records_dropped_add(1)
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
