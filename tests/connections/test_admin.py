"""The admin as an operator uses it: pages load, saves validate, secrets never show."""

from __future__ import annotations

import re

import pytest
from cryptography.fernet import Fernet

from connections.models import AIResource, APIKey, Connection, ModelEntry
from connections.services import ModelEntrySpec, api_key_save, connection_save, resource_save
from tests.forms import form_defaults

pytestmark = pytest.mark.django_db

SECRET = "sk-admin-secret-value-987654321"


def submit(client, url: str, **changes: str | list[str]):
    """GET the form, change some fields, POST it back (as a browser would)."""
    data = form_defaults(client.get(url).content.decode())
    data = {k: v for k, v in data.items() if "__prefix__" not in k}
    for key, value in changes.items():
        if value is None:
            data.pop(key, None)
        else:
            data[key] = value
    return client.post(url, data)


@pytest.fixture
def mock_connection():
    connection_save(name="demo", provider="mock", config={})


@pytest.mark.parametrize(
    "url",
    [
        "/admin/",
        "/admin/connections/connection/",
        "/admin/connections/connection/add/",
        "/admin/connections/airesource/",
        "/admin/connections/airesource/add/",
        "/admin/connections/apikey/",
        "/admin/connections/apikey/add/",
    ],
)
def test_admin_pages_load(admin_client, url):
    assert admin_client.get(url).status_code == 200


def test_add_openai_connection_encrypts_the_key_and_never_shows_it(admin_client):
    response = submit(
        admin_client,
        "/admin/connections/connection/add/",
        name="openai-main",
        provider="openai",
        config__openai__apiKey=SECRET,
        config__openai__baseURL="http://127.0.0.1:9/v1",
    )
    assert response.status_code == 302, response.content.decode()[:2000]
    connection = Connection.objects.get(name="openai-main")
    assert connection.secrets_get() == {"apiKey": SECRET}
    assert connection.config == {"baseURL": "http://127.0.0.1:9/v1"}
    for url in [f"/admin/connections/connection/{connection.pk}/change/", "/admin/connections/connection/"]:
        page = admin_client.get(url).content.decode()
        assert SECRET not in page and connection.secrets_encrypted not in page
    assert (
        "leave blank to keep it"
        in admin_client.get(f"/admin/connections/connection/{connection.pk}/change/").content.decode()
    )


def test_editing_a_connection_with_a_blank_key_keeps_it(admin_client):
    connection, _ = connection_save(name="oa", provider="openai", config={"apiKey": SECRET})
    url = f"/admin/connections/connection/{connection.pk}/change/"
    assert submit(admin_client, url, description="edited").status_code == 302
    connection.refresh_from_db()
    assert connection.description == "edited" and connection.secrets_get() == {"apiKey": SECRET}
    assert submit(admin_client, url, config__openai__apiKey="sk-new-value-123").status_code == 302
    connection.refresh_from_db()
    assert connection.secrets_get() == {"apiKey": "sk-new-value-123"}


def test_a_new_address_needs_the_key_again(admin_client):
    """A stored key only goes where it went before (an editor could otherwise read it at a server
    of their own)."""
    connection, _ = connection_save(name="oa", provider="openai", config={"apiKey": SECRET})
    url = f"/admin/connections/connection/{connection.pk}/change/"
    response = submit(admin_client, url, config__openai__baseURL="http://attacker.example/v1")
    assert response.status_code == 200
    connection.refresh_from_db()
    assert "baseURL" not in connection.config and connection.secrets_get() == {"apiKey": SECRET}
    moved = submit(
        admin_client, url, config__openai__baseURL="http://127.0.0.1:9/v1", config__openai__apiKey="sk-other-123456"
    )
    assert moved.status_code == 302
    connection.refresh_from_db()
    assert connection.config["baseURL"] == "http://127.0.0.1:9/v1"
    assert connection.secrets_get() == {"apiKey": "sk-other-123456"}


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"name": "oa", "provider": "openai"}, "required"),
        (
            {"name": "oa", "provider": "openai", "config__openai__apiKey": "k", "config__openai__baseURL": "not a url"},
            "Enter a valid URL",
        ),
        ({"name": "has space", "provider": "mock"}, "Enter a valid “slug”"),
        ({"name": "oa", "provider": "nope"}, "Select a valid choice"),
    ],
)
def test_invalid_connection_input_gets_a_form_error(admin_client, changes, message):
    response = submit(admin_client, "/admin/connections/connection/add/", **changes)
    assert response.status_code == 200
    assert message in response.content.decode()
    assert not Connection.objects.exists()


