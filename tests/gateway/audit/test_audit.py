from __future__ import annotations

import os
import time
from datetime import UTC, datetime

import pytest
from asgiref.sync import sync_to_async
from django.db import connection

from gateway.audit import spool, store
from gateway.audit.entry import AuditEntry
from gateway.audit.writer import AuditWriter, audit_flush, audit_queue_depth
from gateway.core.usage import Usage, usage_from_chat
from gateway.models import AuditRecord

pytestmark = pytest.mark.django_db


def test_bodies_are_stored_only_when_enabled_and_summarised(settings):
    payload = "A" * 4096
    settings.VMX_AUDIT_BODIES = False
    AuditEntry(request_id="req_off", endpoint="responses", request_body={"input": payload}).finish(status_code=200)
    settings.VMX_AUDIT_BODIES = True
    entry = AuditEntry(
        request_id="req_on", endpoint="responses", request_body={"input": payload}, response_body={"ok": True}
    )
    entry.usage = Usage(input_tokens=3, total_tokens=3)
    entry.finish(status_code=200)
    entry.finish(status_code=500)  # a second finish is ignored
    assert audit_flush() == 2
    off, on = AuditRecord.objects.get(request_id="req_off"), AuditRecord.objects.get(request_id="req_on")
    assert off.request_body is None and off.response_body is None
    assert on.request_body["input"].startswith("[base64: 3072 bytes, sha256 ")
    assert on.response_body == {"ok": True}
    assert (on.status_code, on.input_tokens, on.total_tokens) == (200, 3, 3)


def test_audit_admin_pages(admin_client):
    AuditEntry(request_id="req_admin", endpoint="chat.completions", resource="default", api_key="ci").finish(
        status_code=200
    )
    audit_flush()
    record = AuditRecord.objects.get(request_id="req_admin")
    listing = admin_client.get("/admin/gateway/auditrecord/?endpoint__exact=chat.completions&status_code__exact=200")
    assert listing.status_code == 200
    assert f"/admin/gateway/auditrecord/{record.pk}/change/" in listing.content.decode()
    detail = admin_client.get(f"/admin/gateway/auditrecord/{record.pk}/change/")
    assert detail.status_code == 200 and "req_admin" in detail.content.decode()
    assert admin_client.get("/admin/gateway/auditrecord/add/").status_code == 403


def _row(request_id: str, **values):
    entry = AuditEntry(request_id=request_id, endpoint="chat.completions", resource="default", api_key="ci")
    for name, value in values.items():
        setattr(entry, name, value)
    entry.finish(status_code=200)


def test_one_bad_record_never_blocks_the_ones_behind_it(settings):
    # Before: a record the database refused went back to the head of the queue forever, and no
    # later record of the worker was ever written.
    dropped_before = store.audit_records_dropped()
    _row("req_before")
    _row("req_nul", correlation_id="nul\x00inside", metadata={"te\x00am": "gr\x00owth"}, source_ip="not-an-address")
    _row("req_unstorable", metadata={"team": object()})  # no database can store this: dropped, counted
    _row("req_after")
    audit_flush()  # the writer thread may have taken some already: what matters is what is stored
    assert audit_queue_depth() == 0
    written = set(AuditRecord.objects.values_list("request_id", flat=True))
    assert {"req_before", "req_nul", "req_after"} <= written and "req_unstorable" not in written
    assert store.audit_records_dropped() == dropped_before + 1
    nul = AuditRecord.objects.get(request_id="req_nul")
    assert "inside" in nul.correlation_id  # kept, cleaned where the database required it


def test_records_spooled_at_shutdown_are_written_at_the_next_start(settings, tmp_path):
    settings.VMX_AUDIT_SPOOL_DIR = str(tmp_path)
    rows = [
        {"request_id": f"req_spooled_{i}", "created_at": datetime.now(UTC), "endpoint": "responses", "status_code": 200}
        for i in range(3)
    ]
    rows[1]["duration_ms"] = 12.5
    path = spool.spool_write([{**row, "duration_ms": row.get("duration_ms", 1.0)} for row in rows])
    assert path is not None and path.suffix == ".jsonl"
    # A file an earlier process claimed and died while writing comes back too.
    claimed = spool.spool_write([{**rows[0], "request_id": "req_claimed", "duration_ms": 1.0}])
    assert claimed is not None
    stale = claimed.rename(claimed.with_name(claimed.name + ".4242-0badc0de.replaying"))
    an_hour_ago = time.time() - 3600
    os.utime(stale, (an_hour_ago, an_hour_ago))
    # A claim in progress elsewhere (recent) is left alone.
    busy = spool.spool_write([{**rows[0], "request_id": "req_busy", "duration_ms": 1.0}])
    assert busy is not None
    busy = busy.rename(busy.with_name(busy.name + ".4243-feedface.replaying"))
    assert spool.audit_spool_replay() == 4
    assert list(tmp_path.iterdir()) == [busy]
    assert AuditRecord.objects.filter(request_id__startswith="req_spooled_").count() == 3
    assert AuditRecord.objects.get(request_id="req_spooled_1").duration_ms == 12.5
    assert AuditRecord.objects.filter(request_id="req_claimed").exists()
    assert spool.audit_spool_replay() == 0  # nothing left, and replaying twice writes nothing twice


def _closing(function):
    """`function`, then close its thread's database connection (the test database is dropped
    at the end, and PostgreSQL refuses while a connection is open)."""

    def run():
        try:
            return function()
        finally:
            connection.close()

    return run


@pytest.mark.django_db(transaction=True)
async def test_a_record_finished_after_the_last_flush_is_still_written(settings, tmp_path):
    # Requests cut at shutdown can end after the writer's final flush; they finish on the event
    # loop, where the ORM may not run: they used to be spooled with a false "database down" error.
    settings.VMX_AUDIT_SPOOL_DIR = str(tmp_path)
    writer = AuditWriter()
    writer.submit(
        {
            "request_id": "req_early",
            "created_at": datetime.now(UTC),
            "endpoint": "responses",
            "status_code": 200,
            "duration_ms": 1.0,
        }
    )
    await sync_to_async(_closing(writer.stop), thread_sensitive=False)()
    writer.submit(
        {
            "request_id": "req_late",
            "created_at": datetime.now(UTC),
            "endpoint": "responses",
            "status_code": 503,
            "duration_ms": 1.0,
        }
    )
    stored = await sync_to_async(
        _closing(lambda: set(AuditRecord.objects.values_list("request_id", flat=True))), thread_sensitive=False
    )()
    assert {"req_early", "req_late"} <= stored
    assert list(tmp_path.iterdir()) == []


def test_absurd_token_counts_are_capped_not_fatal_to_the_audit():
    # Some servers report 2**64 - 1 for an unknown count: SQLite cannot store it, and a batch with
    # it was retried forever, so the worker stopped auditing.
    huge = usage_from_chat({"prompt_tokens": 2**64 - 1, "completion_tokens": 3})
    assert huge.input_tokens == 2**31 - 1 and huge.output_tokens == 3
