"""Model validation, encryption at rest and the frozen snapshot the gateway reads."""

from __future__ import annotations

import re
import time

import pytest
from cryptography.fernet import Fernet
from django.core.exceptions import ValidationError
from django.db import connection as db_connection

from connections.crypto import EncryptionKeyError
from connections.models import AIResource, APIKey, ConfigRevision, Connection, ModelEntry
from connections.selectors import api_key_lookup, config_snapshot, config_snapshot_invalidate
from connections.services import ModelEntrySpec, api_key_save, connection_save, resource_save

pytestmark = pytest.mark.django_db

SECRET = "sk-test-secret-value-1234567890"


@pytest.fixture(autouse=True)
def _fresh_snapshot():
    config_snapshot_invalidate()
    yield
    config_snapshot_invalidate()


def test_api_key_secret_is_encrypted_at_rest_and_round_trips():
    connection_save(name="oa", provider="openai", config={"apiKey": SECRET, "baseURL": "http://127.0.0.1:9/v1"})
    with db_connection.cursor() as cursor:
        cursor.execute("SELECT config, secrets_encrypted FROM connections_connection")
        config, stored = cursor.fetchone()
    assert SECRET not in str(config)
    assert SECRET not in stored
    assert Connection.objects.get(name="oa").secrets_get() == {"apiKey": SECRET}


def test_wrong_encryption_key_is_a_clear_error_not_garbage(settings):
    connection_save(name="oa", provider="openai", config={"apiKey": SECRET})
    settings.VMX_ENCRYPTION_KEY = Fernet.generate_key().decode()
    with pytest.raises(EncryptionKeyError, match=r"connection 'oa'.*not the key"):
        Connection.objects.get(name="oa").secrets_get()


def test_missing_encryption_key_refuses_to_store_secrets(settings):
    settings.VMX_ENCRYPTION_KEY = ""
    with pytest.raises(EncryptionKeyError, match="VMX_ENCRYPTION_KEY is not set"):
        connection_save(name="oa", provider="openai", config={"apiKey": SECRET})
    assert not Connection.objects.exists()


def test_malformed_encryption_key_is_named(settings):
    settings.VMX_ENCRYPTION_KEY = "not-a-fernet-key"
    with pytest.raises(EncryptionKeyError, match="malformed"):
        connection_save(name="oa", provider="openai", config={"apiKey": SECRET})


def test_key_rotation_new_key_first_still_reads_old_secrets(settings):
    old_key = settings.VMX_ENCRYPTION_KEY
    connection_save(name="oa", provider="openai", config={"apiKey": SECRET})
    settings.VMX_ENCRYPTION_KEY = f"{Fernet.generate_key().decode()},{old_key}"
    assert Connection.objects.get(name="oa").secrets_get() == {"apiKey": SECRET}


def test_mock_connection_needs_no_encryption_key(settings):
    settings.VMX_ENCRYPTION_KEY = ""
    connection, changed = connection_save(name="demo", provider="mock", config={})
    assert changed and connection.secrets_encrypted == ""


@pytest.mark.parametrize(
    ("provider", "config", "message"),
    [
        ("openai", {}, "apiKey: required"),
        ("openai", {"apiKey": SECRET, "baseURL": "ftp://x"}, "baseURL: must be an http(s) URL"),
        ("openai", {"apiKey": SECRET, "apiVersion": "1"}, "apiVersion: unknown setting"),
        ("mock", {"apiKey": SECRET}, "apiKey: unknown setting"),
        ("gemini", {}, "unknown provider 'gemini'"),
    ],
)
def test_connection_config_is_validated_per_provider(provider, config, message):
    with pytest.raises((ValidationError, LookupError), match=re.escape(message)):
        connection_save(name="c1", provider=provider, config=config)
    assert not Connection.objects.exists()


def test_loopback_base_url_is_accepted():
    connection, _ = connection_save(
        name="local", provider="openai", config={"apiKey": "k", "baseURL": "http://127.0.0.1:8080/v1"}
    )
    assert connection.config == {"baseURL": "http://127.0.0.1:8080/v1"}


def test_model_entry_defaults_to_the_providers_model():
    connection_save(name="oa", provider="openai", config={"apiKey": SECRET})
    connection_save(name="demo", provider="mock", config={})
    resource_save(name="r", models=[ModelEntrySpec(connection="oa"), ModelEntrySpec(connection="demo")])
    entries = list(ModelEntry.objects.filter(resource__name="r"))
    assert [(e.model, e.max_retries, e.timeout_ms, e.reasoning) for e in entries] == [
        ("gpt-4.1", 0, 600_000, True),
        ("mock-1", 0, 600_000, True),
    ]


