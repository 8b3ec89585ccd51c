"""The gateway under real gunicorn + uvicorn workers, set up the way the README tells a newcomer."""

from __future__ import annotations

import json
import re
import signal
import subprocess
import sys
import time

import httpx2
import pytest
from cryptography.fernet import Fernet

from tests.integration.server import REPO, free_port, gateway_env, gateway_start, manage

KEY = Fernet.generate_key().decode()


@pytest.fixture
def env(server_database_url):
    env = gateway_env(database_url=server_database_url, encryption_key=KEY, VMX_CONFIG_REFRESH_SECONDS="1")
    manage(env, "migrate", "--no-input", "-v", "0")
    return env


def test_first_start_serves_admin_with_the_printed_credentials(env, tmp_path):
    first = manage(env, "vmx_bootstrap", "--url", "http://gw.example").stdout
    password = re.search(r"user admin, password (\S+)", first).group(1)
    assert "API key:  vmx-" in first
    assert manage(env, "vmx_bootstrap").stdout == ""  # printed once

    key = re.search(r"API key:  (vmx-\S+)", first).group(1)
    gateway = gateway_start(env, tmp_path / "gunicorn.log", "--workers", "2")
    try:
        assert httpx2.get(f"{gateway.base_url}/readyz").json()["status"] == "ok"
        # The printed "Try it" request answers offline, from the mock provider.
        answer = httpx2.post(
            f"{gateway.base_url}/v1/chat/completions",
            headers={"Authorization": f"Bearer {key}"},
            json={"model": "default", "messages": [{"role": "user", "content": "Hi"}]},
        )
        assert answer.status_code == 200
        assert answer.json()["choices"][0]["message"]["content"].endswith("You said: Hi")
        css = httpx2.get(f"{gateway.base_url}/static/admin/css/base.css")
        assert css.status_code == 200 and css.headers["content-type"].startswith("text/css")

        with httpx2.Client(base_url=gateway.base_url) as browser:
            login = browser.get("/admin/login/")
            token = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', login.text).group(1)
            response = browser.post(
                "/admin/login/?next=/admin/",
                data={"username": "admin", "password": password, "csrfmiddlewaretoken": token},
                headers={"Referer": f"{gateway.base_url}/admin/login/"},
            )
            assert response.status_code == 302 and response.headers["location"] == "/admin/"
            index = browser.get("/admin/")
            assert index.status_code == 200 and "AI resources" in index.text and "API keys" in index.text
            assert "default" in browser.get("/admin/connections/airesource/").text
    finally:
        assert gateway.stop() == 0
    log = gateway.log()
    assert "Application startup complete" in log and "Traceback" not in log


def test_wrong_encryption_key_stops_startup_with_a_clear_message(env, tmp_path):
    manage(
        env,
        "shell",
        "-c",
        "from connections.services import connection_save; connection_save(name='oa', provider='openai', config={'apiKey': 'sk-very-secret-000'})",
    )
    wrong = {**env, "VMX_ENCRYPTION_KEY": Fernet.generate_key().decode()}
    gateway = gateway_start(wrong, tmp_path / "gunicorn.log", "--workers", "1", wait=False)
    try:
        code = gateway.process.wait(timeout=60)
    finally:
        gateway.stop()
    log = gateway.log()
    assert code != 0
    assert "cannot decrypt the secrets of connection 'oa'" in log
    assert "sk-very-secret-000" not in log
    # Commands say the same.
    result = manage(wrong, "vmx_export", check=False)
    assert result.returncode != 0 and "not the key they were encrypted with" in result.stderr


def test_command_line_bind_wins_over_vmx_bind(env, tmp_path):
    env_port, cli_port = free_port(), free_port()
    gateway = gateway_start(
        {**env, "VMX_BIND": f"127.0.0.1:{env_port}", "VMX_WORKERS": "1"},
        tmp_path / "gunicorn.log",
        "--bind",
        f"127.0.0.1:{cli_port}",
        port=cli_port,
    )
    try:
        with pytest.raises(httpx2.ConnectError):
            httpx2.get(f"http://127.0.0.1:{env_port}/healthz", timeout=2)
        assert "Booting worker" in gateway.log() and gateway.log().count("Booting worker") == 1
    finally:
        gateway.stop()


def test_vmx_bind_and_workers_from_the_environment(env, tmp_path):
    port = free_port()
    gateway = gateway_start(
        {**env, "VMX_BIND": f"127.0.0.1:{port}", "VMX_WORKERS": "3"},
        tmp_path / "g.log",
        "--bind",
        f"127.0.0.1:{port}",
        port=port,
    )
    gateway.stop()
    gateway = gateway_start(
        {**env, "VMX_BIND": f"127.0.0.1:{port}", "VMX_WORKERS": "3"}, tmp_path / "g2.log", port=port
    )
    try:
        assert httpx2.get(f"http://127.0.0.1:{port}/healthz").status_code == 200
        assert gateway.log().count("Booting worker") == 3
    finally:
        gateway.stop()


