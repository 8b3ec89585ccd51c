"""The management API over the configuration (connections/api.py), in process with DRF's APIClient.

What an automation script would notice: CRUD for every object in the config file's shapes,
secrets masked and kept, the API key's value shown once, the same validation messages as
`vmx_apply`, model permissions deciding every call, and the configuration document round trip.
"""

from __future__ import annotations

import html
import io
from pathlib import Path
from typing import Any

import pytest
import yaml
from django.contrib.auth.models import Group, Permission, User
from django.core.management import call_command
from django.core.management.base import CommandError
from rest_framework.test import APIClient

from connections.api.auth import management_token_create
from connections.config_export import config_export
from connections.models import AIResource, APIKey, Connection, PricingEntry

pytestmark = pytest.mark.django_db

SECRET = "sk-proj-api-test-SECRET-0123456789"


@pytest.fixture
def admin_user() -> User:
    return User.objects.create_superuser("ops", "ops@example.com", "pw-0123456789")


@pytest.fixture
def api(admin_user: User) -> APIClient:
    """A client authenticated as `manage.py vmx_token create` users are: `Authorization: Token <key>`."""
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Token {management_token_create(user=admin_user)[1]}")
    return client


def staff_client(*codenames: str) -> APIClient:
    user = User.objects.create_user(f"staff{User.objects.count()}", password="pw-0123456789", is_staff=True)
    if codenames:
        group = Group.objects.create(name=f"group-{user.username}")
        group.permissions.set(Permission.objects.filter(codename__in=codenames))
        user.groups.add(group)
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Token {management_token_create(user=user)[1]}")
    return client


def post(client: APIClient, path: str, body: Any) -> Any:
    return client.post(path, body, format="json")


@pytest.fixture
def base(api: APIClient) -> APIClient:
    """A mock connection `demo` and a resource `default` on it."""
    assert post(api, "/api/v1/connections/", {"name": "demo", "provider": "mock", "config": {}}).status_code == 201
    resource = {"name": "default", "model": {"connection": "demo", "model": "mock-1"}}
    assert post(api, "/api/v1/resources/", resource).status_code == 201
    return api


def vmx_apply(tmp_path: Path, document: dict[str, Any]) -> str:
    """vmx_apply's complaint about `document`, as an operator reads it."""
    path = tmp_path / "vmx.yaml"
    path.write_text(yaml.safe_dump(document))
    with pytest.raises(CommandError) as caught:
        call_command("vmx_apply", str(path), stdout=io.StringIO())
    return str(caught.value)


# ---------------------------------------------------------------------------------------------
# Connections


def test_connection_crud_masks_and_keeps_the_secret(api: APIClient):
    created = post(
        api,
        "/api/v1/connections/",
        {"name": "openai-main", "provider": "openai", "config": {"apiKey": SECRET, "baseURL": "http://127.0.0.1:9/v1"}},
    )
    assert created.status_code == 201, created.content
    assert created.json()["config"] == {"apiKey": "********", "baseURL": "http://127.0.0.1:9/v1"}
    assert SECRET not in created.content.decode()

    listed = api.get("/api/v1/connections/")
    assert [c["name"] for c in listed.json()] == ["openai-main"]
    assert SECRET not in listed.content.decode()

    # A GET body PUT back unchanged keeps the stored secret (the mask means "keep").
    body = api.get("/api/v1/connections/openai-main/").json()
    body["description"] = "Production key"
    replaced = api.put("/api/v1/connections/openai-main/", body, format="json")
    assert replaced.status_code == 200, replaced.content
    assert replaced.json()["description"] == "Production key"
    assert Connection.objects.get(name="openai-main").secrets_get() == {"apiKey": SECRET}

    # PATCH merges: the description changes, the secret stays.
    patched = api.patch("/api/v1/connections/openai-main/", {"description": "edited"}, format="json")
    assert patched.status_code == 200, patched.content
    assert Connection.objects.get(name="openai-main").secrets_get() == {"apiKey": SECRET}

    # A stored key only goes where it went before: a new address needs the key again, so whoever
    # may edit connections cannot send the key to a server of theirs and read it there.
    moved = api.patch(
        "/api/v1/connections/openai-main/", {"config": {"baseURL": "http://attacker.example/v1"}}, format="json"
    )
    assert moved.status_code == 400
    assert "give the real value" in moved.json()["config.apiKey"][0]
    assert Connection.objects.get(name="openai-main").config["baseURL"] == "http://127.0.0.1:9/v1"
    both = {"config": {"baseURL": "http://127.0.0.1:8/v1", "apiKey": "sk-new-0123456789"}}
    assert api.patch("/api/v1/connections/openai-main/", both, format="json").status_code == 200
    row = Connection.objects.get(name="openai-main")
    assert row.config["baseURL"] == "http://127.0.0.1:8/v1"
    assert row.secrets_get() == {"apiKey": "sk-new-0123456789"}

    assert api.delete("/api/v1/connections/openai-main/").status_code == 204
    assert not Connection.objects.exists()
    assert api.get("/api/v1/connections/openai-main/").status_code == 404


