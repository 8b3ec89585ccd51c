"""Hostile and broken input to the management API: a clear 400 (or 404/405) in DRF's shape,
never a 500, and nothing stored. Each case is one a reviewer found answering 500 or worse."""

from __future__ import annotations

import time

import pytest
from django.contrib.auth.models import User
from rest_framework.test import APIClient

from connections.config_export import config_export
from connections.models import PricingEntry

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
    return client


def raw(client: APIClient, method: str, path: str, body: str | bytes, content_type: str = "application/json"):
    return getattr(client, method)(path, body, content_type=content_type)


def nested(depth: int) -> str:
    return "[" * depth + "]" * depth


@pytest.mark.parametrize(
    ("method", "path", "body"),
    [
        ("post", "/api/v1/connections/", nested(100_000)),
        ("post", "/api/v1/resources/", '{"name": "r", "defaultArgs": {"x": ' + nested(300) + "}}"),
        ("patch", "/api/v1/resources/default/", '{"defaultArgs": {"x": ' + nested(500) + "}}"),
        ("post", "/api/v1/config/", '{"resources": [{"defaultArgs": ' + nested(900) + "}]}"),
        ("post", "/api/v1/connections/", '{"name": "c", "provider": "mock", "config": {}, "description": "\\ud800"}'),
        ("post", "/api/v1/pricing/", '{"model": "a\\ud800", "input": 1, "output": 1}'),
        ("post", "/api/v1/api-keys/", '{"name": "k", "resources": "*", "expiresAt": "2027-02-30T00:00:00Z"}'),
        ("post", "/api/v1/api-keys/", '{"name": "k", "resources": "*", "expiresAt": "2027-01-01T00:00:00+99:00"}'),
        ("post", "/api/v1/api-keys/", '{"name": "k", "resources": "*", "expiresAt": "9999-12-31T23:59:59-01:00"}'),
        ("post", "/api/v1/api-keys/", '{"name": "k", "resources": "*", "expiresAt": "0001-01-01T00:00:00+01:00"}'),
        ("post", "/api/v1/connections/", "[1, 2]"),
        ("post", "/api/v1/connections/", "not json"),
        ("patch", "/api/v1/resources/default/", '"a string"'),
    ],
)
def test_broken_json_is_a_400_and_stores_nothing(api: APIClient, method, path, body):
    before = config_export()
    response = raw(api, method, path, body)
    assert response.status_code == 400, response.content
    assert response.headers["Content-Type"] == "application/json"
    assert config_export() == before


def test_yaml_aliases_are_refused_at_once(api: APIClient):
    # Ten aliases per level, nine levels: a billion nodes if expanded.
    lines = ["a0: &a0 [x, x, x, x, x, x, x, x, x, x]"]
    lines += [f"a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 10)}]" for i in range(1, 10)]
    started = time.monotonic()
    response = raw(api, "post", "/api/v1/config/", "\n".join(lines), "application/yaml")
    assert response.status_code == 400
    assert "aliases" in str(response.json())
    assert time.monotonic() - started < 5


def test_deep_yaml_is_a_400(api: APIClient):
    response = raw(api, "post", "/api/v1/config/", nested(5000), "application/yaml")
    assert response.status_code == 400


def test_a_rename_is_validated_like_a_create(api: APIClient):
    for body in ({"name": "has space"}, {"name": "a/b"}, {"name": "x" * 300}):
        response = api.patch("/api/v1/connections/demo/", body, format="json")
        assert response.status_code == 400, (body, response.content)
        assert list(response.json()) == ["name"]
    api.post("/api/v1/pricing/", {"model": "gpt-x", "input": 1, "output": 2}, format="json")
    assert api.patch("/api/v1/pricing/gpt-x/", {"model": "a b*c*"}, format="json").status_code == 400
    assert list(PricingEntry.objects.values_list("model", flat=True)) == ["gpt-x"]


def test_an_empty_document_does_not_prune_everything(api: APIClient):
    before = config_export()
    for body in ("{}", "null", ""):
        response = raw(api, "post", "/api/v1/config/?prune=true", body)
        assert response.status_code == 400, (body, response.content)
    assert config_export() == before


def test_a_url_name_is_not_read_as_an_escape(api: APIClient):
    PricingEntry.objects.create(model="ft$$x", input=1, output=2)  # as the admin stores it: literally
    assert api.put("/api/v1/pricing/ft$$x/", {"input": 3, "output": 4}, format="json").status_code == 200
    assert [(p.model, float(p.input)) for p in PricingEntry.objects.all()] == [("ft$$x", 3.0)]


def test_config_errors_and_options_are_json_even_when_yaml_was_asked_for(api: APIClient):
    bad = api.post("/api/v1/config/?format=yaml", {"resources": "x"}, format="json")
    assert bad.status_code == 400 and bad.headers["Content-Type"] == "application/json"
    assert APIClient().get("/api/v1/config/?format=yaml").headers["Content-Type"] == "application/json"
    options = api.options("/api/v1/config/?format=yaml")
    assert options.headers["Content-Type"] == "application/json"


def test_suffix_routes_do_not_exist(api: APIClient):
    for path in ("/api/v1/connections.json", "/api/v1/connections/demo.json"):
        response = api.get(path)
        assert response.status_code == 404 and "detail" in response.json()
