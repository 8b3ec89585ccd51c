"""The management API and `vmx_apply` under input that used to break them: non-finite numbers,
NUL bytes in the path, prunes of kinds the document does not mention, secrets in a baseURL's
query, and reads whose shape depended on what was stored."""

from __future__ import annotations

import logging
from io import StringIO
from pathlib import Path

import pytest
from django.contrib.auth.models import User
from django.core.management import CommandError, call_command
from rest_framework.test import APIClient

from connections.config_export import config_export
from connections.models import AIResource, APIKey, Connection, PricingEntry

pytestmark = pytest.mark.django_db


@pytest.fixture
def api() -> APIClient:
    client = APIClient()
    client.force_authenticate(User.objects.create_superuser("ops", "ops@example.com", "pw-0123456789"))
    assert (
        client.post(
            "/api/v1/connections/", {"name": "demo", "provider": "mock", "config": {}}, format="json"
        ).status_code
        == 201
    )
    resource = {"name": "default", "model": {"connection": "demo", "model": "m"}}
    assert client.post("/api/v1/resources/", resource, format="json").status_code == 201
    assert client.post("/api/v1/api-keys/", {"name": "ci", "resources": "*"}, format="json").status_code == 201
    assert client.post("/api/v1/pricing/", {"model": "m", "input": 1, "output": 2}, format="json").status_code == 201
    return client


# Non-finite numbers -----------------------------------------------------------------------------


@pytest.mark.parametrize("number", [".nan", ".inf", "-.inf"])
def test_a_non_finite_number_is_a_400_naming_its_path(api: APIClient, number: str):
    before = config_export()
    body = f"resources:\n  - name: r2\n    model: {{connection: demo, model: m}}\n    defaultArgs: {{temperature: {number}}}\n"
    response = api.post("/api/v1/config/", body, content_type="application/yaml")
    assert response.status_code == 400, response.content
    assert "resources[0].defaultArgs.temperature" in response.json(), response.json()
    assert config_export() == before


def test_vmx_apply_names_a_non_finite_number_without_a_traceback(tmp_path: Path):
    path = tmp_path / "c.yaml"
    path.write_text(
        "connections: [{name: c, provider: mock, config: {}}]\n"
        "resources:\n  - name: r\n    model: {connection: c, model: m}\n    defaultArgs: {top_p: [1, .inf]}\n"
    )
    with pytest.raises(CommandError) as caught:
        call_command("vmx_apply", str(path), stdout=StringIO())
    assert "resources[0].defaultArgs.top_p[1]: must be a finite number" in str(caught.value)
    assert not Connection.objects.exists()


# NUL in a path segment --------------------------------------------------------------------------


@pytest.mark.parametrize("route", ["connections", "resources", "api-keys", "pricing"])
def test_a_nul_in_a_path_segment_is_a_json_404(api: APIClient, route: str, caplog):
    with caplog.at_level(logging.WARNING):
        response = api.get(f"/api/v1/{route}/a%00b/")
        put = api.put(f"/api/v1/{route}/a%00b/", {}, format="json")
    assert response.status_code == 404, response.content
    assert response.json() == {"detail": "Not found."} or "detail" in response.json()
    assert put.status_code == 404
    assert all("\x00" not in record.getMessage() for record in caplog.records)


# Prune of kinds the document does not mention ---------------------------------------------------


@pytest.mark.parametrize("body", ['{"pricing": []}', '{"connections": null}', '{"apiKeys": []}'])
def test_a_prune_does_not_delete_kinds_the_document_does_not_mention(api: APIClient, body: str):
    before = config_export()
    response = api.post("/api/v1/config/?prune=true", body, content_type="application/json")
    assert response.status_code == 400, response.content
    assert config_export() == before