def test_a_connection_in_use_is_not_deleted(base: APIClient):
    response = base.delete("/api/v1/connections/demo/")
    assert response.status_code == 409
    assert "default" in response.json()["detail"]
    assert Connection.objects.filter(name="demo").exists()


def test_creating_an_existing_name_is_refused_and_changes_nothing(base: APIClient):
    response = post(
        base, "/api/v1/connections/", {"name": "demo", "provider": "mock", "config": {}, "description": "x"}
    )
    assert response.status_code == 400
    assert "already exists" in response.json()["name"][0]
    assert Connection.objects.get(name="demo").description == ""


def test_connection_check_reports_the_upstream(api: APIClient, upstream):
    config = {"apiKey": SECRET, "baseURL": f"http://127.0.0.1:{upstream.port}/v1"}
    post(api, "/api/v1/connections/", {"name": "up", "provider": "openai", "config": config})
    response = api.post("/api/v1/connections/up/check/")
    assert response.status_code == 200
    assert response.json()["ok"] is True
    assert response.json()["latencyMs"] >= 0


def test_environment_references_are_refused_not_expanded(api: APIClient, monkeypatch):
    monkeypatch.setenv("VMX_TEST_SERVER_SECRET", "do-not-leak")
    body = {"name": "c", "provider": "mock", "config": {}, "description": "${VMX_TEST_SERVER_SECRET}"}
    response = post(api, "/api/v1/connections/", body)
    assert response.status_code == 400
    assert "expanded only by vmx_apply" in response.json()["description"][0]
    assert not Connection.objects.exists()


# ---------------------------------------------------------------------------------------------
# Resources: one validation path with vmx_apply


def test_resource_crud_with_fallbacks_rename_and_slashes(base: APIClient):
    body = {
        "name": "team/chat",
        "model": {"connection": "demo", "model": "mock-1", "maxRetries": 2},
        "fallbackModels": [{"connection": "demo", "model": "mock-2", "timeoutMs": 5000}],
        "defaultArgs": {"temperature": 0.2},
        "capacity": [{"period": "day", "costUsd": 25}],
    }
    created = post(base, "/api/v1/resources/", body)
    assert created.status_code == 201, created.content
    got = base.get("/api/v1/resources/team/chat/").json()
    fallback = {"connection": "demo", "model": "mock-2", "maxRetries": 0, "timeoutMs": 5000, "reasoning": True}
    assert got["fallbackModels"] == [fallback]
    unset = {"requests": None, "tokens": None, "dimension": None, "dimensionField": None, "enabled": True}
    assert got["capacity"] == [{"period": "day", "costUsd": 25, **unset}]

    patched = base.patch("/api/v1/resources/team/chat/", {"name": "team/chat-2", "defaultArgs": None}, format="json")
    assert patched.status_code == 200, patched.content
    assert patched.json()["name"] == "team/chat-2"
    assert patched.json()["defaultArgs"] == {}
    assert not AIResource.objects.filter(name="team/chat").exists()
    assert AIResource.objects.get(name="team/chat-2").model_entries.count() == 2

    assert base.delete("/api/v1/resources/team/chat-2/").status_code == 204
    assert list(AIResource.objects.values_list("name", flat=True)) == ["default"]


