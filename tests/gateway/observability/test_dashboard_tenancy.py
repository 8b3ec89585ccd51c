"""The usage dashboard under workspaces, environments and roles (DESIGN.md 2.15): each reader's
figures, charts, top lists and menus count only the environments they may view, through the
Django test client as a person signed in to the admin sees the page."""

from __future__ import annotations

import html as html_lib
import re
from datetime import timedelta
from urllib.parse import parse_qs, urlsplit

import pytest
from django.contrib.auth.models import Permission, User
from django.test import Client
from django.utils import timezone

from connections.services import environment_get_or_create, membership_save
from gateway.audit.store import rows_write
from gateway.models import AuditRecord

TRAFFIC = {
    # (workspace, environment): (resource, API key, requests)
    ("acme", "dev"): ("devbot", "devkey", 3),
    ("acme", "prod"): ("prodbot", "prodkey", 5),
    ("beta", "dev"): ("betabot", "betakey", 7),
    ("default", "default"): ("plainbot", "plainkey", 2),
}
ALL = sum(count for _, _, count in TRAFFIC.values())


@pytest.fixture
def tenants(db):
    for workspace, environment in TRAFFIC:
        environment_get_or_create(label=f"{workspace}/{environment}")
    now = timezone.now().replace(second=30, microsecond=0)
    rows = []
    for (workspace, environment), (resource, key, count) in TRAFFIC.items():
        for n in range(count):
            rows.append(
                {
                    "request_id": f"req_tenant_{workspace}_{environment}_{n}",
                    "created_at": now - timedelta(seconds=n),
                    "workspace": workspace,
                    "environment": environment,
                    "endpoint": "chat.completions",
                    "api_key": key,
                    "resource": resource,
                    "status_code": 200 if n else 502,
                    "duration_ms": 120.0,
                    "connection": f"{resource}-up",
                    "model": f"{resource}-model",
                    "input_tokens": 10,
                    "total_tokens": 10,
                    "cost_usd": 0.5,
                }
            )
    rows_write(rows)


def signed_in(user: User) -> Client:
    client = Client()
    client.force_login(user)
    return client


def member(name: str, workspace: str, role: str, environments: list[str] | None = None) -> User:
    from connections.models import Workspace

    user = User.objects.create_user(name, password="pw-0123456789")
    membership_save(
        workspace=Workspace.objects.get(name=workspace), user=user, role=role, environments=environments or []
    )
    return User.objects.get(pk=user.pk)


def page(client: Client, **query: str) -> str:
    response = client.get("/admin/dashboard/", {"period": "1h", **query})
    assert response.status_code == 200, response.status_code
    return response.content.decode()


def requests_shown(html: str) -> int:
    found = re.search(r'data-figure="requests">.*?<span class="value">([^<]*)</span>', html, re.S)
    assert found, "no requests figure"
    return int(found.group(1).replace(",", ""))


def menu(html: str, name: str) -> list[str]:
    """The values a filter's menu offers (its "All" aside)."""
    select = re.search(rf'<select name="{name}" id="filter-{name}">(.*?)</select>', html, re.S)
    assert select, f"no {name} menu"
    return [html_lib.unescape(v) for v in re.findall(r'<option value="([^"]+)"', select.group(1))]


def others_absent(html: str, *, allowed: set[tuple[str, str]], typed: frozenset[str] | set[str] = frozenset()) -> None:
    """No resource, key, connection or model of an environment outside `allowed` is on the page
    (but for what the reader `typed` in the query, which the page echoes)."""
    for where, (resource, key, _) in TRAFFIC.items():
        if where not in allowed:
            for name in {resource, key, f"{resource}-up", f"{resource}-model", "/".join(where)} - typed:
                assert name not in html, f"{name} of {where} shown"


@pytest.mark.django_db(transaction=True)
def test_a_viewer_of_one_environment_sees_only_its_totals_and_menus(tenants):
    viewer = member("dev-viewer", "acme", "viewer", ["dev"])
    client = signed_in(viewer)
    assert 'href="/admin/dashboard/"' in client.get("/admin/").content.decode()

    html = page(client)
    assert requests_shown(html) == 3
    assert menu(html, "workspace") == ["acme"] and menu(html, "environment") == ["dev"]
    assert menu(html, "resource") == ["devbot"] and menu(html, "api_key") == ["devkey"]
    assert ">acme/dev</a>" in html  # the top environments
    others_absent(html, allowed={("acme", "dev")})
    # Chosen by name, or an environment name alone (beta's `dev` is not theirs).
    assert requests_shown(page(client, workspace="acme", environment="dev")) == 3
    assert requests_shown(page(client, environment="dev")) == 3
    assert requests_shown(page(client, environment="dev", resource="devbot")) == 3


