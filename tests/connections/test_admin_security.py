"""Admin hardening as an operator and an attacker meet it: login throttling and the CSP header."""

from __future__ import annotations

import io
import re
from datetime import timedelta
from html.parser import HTMLParser

import pytest
from axes.models import AccessAttempt
from django.core.management import call_command
from django.db.models import F
from django.test import Client

from connections.services import connection_save
from tests.forms import form_defaults

pytestmark = pytest.mark.django_db

PASSWORD = "correct-horse-battery-staple-42"
WRONG = "not-the-password"
HOME = "203.0.113.10"
ELSEWHERE = "198.51.100.20"
CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self'; object-src 'none'; "
    "base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
)


@pytest.fixture(autouse=True)
def admins(django_user_model, settings):
    # Dozens of logins per test: a cheap hasher keeps them fast; throttling never sees the hash.
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
    for name in ("alice", "bob"):
        django_user_model.objects.create_superuser(name, f"{name}@example.com", PASSWORD)


def browser(address: str = HOME) -> Client:
    """A fresh browser (no cookies) whose connection comes from `address`."""
    return Client(REMOTE_ADDR=address)


def log_in(client: Client, username: str, password: str = PASSWORD):
    return client.post("/admin/login/?next=/admin/", {"username": username, "password": password, "next": "/admin/"})


def is_logged_in(client: Client) -> bool:
    return client.get("/admin/").status_code == 200


def lock_out(username: str, address: str = HOME) -> None:
    client = browser(address)
    for _ in range(5):
        log_in(client, username, WRONG)


def rewind_attempts(minutes: int) -> None:
    """Move the recorded failures into the past, as the clock would."""
    AccessAttempt.objects.update(attempt_time=F("attempt_time") - timedelta(minutes=minutes))


def assert_refused(response) -> None:
    assert response.status_code == 429
    page = response.content.decode()
    assert "Too many failed logins" in page and "15 minutes" in page


def test_five_failures_lock_the_user_out_even_with_the_right_password():
    client = browser()
    statuses = [log_in(client, "alice", WRONG).status_code for _ in range(5)]
    assert statuses == [200, 200, 200, 200, 429]  # the login form four times, then the lockout page

    assert_refused(log_in(client, "alice"))
    assert not is_logged_in(client)
    # The lock is in the database, not the browser: a fresh client (or another instance) sees it.
    fresh = browser()
    assert_refused(log_in(fresh, "alice"))
    assert not is_logged_in(fresh)


def test_the_lockout_page_is_the_admins_own_page():
    lock_out("alice")
    response = log_in(browser(), "alice")
    assert response["Content-Type"].startswith("text/html")
    page = response.content.decode()
    assert "VM-X gateway" in page and 'href="/admin/login/"' in page
    assert response["Content-Security-Policy"] == CSP


def test_the_same_user_from_another_address_can_still_log_in():
    lock_out("alice", HOME)
    client = browser(ELSEWHERE)
    response = log_in(client, "alice")
    assert response.status_code == 302 and response["Location"] == "/admin/"
    assert is_logged_in(client)


def test_another_user_from_the_locked_address_can_still_log_in():
    lock_out("alice", HOME)
    client = browser(HOME)
    assert log_in(client, "bob").status_code == 302
    assert is_logged_in(client)


def test_a_forged_x_forwarded_for_does_not_escape_the_lock():
    client = browser(HOME)
    for n in range(5):
        client.post(
            "/admin/login/?next=/admin/",
            {"username": "alice", "password": WRONG},
            headers={"X-Forwarded-For": f"192.0.2.{n}"},
        )
    # Five different claimed addresses from one real peer: five failures from that peer.
    assert_refused(log_in(browser(HOME), "alice"))


def test_the_lock_lifts_after_fifteen_minutes():
    lock_out("alice")
    rewind_attempts(14)
    client = browser()
    assert_refused(log_in(client, "alice"))  # and, being another failure, restarts the cool-off

    rewind_attempts(16)
    response = log_in(client, "alice")
    assert response.status_code == 302 and is_logged_in(client)


def test_a_successful_login_resets_the_count():
    client = browser()
    for _ in range(4):
        log_in(client, "alice", WRONG)
    assert log_in(client, "alice").status_code == 302
    client.post("/admin/logout/")

    for _ in range(4):
        assert log_in(client, "alice", WRONG).status_code == 200  # without the reset the 1st would lock
    assert log_in(client, "alice").status_code == 302 and is_logged_in(client)


def test_an_operator_can_unlock_a_user():
    lock_out("alice")
    out = io.StringIO()
    call_command("axes_reset_username", "alice", stdout=out)
    assert "removed" in out.getvalue()
    client = browser()
    assert log_in(client, "alice").status_code == 302 and is_logged_in(client)


def test_failed_api_keys_are_not_admin_login_failures(client):
    for _ in range(8):
        response = client.get("/v1/models", HTTP_AUTHORIZATION="Bearer vmx-wrong-0123456789abcdef")
        assert response.status_code == 401 and response["Content-Type"].startswith("application/json")
    assert not AccessAttempt.objects.exists()


class _InlineCode(HTMLParser):
    """Collects what a CSP without 'unsafe-inline' blocks: inline scripts, styles and handlers."""

    def __init__(self) -> None:
        super().__init__()
        self.found: list[str] = []
        self._script_without_src = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        names = {name for name, _ in attrs}
        if tag == "style":
            self.found.append("<style>")
        if tag == "script" and "src" not in names:
            self._script_without_src = True
        self.found += [f"{tag} {name}=" for name in names if name == "style" or name.startswith("on")]

    def handle_data(self, data: str) -> None:
        if self._script_without_src and data.strip():
            self.found.append(f"<script>{data.strip()[:40]}")

    def handle_endtag(self, tag: str) -> None:
        if tag == "script":
            self._script_without_src = False


def inline_code(page: str) -> list[str]:
    parser = _InlineCode()
    parser.feed(page)
    return parser.found


def test_the_login_page_sends_the_policy_and_needs_nothing_it_forbids():
    response = browser().get("/admin/login/")
    assert response.status_code == 200
    assert response["Content-Security-Policy"] == CSP
    assert inline_code(response.content.decode()) == []


@pytest.mark.parametrize(
    "url",
    [
        "/admin/",
        "/admin/connections/connection/",
        "/admin/connections/connection/{pk}/change/",
        "/admin/connections/airesource/add/",
        "/admin/connections/apikey/add/",
        "/admin/auth/user/",
        "/admin/axes/accessattempt/",
    ],
)
def test_admin_pages_send_the_policy_and_need_nothing_it_forbids(url):
    connection, _ = connection_save(name="demo", provider="mock", config={})
    client = browser()
    log_in(client, "alice")
    response = client.get(url.format(pk=connection.pk))
    assert response.status_code == 200
    assert response["Content-Security-Policy"] == CSP
    assert "'unsafe-inline'" not in response["Content-Security-Policy"]
    assert inline_code(response.content.decode()) == []


def test_the_new_api_key_page_needs_nothing_the_policy_forbids():
    client = browser()
    log_in(client, "alice")
    data = form_defaults(client.get("/admin/connections/apikey/add/").content.decode())
    data.update(name="ci", all_resources="on")
    response = client.post("/admin/connections/apikey/add/", data)
    assert response.status_code == 200 and re.search(r'value="vmx-[^"]+"', response.content.decode())
    assert response["Content-Security-Policy"] == CSP
    assert inline_code(response.content.decode()) == []