@pytest.mark.parametrize("max_retries", [-1, 11])
def test_max_retries_outside_0_to_10_is_rejected(max_retries):
    connection_save(name="oa", provider="openai", config={"apiKey": SECRET})
    with pytest.raises(ValidationError) as info:
        resource_save(name="r", models=[ModelEntrySpec(connection="oa", model="m", max_retries=max_retries)])
    assert "models.0.max_retries" in info.value.message_dict
    assert not AIResource.objects.exists()


@pytest.mark.parametrize("name", ["has space", "", "-leading-dash", "semi;colon"])
def test_resource_names_are_what_a_client_can_send_as_model(name):
    connection_save(name="oa", provider="openai", config={"apiKey": SECRET})
    with pytest.raises(ValidationError):
        resource_save(name=name, models=[ModelEntrySpec(connection="oa", model="m")])


def test_resource_default_args_must_be_an_object_without_reserved_keys():
    connection_save(name="oa", provider="openai", config={"apiKey": SECRET})
    with pytest.raises(ValidationError, match="cannot set model"):
        resource_save(name="r", models=[ModelEntrySpec(connection="oa", model="m")], default_args={"model": "x"})


def test_api_key_is_stored_as_digest_with_visible_prefix():
    _, plaintext, _ = api_key_save(name="ci", resources=None)
    assert plaintext is not None and plaintext.startswith("vmx-")
    row = APIKey.objects.get(name="ci")
    assert row.digest == APIKey.digest_of(plaintext) and plaintext not in row.digest
    assert row.prefix == plaintext[:8]
    assert api_key_lookup(snapshot=config_snapshot(), key=plaintext).name == "ci"
    assert api_key_lookup(snapshot=config_snapshot(), key=plaintext + "x") is None


def test_api_key_explicit_value_must_be_long_enough():
    with pytest.raises(ValidationError, match="at least 20"):
        api_key_save(name="ci", resources=None, key="short")


def test_snapshot_secrets_never_show_in_repr():
    connection_save(name="oa", provider="openai", config={"apiKey": SECRET})
    snapshot = config_snapshot().environment_named()
    assert snapshot.connections["oa"].secrets["apiKey"] == SECRET
    assert SECRET not in repr(snapshot)


def test_snapshot_reads_no_database_in_steady_state(django_assert_num_queries):
    connection_save(name="oa", provider="openai", config={"apiKey": SECRET})
    resource_save(name="default", models=[ModelEntrySpec(connection="oa", model="gpt-4.1")])
    config_snapshot()
    with django_assert_num_queries(0):
        for _ in range(200):
            assert config_snapshot().environment_named().resources["default"].models[0].model == "gpt-4.1"


def test_snapshot_sees_a_change_made_by_another_process(settings):
    settings.VMX_CONFIG_REFRESH_SECONDS = 0.2
    connection_save(name="oa", provider="openai", config={"apiKey": SECRET})
    resource_save(name="default", models=[ModelEntrySpec(connection="oa", model="gpt-4.1")])
    assert config_snapshot().environment_named().resources["default"].models[0].model == "gpt-4.1"
    # What another worker's save looks like from here: rows and the revision change, no local signal.
    ModelEntry.objects.filter(resource__name="default").update(model="gpt-4o")
    ConfigRevision.objects.filter(pk=1).update(value=ConfigRevision.objects.get(pk=1).value + 1)
    assert config_snapshot().environment_named().resources["default"].models[0].model == "gpt-4.1"  # within the period
    time.sleep(0.3)
    assert config_snapshot().environment_named().resources["default"].models[0].model == "gpt-4o"


def test_snapshot_of_this_process_changes_at_once():
    _, key, _ = api_key_save(name="ci", resources=None)
    assert api_key_lookup(snapshot=config_snapshot(), key=key).enabled
    APIKey.objects.get(name="ci").delete()
    assert api_key_lookup(snapshot=config_snapshot(), key=key) is None


def test_deleting_a_connection_in_use_is_refused():
    from django.db.models import ProtectedError

    connection_save(name="oa", provider="openai", config={"apiKey": SECRET})
    resource_save(name="default", models=[ModelEntrySpec(connection="oa", model="gpt-4.1")])
    with pytest.raises(ProtectedError):
        Connection.objects.get(name="oa").delete()