def test_wrong_encryption_key_shows_an_error_not_a_500(admin_client, settings):
    connection, _ = connection_save(name="oa", provider="openai", config={"apiKey": SECRET})
    settings.VMX_ENCRYPTION_KEY = Fernet.generate_key().decode()
    url = f"/admin/connections/connection/{connection.pk}/change/"
    assert admin_client.get(url).status_code == 200
    response = submit(admin_client, url, description="x")
    assert response.status_code == 200 and "not the key they were encrypted with" in response.content.decode()


def test_test_connection_action_reports_the_result(admin_client, upstream):
    ok, _ = connection_save(name="good", provider="openai", config={"apiKey": SECRET, "baseURL": upstream.base_url})
    bad, _ = connection_save(
        name="bad", provider="openai", config={"apiKey": SECRET, "baseURL": "http://127.0.0.1:9/v1"}
    )
    response = admin_client.post(
        "/admin/connections/connection/",
        {"action": "test_connection", "index": "0", "_selected_action": [ok.pk, bad.pk]},
        follow=True,
    )
    page = response.content.decode()
    assert "good: ok, 1 model listed" in page.lower()
    assert "bad: cannot reach upstream" in page.lower()
    assert SECRET not in page


def test_add_resource_with_primary_and_ordered_fallbacks(admin_client, mock_connection):
    connection_save(name="oa", provider="openai", config={"apiKey": SECRET})
    demo, oa = Connection.objects.get(name="demo"), Connection.objects.get(name="oa")
    response = submit(
        admin_client,
        "/admin/connections/airesource/add/",
        name="default",
        default_args='{"temperature": 0.2}',
        **{
            "model_entries-0-connection": str(oa.pk),
            "model_entries-0-model": "",  # blank: the OpenAI default
            "model_entries-0-max_retries": "2",
            "model_entries-2-TOTAL_FORMS": "2",
            "model_entries-2-0-position": "2",
            "model_entries-2-0-connection": str(demo.pk),
            "model_entries-2-0-model": "mock-late",
            "model_entries-2-0-max_retries": "0",
            "model_entries-2-0-timeout_ms": "1000",
            "model_entries-2-0-reasoning": "on",
            "model_entries-2-1-position": "1",
            "model_entries-2-1-connection": str(oa.pk),
            "model_entries-2-1-model": "gpt-4o-mini",
            "model_entries-2-1-max_retries": "1",
            "model_entries-2-1-timeout_ms": "600000",
        },
    )
    assert response.status_code == 302, re.findall(r"errorlist[^>]*>(.*?)</ul>", response.content.decode())
    resource = AIResource.objects.get(name="default")
    assert resource.default_args == {"temperature": 0.2}
    entries = [
        (e.position, e.connection.name, e.model, e.max_retries, e.reasoning) for e in resource.model_entries.all()
    ]
    assert entries == [
        (0, "oa", "gpt-4.1", 2, True),
        (1, "oa", "gpt-4o-mini", 1, False),
        (2, "demo", "mock-late", 0, True),
    ]
    # The change page shows the primary and both fallbacks back.
    page = admin_client.get(f"/admin/connections/airesource/{resource.pk}/change/").content.decode()
    assert "gpt-4o-mini" in page and "mock-late" in page


