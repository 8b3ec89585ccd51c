from __future__ import annotations

import pytest

from gateway.audit import AuditEntry, audit_flush
from gateway.models import AuditRecord
from gateway.usage import Usage

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