@pytest.mark.parametrize(
    ("resource", "path"),
    [
        (
            {
                "name": "r",
                "model": {"connection": "demo", "model": "m"},
                "fallbackModels": [{"connection": "demo", "model": "m"}, {"connection": "nope", "model": "m"}],
            },
            "fallbackModels[1].connection",
        ),
        ({"name": "r", "model": {"connection": "demo", "model": "m", "maxRetries": 11}}, "model.maxRetries"),
        ({"name": "bad name", "model": {"connection": "demo", "model": "m"}}, "name"),
        ({"name": "r", "model": {"connection": "demo", "model": "m"}, "colour": "red"}, "colour"),
        ({"name": "r", "model": {"connection": "demo", "model": "m"}, "capacity": [{"period": "fortnight"}]}, None),
    ],
)
def test_an_invalid_resource_gets_vmx_apply_s_message_under_the_same_path(base, tmp_path, resource, path):
    response = post(base, "/api/v1/resources/", resource)
    assert response.status_code == 400
    errors = response.json()
    if path is not None:
        assert list(errors) == [path]
    complaint = vmx_apply(tmp_path, {"resources": [resource]})
    for field, messages in errors.items():
        for message in messages:
            assert f"resources[0].{field}: {message}" in complaint
    assert list(AIResource.objects.values_list("name", flat=True)) == ["default"]


def test_a_rename_onto_an_existing_name_changes_nothing(base: APIClient):
    post(base, "/api/v1/resources/", {"name": "other", "model": {"connection": "demo", "model": "m"}})
    response = base.patch("/api/v1/resources/other/", {"name": "default"}, format="json")
    assert response.status_code == 400
    assert "already exists" in response.json()["name"][0]
    assert sorted(AIResource.objects.values_list("name", flat=True)) == ["default", "other"]


# ---------------------------------------------------------------------------------------------
# API keys


def test_an_api_key_s_value_is_answered_once(base: APIClient):
    created = post(base, "/api/v1/api-keys/", {"name": "ci", "resources": ["default"]})
    assert created.status_code == 201, created.content
    key = created.json()["key"]
    assert key.startswith("vmx-") and created["Cache-Control"] == "no-store"
    assert APIKey.objects.get(name="ci").digest == APIKey.digest_of(key)
    assert created.json()["keyPrefix"] == key[:8]

    for response in (base.get("/api/v1/api-keys/"), base.get("/api/v1/api-keys/ci/")):
        assert key not in response.content.decode()
        assert "key" not in (response.json()[0] if isinstance(response.json(), list) else response.json())

    # A GET body PUT back changes nothing, the value included.
    body = base.get("/api/v1/api-keys/ci/").json()
    assert base.put("/api/v1/api-keys/ci/", body, format="json").status_code == 200
    assert APIKey.objects.get(name="ci").digest == APIKey.digest_of(key)

    # Giving `key` on an update replaces the value.
    rotated = base.patch("/api/v1/api-keys/ci/", {"key": "vmx-rotated-0123456789abcdef"}, format="json")
    assert rotated.status_code == 200 and "key" not in rotated.json()
    assert APIKey.objects.get(name="ci").digest == APIKey.digest_of("vmx-rotated-0123456789abcdef")


def test_an_api_key_with_an_explicit_value_and_every_resource(base: APIClient):
    created = post(base, "/api/v1/api-keys/", {"name": "ops", "resources": "*", "key": "vmx-ops-0123456789abcdef"})
    assert created.status_code == 201
    assert created.json()["key"] == "vmx-ops-0123456789abcdef"
    assert created.json()["resources"] == "*"
    refused = post(base, "/api/v1/api-keys/", {"name": "x", "resources": ["nope"]})
    assert refused.json() == {"resources[0]": ["no resource 'nope'"]}


# ---------------------------------------------------------------------------------------------
# Pricing


def test_pricing_crud_with_prefixes_and_slashes(api: APIClient):
    created = post(api, "/api/v1/pricing/", {"model": "meta-llama/Llama-3*", "input": 0.5, "output": 1.5})
    assert created.status_code == 201, created.content
    assert api.get("/api/v1/pricing/meta-llama/Llama-3*/").json()["input"] == 0.5
    patched = api.patch("/api/v1/pricing/meta-llama/Llama-3*/", {"cachedInput": 0.25}, format="json")
    assert patched.json()["cachedInput"] == 0.25
    bad = post(api, "/api/v1/pricing/", {"model": "x", "input": -1, "output": 1})
    assert bad.status_code == 400 and "input" in bad.json()
    assert api.delete("/api/v1/pricing/meta-llama/Llama-3*/").status_code == 204
    assert not PricingEntry.objects.exists()


# ---------------------------------------------------------------------------------------------
# The whole configuration


