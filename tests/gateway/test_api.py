"""The management API over what the gateway records (gateway/api.py): audit, usage, capacity;
and the schema, its docs and the landing page."""

from __future__ import annotations

import io
import re
from datetime import timedelta

import pytest
import yaml
from django.contrib.auth.models import User
from django.core.management import call_command
from django.utils import timezone
from rest_framework.test import APIClient

import vmx_project
from connections.services import (
    CapacitySpec,
    ModelEntrySpec,
    api_key_save,
    capacity_entries_replace,
    connection_save,
    resource_save,
)
from gateway.audit.selectors import audit_record_as_dict
from gateway.audit.store import rows_write
from gateway.models import AuditRecord, UpstreamRateLimit

pytestmark = pytest.mark.django_db


@pytest.fixture
def api() -> APIClient:
    client = APIClient()
    client.force_authenticate(User.objects.create_superuser("ops", "ops@example.com", "pw-0123456789"))
    return client


def record(n: int, *, minutes_ago: float = 0, **fields) -> AuditRecord:
    values = {
        "request_id": f"req_{n:04d}",
        "created_at": timezone.now() - timedelta(minutes=minutes_ago),
        "endpoint": "chat.completions",
        "api_key": "ci",
        "resource": "default",
        "status_code": 200,
        "duration_ms": 12.5,
        "model": "gpt-4.1",
        "connection": "openai-main",
        "input_tokens": 10,
        "output_tokens": 5,
        "total_tokens": 15,
        "cost_usd": 0.001,
        **fields,
    }
    rows_write([values])  # as the gateway writes them: with their rollups
    return AuditRecord.objects.get(request_id=values["request_id"])


def test_audit_pages_newest_first_without_repeats(api: APIClient):
    for n in range(25):
        record(n, minutes_ago=25 - n)
    seen: list[str] = []
    url = "/api/v1/audit/?limit=10"
    pages = 0
    while url:
        page = api.get(url).json()
        seen += [item["request_id"] for item in page["results"]]
        url = page["next"]
        pages += 1
        # Records arriving while a client pages do not shift the pages it has not read yet.
        if pages == 1:
            record(100)
    assert pages == 3
    assert seen == [f"req_{n:04d}" for n in range(24, -1, -1)]


def test_audit_records_read_as_vmx_audit_prints_them(api: APIClient):
    row = record(1, correlation_id="run-42", metadata={"team": "growth"}, attempts=[{"connection": "x"}])
    item = api.get("/api/v1/audit/req_0001/").json()
    assert item == audit_record_as_dict(row)
    out = io.StringIO()
    call_command("vmx_audit", "--format", "jsonl", "--request-id", "req_0001", stdout=out)
    assert yaml.safe_load(out.getvalue()) == item
    assert api.get("/api/v1/audit/req_9999/").status_code == 404


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        ("resource=other", ["req_0002"]),
        ("api_key=batch", ["req_0003"]),
        ("status_code=429", ["req_0004"]),
        ("endpoint=messages", ["req_0005"]),
        ("correlation_id=run-7", ["req_0006"]),
        ("since=30m", ["req_0006", "req_0005", "req_0004", "req_0003", "req_0002"]),
        ("until=30m", ["req_0001"]),
    ],
)
def test_audit_filters(api: APIClient, query, expected):
    record(1, minutes_ago=120)
    record(2, minutes_ago=5, resource="other")
    record(3, minutes_ago=4, api_key="batch")
    record(4, minutes_ago=3, status_code=429, error_type="capacity_exceeded")
    record(5, minutes_ago=2, endpoint="messages")
    record(6, minutes_ago=1, correlation_id="run-7")
    response = api.get(f"/api/v1/audit/?{query}")
    assert [item["request_id"] for item in response.json()["results"]] == expected


@pytest.mark.parametrize(
    ("query", "field"),
    [
        ("since=yesterday-ish", "since"),
        ("status_code=abc", "status_code"),
        ("endpoint=embeddings", "endpoint"),
        ("since=99999999999d", "since"),
        ("until=99999999999999999999s", "until"),
        ("since=9999-12-31T23:59:59-01:00", "since"),
    ],
)
def test_a_bad_audit_filter_is_a_400_naming_it(api: APIClient, query, field):
    response = api.get(f"/api/v1/audit/?{query}")
    assert response.status_code == 400
    assert list(response.json()) == [field]