def test_a_prune_deletes_a_kind_named_as_an_empty_list(api: APIClient):
    body = '{"connections": [], "resources": [], "apiKeys": [], "pricing": []}'
    response = api.post("/api/v1/config/?prune=true", body, content_type="application/json")
    assert response.status_code == 200, response.content
    assert not (Connection.objects.exists() or AIResource.objects.exists() or APIKey.objects.exists())
    assert not PricingEntry.objects.exists()


def test_vmx_apply_prune_refuses_to_empty_an_unmentioned_kind(api: APIClient, tmp_path: Path):
    path = tmp_path / "c.yaml"
    path.write_text("connections: [{name: demo, provider: mock, config: {}}]\nresources: []\npricing: []\n")
    with pytest.raises(CommandError) as caught:
        call_command("vmx_apply", str(path), "--prune", stdout=StringIO())
    assert "apiKeys" in str(caught.value)
    assert APIKey.objects.filter(name="ci").exists()


# Secrets in a baseURL ---------------------------------------------------------------------------


def test_a_base_url_with_a_query_string_is_refused(api: APIClient):
    body = {"name": "q", "provider": "openai", "config": {"apiKey": "sk-x", "baseURL": "https://h/v1?key=sk-secret"}}
    response = api.post("/api/v1/connections/", body, format="json")
    assert response.status_code == 400, response.content
    assert "config.baseURL" in response.json()


def test_a_stored_query_secret_is_masked_in_every_read(api: APIClient):
    api.post("/api/v1/connections/", {"name": "q", "provider": "openai", "config": {"apiKey": "sk-x"}}, format="json")
    conn = Connection.objects.get(name="q")
    conn.config = {**conn.config, "baseURL": "https://u:pw@h/v1?key=sk-secret&v=2"}  # stored before the rule
    conn.save()
    viewer = User.objects.create_user("viewer", password="pw-0123456789", is_staff=True)
    from django.contrib.auth.models import Permission

    viewer.user_permissions.add(*Permission.objects.filter(codename__startswith="view_"))
    client = APIClient()
    client.force_authenticate(viewer)
    reads = [
        client.get("/api/v1/connections/q/").content,
        client.get("/api/v1/connections/").content,
        client.get("/api/v1/config/").content,
        client.get("/api/v1/config/?format=yaml").content,
    ]
    for content in reads:
        assert b"sk-secret" not in content and b":pw@" not in content, content
    out = StringIO()
    call_command("vmx_export", stdout=out)
    assert "sk-secret" not in out.getvalue()


# The full, stable shape -------------------------------------------------------------------------


def test_reads_have_the_full_shape_whatever_is_stored(api: APIClient):
    put = {"model": {"connection": "demo", "model": "m"}, "fallbackModels": [], "defaultArgs": {}}
    assert api.put("/api/v1/resources/default/", put, format="json").status_code == 200
    resource = api.get("/api/v1/resources/default/").json()
    assert resource["fallbackModels"] == [] and resource["capacity"] == [] and resource["defaultArgs"] == {}
    assert resource["description"] == "" and resource["enabled"] is True
    assert resource["model"]["reasoning"] is True
    key = api.get("/api/v1/api-keys/ci/").json()
    assert key["expiresAt"] is None and key["capacity"] == [] and key["enabled"] is True
    conn = api.get("/api/v1/connections/demo/").json()
    assert conn["description"] == "" and conn["capacity"] == [] and conn["enabled"] is True
    price = api.get("/api/v1/pricing/m/").json()
    assert "cachedInput" in price and price["cachedInput"] is None
    api.put(
        "/api/v1/connections/demo/",
        {"provider": "mock", "config": {}, "capacity": [{"period": "day", "requests": 5}]},
        format="json",
    )
    limit = api.get("/api/v1/connections/demo/").json()["capacity"][0]
    assert limit == {
        "period": "day",
        "requests": 5,
        "tokens": None,
        "costUsd": None,
        "dimension": None,
        "dimensionField": None,
        "enabled": True,
    }
    listed = api.get("/api/v1/resources/").json()
    rows = listed["results"] if isinstance(listed, dict) else listed
    assert set(rows[0]) == set(resource)
