"""Admin login throttling as served in production: async (ASGI) request path, several instances."""

from __future__ import annotations

import re

import httpx2
from cryptography.fernet import Fernet

from tests.integration.server import GatewayProcess, gateway_env, gateway_start, manage

CSP_START = "default-src 'self';"


def log_in(gateway: GatewayProcess, password: str) -> httpx2.Response:
    with httpx2.Client(base_url=gateway.base_url) as browser:
        form = browser.get("/admin/login/")
        assert form.headers["content-security-policy"].startswith(CSP_START)
        token = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', form.text)
        assert token, form.text
        return browser.post(
            "/admin/login/?next=/admin/",
            data={"username": "admin", "password": password, "csrfmiddlewaretoken": token.group(1)},
            headers={"Referer": f"{gateway.base_url}/admin/login/"},
        )


def test_failures_on_one_instance_lock_the_login_on_another(server_database_url, tmp_path):
    env = gateway_env(database_url=server_database_url, encryption_key=Fernet.generate_key().decode())
    manage(env, "migrate", "--no-input", "-v", "0")
    password = re.search(r"user admin, password (\S+)", manage(env, "vmx_bootstrap").stdout).group(1)
    gateways: list[GatewayProcess] = []
    try:
        first = gateway_start(env, tmp_path / "first.log")
        gateways.append(first)
        second = gateway_start(env, tmp_path / "second.log")
        gateways.append(second)
        assert [log_in(first, "wrong").status_code for _ in range(5)] == [200, 200, 200, 200, 429]
        refused = log_in(second, password)
        assert refused.status_code == 429 and "Too many failed logins" in refused.text
        assert refused.headers["content-security-policy"].startswith(CSP_START)
        # The API is untouched by the admin's lock and its middleware.
        answer = httpx2.get(f"{second.base_url}/v1/models", headers={"Authorization": "Bearer vmx-wrong-0123456789"})
        assert answer.status_code == 401 and "content-security-policy" not in answer.headers
    finally:
        assert [gateway.stop() for gateway in gateways] == [0] * len(gateways)
    assert "Traceback" not in "".join(gateway.log() for gateway in gateways)