def test_usage_totals_with_errors_and_cost(api: APIClient):
    record(1, resource="a", cost_usd=0.25)
    record(2, resource="a", cost_usd=0.5, status_code=502, input_tokens=0, output_tokens=0, total_tokens=0)
    record(3, resource="b", cost_usd=None, cached_tokens=4, reasoning_tokens=2)
    record(4, resource="b", minutes_ago=60 * 48)  # outside the default 24 h
    body = api.get("/api/v1/usage/?by=resource").json()
    rows = {row["key"]: row for row in body["results"]}
    assert rows["a"]["requests"] == 2 and rows["a"]["errors"] == 1
    assert rows["a"]["cost_usd"] == pytest.approx(0.75)
    assert rows["b"]["requests"] == 1 and rows["b"]["cost_usd"] is None  # unknown is not free
    assert rows["b"]["cached_tokens"] == 4 and rows["b"]["reasoning_tokens"] == 2
    assert body["total"]["requests"] == 3 and body["total"]["cost_usd"] == pytest.approx(0.75)
    assert api.get("/api/v1/usage/?since=7d").json()["total"]["requests"] == 4
    assert api.get("/api/v1/usage/?by=colour").status_code == 400
    assert api.get("/api/v1/usage/?since=99999999999d").status_code == 400


@pytest.mark.parametrize("cursor", ["cD1hYmM=", "cD0A", "not-base64", "bz0tMQ=="])
def test_a_forged_cursor_is_refused_not_a_500(api: APIClient, cursor):
    record(1)
    response = api.get(f"/api/v1/audit/?cursor={cursor}")
    assert response.status_code == 404
    assert response.json() == {"detail": "Invalid cursor"}


def test_capacity_shows_each_limit_with_its_window(api: APIClient):
    connection_save(name="demo", provider="mock", config={})
    resource, _ = resource_save(name="default", models=[ModelEntrySpec(connection="demo")])
    key, _, _ = api_key_save(name="ci", resources=["default"])
    capacity_entries_replace(owner=key, specs=[CapacitySpec(period="minute", requests=60)])
    capacity_entries_replace(
        owner=resource, specs=[CapacitySpec(period="day", requests=5, dimension="metadata", dimension_field="user")]
    )
    results = api.get("/api/v1/capacity/").json()["results"]
    by_scope = {(item["scope"], item["name"]): item for item in results}
    minute = by_scope[("apiKey", "ci")]
    assert minute["limit"] == {"period": "minute", "requests": 60}
    assert minute["used"] == {"requests": 0, "tokens": 0, "costUsd": 0.0}
    assert minute["window"]["start"].endswith(":00Z")
    assert by_scope[("resource", "default")]["busiest"] == []
    assert by_scope[("resource", "default")]["values"] == 0


def test_capacity_lists_the_upstream_limits_learned(api: APIClient):
    UpstreamRateLimit.objects.create(
        connection="openai-main",
        model="gpt-4.1",
        limit_requests=500,
        remaining_requests=0,
        reset_requests="1m30s",
        seen_at=timezone.now(),
        exhausted_until=timezone.now() + timedelta(seconds=90),
    )
    learned = api.get("/api/v1/capacity/").json()["upstreamLimits"]
    assert learned[0]["connection"] == "openai-main" and learned[0]["remainingRequests"] == 0
    assert learned[0]["resetRequests"] == "1m30s" and learned[0]["exhaustedUntil"]


# ---------------------------------------------------------------------------------------------
# Schema, docs, landing page


def test_the_schema_is_valid_openapi_and_documents_every_route():
    out = io.StringIO()
    call_command("spectacular", "--validate", "--fail-on-warn", stdout=out)
    schema = yaml.safe_load(out.getvalue())
    assert schema["openapi"].startswith("3.")
    paths = set(schema["paths"])
    for path in (
        "/api/v1/connections/",
        "/api/v1/connections/{name}/",
        "/api/v1/connections/{name}/check/",
        "/api/v1/resources/{name}/",
        "/api/v1/api-keys/",
        "/api/v1/pricing/{model}/",
        "/api/v1/audit/",
        "/api/v1/audit/{request_id}/",
        "/api/v1/usage/",
        "/api/v1/capacity/",
        "/api/v1/config/",
    ):
        assert path in paths, path
    assert not any(path.startswith("/v1/") for path in paths)  # the client endpoints are not this API