def test_config_round_trip_changes_nothing(base: APIClient):
    post(base, "/api/v1/connections/", {"name": "oa", "provider": "openai", "config": {"apiKey": SECRET}})
    post(
        base,
        "/api/v1/api-keys/",
        {"name": "ci", "resources": ["default"], "capacity": [{"period": "minute", "requests": 5}]},
    )
    post(base, "/api/v1/pricing/", {"model": "gpt-x", "input": 1, "output": 2})
    exported = base.get("/api/v1/config/").json()
    assert exported == config_export()
    assert exported["connections"][1]["config"] == {"apiKey": "********"}

    applied = post(base, "/api/v1/config/?prune=true", exported)
    assert applied.status_code == 200, applied.content
    assert applied.json()["changed"] is False
    assert applied.json()["changes"]["resources"]["unchanged"] == ["default"]
    assert base.get("/api/v1/config/").json() == exported
    assert Connection.objects.get(name="oa").secrets_get() == {"apiKey": SECRET}


def test_config_as_yaml_both_ways(base: APIClient):
    text = base.get("/api/v1/config/?format=yaml")
    assert text.status_code == 200 and text["Content-Type"].startswith("application/yaml")
    assert yaml.safe_load(text.content) == config_export()
    document = text.content.decode().replace("name: default", "name: second")
    applied = base.post("/api/v1/config/", document, content_type="application/yaml")
    assert applied.status_code == 200, applied.content
    assert applied.json()["changes"]["resources"]["created"] == ["second"]


def test_a_dry_run_answers_the_changes_and_changes_nothing(base: APIClient):
    before = config_export()
    document = {
        "connections": [{"name": "demo", "provider": "mock", "config": {}, "description": "changed"}],
        "resources": [{"name": "new", "model": {"connection": "demo", "model": "m"}}],
        "apiKeys": [{"name": "fresh", "resources": "*"}],
    }
    response = post(base, "/api/v1/config/?dry_run=true&prune=true", document)
    assert response.status_code == 200, response.content
    report = response.json()
    assert report["dryRun"] is True and report["changed"] is True
    assert report["changes"]["connections"]["updated"] == ["demo"]
    assert report["changes"]["resources"] == {
        "created": ["new"],
        "updated": [],
        "deleted": ["default"],
        "unchanged": [],
    }
    assert report["changes"]["apiKeys"]["created"] == ["fresh"]
    assert report["createdKeys"] == {}
    assert config_export() == before


def test_an_invalid_document_changes_nothing_and_names_paths(base: APIClient):
    before = config_export()
    document = {
        "connections": [{"name": "demo", "provider": "mock", "config": {}, "description": "changed"}],
        "resources": [{"name": "r", "model": {"connection": "missing", "model": "m"}}],
    }
    response = post(base, "/api/v1/config/", document)
    assert response.status_code == 400
    assert response.json() == {"resources[0].model.connection": ["no connection 'missing'"]}
    assert config_export() == before


def test_config_apply_answers_generated_keys_once(base: APIClient):
    response = post(base, "/api/v1/config/", {"resources": [], "apiKeys": [{"name": "gen", "resources": "*"}]})
    key = response.json()["createdKeys"]["gen"]
    assert APIKey.objects.get(name="gen").digest == APIKey.digest_of(key)
    assert response["Cache-Control"] == "no-store"


# ---------------------------------------------------------------------------------------------
# Who may do what


def test_anonymous_and_non_staff_callers_are_refused(base: APIClient):
    assert APIClient().get("/api/v1/connections/").status_code == 401
    bad_token = APIClient()
    bad_token.credentials(HTTP_AUTHORIZATION="Token 0123456789abcdef0123456789abcdef01234567")
    assert bad_token.get("/api/v1/connections/").status_code == 401
    user = User.objects.create_user("nobody", password="pw-0123456789")  # not staff
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Token {management_token_create(user=user)[1]}")
    assert client.get("/api/v1/connections/").status_code == 403


def test_a_view_only_group_reads_and_cannot_write(base: APIClient):
    reader = staff_client(
        "view_connection",
        "view_airesource",
        "view_apikey",
        "view_pricingentry",
        "view_auditrecord",
        "view_capacityentry",
    )
    for path in (
        "connections/",
        "resources/default/",
        "api-keys/",
        "pricing/",
        "config/",
        "audit/",
        "usage/",
        "capacity/",
    ):
        assert reader.get(f"/api/v1/{path}").status_code == 200, path
    assert reader.post("/api/v1/connections/demo/check/").status_code == 200
    writes = [
        reader.post("/api/v1/connections/", {"name": "x", "provider": "mock", "config": {}}, format="json"),
        reader.put("/api/v1/resources/default/", {"model": {"connection": "demo", "model": "m"}}, format="json"),
        reader.patch("/api/v1/resources/default/", {"description": "x"}, format="json"),
        reader.delete("/api/v1/resources/default/"),
        reader.post("/api/v1/config/", {}, format="json"),
    ]
    assert [w.status_code for w in writes] == [403] * len(writes)
    assert AIResource.objects.get(name="default").description == ""


