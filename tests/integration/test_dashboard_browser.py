"""The usage dashboard in a real browser: Debian's chromium driven by Playwright, against the real
server (gunicorn, two workers) after real traffic from the openai SDK.

Chromium comes from the distribution (`apt-get install chromium`, which .ci/run does), not from
Playwright's own download. Without it the test is skipped, or fails under VMX_REQUIRE_E2E=1.
Set VMX_SCREENSHOT_DIR to keep the screenshots it takes."""

from __future__ import annotations

import os
import re
import shutil
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import openai
import pytest
import yaml
from cryptography.fernet import Fernet

from tests.fakes.openai_upstream import FakeOpenAI
from tests.integration.conftest import ALL_KEY, gateway_config
from tests.integration.server import GatewayProcess, gateway_env, gateway_start, manage

CHROMIUM = os.environ.get("VMX_CHROMIUM", "/usr/bin/chromium")
OUTSIDER_PASSWORD = "outsider-password-42"


def _chromium_or_skip() -> str:
    if shutil.which(CHROMIUM):
        return CHROMIUM
    reason = f"no chromium at {CHROMIUM} (apt-get install chromium)"
    if os.environ.get("VMX_REQUIRE_E2E") == "1":
        pytest.fail(f"{reason}; VMX_REQUIRE_E2E=1 requires the browser test to run")
    pytest.skip(reason)


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory, fake_openai: FakeOpenAI) -> Iterator[tuple[GatewayProcess, str]]:
    from tests.integration.conftest import _database

    directory = tmp_path_factory.mktemp("dashboard")
    databases = _database(directory)
    env = gateway_env(database_url=next(databases), encryption_key=Fernet.generate_key().decode())
    manage(env, "migrate", "--no-input", "-v", "0")
    (directory / "vmx.yaml").write_text(yaml.safe_dump(gateway_config(fake_openai)))
    manage(env, "vmx_apply", str(directory / "vmx.yaml"))
    found = re.search(r"user admin, password (\S+)", manage(env, "vmx_bootstrap").stdout)
    assert found
    manage(
        env,
        "shell",
        "-c",
        "from django.contrib.auth.models import User; "
        f"User.objects.create_user('outsider', password='{OUTSIDER_PASSWORD}')",
    )
    process = gateway_start(env, directory / "gunicorn.log", "--workers", "2")
    yield process, found.group(1)
    process.stop()
    for _ in databases:
        pass


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    executable = _chromium_or_skip()
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=executable, headless=True, args=["--no-sandbox"])
        yield launched
        launched.close()


def _send(base_url: str, resource: str, count: int) -> None:
    client = openai.OpenAI(base_url=f"{base_url}/v1", api_key=ALL_KEY, max_retries=0)
    for _ in range(count):
        client.chat.completions.create(model=resource, messages=[{"role": "user", "content": "hello"}])
    client.close()


def _log_in(page: Any, base_url: str, username: str, password: str) -> None:
    page.goto(f"{base_url}/admin/login/?next=/admin/")
    page.fill("#id_username", username)
    page.fill("#id_password", password)
    page.click("input[type=submit]")
    page.wait_for_load_state()


def _figure(page: Any, name: str) -> str:
    return str(page.locator(f'[data-figure="{name}"] .value').inner_text())


def _wait_for_requests(page: Any, url: str, expected: str, timeout: float = 15.0) -> None:
    """Reload until the audit writer's batch has landed (it writes every second or so)."""
    deadline = time.monotonic() + timeout
    while True:
        page.goto(url)
        if _figure(page, "requests") == expected or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    assert _figure(page, "requests") == expected


def _screenshot(page: Any, name: str, tmp_path: Path) -> None:
    directory = Path(os.environ.get("VMX_SCREENSHOT_DIR") or tmp_path)
    directory.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(directory / name), full_page=True)


def test_staff_see_the_traffic_just_sent_and_filters_change_the_numbers(served, browser, upstream, tmp_path):
    process, password = served
    _send(process.base_url, "default", 7)
    _send(process.base_url, "only-a", 3)
    context = browser.new_context(viewport={"width": 1400, "height": 1000})
    page = context.new_page()
    violations: list[str] = []
    page.on("console", lambda message: violations.append(message.text) if "Content Security" in message.text else None)
    try:
        _log_in(page, process.base_url, "admin", password)
        page.click("#dashboard-link a >> text=Dashboard")  # the admin index links to it
        page.wait_for_load_state()
        assert page.url.endswith("/admin/dashboard/")
        _wait_for_requests(page, f"{process.base_url}/admin/dashboard/?period=1h", "10")

        # Six charts, and the requests chart has bars for the minutes the traffic fell in.
        assert page.locator("svg.chart").count() == 6
        requests_chart = page.locator('[data-chart="requests"] svg.chart')
        assert requests_chart.locator("rect.layer-ok").count() >= 1
        assert requests_chart.is_visible()
        assert _figure(page, "error-rate") == "0 %"
        assert page.locator('[data-chart="tokens"] polyline.layer-input').count() == 1
        _screenshot(page, "dashboard.png", tmp_path)

        # Filter by resource: the figures follow.
        page.select_option("#filter-resource", "only-a")
        page.click("#dashboard-filters button[type=submit]")
        page.wait_for_load_state()
        assert _figure(page, "requests") == "3"
        assert "resource=only-a" in page.url
        page.select_option("#filter-resource", "default")
        page.click("#dashboard-filters button[type=submit]")
        page.wait_for_load_state()
        assert _figure(page, "requests") == "7"

        # A row of the top models leads to exactly its audit records.
        page.goto(f"{process.base_url}/admin/dashboard/?period=24h")
        assert _figure(page, "requests") == "10"
        page.click('.top-table[data-measure="requests"] a >> text=gpt-4.1-nano')
        page.wait_for_load_state()
        assert "/admin/gateway/auditrecord/" in page.url
        assert "3 audit records" in page.locator("#changelist").inner_text()

        # So does a bar: the latest minute with traffic lists as many records as its tooltip says.
        page.goto(f"{process.base_url}/admin/dashboard/?period=1h")
        columns = page.locator('[data-chart="requests"] svg.chart a')
        counts: list[int] = []
        for index in reversed(range(columns.count())):
            tooltip = columns.nth(index).locator("title").text_content() or ""
            counts = [int(n) for n in re.findall(r"(?:succeeded|failed): (\d+)", tooltip)]
            if sum(counts):
                columns.nth(index).click()
                break
        assert sum(counts), "no bar of the last hour holds the traffic just sent"
        page.wait_for_load_state()
        assert "/admin/gateway/auditrecord/" in page.url and "created_at__gte" in page.url
        shown = sum(counts)
        assert f"{shown} audit record" in page.locator("#changelist").inner_text()
    finally:
        context.close()
    assert violations == []


def test_a_user_who_is_not_staff_is_refused(served, browser):
    process, _ = served
    context = browser.new_context()
    page = context.new_page()
    try:
        _log_in(page, process.base_url, "outsider", OUTSIDER_PASSWORD)
        assert "/admin/login/" in page.url  # the admin's login does not let non-staff in
        page.goto(f"{process.base_url}/admin/dashboard/")
        assert "/admin/login/" in page.url
        assert page.locator("svg.chart").count() == 0
    finally:
        context.close()