def test_schema_and_docs_are_served_without_login_from_the_app_itself(client):
    schema = client.get("/api/schema/")
    assert schema.status_code == 200
    docs = client.get("/api/docs/")
    assert docs.status_code == 200
    html = docs.content.decode()
    assets = re.findall(r'(?:src|href)="([^"]+)"', html)
    assert assets and all(asset.startswith(("/static/", "/api/docs/")) for asset in assets), assets  # no CDN


def test_the_landing_page_says_what_this_is(client):
    response = client.get("/")
    assert response.status_code == 200
    html = response.content.decode()
    assert "VM-X gateway" in html and vmx_project.__version__ in html
    for link in ('href="/admin/"', 'href="/api/docs/"', 'href="/healthz"', "http://testserver/v1"):
        assert link in html
    assert "Content-Security-Policy" in response.headers


def test_the_landing_page_only_answers_reads(client):
    response = client.post("/")
    assert response.status_code == 405  # not the CSRF failure page


def _learned(n: int, **fields) -> UpstreamRateLimit:
    values = {"connection": "openai-main", "model": f"gpt-{n:03d}", "remaining_requests": 5, "seen_at": timezone.now()}
    return UpstreamRateLimit.objects.create(**{**values, **fields})


def test_the_upstream_limits_learned_are_paged(api: APIClient):
    for n in range(7):
        _learned(n)
    seen: list[str] = []
    url = "/api/v1/capacity/upstream-limits/?limit=3"
    while url:
        page = api.get(url).json()
        assert page["count"] == 7 and len(page["results"]) <= 3
        seen += [item["model"] for item in page["results"]]
        url = page["next"]
    assert sorted(seen) == [f"gpt-{n:03d}" for n in range(7)]


def test_capacity_pages_its_limits(api: APIClient):
    connection_save(name="demo", provider="mock", config={})
    for n in range(5):
        key, _, _ = api_key_save(name=f"ci-{n}", resources=[])
        capacity_entries_replace(owner=key, specs=[CapacitySpec(period="minute", requests=60)])
    page = api.get("/api/v1/capacity/?limit=2").json()
    assert page["count"] == 5 and len(page["results"]) == 2 and page["next"]
    rest = api.get(page["next"]).json()
    assert [item["name"] for item in rest["results"]] == ["ci-2", "ci-3"]


def test_a_learned_mark_is_cleared_through_the_api(api: APIClient):
    import time as clock

    from gateway.capacity.learned import upstream_limit_until, upstream_limits_observe

    upstream_limits_observe(
        connection="openai-main",
        model="org/gpt-clear",
        headers={"x-ratelimit-remaining-requests": "0", "x-ratelimit-reset-requests": "8760h"},
        publish=False,
    )
    _learned(0, model="org/gpt-clear", remaining_requests=0, exhausted_until=timezone.now() + timedelta(minutes=5))
    assert upstream_limit_until(connection="openai-main", model="org/gpt-clear", now=clock.time())
    viewer = User.objects.create_user("viewer", password="pw-0123456789", is_staff=True)
    from django.contrib.auth.models import Permission

    viewer.user_permissions.add(Permission.objects.get(codename="view_upstreamratelimit"))
    as_viewer = APIClient()
    as_viewer.force_authenticate(viewer)
    url = "/api/v1/capacity/upstream-limits/openai-main/org/gpt-clear/"
    assert as_viewer.delete(url).status_code == 403
    assert api.delete(url).status_code == 204
    assert upstream_limit_until(connection="openai-main", model="org/gpt-clear", now=clock.time()) is None
    assert UpstreamRateLimit.objects.get(model="org/gpt-clear").exhausted_until is None
    assert api.delete("/api/v1/capacity/upstream-limits/openai-main/nothing-known/").status_code == 404


def test_the_admin_clears_learned_marks(admin_client):
    row = _learned(0, remaining_requests=0, exhausted_until=timezone.now() + timedelta(minutes=5))
    response = admin_client.post(
        "/admin/gateway/upstreamratelimit/",
        {"action": "clear_learned_marks", "_selected_action": [row.pk]},
        follow=True,
    )
    assert response.status_code == 200
    row.refresh_from_db()
    assert row.exhausted_until is None and row.cleared_at is not None