def test_staff_without_permissions_reads_nothing(base: APIClient):
    client = staff_client()
    assert client.get("/api/v1/connections/").status_code == 403
    assert client.get("/api/v1/audit/").status_code == 403


OWNERS = ("connection", "airesource", "apikey", "pricingentry")
PARTS = ("modelentry", "capacityentry")


def test_pruning_needs_the_delete_permissions(base: APIClient):
    editor = staff_client(
        *[f"{action}_{model}" for action in ("view", "add", "change") for model in OWNERS],
        *[f"{action}_{model}" for action in ("add", "change", "delete") for model in PARTS],
    )
    document = base.get("/api/v1/config/").json()
    assert post(editor, "/api/v1/config/", document).status_code == 200
    assert post(editor, "/api/v1/config/?prune=true", document).status_code == 403


def test_limits_and_model_entries_need_their_own_permissions_as_in_the_admin(base: APIClient):
    """The admin edits limits and fallbacks inline, under the permissions of those models."""
    editor = staff_client(*[f"{action}_{model}" for action in ("view", "add", "change") for model in OWNERS])
    assert editor.patch("/api/v1/resources/default/", {"description": "ok"}, format="json").status_code == 200
    limit = {"capacity": [{"period": "day", "requests": 5}]}
    assert editor.patch("/api/v1/resources/default/", limit, format="json").status_code == 403
    fallback = {"fallbackModels": [{"connection": "demo", "model": "other"}]}
    assert editor.patch("/api/v1/resources/default/", fallback, format="json").status_code == 403
    created = post(editor, "/api/v1/connections/", {"name": "c2", "provider": "mock", "config": {}, **limit})
    assert created.status_code == 403
    assert post(editor, "/api/v1/config/", base.get("/api/v1/config/").json()).status_code == 403
    assert not AIResource.objects.get(name="default").capacity_entries.exists()
    assert AIResource.objects.get(name="default").model_entries.count() == 1


def test_unknown_api_urls_and_bad_flags_answer_json(api: APIClient):
    missing = api.get("/api/v1/nothing-here/")
    assert missing.status_code == 404 and "detail" in missing.json()
    assert post(api, "/api/v1/config/?dry_run=maybe", {}).json() == {"dry_run": ["must be true or false"]}


def test_a_literal_dollar_brace_survives_the_round_trips(base: APIClient, tmp_path):
    # Typed in the admin (which stores text as is), then exported and applied both ways.
    Connection.objects.filter(name="demo").update(description="costs ${HOME} and $$ and $5")
    body = base.get("/api/v1/connections/demo/").json()
    assert body["description"] == "costs $${HOME} and $$$ and $5"  # the file's escaping: $ before $ or { doubled
    assert base.put("/api/v1/connections/demo/", body, format="json").status_code == 200
    assert Connection.objects.get(name="demo").description == "costs ${HOME} and $$ and $5"
    path = tmp_path / "vmx.yaml"
    call_command("vmx_export", str(path), stdout=io.StringIO())
    call_command("vmx_apply", str(path), stdout=io.StringIO())
    assert Connection.objects.get(name="demo").description == "costs ${HOME} and $$ and $5"


def test_the_api_root_lists_every_route(api: APIClient):
    root = api.get("/api/v1/").json()
    assert set(root) == {"connections", "resources", "api-keys", "pricing", "audit", "usage", "capacity", "config"}
    for url in root.values():
        assert api.get(url).status_code == 200, url


