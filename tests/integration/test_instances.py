"""Several gateway instances on one PostgreSQL and one Redis, as docs/deployment.md sets them up.

Two instances (gunicorn, 2 workers each) share a database: an API key created in the admin of
one is accepted by the other within the refresh interval, and both audit into one table.
"""

from __future__ import annotations

import re
import socket
import time
from concurrent.futures import ThreadPoolExecutor

import httpx2
import pytest
import yaml
from cryptography.fernet import Fernet

from tests.integration.conftest import gateway_config, postgres_url
from tests.integration.server import gateway_env, gateway_start, manage

REFRESH_SECONDS = 1.0
NEW_KEY = "vmx-made-on-instance-a-0123456789"


def _redis_url() -> str | None:
    try:
        socket.create_connection(("127.0.0.1", 6379), timeout=1).close()
    except OSError:
        return None
    return "redis://127.0.0.1:6379/14"


def _csrf(client: httpx2.Client, path: str) -> str:
    page = client.get(path)
    assert page.status_code == 200, page.text[:500]
    match = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', page.text)
    assert match is not None
    return match.group(1)


def test_a_change_in_one_instance_reaches_the_other_and_both_audit_to_one_table(tmp_path, upstream, postgres_database):
    params, name = postgres_database
    extra = {"VMX_CONFIG_REFRESH_SECONDS": str(REFRESH_SECONDS)}
    if (redis := _redis_url()) is not None:
        extra["REDIS_URL"] = redis
    env = gateway_env(database_url=postgres_url(params, name), encryption_key=Fernet.generate_key().decode(), **extra)
    manage(env, "migrate", "--no-input", "-v", "0")
    config = tmp_path / "vmx.yaml"
    config.write_text(yaml.safe_dump(gateway_config(upstream)))
    manage(env, "vmx_apply", str(config))
    manage(
        env,
        "shell",
        "-c",
        "from django.contrib.auth.models import User; User.objects.create_superuser('ops', password='ops-password-1')",
    )
    a = gateway_start(env, tmp_path / "a.log", "--workers", "2")
    b = gateway_start(env, tmp_path / "b.log", "--workers", "2")
    try:
        # The operator creates a key in instance A's admin, as a person would.
        with httpx2.Client(base_url=a.base_url, timeout=20) as admin:
            token = _csrf(admin, "/admin/login/")
            login = admin.post(
                "/admin/login/",
                data={"username": "ops", "password": "ops-password-1", "csrfmiddlewaretoken": token, "next": "/admin/"},
            )
            assert login.status_code == 302, login.text[:500]
            token = _csrf(admin, "/admin/connections/apikey/add/")
            page = admin.get("/admin/connections/apikey/add/").text
            # The add form's environment: default/default, the one the superuser's form offers first.
            environment = re.search(
                r'<select name="environment"[^>]*>.*?<option value="([0-9a-f-]{32,36})"', page, re.S
            )
            assert environment is not None, page[:2000]
            created = admin.post(
                "/admin/connections/apikey/add/",
                data={
                    "environment": environment.group(1),
                    "name": "made-on-a",
                    "key": NEW_KEY,
                    "all_resources": "on",
                    "enabled": "on",
                    # The key's capacity limits table, left empty.
                    "capacity_entries-TOTAL_FORMS": "0",
                    "capacity_entries-INITIAL_FORMS": "0",
                    "capacity_entries-MIN_NUM_FORMS": "0",
                    "capacity_entries-MAX_NUM_FORMS": "1000",
                    "csrfmiddlewaretoken": token,
                    "_save": "Save",
                },
            )
            assert created.status_code == 200 and NEW_KEY in created.text
            assert "errornote" not in created.text, created.text[:2000]
        saved = time.monotonic()

        # Instance B accepts it within the refresh interval: each worker re-reads the revision
        # every VMX_CONFIG_REFRESH_SECONDS. Fresh connections are spread by the kernel over the
        # workers, so a round is only counted once a run of them were all accepted, on both
        # instances (A's other worker learns of the change the same way).
        seen: float | None = None
        while time.monotonic() - saved < 10:
            statuses = [
                httpx2.get(f"{gateway.base_url}/v1/models", headers={"Authorization": f"Bearer {NEW_KEY}"}).status_code
                for gateway in (a, b)
                for _ in range(8)
            ]
            if set(statuses) == {200}:
                seen = time.monotonic() - saved
                break
            time.sleep(0.05)
        assert seen is not None, "the instances never accepted the key created on A"
        assert seen <= 2 * REFRESH_SECONDS + 1.5, f"took {seen:.2f} s"
        print(f"\nkey created on A accepted by both instances after {seen:.2f} s")
        # Past two refresh periods every worker has re-read the configuration, whichever the
        # kernel picked above.
        time.sleep(max(0.0, saved + 2 * REFRESH_SECONDS + 0.3 - time.monotonic()))

        # Both instances write their audit records to the one table.
        ids = []
        for gateway in (a, b, a, b):
            response = httpx2.post(
                f"{gateway.base_url}/v1/chat/completions",
                json={"model": "default", "messages": [{"role": "user", "content": "Hi"}]},
                headers={"Authorization": f"Bearer {NEW_KEY}"},
                timeout=20,
            )
            assert response.status_code == 200
            ids.append(response.headers["x-vmx-request-id"])
        deadline = time.monotonic() + 10
        while True:
            out = manage(env, "vmx_audit", "--api-key", "made-on-a", "--format", "jsonl", "--limit", "10").stdout
            if all(request_id in out for request_id in ids):
                break
            assert time.monotonic() < deadline, out
            time.sleep(0.2)

        # The per-minute rollups both instances add to count every record once, however their
        # writers' batches interleave (a burst on both at once, then the usage they read).
        def call(base_url: str) -> int:
            return httpx2.post(
                f"{base_url}/v1/chat/completions",
                json={"model": "default", "messages": [{"role": "user", "content": "Hi"}]},
                headers={"Authorization": f"Bearer {NEW_KEY}"},
                timeout=30,
            ).status_code

        with ThreadPoolExecutor(max_workers=16) as pool:
            statuses = list(pool.map(call, [a.base_url, b.base_url] * 30))
        assert statuses == [200] * 60
        deadline = time.monotonic() + 10
        while True:
            usage = manage(env, "vmx_usage", "--since", "1h", "--by", "api_key").stdout
            row = next((line.split() for line in usage.splitlines() if line.startswith("made-on-a ")), None)
            if row is not None and int(row[1]) == 64:
                break
            assert time.monotonic() < deadline, usage
            time.sleep(0.3)
        audited = manage(env, "vmx_audit", "--api-key", "made-on-a", "--format", "jsonl", "--limit", "1000").stdout
        assert len(audited.splitlines()) == 64
        for gateway in (a, b):
            ready = httpx2.get(f"{gateway.base_url}/readyz", timeout=10).json()
            assert ready["checks"]["database"] == "ok" and ready["checks"]["cache"] == "ok"
    finally:
        a.stop()
        b.stop()
    assert "Traceback" not in a.log() + b.log()


@pytest.fixture(autouse=True)
def _flush_redis_db():
    yield
    redis = _redis_url()
    if redis is not None:
        import redis as redis_client

        redis_client.Redis.from_url(redis).flushdb()
