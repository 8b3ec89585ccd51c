"""The usage dashboard's reads (gateway/dashboard.py), charts (gateway/charts.py) and page: what an
operator sees for the records the audit writer just wrote. The browser test is
tests/integration/test_dashboard_browser.py."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from urllib.parse import parse_qs, urlsplit

import pytest
from django.contrib.auth.models import Permission, User
from django.utils import timezone

from gateway.audit.store import rows_write
from gateway.models import AuditRecord
from gateway.observability.charts import Layer, bars_svg, lines_svg, nice_ceiling
from gateway.observability.dashboard import PERIODS, dashboard_read, period_bounds
from gateway.observability.views import _count, _ms, _usd

NOW = datetime(2026, 12, 1, 12, 34, 56, tzinfo=UTC)


def record(n: int, *, ago: timedelta, now: datetime = NOW, **fields: object) -> dict[str, object]:
    return {
        "request_id": f"req_dash_{n}",
        "created_at": now - ago,
        "endpoint": "chat.completions",
        "api_key": "team-a",
        "resource": "chat",
        "status_code": 200,
        "duration_ms": 200.0,
        "ttft_ms": 80.0,
        "connection": "openai",
        "model": "gpt-4.1",
        "input_tokens": 100,
        "cached_tokens": 40,
        "output_tokens": 20,
        "reasoning_tokens": 5,
        "total_tokens": 120,
        "cost_usd": 0.01,
        **fields,
    }


def traffic(now: datetime = NOW) -> None:
    ago = timedelta
    rows_write(
        [
            *(record(n, ago=ago(minutes=n), now=now) for n in range(10)),  # the last 10 minutes
            record(10, ago=ago(minutes=3), now=now, status_code=502, cost_usd=None, duration_ms=3000.0, ttft_ms=None),
            record(11, ago=ago(hours=5), now=now, resource="embed", api_key="team-b", model="gpt-4.1-mini", cost_usd=2),
            record(12, ago=ago(days=3), now=now, resource="embed", api_key="team-b", cost_usd=None),
            record(13, ago=ago(days=40), now=now),  # outside every period
        ]
    )


def test_periods_are_whole_buckets_ending_with_the_one_that_holds_now():
    for period in PERIODS.values():
        start, end = period_bounds(period=period, now=NOW)
        assert end - start == period.span and start <= NOW - period.span + period.step
        assert start < NOW < end <= NOW + period.step
    start, end = period_bounds(period=PERIODS["1h"], now=NOW)
    assert end == datetime(2026, 12, 1, 12, 35, tzinfo=UTC)
    start, end = period_bounds(period=PERIODS["30d"], now=NOW)
    assert end == datetime(2026, 12, 2, 0, 0, tzinfo=UTC)  # whole days, midnight UTC


@pytest.mark.django_db(transaction=True)
def test_each_period_counts_what_it_covers_and_the_buckets_add_up():
    traffic()
    expect = {"1h": 11, "24h": 12, "7d": 13, "30d": 13}
    for key, requests in expect.items():
        dashboard = dashboard_read(period=PERIODS[key], filters={}, now=NOW)
        assert dashboard.total.requests == requests, key
        assert sum(b.requests for b in dashboard.buckets) == requests
        assert len(dashboard.buckets) == dashboard.period.span // dashboard.period.step
    hour = dashboard_read(period=PERIODS["1h"], filters={}, now=NOW)
    assert hour.total.errors == 1 and hour.total.error_rate == pytest.approx(1 / 11)
    assert hour.total.tokens == {
        "input_tokens": 1100,
        "cached_tokens": 440,
        "output_tokens": 220,
        "reasoning_tokens": 55,
    }
    assert hour.total.cost == pytest.approx(0.10)  # the 502 had no price: unknown, not free
    assert hour.total.priced == 10
    # The latest bucket (12:34) holds the record of "now"; the 12:31 bucket the 502 beside a success.
    assert hour.buckets[-1].requests == 1 and hour.buckets[-4].errors == 1
    # 10 of 11 took 200 ms, one 3 s: p50 within a bucket of 200 ms, p95 of 3 s.
    assert 150 <= (hour.total.latency_ms(0.5) or 0) <= 260
    assert 2000 <= (hour.total.latency_ms(0.95) or 0) <= 4000
    assert 50 <= (hour.total.ttft_ms(0.5) or 0) <= 110


@pytest.mark.django_db(transaction=True)
def test_filters_change_the_numbers_and_the_top_lists_rank_by_requests_and_cost():
    traffic()
    week = dashboard_read(period=PERIODS["7d"], filters={}, now=NOW)
    by_requests = [row.name for row in week.top_by_requests["resource"]]
    by_cost = [(row.name, row.cost_usd) for row in week.top_by_cost["resource"]]
    assert by_requests == ["chat", "embed"]
    assert by_cost[0] == ("embed", pytest.approx(2.0)) and by_cost[1][0] == "chat"
    assert [row.name for row in week.top_by_requests["model"]] == ["gpt-4.1", "gpt-4.1-mini"]
    assert week.options["api_key"] == ["team-a", "team-b"]

    embed = dashboard_read(period=PERIODS["7d"], filters={"resource": "embed"}, now=NOW)
    assert embed.total.requests == 2 and embed.total.cost == pytest.approx(2.0) and embed.total.priced == 1
    assert dashboard_read(period=PERIODS["7d"], filters={"model": "gpt-4.1-mini"}, now=NOW).total.requests == 1
    # A filter the period has never seen still shows (chosen), with nothing under it.
    none = dashboard_read(period=PERIODS["24h"], filters={"api_key": "gone"}, now=NOW)
    assert none.total.requests == 0 and "gone" in none.options["api_key"]


@pytest.mark.django_db(transaction=True)
def test_every_link_lists_exactly_the_audit_records_it_counts():
    traffic()
    dashboard = dashboard_read(period=PERIODS["24h"], filters={"api_key": "team-a"}, now=NOW)
    for bucket in dashboard.buckets:
        query = dashboard.audit_filters(start=bucket.start, end=bucket.end)
        assert AuditRecord.objects.filter(**query).count() == bucket.requests
        errors = dashboard.audit_filters(start=bucket.start, end=bucket.end, errors=True)
        assert AuditRecord.objects.filter(**errors).count() == bucket.errors
    for row in dashboard.top_by_requests["model"]:
        assert AuditRecord.objects.filter(**row.audit_filters).count() == row.requests


def test_charts_escape_what_they_place_and_link_every_bucket():
    hostile = '<script>alert("x")</script>'
    svg = bars_svg(
        title=hostile,
        labels=["10:00", hostile],
        layers=[Layer(hostile, "ok", [1, 3]), Layer("failed", "error", [0, 2])],
        value_text=str,
        links=["/a?x=1&y=<2>", None],
    )
    assert "<script>" not in svg and "&lt;script&gt;" in svg
    assert 'href="/a?x=1&amp;y=&lt;2&gt;"' in svg and svg.count("<a ") == 1
    assert svg.count('class="target"') == 2 and svg.count('class="layer-') == 3  # a zero draws no bar
    lines = lines_svg(
        title="t", labels=["a", "b", "c", "d"], layers=[Layer("p50", "p50", [1, None, 2, 3])], value_text=str
    )
    assert lines.count("<polyline") == 1 and lines.count("<circle") == 1  # a gap splits the line
    assert [nice_ceiling(v) for v in (0, 0.3, 1, 7, 11, 4999)] == [1, 0.5, 1, 10, 20, 5000]


def test_figures_read_as_people_write_them():
    assert [_count(v) for v in (0, 999, 1_000, 999_999, 1_234_567, 2.5e9)] == ["0", "999", "1k", "1M", "1.23M", "2.5B"]
    assert [_usd(v) for v in (None, 0, 0.0000246, 0.5, 1234.5)] == ["unknown", "$0", "$0.000025", "$0.50", "$1,234.50"]
    assert [_ms(v) for v in (None, 12.3, 999.6, 45_000, 2_000_000)] == ["-", "12 ms", "1 s", "45 s", "2,000 s"]


@pytest.fixture
def staff(db):
    return User.objects.create_user("viewer", password="pw", is_staff=True)


@pytest.mark.django_db(transaction=True)
def test_the_page_shows_the_traffic_to_staff_who_may_read_the_audit(client, staff):
    traffic(now=timezone.now())
    staff.user_permissions.add(Permission.objects.get(codename="view_auditrecord"))
    client.force_login(staff)
    index = client.get("/admin/")
    assert 'href="/admin/dashboard/"' in index.content.decode()
    page = client.get("/admin/dashboard/?period=30d&resource=chat")
    assert page.status_code == 200
    html = page.content.decode()
    assert re.search(r'data-figure="requests">.*?<span class="value">11</span>', html)  # 30 d of "chat"
    assert html.count('<svg class="chart"') == 6
    assert '<option value="embed">' in html and '<option value="chat" selected>' in html
    link = re.search(r'<td><a href="([^"]+)">gpt-4.1</a>', html)
    assert link is not None
    query = parse_qs(urlsplit(link.group(1).replace("&amp;", "&")).query)
    assert query["resource"] == ["chat"] and query["model"] == ["gpt-4.1"]
    audit = client.get(link.group(1).replace("&amp;", "&"))
    assert audit.status_code == 200 and "11 audit records" in audit.content.decode()
    # A NUL in a query parameter (PostgreSQL refuses it in any text) is a 400 on every page
    # Django serves, in the API's shape on the API.
    for url in (
        "/admin/dashboard/?resource=%00",
        "/admin/gateway/auditrecord/?resource=a%00b",
        "/admin/gateway/upstreamratelimit/?connection=%00",
        "/admin/connections/connection/?q=x%00",
    ):
        refused = client.get(url)
        assert refused.status_code == 400 and b"NUL" in refused.content, url
    api = client.get("/api/v1/audit/?resource=%00")
    assert api.status_code == 400 and "NUL" in api.json()["detail"]
    # An unknown period falls back to the default; a hostile filter value is escaped, not run.
    hostile = client.get("/admin/dashboard/?period=nope&resource=%3Cscript%3E")
    assert hostile.status_code == 200 and "<script>" not in hostile.content.decode().split("</head>")[1]


@pytest.mark.django_db(transaction=True)
def test_the_page_refuses_non_staff_and_staff_without_the_audit(client, staff):
    outsider = User.objects.create_user("outsider", password="pw")
    client.force_login(outsider)
    response = client.get("/admin/dashboard/")
    assert response.status_code == 302 and "/admin/login/" in response["Location"]
    client.force_login(staff)  # staff, but no permission to read the audit
    assert client.get("/admin/dashboard/").status_code == 403
    assert 'href="/admin/dashboard/"' not in client.get("/admin/").content.decode()
    client.logout()
    assert client.get("/admin/dashboard/").status_code == 302


@pytest.mark.django_db(transaction=True)
def test_invented_model_names_add_no_rollup_rows_menu_entries_usage_rows_or_admin_choices(admin_client):
    """Three hundred 404s for names a client made up: the audit keeps each literal, but the rollups,
    the dashboard's menu, `usage/` and the audit changelist's filters see one `(unknown)`."""
    from rest_framework.test import APIClient

    from gateway.models import DailyUsageRollup, HourlyUsageRollup, UsageRollup

    now = timezone.now().replace(second=30)
    rows_write(
        [
            record(
                n,
                ago=timedelta(seconds=n % 20),
                now=now,
                resource=f"made-up-{n}",
                resource_known=False,
                status_code=404,
                connection="",
                model="",
                cost_usd=None,
            )
            for n in range(300)
        ]
    )
    assert AuditRecord.objects.filter(resource="made-up-7").exists()
    for table in (UsageRollup, HourlyUsageRollup, DailyUsageRollup):
        assert set(table.objects.values_list("resource", flat=True)) == {"(unknown)"}
        assert table.objects.count() <= 2  # one per minute (or hour, day) touched
    assert dashboard_read(period=PERIODS["24h"], filters={}).options["resource"] == ["(unknown)"]

    api = APIClient()
    api.force_authenticate(User.objects.get(username="admin"))
    usage = api.get("/api/v1/usage/", {"by": "resource"}).json()
    assert [row["key"] for row in usage["results"]] == ["(unknown)"] and usage["total"]["requests"] == 300

    page = admin_client.get("/admin/gateway/auditrecord/")
    sidebar = [
        str(choice) for spec in page.context["cl"].filter_specs for choice in getattr(spec, "lookup_choices", [])
    ]
    assert not [choice for choice in sidebar if "made-up-" in choice]
    unknown = admin_client.get("/admin/gateway/auditrecord/", {"resource": "(unknown)"})
    assert unknown.context["cl"].result_count == 300


@pytest.mark.django_db(transaction=True)
def test_menus_list_at_most_the_hundred_busiest_values_and_usage_is_paged():
    from rest_framework.test import APIClient

    now = timezone.now().replace(second=30)
    rows_write([record(n, ago=timedelta(seconds=n % 20), now=now, api_key=f"key-{n:03d}") for n in range(150)])
    rows_write([record(1000 + n, ago=timedelta(seconds=1), now=now, api_key="key-149") for n in range(3)])
    menu = dashboard_read(period=PERIODS["24h"], filters={}).options["api_key"]
    assert len(menu) == 100 and "key-149" in menu
    chosen = dashboard_read(period=PERIODS["24h"], filters={"api_key": "key-120"}).options["api_key"]
    assert "key-120" in chosen

    api = APIClient()
    api.force_authenticate(User.objects.create_superuser("root", password="pw-0123456789"))
    first = api.get("/api/v1/usage/", {"by": "api_key"}).json()
    assert first["count"] == 150 and len(first["results"]) == 100 and first["total"]["requests"] == 153
    rest = api.get(first["next"]).json()
    assert len(rest["results"]) == 50 and rest["next"] is None
