"""Client requests under workspaces and environments (DESIGN.md 2.15), through a real gateway
process, with the official OpenAI and Anthropic SDKs.

Two environments of one workspace, acme/dev and acme/prod, each have a connection `main` on an
upstream of their own and a resource `default`: a key reaches its own environment only, on the
flat paths and on VM-X's tenant paths, and no answer tells that the other exists.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anthropic
import httpx2
import openai
import pytest
import yaml
from cryptography.fernet import Fernet

from tests.fakes.openai_upstream import FakeOpenAI, Reply
from tests.integration.conftest import Gateway, _database
from tests.integration.server import gateway_env, gateway_start, manage

DEV_KEY = "vmx-it-acme-dev-0123456789abcdef"
PROD_KEY = "vmx-it-acme-prod-0123456789abcdef"
DEV_CI_KEY = "vmx-it-acme-dev-ci-0123456789abcdef"
PROD_CI_KEY = "vmx-it-acme-prod-ci-0123456789abcdef"
OTHER_KEY = "vmx-it-globex-prod-0123456789abc"
DISABLED_DEV_KEY = "vmx-it-acme-dev-disabled-012345678"
MESSAGES = [{"role": "user", "content": "hi"}]


def _environment(fake: FakeOpenAI, *, upstream_path: str, keys: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "connections": [
            {
                "name": "main",
                "provider": "openai",
                "config": {
                    "apiKey": f"sk-{upstream_path}",
                    "baseURL": f"http://127.0.0.1:{fake.port}/{upstream_path}/v1",
                },
                "capacity": [],
            }
        ],
        "resources": [
            {"name": "default", "model": {"connection": "main", "model": f"gpt-{upstream_path}"}},
            # The same upstream model ids in every environment: what one learns must stay its own.
            {
                "name": "guarded",
                "model": {"connection": "main", "model": "gpt-guarded"},
                "fallbackModels": [{"connection": "main", "model": "gpt-second"}],
            },
        ],
        "apiKeys": keys,
    }


@pytest.fixture(scope="module")
def tenants(tmp_path_factory: pytest.TempPathFactory, fake_openai: FakeOpenAI) -> Iterator[Gateway]:
    directory = tmp_path_factory.mktemp("tenancy")
    databases = _database(directory)
    env = gateway_env(
        database_url=next(databases), encryption_key=Fernet.generate_key().decode(), VMX_CONFIG_REFRESH_SECONDS="0.2"
    )
    manage(env, "migrate", "--no-input", "-v", "0")
    limit = [{"period": "minute", "requests": 1}]
    files = {
        "acme/dev": _environment(
            fake_openai,
            upstream_path="dev",
            keys=[
                {"name": "app", "key": DEV_KEY, "resources": "*"},
                {"name": "ci", "key": DEV_CI_KEY, "resources": "*", "capacity": limit},
                {"name": "off", "key": DISABLED_DEV_KEY, "resources": "*", "enabled": False},
            ],
        ),
        "acme/prod": _environment(
            fake_openai,
            upstream_path="prod",
            keys=[
                {"name": "app", "key": PROD_KEY, "resources": "*"},
                {"name": "ci", "key": PROD_CI_KEY, "resources": "*", "capacity": limit},
            ],
        ),
        "globex/prod": _environment(
            fake_openai, upstream_path="globex", keys=[{"name": "app", "key": OTHER_KEY, "resources": "*"}]
        ),
    }
    for label, document in files.items():
        path = directory / f"{label.replace('/', '-')}.yaml"
        path.write_text(yaml.safe_dump(document))
        manage(env, "vmx_apply", str(path), "--environment", label)
    process = gateway_start(env, directory / "gunicorn.log", "--workers", "1")
    yield Gateway(process, env)
    process.stop()
    for _ in databases:
        pass


def _ids(gateway: Gateway, label: str) -> tuple[str, str]:
    workspace, environment = label.split("/")
    code = (
        "from connections.models import Environment;"
        f"e = Environment.objects.get(workspace__name='{workspace}', name='{environment}');"
        "print('IDS', e.workspace_id, e.pk)"
    )
    out = manage(gateway.env, "shell", "-c", code).stdout
    line = next(line for line in out.splitlines() if line.startswith("IDS "))
    _, workspace_id, environment_id = line.split()
    return workspace_id, environment_id


def _openai(gateway: Gateway, key: str, prefix: str = "/v1") -> openai.OpenAI:
    return openai.OpenAI(api_key=key, base_url=gateway.base_url + prefix, max_retries=0)


def test_each_key_reaches_its_own_environment_on_flat_and_tenant_paths(tenants, fake_openai):
    fake_openai.reset()
    for key, label, upstream in ((DEV_KEY, "acme/dev", "dev"), (PROD_KEY, "acme/prod", "prod")):
        for prefix in ("/v1", f"/v1/completion/{label}"):
            raw = _openai(tenants, key, prefix).chat.completions.with_raw_response.create(
                model="default", messages=MESSAGES
            )
            assert raw.headers["x-vmx-environment"] == label
            assert raw.parse().model == f"gpt-{upstream}"
            raw = _openai(tenants, key, prefix).responses.with_raw_response.create(model="default", input="hi")
            assert raw.headers["x-vmx-environment"] == label
    assert {call.path for call in fake_openai.requests} == {
        "/dev/v1/chat/completions",
        "/dev/v1/responses",
        "/prod/v1/chat/completions",
        "/prod/v1/responses",
    }


def test_the_anthropic_sdk_works_on_the_tenant_base_url(tenants, fake_openai):
    fake_openai.reset()
    client = anthropic.Anthropic(
        api_key=PROD_KEY, base_url=f"{tenants.base_url}/v1/completion/acme/prod/anthropic", max_retries=0
    )
    message = client.messages.create(model="default", max_tokens=64, messages=MESSAGES)
    assert message.content[0].type == "text"
    with client.messages.stream(model="default", max_tokens=64, messages=MESSAGES) as stream:
        assert stream.get_final_message().stop_reason == "end_turn"
    counted = client.messages.count_tokens(model="default", messages=MESSAGES)
    assert counted.input_tokens > 0
    assert {call.path for call in fake_openai.requests} <= {"/prod/v1/responses", "/prod/v1/responses/input_tokens"}
    assert fake_openai.requests


def test_segments_may_be_ids_with_or_without_dashes(tenants):
    workspace_id, environment_id = _ids(tenants, "acme/prod")
    for workspace, environment in (
        (workspace_id, environment_id),
        (uuid.UUID(workspace_id).hex, uuid.UUID(environment_id).hex),
        ("acme", environment_id),
    ):
        models = _openai(tenants, PROD_KEY, f"/v1/completion/{workspace}/{environment}").models.list()
        assert sorted(model.id for model in models.data) == ["default", "guarded"]


@pytest.mark.parametrize(
    "prefix",
    [
        "/v1/completion/acme/dev",  # another environment of the key's workspace
        "/v1/completion/globex/prod",  # another workspace
        "/v1/completion/acme/staging",  # an environment that does not exist
        "/v1/completion/acme/Prod",  # a typo
        "/v1/completion/nobody/prod",
    ],
)
def test_a_path_that_is_not_the_keys_environment_gets_the_unknown_keys_answer(tenants, prefix):
    def post(key: str, path_prefix: str) -> httpx2.Response:
        return httpx2.post(
            f"{tenants.base_url}{path_prefix}/chat/completions",
            headers={"Authorization": f"Bearer {key}"},
            json={"model": "default", "messages": MESSAGES},
        )

    unknown = post("vmx-it-nobody-has-this-key-0123456789", prefix)
    mismatch = post(PROD_KEY, prefix)
    assert (mismatch.status_code, mismatch.json()) == (unknown.status_code, unknown.json()) == (401, unknown.json())
    assert "x-vmx-environment" not in mismatch.headers
    # The SDKs see it as a bad key, whatever the environment.
    with pytest.raises(openai.AuthenticationError):
        _openai(tenants, PROD_KEY, prefix).models.list()


def test_a_disabled_key_of_another_environment_tells_nothing_either(tenants):
    response = httpx2.post(
        f"{tenants.base_url}/v1/completion/acme/prod/chat/completions",
        headers={"Authorization": f"Bearer {DISABLED_DEV_KEY}"},
        json={"model": "default", "messages": MESSAGES},
    )
    assert response.status_code == 401
    assert response.json()["error"]["message"] == "Incorrect API key provided."


def test_mismatches_are_counted_with_the_401s_and_not_audited(tenants):
    def failures() -> float:
        text = httpx2.get(f"{tenants.base_url}/metrics").text
        return sum(float(line.split()[-1]) for line in text.splitlines() if line.startswith("vmx_auth_failures_total"))

    before = failures()
    correlation = f"mismatch-{uuid.uuid4().hex[:8]}"
    response = httpx2.post(
        f"{tenants.base_url}/v1/completion/acme/dev/chat/completions",
        headers={"Authorization": f"Bearer {PROD_KEY}", "x-vmx-correlation-id": correlation},
        json={"model": "default", "messages": MESSAGES},
    )
    assert response.status_code == 401
    assert failures() == before + 1
    out = manage(tenants.env, "vmx_audit", "--format", "jsonl", "--correlation-id", correlation).stdout
    assert out.strip() == ""


def test_another_environments_resource_is_an_unknown_one_on_every_path(tenants):
    manage(
        tenants.env,
        "shell",
        "-c",
        "from connections.models import Environment;"
        "from connections.services import ModelEntrySpec, resource_save;"
        "e = Environment.objects.get(workspace__name='acme', name='dev');"
        "resource_save(name='dev-only', models=[ModelEntrySpec(connection='main', model='x')], environment=e)",
    )
    time.sleep(0.6)  # two refresh periods
    for prefix in ("/v1", "/v1/completion/acme/prod"):
        for model in ("dev-only", "no-such-resource"):
            with pytest.raises(openai.NotFoundError) as caught:
                _openai(tenants, PROD_KEY, prefix).chat.completions.create(model=model, messages=MESSAGES)
            assert caught.value.code == "model_not_found"
            assert caught.value.response.headers["x-vmx-environment"] == "acme/prod"
            body = caught.value.response.json()
            assert body["error"]["message"] == f"The model '{model}' does not exist or you do not have access to it."
    # The dev key does reach it.
    assert _openai(tenants, DEV_KEY).chat.completions.create(model="dev-only", messages=MESSAGES).choices


def test_connection_addresses_stay_in_the_keys_environment(tenants, fake_openai):
    fake_openai.reset()
    answer = _openai(tenants, PROD_KEY).chat.completions.create(model="main/gpt-direct", messages=MESSAGES)
    assert answer.choices
    assert [call.path for call in fake_openai.requests] == ["/prod/v1/chat/completions"]
    with pytest.raises(openai.NotFoundError) as caught:
        _openai(tenants, OTHER_KEY).chat.completions.create(model="up-a/gpt-4.1", messages=MESSAGES)
    assert caught.value.code == "model_not_found"


def test_models_lists_only_the_keys_environment(tenants):
    manage(
        tenants.env,
        "shell",
        "-c",
        "from connections.models import Environment;"
        "from connections.services import ModelEntrySpec, resource_save;"
        "e = Environment.objects.get(workspace__name='globex', name='prod');"
        "resource_save(name='globex-only', models=[ModelEntrySpec(connection='main', model='x')], environment=e)",
    )
    time.sleep(0.6)
    listed = {model.id for model in _openai(tenants, PROD_KEY).models.list().data}
    assert "globex-only" not in listed and "default" in listed
    assert "globex-only" in {model.id for model in _openai(tenants, OTHER_KEY).models.list().data}


def test_audit_records_and_metrics_carry_the_workspace_and_environment(tenants):
    raw = _openai(tenants, OTHER_KEY, "/v1/completion/globex/prod").chat.completions.with_raw_response.create(
        model="default", messages=MESSAGES
    )
    record = tenants.audit(raw.headers["x-vmx-request-id"])
    assert (record["workspace"], record["environment"], record["api_key"]) == ("globex", "prod", "app")
    text = httpx2.get(f"{tenants.base_url}/metrics").text
    assert any(
        line.startswith("vmx_requests_total{")
        and 'workspace="globex"' in line
        and 'environment="prod"' in line
        and 'resource="default"' in line
        for line in text.splitlines()
    )


def test_keys_of_equal_names_in_two_environments_count_apart(tenants):
    """acme/dev's `ci` and acme/prod's `ci` are each limited to 1 request a minute."""
    assert _openai(tenants, DEV_CI_KEY).chat.completions.create(model="default", messages=MESSAGES).choices
    with pytest.raises(openai.RateLimitError) as caught:
        _openai(tenants, DEV_CI_KEY).chat.completions.create(model="default", messages=MESSAGES)
    assert "API key 'ci'" in caught.value.message
    # prod's `ci` has its own counter: dev's spent minute is not its own.
    assert _openai(tenants, PROD_CI_KEY).chat.completions.create(model="default", messages=MESSAGES).choices
    with pytest.raises(openai.RateLimitError):
        _openai(tenants, PROD_CI_KEY, "/v1/completion/acme/prod").chat.completions.create(
            model="default", messages=MESSAGES
        )


def test_a_learned_upstream_limit_of_one_environment_leaves_the_other_alone(tenants, fake_openai):
    fake_openai.reset()
    exhausted = {"x-ratelimit-remaining-requests": "0", "x-ratelimit-reset-requests": "30s"}
    fake_openai.reply("POST", "/dev/v1/chat/completions", Reply(headers=exhausted))
    dev, prod = _openai(tenants, DEV_KEY), _openai(tenants, PROD_KEY)
    learned = dev.chat.completions.with_raw_response.create(model="guarded", messages=MESSAGES)
    assert learned.headers["x-vmx-model"] == "gpt-guarded"
    # dev's `main` now skips gpt-guarded until the reset…
    skipped = dev.chat.completions.with_raw_response.create(model="guarded", messages=MESSAGES)
    assert skipped.headers["x-vmx-model"] == "gpt-second"
    # …and prod's `main`, another upstream with the same model id, is called as before.
    called = prod.chat.completions.with_raw_response.create(model="guarded", messages=MESSAGES)
    assert (called.headers["x-vmx-model"], called.headers["x-vmx-attempts"]) == ("gpt-guarded", "1")
    assert [c.path for c in fake_openai.requests].count("/prod/v1/chat/completions") == 1


def test_snapshot_query_count_does_not_grow_with_environments(tenants):
    code = (
        "from django.db import connection;"
        "from django.test.utils import CaptureQueriesContext;"
        "from connections.selectors import config_snapshot_build;"
        "from connections.services import environment_get_or_create;"
        "counts = [];"
        "exec('for n in range(2):\\n"
        '    [environment_get_or_create(label=f"load{n}/e{i}") for i in range(5)]\\n'
        "    c = CaptureQueriesContext(connection)\\n"
        "    c.__enter__(); config_snapshot_build(); c.__exit__(None, None, None)\\n"
        "    counts.append(len(c.captured_queries))');"
        "print('COUNTS', counts)"
    )
    out = manage(tenants.env, "shell", "-c", code).stdout
    counts = json.loads(next(line for line in out.splitlines() if line.startswith("COUNTS "))[7:])
    assert counts[0] == counts[1], counts


def test_a_new_environment_and_key_work_at_once_on_the_tenant_path(tenants, tmp_path: Path):
    document = {"apiKeys": [{"name": "fresh", "key": "vmx-it-fresh-key-0123456789abcdef", "resources": "*"}]}
    path = tmp_path / "fresh.yaml"
    path.write_text(yaml.safe_dump(document))
    out = manage(tenants.env, "vmx_apply", str(path), "--environment", "initech/qa").stdout
    assert "initech/qa" in out
    models = _openai(tenants, "vmx-it-fresh-key-0123456789abcdef", "/v1/completion/initech/qa").models.list()
    assert models.data == []
