"""The management API against the real server (gunicorn, two workers), with a real HTTP client.

The server refreshes its configuration only once a minute here, so what works "at once" works
because of the gateway's own propagation (an unknown key makes a worker re-read the revision),
not because a refresh happened to fall in between.
"""

from __future__ import annotations

import re
import secrets
from collections.abc import Iterator
from typing import Any

import httpx2
import openai
import pytest
import yaml
from cryptography.fernet import Fernet

from tests.integration.server import GatewayProcess, gateway_env, gateway_start, manage

SECRET = "sk-upstream-management-api-SECRET"


class ManagedGateway:
    def __init__(self, process: GatewayProcess, env: dict[str, str], token: str) -> None:
        self.process, self.env = process, env
        self.api = httpx2.Client(
            base_url=f"{process.base_url}/api/v1", headers={"Authorization": f"Token {token}"}, timeout=30
        )

    @property
    def base_url(self) -> str:
        return self.process.base_url


@pytest.fixture(scope="module")
def managed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ManagedGateway]:
    from tests.integration.conftest import _database

    directory = tmp_path_factory.mktemp("managed")
    databases = _database(directory)
    env = gateway_env(
        database_url=next(databases),
        encryption_key=Fernet.generate_key().decode(),
        VMX_CONFIG_REFRESH_SECONDS="60",
        DJANGO_SUPERUSER_PASSWORD="pw-" + secrets.token_hex(8),
    )
    manage(env, "migrate", "--no-input", "-v", "0")
    config = {
        "connections": [{"name": "offline", "provider": "mock", "config": {}}],
        "resources": [{"name": "demo", "model": {"connection": "offline", "model": "mock-1"}}],
    }
    (directory / "vmx.yaml").write_text(yaml.safe_dump(config))
    manage(env, "vmx_apply", str(directory / "vmx.yaml"))
    manage(env, "createsuperuser", "--no-input", "--username", "ops", "--email", "ops@example.com")
    out = manage(env, "vmx_token", "create", "ops").stdout
    token = re.search(r"\bvmxm-[A-Za-z0-9_-]{40,}", out)
    assert token, out
    process = gateway_start(env, directory / "gunicorn.log", "--workers", "2")
    gateway = ManagedGateway(process, env, token.group(0))
    yield gateway
    gateway.api.close()
    process.stop()
    for _ in databases:  # drop the PostgreSQL database
        pass


def chat(base_url: str, key: str, model: str = "demo") -> Any:
    client = openai.OpenAI(base_url=f"{base_url}/v1", api_key=key, max_retries=0)
    return client.chat.completions.create(model=model, messages=[{"role": "user", "content": "hi"}])


def test_a_key_created_over_the_api_works_at_once_on_every_worker(managed: ManagedGateway):
    name = f"ci-{secrets.token_hex(3)}"
    created = managed.api.post(
        "/api-keys/", json={"name": name, "resources": ["demo"], "capacity": [{"period": "hour", "requests": 1000}]}
    )
    assert created.status_code == 201, created.text
    key = created.json()["key"]
    # Immediately, and enough times that both workers answer (each has its own snapshot).
    for _ in range(8):
        assert chat(managed.base_url, key).choices[0].message.content
    assert managed.api.get(f"/api-keys/{name}/").json().get("key") is None

    # The counters the gateway keeps are what capacity/ reports.
    limits = [item for item in managed.api.get("/capacity/").json()["results"] if item["name"] == name]
    assert limits[0]["used"]["requests"] == 8


def test_no_new_key_is_ever_refused(managed: ManagedGateway):
    """Keys created back to back and used the instant the create answers, each on fresh
    connections (either worker may take them): a worker that read the configuration a moment
    before the create must still read it again."""
    refused = []
    for round_ in range(25):
        name = f"burst-{round_}-{secrets.token_hex(2)}"
        key = managed.api.post("/api-keys/", json={"name": name, "resources": "*"}).json()["key"]
        for _ in range(2):
            status = httpx2.get(f"{managed.base_url}/v1/models", headers={"Authorization": f"Bearer {key}"}).status_code
            if status != 200:
                refused.append((name, status))
        managed.api.delete(f"/api-keys/{name}/")
    assert refused == []


