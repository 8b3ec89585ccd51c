"""Management API tokens: a digest is stored, the value is shown once, tokens expire and can be
revoked (command and admin), and a token made before digests keeps working after the migration."""

from __future__ import annotations

import hashlib
import io
from datetime import timedelta
from types import SimpleNamespace

import pytest
from django.contrib.auth.models import User
from django.core.management import call_command
from django.db import connection
from django.test import Client
from django.utils import timezone
from rest_framework.test import APIClient

from connections.models import ManagementToken

pytestmark = pytest.mark.django_db


@pytest.fixture
def ops() -> User:
    return User.objects.create_superuser("ops", "ops@example.com", "pw-0123456789")


def token_create(*args: str) -> str:
    out = io.StringIO()
    call_command("vmx_token", "create", *args, stdout=out, stderr=io.StringIO())
    return out.getvalue().strip()


def status(token: str) -> int:
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Token {token}")
    return client.get("/api/v1/connections/").status_code


def test_only_a_digest_is_stored_and_the_value_is_shown_once(ops: User):
    value = token_create("ops")
    assert status(value) == 200
    stored = ManagementToken.objects.get()
    assert stored.digest == hashlib.sha256(value.encode()).hexdigest()
    assert value not in str(list(ManagementToken.objects.values_list()))
    again = token_create("ops")  # a second create is a new token, not the old one printed again
    assert again != value and status(again) == 200


def test_a_token_expires(ops: User):
    value = token_create("ops", "--days", "1")
    assert status(value) == 200
    ManagementToken.objects.update(expires_at=timezone.now() - timedelta(seconds=1))
    assert status(value) == 401


def test_a_token_is_revoked_by_the_command(ops: User):
    value = token_create("ops")
    other = token_create("ops")
    call_command("vmx_token", "revoke", "--prefix", value[:8], stdout=io.StringIO())
    assert status(value) == 401
    assert status(other) == 200 or other[:8] == value[:8]
    call_command("vmx_token", "revoke", "ops", stdout=io.StringIO())
    assert status(other) == 401


def test_a_token_is_revoked_in_the_admin_which_never_shows_it(ops: User):
    value = token_create("ops")
    browser = Client()
    browser.force_login(ops)
    page = browser.get("/admin/connections/managementtoken/")
    assert page.status_code == 200 and value[:8] in page.text and value not in page.text
    token = ManagementToken.objects.get()
    browser.post("/admin/connections/managementtoken/", {"action": "revoke", "_selected_action": [str(token.pk)]})
    assert status(value) == 401


def test_a_plaintext_token_keeps_working_after_the_migration(ops: User):
    """The data migration digests `authtoken_token` rows, gives them an expiry and deletes them."""
    from importlib import import_module

    from django.apps import apps as global_apps

    migration = import_module("connections.migrations.0005_management_tokens")
    legacy = "0123456789abcdef0123456789abcdef01234567"
    with connection.cursor() as cursor:
        cursor.execute("CREATE TABLE authtoken_token (key varchar(40) PRIMARY KEY, user_id integer, created timestamp)")
        cursor.execute(
            "INSERT INTO authtoken_token (key, user_id, created) VALUES (%s, %s, %s)", [legacy, ops.pk, timezone.now()]
        )
    migration.legacy_tokens_digested(global_apps, SimpleNamespace(connection=connection))
    with connection.cursor() as cursor:
        cursor.execute("SELECT COUNT(*) FROM authtoken_token")
        assert cursor.fetchone()[0] == 0
        cursor.execute("DROP TABLE authtoken_token")
    assert status(legacy) == 200
    token = ManagementToken.objects.get()
    assert token.expires_at is not None and token.expires_at > timezone.now() + timedelta(days=80)


def test_a_lifetime_past_the_calendar_is_a_clear_error(ops: User):
    from django.core.management.base import CommandError

    with pytest.raises(CommandError, match="--days must be from 0"):
        call_command("vmx_token", "create", "ops", "--days", "3000000", stdout=io.StringIO(), stderr=io.StringIO())
    assert not ManagementToken.objects.exists()