@pytest.mark.django_db(transaction=True)
def test_naming_an_environment_one_may_not_view_shows_nothing_of_it(tenants):
    client = signed_in(member("dev-viewer", "acme", "viewer", ["dev"]))
    for query in (
        {"workspace": "acme", "environment": "prod"},
        {"environment": "prod"},
        {"workspace": "beta"},
        {"workspace": "beta", "environment": "dev"},
        {"workspace": "nowhere", "environment": "missing"},
        {"resource": "prodbot"},
        {"workspace": "acme", "api_key": "prodkey"},
        {"workspace": "Acme/Prod", "environment": "<b>x</b>"},
    ):
        html = page(client, **query)
        assert requests_shown(html) == 0, query
        # What the reader typed is echoed (in its menu and the links); nothing else of another tenant.
        assert set(menu(html, "resource")) <= {"devbot", query.get("resource")}, query
        others_absent(html, allowed={("acme", "dev")}, typed=set(query.values()))
        assert "<b>x</b>" not in html
    # The same answer for another tenant's environment and for one that exists nowhere.
    theirs = page(client, workspace="beta", environment="dev")
    nowhere = page(client, workspace="ghost", environment="dev")
    strip = re.compile(r"ghost|beta|name=\"csrfmiddlewaretoken\" value=\"[^\"]*\"|\d{2}:\d{2}")
    assert strip.sub("", theirs) == strip.sub("", nowhere)


@pytest.mark.django_db(transaction=True)
def test_an_editor_of_a_whole_workspace_sees_all_its_environments_and_no_other(tenants):
    client = signed_in(member("acme-editor", "acme", "editor"))
    html = page(client)
    assert requests_shown(html) == 8
    assert menu(html, "workspace") == ["acme"] and menu(html, "environment") == ["dev", "prod"]
    others_absent(html, allowed={("acme", "dev"), ("acme", "prod")})
    prod = page(client, environment="prod")
    assert requests_shown(prod) == 5 and menu(prod, "resource") == ["prodbot"]


@pytest.mark.django_db(transaction=True)
def test_staff_with_the_model_permission_see_the_default_workspace_as_before(tenants):
    staff = User.objects.create_user("ops", password="pw-0123456789", is_staff=True)
    staff.user_permissions.add(Permission.objects.get(codename="view_auditrecord"))
    client = signed_in(staff)
    html = page(client)
    assert requests_shown(html) == 2
    assert menu(html, "workspace") == ["default"] and menu(html, "environment") == ["default"]
    assert menu(html, "resource") == ["plainbot"]
    others_absent(html, allowed={("default", "default")})
    assert requests_shown(page(client, workspace="acme")) == 0
    # Staff without the permission, and members of nothing, still get 403.
    plain = User.objects.create_user("plain", password="pw-0123456789", is_staff=True)
    assert signed_in(plain).get("/admin/dashboard/").status_code == 403


@pytest.mark.django_db(transaction=True)
def test_a_superuser_sees_everything_and_filters_by_workspace_and_environment(tenants):
    root = User.objects.create_superuser("root", password="pw-0123456789")
    client = signed_in(root)
    html = page(client)
    assert requests_shown(html) == ALL
    assert menu(html, "workspace") == ["acme", "beta", "default"]
    assert menu(html, "environment") == ["default", "dev", "prod"]
    for label in ("acme/dev", "acme/prod", "beta/dev", "default/default"):
        assert f">{label}</a>" in html
    assert requests_shown(page(client, workspace="acme")) == 8
    acme = page(client, workspace="acme")
    assert menu(acme, "environment") == ["dev", "prod"] and menu(acme, "resource") == ["devbot", "prodbot"]
    assert requests_shown(page(client, workspace="acme", environment="dev")) == 3
    assert requests_shown(page(client, environment="dev")) == 10  # acme's and beta's
    assert requests_shown(page(client, workspace="acme", resource="prodbot")) == 5
    assert requests_shown(page(client, workspace="beta", resource="prodbot")) == 0

    # Every link leads to exactly the records it counts, the workspace and environment included.
    filtered = page(client, workspace="acme", environment="prod")
    links = [html_lib.unescape(href) for href in re.findall(r'href="(/admin/gateway/auditrecord/\?[^"]+)"', filtered)]
    assert links
    for link in links:
        query = {name: values[0] for name, values in parse_qs(urlsplit(link).query).items()}
        assert query["workspace"] == "acme" and query["environment"] == "prod"
        assert AuditRecord.objects.filter(**query).count() <= 5
    total = re.search(r'<a href="([^"]+)">Audit records of the period</a>', filtered)
    assert total
    query = {name: values[0] for name, values in parse_qs(urlsplit(html_lib.unescape(total.group(1))).query).items()}
    assert AuditRecord.objects.filter(**query).count() == 5
    top = re.search(r'<td><a href="([^"]+)">beta/dev</a>', html)
    assert top
    query = {name: values[0] for name, values in parse_qs(urlsplit(html_lib.unescape(top.group(1))).query).items()}
    assert (query["workspace"], query["environment"]) == ("beta", "dev")
    assert AuditRecord.objects.filter(**query).count() == 7