def test_resource_form_errors_instead_of_500(admin_client, mock_connection):
    demo = Connection.objects.get(name="demo")
    response = submit(
        admin_client,
        "/admin/connections/airesource/add/",
        name="default",
        default_args="[1, 2]",
        **{"model_entries-0-connection": str(demo.pk), "model_entries-0-max_retries": "11"},
    )
    page = response.content.decode()
    assert response.status_code == 200
    assert "less than or equal to 10" in page and "must be a JSON object" in page
    assert not AIResource.objects.exists()


def test_resource_without_primary_is_refused(admin_client):
    response = submit(admin_client, "/admin/connections/airesource/add/", name="default")
    assert response.status_code == 200 and not AIResource.objects.exists()


def test_delete_resource_removes_its_entries(admin_client, mock_connection):
    resource, _ = resource_save(name="gone", models=[ModelEntrySpec(connection="demo")])
    response = admin_client.post(f"/admin/connections/airesource/{resource.pk}/delete/", {"post": "yes"})
    assert response.status_code == 302
    assert not AIResource.objects.exists() and not ModelEntry.objects.exists()


def test_deleting_a_connection_in_use_explains_why_not(admin_client, mock_connection):
    resource_save(name="default", models=[ModelEntrySpec(connection="demo")])
    demo = Connection.objects.get(name="demo")
    page = admin_client.get(f"/admin/connections/connection/{demo.pk}/delete/").content.decode()
    assert "would require deleting the following protected related objects" in page
    admin_client.post(f"/admin/connections/connection/{demo.pk}/delete/", {"post": "yes"})
    assert Connection.objects.filter(name="demo").exists()


def test_api_key_value_is_shown_exactly_once(admin_client, mock_connection):
    resource, _ = resource_save(name="default", models=[ModelEntrySpec(connection="demo")])
    response = submit(admin_client, "/admin/connections/apikey/add/", name="ci", resources=[str(resource.pk)])
    assert response.status_code == 200
    page = response.content.decode()
    plaintext = re.search(r'value="(vmx-[^"]+)"', page).group(1)
    assert "only time the key is shown" in page
    assert "no-store" in response["Cache-Control"]
    key = APIKey.objects.get(name="ci")
    assert key.digest == APIKey.digest_of(plaintext) and key.prefix == plaintext[:8]
    assert list(key.resources.values_list("name", flat=True)) == ["default"]
    for url in ["/admin/connections/apikey/", f"/admin/connections/apikey/{key.pk}/change/"]:
        listing = admin_client.get(url).content.decode()
        assert plaintext not in listing and f"{plaintext[:8]}…" in listing


def test_api_key_with_explicit_value_and_expiry(admin_client):
    response = submit(
        admin_client,
        "/admin/connections/apikey/add/",
        name="ops",
        key="vmx-ops-0123456789abcdef",
        all_resources="on",
        expires_at_0="2030-01-31",
        expires_at_1="00:00:00",
    )
    assert response.status_code == 200, re.findall(r"errorlist[^>]*>(.*?)</ul>", response.content.decode())
    key = APIKey.objects.get(name="ops")
    assert key.digest == APIKey.digest_of("vmx-ops-0123456789abcdef") and key.expires_at.year == 2030


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"name": "x", "key": "short", "all_resources": "on"}, "at least 20 characters"),
        ({"name": "x"}, "Choose the resources"),
        ({"name": "x", "key": "vmx-taken-0123456789abcdef", "all_resources": "on"}, "already in use"),
    ],
)
def test_invalid_api_key_input_gets_a_form_error(admin_client, changes, message):
    api_key_save(name="taken", resources=None, key="vmx-taken-0123456789abcdef")
    response = submit(admin_client, "/admin/connections/apikey/add/", **changes)
    assert response.status_code == 200 and message in response.content.decode()
    assert not APIKey.objects.filter(name="x").exists()


def test_disable_action(admin_client):
    api_key, _, _ = api_key_save(name="ci", resources=None)
    admin_client.post(
        "/admin/connections/apikey/", {"action": "disable", "index": "0", "_selected_action": [api_key.pk]}
    )
    api_key.refresh_from_db()
    assert not api_key.enabled
