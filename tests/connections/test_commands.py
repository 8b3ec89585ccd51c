"""vmx_create_api_key, vmx_check_connection and vmx_bootstrap as an operator runs them."""

from __future__ import annotations

import io

import pytest
from django.contrib.auth import get_user_model
from django.core.management import call_command
from django.core.management.base import CommandError

from connections.models import AIResource, APIKey, Connection
from connections.services import ModelEntrySpec, connection_save, resource_save
from tests.fakes.openai_upstream import Reply

pytestmark = pytest.mark.django_db

SECRET = "sk-proj-abcdefghijklmnop-SECRET"


def run(*args: str) -> tuple[str, str]:
    out, err = io.StringIO(), io.StringIO()
    call_command(*args, stdout=out, stderr=err)
    return out.getvalue(), err.getvalue()


@pytest.fixture
def default_resource():
    connection_save(name="demo", provider="mock", config={})
    resource_save(name="default", models=[ModelEntrySpec(connection="demo")])
    resource_save(name="other", models=[ModelEntrySpec(connection="demo")])


def test_create_api_key_prints_a_generated_key_once(default_resource):
    out, err = run("vmx_create_api_key", "ci", "--resources", "default,other")
    key = out.strip()
    assert key.startswith("vmx-") and len(key) >= 40
    assert "shown once" in err
    row = APIKey.objects.get(name="ci")
    assert row.digest == APIKey.digest_of(key)
    assert sorted(row.resources.values_list("name", flat=True)) == ["default", "other"]


def test_create_api_key_with_explicit_value_and_all_resources(default_resource):
    out, _ = run("vmx_create_api_key", "ops", "--all", "--key", "vmx-ops-0123456789abcdef")
    assert out.strip() == "vmx-ops-0123456789abcdef"
    assert APIKey.objects.get(name="ops").all_resources


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["ci", "--resources", "nope"], "no resource 'nope'"),
        (["ci", "--all", "--key", "short"], "at least 20"),
        (["ci", "--resources", " , "], "at least one resource"),
    ],
)
def test_create_api_key_rejects_bad_input(default_resource, args, message):
    with pytest.raises(CommandError, match=message):
        run("vmx_create_api_key", *args)
    assert not APIKey.objects.exists()


def test_create_api_key_refuses_an_existing_name(default_resource):
    run("vmx_create_api_key", "ci", "--all")
    with pytest.raises(CommandError, match="already exists"):
        run("vmx_create_api_key", "ci", "--all")


def test_check_connection_reports_latency_and_sends_the_decrypted_key(upstream):
    connection_save(
        name="oa", provider="openai", config={"apiKey": SECRET, "baseURL": upstream.base_url, "organization": "org-1"}
    )
    out, _ = run("vmx_check_connection", "oa")
    assert out.startswith("oa: ok, 1 model listed in ") and out.rstrip().endswith(" ms")
    [request] = upstream.requests
    assert (request.method, request.path) == ("GET", "/v1/models")
    assert request.headers["authorization"] == f"Bearer {SECRET}"
    assert request.headers["openai-organization"] == "org-1"


def test_check_connection_reports_the_upstream_error_without_the_secret(upstream):
    connection_save(name="oa", provider="openai", config={"apiKey": SECRET, "baseURL": upstream.base_url})
    message = f"Incorrect API key provided: {SECRET}. You can find your API key at ..."
    error = {"error": {"message": message, "type": "invalid_request_error", "code": "invalid_api_key", "param": None}}
    upstream.reply("GET", "/v1/models", Reply(status=401, body=error))
    with pytest.raises(CommandError) as info:
        run("vmx_check_connection", "oa")
    assert "HTTP 401" in str(info.value) and "Incorrect API key provided" in str(info.value)
    assert SECRET not in str(info.value) and "abcdefghijklmnop" not in str(info.value)


def test_check_connection_reports_an_unreachable_upstream():
    connection_save(name="oa", provider="openai", config={"apiKey": SECRET, "baseURL": "http://127.0.0.1:9/v1"})
    with pytest.raises(CommandError, match="cannot reach upstream"):
        run("vmx_check_connection", "oa")


def test_check_connection_unknown_name():
    with pytest.raises(CommandError, match="no connection 'nope'"):
        run("vmx_check_connection", "nope")


def test_bootstrap_without_openai_key_gives_an_offline_demo_once(monkeypatch):
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    out, _ = run("vmx_bootstrap", "--url", "http://127.0.0.1:8000")
    assert "http://127.0.0.1:8000/admin/" in out and "user admin, password " in out
    key = next(line.split()[-1] for line in out.splitlines() if line.startswith("API key:"))
    assert APIKey.objects.get(digest=APIKey.digest_of(key)).all_resources
    password = out.split("user admin, password ")[1].split()[0]
    assert get_user_model().objects.get(username="admin").check_password(password)
    assert Connection.objects.get().provider == "mock"
    assert AIResource.objects.get().name == "default"
    # Later starts print nothing and change nothing.
    again, _ = run("vmx_bootstrap")
    assert again == ""
    assert APIKey.objects.count() == 1


def test_bootstrap_with_openai_key_creates_openai_default(monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", SECRET)
    out, _ = run("vmx_bootstrap")
    assert SECRET not in out
    connection = Connection.objects.get()
    assert (connection.provider, connection.secrets_get()) == ("openai", {"apiKey": SECRET})
    models = [(e.position, e.model) for e in AIResource.objects.get(name="default").model_entries.all()]
    assert models == [(0, "gpt-4.1"), (1, "gpt-4o-mini")]