def test_crud_over_http_masks_secrets_and_answers_json_errors(managed: ManagedGateway):
    api = managed.api
    body = {"name": "oa", "provider": "openai", "config": {"apiKey": SECRET, "baseURL": "http://127.0.0.1:9/v1"}}
    created = api.post("/connections/", json=body)
    assert created.status_code == 201, created.text
    for response in (created, api.get("/connections/"), api.get("/connections/oa/"), api.get("/config/")):
        assert SECRET not in response.text
    assert api.patch("/connections/oa/", json={"description": "backup"}).json()["description"] == "backup"

    resource = {"name": "oa-chat", "model": {"connection": "oa", "model": "gpt-4.1"}}
    assert api.put("/resources/oa-chat/", json=resource).status_code == 404  # PUT does not create
    assert api.post("/resources/", json=resource).status_code == 201
    in_use = api.delete("/connections/oa/")
    assert in_use.status_code == 409 and in_use.headers["content-type"].startswith("application/json")
    bad = api.post("/resources/", json={"name": "x", "model": {"connection": "nope", "model": "m"}})
    assert bad.status_code == 400 and bad.json() == {"model.connection": ["no connection 'nope'"]}
    assert api.delete("/resources/oa-chat/").status_code == 204
    assert api.delete("/connections/oa/").status_code == 204

    assert httpx2.get(f"{managed.base_url}/api/v1/connections/").status_code == 401
    unknown = api.get("/not-a-route/")
    assert unknown.status_code == 404 and unknown.json()["detail"]


def test_config_round_trip_and_dry_run_over_http(managed: ManagedGateway):
    api = managed.api
    exported = api.get("/config/", params={"format": "yaml"})
    assert exported.status_code == 200 and exported.headers["content-type"].startswith("application/yaml")
    headers = {"Content-Type": "application/yaml"}
    changed = exported.text.replace("model: mock-1", "model: mock-2")
    dry = api.post("/config/", params={"dry_run": "true"}, content=changed, headers=headers)
    assert dry.status_code == 200, dry.text
    assert dry.json()["changes"]["resources"]["updated"] == ["demo"]
    assert api.get("/config/", params={"format": "yaml"}).text == exported.text  # nothing changed
    again = api.post("/config/", content=exported.text, headers=headers)
    assert again.json()["changed"] is False
    assert api.get("/config/", params={"format": "yaml"}).text == exported.text


def test_docs_schema_and_landing_page_are_served_offline(managed: ManagedGateway):
    docs = httpx2.get(f"{managed.base_url}/api/docs/")
    assert docs.status_code == 200
    assets = re.findall(r'(?:src|href)="([^"]+)"', docs.text)
    assert len(assets) >= 3
    for asset in assets:  # every script and stylesheet comes from this server
        assert httpx2.get(f"{managed.base_url}{asset}".replace("&amp;", "&")).status_code == 200, asset
    schema = httpx2.get(f"{managed.base_url}/api/schema/")
    assert schema.status_code == 200 and "/api/v1/config/" in schema.text

    landing = httpx2.get(f"{managed.base_url}/")
    assert landing.status_code == 200 and "VM-X gateway" in landing.text
    css = re.search(r'href="(/static/[^"]+\.css)"', landing.text)
    assert css and httpx2.get(f"{managed.base_url}{css.group(1)}").status_code == 200


def test_an_oversized_document_is_refused_in_the_api_s_shape(managed: ManagedGateway):
    response = managed.api.post(
        "/config/", content=b"{" + b" " * (3 * 1024 * 1024) + b"}", headers={"Content-Type": "application/json"}
    )
    assert response.status_code == 413
    assert "detail" in response.json()