def test_the_admin_api_and_vmx_apply_give_one_message(base: APIClient, admin_client, tmp_path):
    """A rule that lives in the model (what a resource name may hold) reads the same everywhere."""
    from tests.connections.test_admin import submit

    api_message = post(base, "/api/v1/resources/", {"name": "bad name", "model": {"connection": "demo", "model": "m"}})
    (message,) = api_message.json()["name"]
    assert f"resources[0].name: {message}" in vmx_apply(
        tmp_path, {"resources": [{"name": "bad name", "model": {"connection": "demo", "model": "m"}}]}
    )
    demo = Connection.objects.get(name="demo")
    page = submit(
        admin_client,
        "/admin/connections/airesource/add/",
        name="bad name",
        **{"model_entries-0-connection": str(demo.pk), "model_entries-0-model": "m"},
    )
    assert page.status_code == 200
    assert html.escape(message) in page.content.decode()


def test_the_admin_session_works_and_writes_need_the_csrf_token(base: APIClient, admin_user: User):
    browser = APIClient(enforce_csrf_checks=True)
    browser.force_login(admin_user)
    assert browser.get("/api/v1/connections/").status_code == 200
    refused = browser.patch("/api/v1/connections/demo/", {"description": "x"}, format="json")
    assert refused.status_code == 403 and "CSRF" in refused.json()["detail"]
    browser.get("/admin/")  # sets the CSRF cookie, as the admin's pages do
    token = browser.cookies["csrftoken"].value
    allowed = browser.patch("/api/v1/connections/demo/", {"description": "x"}, format="json", HTTP_X_CSRFTOKEN=token)
    assert allowed.status_code == 200


def test_secrets_that_cannot_be_decrypted_answer_503_not_500(api: APIClient, settings):
    from cryptography.fernet import Fernet

    post(api, "/api/v1/connections/", {"name": "oa", "provider": "openai", "config": {"apiKey": SECRET}})
    settings.VMX_ENCRYPTION_KEY = Fernet.generate_key().decode()
    for response in (
        api.get("/api/v1/connections/"),
        api.get("/api/v1/config/"),
        api.post("/api/v1/connections/oa/check/"),
    ):
        assert response.status_code == 503, response.content
        assert SECRET not in response.content.decode()


def test_renaming_an_object_with_limits_needs_the_permission_to_change_limits(base: APIClient):
    """A rename starts the object's counters afresh (they are keyed by its name): a user who may
    edit API keys (or resources, connections) but not their limits cannot reset them so."""
    limited = {"name": "ci", "resources": ["default"], "capacity": [{"period": "day", "requests": 5}]}
    assert post(base, "/api/v1/api-keys/", limited).status_code == 201
    assert post(base, "/api/v1/api-keys/", {"name": "free", "resources": ["default"]}).status_code == 201
    base.patch("/api/v1/resources/default/", {"capacity": [{"period": "day", "requests": 5}]}, format="json")
    editor = staff_client("view_apikey", "change_apikey", "view_airesource", "change_airesource")
    denied = editor.patch("/api/v1/api-keys/ci/", {"name": "ci-fresh"}, format="json")
    assert denied.status_code == 403
    assert "limits" in denied.json()["detail"]
    assert editor.patch("/api/v1/resources/default/", {"name": "fresh"}, format="json").status_code == 403
    assert APIKey.objects.filter(name="ci").exists() and AIResource.objects.filter(name="default").exists()
    # Other changes, and renaming what has no limits, stay theirs.
    assert editor.patch("/api/v1/api-keys/ci/", {"enabled": False}, format="json").status_code == 200
    assert editor.patch("/api/v1/api-keys/free/", {"name": "free-2"}, format="json").status_code == 200
    # With the limits' permissions, the rename is allowed.
    assert base.patch("/api/v1/api-keys/ci/", {"name": "ci-fresh"}, format="json").status_code == 200


def test_the_admin_shows_the_name_of_an_object_with_limits_read_only_without_the_limit_permission(base: APIClient):
    from django.test import Client

    assert (
        post(
            base,
            "/api/v1/api-keys/",
            {"name": "ci", "resources": ["default"], "capacity": [{"period": "day", "requests": 5}]},
        ).status_code
        == 201
    )
    user = User.objects.create_user("keyeditor", password="pw-0123456789", is_staff=True)
    user.user_permissions.set(Permission.objects.filter(codename__in=["view_apikey", "change_apikey"]))
    client = Client()
    client.force_login(user)
    key = APIKey.objects.get(name="ci")
    page = client.get(f"/admin/connections/apikey/{key.pk}/change/").content.decode()
    assert 'name="name"' not in page
    client.post(f"/admin/connections/apikey/{key.pk}/change/", {"name": "ci-fresh"})
    assert APIKey.objects.filter(name="ci").exists()