def test_concurrent_writers_lose_nothing(env, server_database_url):
    """Several processes committing at once (as workers writing audit batches will) all succeed."""
    script = (
        "from connections.signals import config_revision_bump\n"
        "from django.db import transaction\n"
        "for _ in range(100):\n"
        "    with transaction.atomic():\n"
        "        config_revision_bump()\n"
    )
    writers = [
        subprocess.Popen(
            [sys.executable, "manage.py", "shell", "-c", script], cwd=REPO, env=env, stderr=subprocess.PIPE, text=True
        )
        for _ in range(4)
    ]
    errors = [w.communicate(timeout=120)[1] for w in writers]
    assert [w.returncode for w in writers] == [0, 0, 0, 0], errors
    value = manage(
        env,
        "shell",
        "-v",
        "0",
        "-c",
        "from connections.selectors import config_revision_get; print(config_revision_get())",
    )
    assert value.stdout.strip() == "400"


def _apply(env, tmp_path, config) -> None:
    import yaml

    path = tmp_path / f"config-{time.monotonic_ns()}.yaml"
    path.write_text(yaml.safe_dump(config))
    manage(env, "vmx_apply", str(path))


DEMO = {
    "connections": [{"name": "offline", "provider": "mock", "config": {}}],
    "resources": [{"name": "demo", "model": {"connection": "offline", "model": "mock-1"}}],
    "apiKeys": [{"name": "ops", "key": "vmx-ops-0123456789abcdef0", "resources": "*"}],
}
AUTH = {"Authorization": "Bearer vmx-ops-0123456789abcdef0"}


def test_queued_audit_records_survive_a_graceful_stop(env, tmp_path):
    _apply(env, tmp_path, DEMO)
    gateway = gateway_start(env, tmp_path / "gunicorn.log", "--workers", "2")
    ids = []
    try:
        with httpx2.Client(base_url=gateway.base_url) as http:
            for n in range(60):
                body = {"model": "demo", "messages": [{"role": "user", "content": f"n{n}"}]}
                ids.append(http.post("/v1/chat/completions", json=body, headers=AUTH).headers["x-vmx-request-id"])
    finally:
        assert gateway.stop() == 0  # SIGTERM right after the last answer
    out = manage(env, "vmx_audit", "--format", "jsonl", "--limit", "1000").stdout
    audited = {json.loads(line)["request_id"] for line in out.splitlines()}
    assert audited == set(ids)


def test_sigterm_lets_an_open_stream_finish(env, tmp_path, upstream):
    from tests.fakes.openai_upstream import Reply, chat_stream

    config = {
        "connections": [
            {"name": "up", "provider": "openai", "config": {"apiKey": "sk-x", "baseURL": upstream.base_url}}
        ],
        "resources": [{"name": "slow", "model": {"connection": "up", "model": "gpt-4.1"}}],
        "apiKeys": DEMO["apiKeys"],
    }
    _apply(env, tmp_path, config)
    paced = []
    for event in chat_stream("gpt-4.1", "a b c d e f g h", include_usage=True):
        paced += [event, 0.25]
    upstream.reply("POST", "/v1/chat/completions", Reply(events=paced))
    gateway = gateway_start(env, tmp_path / "gunicorn.log", "--workers", "1")
    try:
        with httpx2.Client(base_url=gateway.base_url, timeout=30) as http:
            body = {"model": "slow", "messages": [{"role": "user", "content": "x"}], "stream": True}
            with http.stream("POST", "/v1/chat/completions", json=body, headers=AUTH) as response:
                chunks = response.iter_raw()
                first = next(chunks)
                gateway.process.send_signal(signal.SIGTERM)
                rest = b"".join(chunks)
        assert (first + rest).endswith(b"data: [DONE]\n\n")
        assert gateway.process.wait(timeout=30) == 0
    finally:
        gateway.stop()
    record = json.loads(manage(env, "vmx_audit", "--format", "jsonl", "--limit", "1").stdout)
    assert record["status_code"] == 200 and record["error_type"] is None


def test_a_change_made_elsewhere_reaches_every_worker(env, tmp_path):
    _apply(env, tmp_path, DEMO)
    gateway = gateway_start({**env, "VMX_WORKERS": "2"}, tmp_path / "gunicorn.log")
    try:
        with httpx2.Client(base_url=gateway.base_url) as http:
            # Both workers hold a warm snapshot before the change.
            for _ in range(10):
                assert [m["id"] for m in http.get("/v1/models", headers=AUTH).json()["data"]] == ["demo"]
        changed = {
            **DEMO,
            "resources": [*DEMO["resources"], {"name": "added", "model": {"connection": "offline", "model": "m"}}],
        }
        _apply(env, tmp_path, changed)
        applied = time.monotonic()
        seen_everywhere = None
        while time.monotonic() - applied < 10:
            # New connections spread over both workers; all must see the change.
            answers = [
                [m["id"] for m in httpx2.get(f"{gateway.base_url}/v1/models", headers=AUTH).json()["data"]]
                for _ in range(12)
            ]
            if all(ids == ["added", "demo"] for ids in answers):
                seen_everywhere = time.monotonic() - applied
                break
            time.sleep(0.1)
        assert seen_everywhere is not None, "the change never reached every worker"
        print(f"change visible on every worker after {seen_everywhere:.2f} s")
    finally:
        gateway.stop()