def test_an_incremental_reader_sees_a_record_written_late_with_an_older_date(api: APIClient):
    """A long stream's record is dated when it started and written when it ended: a reader that
    pages by date has already passed its date. Reading with `after` (write order) still gets it."""
    for n in range(3):
        record(n, minutes_ago=3 - n)
    first = api.get("/api/v1/audit/?after=req_0000&limit=10").json()
    assert [item["request_id"] for item in first["results"]] == ["req_0001", "req_0002"]
    last_seen = first["results"][-1]["request_id"]

    record(3, minutes_ago=30)  # the stream that started half an hour ago ends now
    record(4)
    later = api.get(f"/api/v1/audit/?after={last_seen}&limit=1").json()
    seen = [item["request_id"] for item in later["results"]]
    while later["next"]:
        later = api.get(later["next"]).json()
        seen += [item["request_id"] for item in later["results"]]
    assert seen == ["req_0003", "req_0004"]
    # Filters combine with it; an unknown request id is a clear 400.
    assert [i["request_id"] for i in api.get("/api/v1/audit/?after=req_0002&since=10m").json()["results"]] == [
        "req_0004"
    ]
    refused = api.get("/api/v1/audit/?after=req_nope")
    assert refused.status_code == 400 and "after" in refused.json()


def test_clearing_a_learned_mark_named_with_a_nul_is_a_404(api: APIClient):
    """`%00` in the path names nothing stored (and PostgreSQL refuses NUL in text): a 404, not a 500."""
    assert api.delete("/api/v1/capacity/upstream-limits/a%00b/m/").status_code == 404
    assert api.delete("/api/v1/capacity/upstream-limits/a/m%00x/").status_code == 404


def _staff(username: str, *perms: str) -> APIClient:
    from django.contrib.auth.models import Permission

    user = User.objects.create_user(username, password="pw-0123456789", is_staff=True)
    for perm in perms:
        app, codename = perm.split(".")
        user.user_permissions.add(Permission.objects.get(content_type__app_label=app, codename=codename))
    client = APIClient()
    client.force_authenticate(User.objects.get(pk=user.pk))
    return client


def test_the_flat_audit_and_usage_show_only_the_environments_the_user_may_read(api: APIClient):
    """DESIGN.md 2.15: model permissions grant workspace `default` only; a role grants its own
    environments; a superuser reads everything, filtered by workspace and environment."""
    from connections.services import environment_get_or_create, membership_save

    record(1)
    record(2, workspace="acme", environment="dev", api_key="dev-key")
    record(3, workspace="acme", environment="prod", api_key="prod-key")
    dev, _ = environment_get_or_create(label="acme/dev")
    environment_get_or_create(label="acme/prod")

    def seen(client: APIClient, query: str = "") -> set[str]:
        response = client.get(f"/api/v1/audit/{query}")
        assert response.status_code == 200, response.content
        return {item["request_id"] for item in response.json()["results"]}

    staff = _staff("auditor", "gateway.view_auditrecord")
    assert seen(staff) == {"req_0001"}
    assert staff.get("/api/v1/audit/req_0002/").status_code == 404
    usage = staff.get("/api/v1/usage/?since=1h&by=api_key").json()
    assert {row["key"] for row in usage["results"]} == {"ci"}

    viewer = User.objects.create_user("dev-viewer", password="pw-0123456789")
    membership_save(workspace=dev.workspace, user=viewer, role="viewer", environments=["dev"])
    viewer_client = APIClient()
    viewer_client.force_authenticate(User.objects.get(pk=viewer.pk))
    assert seen(viewer_client) == {"req_0002"}
    assert viewer_client.get("/api/v1/audit/req_0003/").status_code == 404

    assert seen(api) == {"req_0001", "req_0002", "req_0003"}
    assert seen(api, "?workspace=acme&environment=prod") == {"req_0003"}
    by_environment = api.get("/api/v1/usage/?since=1h&by=environment").json()
    assert {row["key"] for row in by_environment["results"]} == {"default/default", "acme/dev", "acme/prod"}
    record_shape = api.get("/api/v1/audit/req_0003/").json()
    assert (record_shape["workspace"], record_shape["environment"]) == ("acme", "prod")
