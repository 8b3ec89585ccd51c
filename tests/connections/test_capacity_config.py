"""Capacity limits as configured (DESIGN.md 2.10): the model's rules, the config file (paths in
every complaint, idempotent apply, export round trip), the admin inline and the frozen snapshot
the request path reads."""

from __future__ import annotations

import io
import re
from decimal import Decimal

import pytest
import yaml
from django.core.exceptions import ValidationError
from django.core.management import call_command
from django.core.management.base import CommandError
from django.db import IntegrityError, transaction
from django.db import connection as db_connection
from django.test.utils import CaptureQueriesContext

from connections.models import AIResource, APIKey, CapacityEntry, Connection
from connections.selectors import (
    api_key_lookup,
    config_revision_get,
    config_snapshot_build,
    config_snapshot_invalidate,
)
from connections.services import CapacitySpec, api_key_save, capacity_entries_replace, connection_save
from gateway.core.limits import CapacityLimit
from tests.connections.test_config_file import apply, write
from tests.forms import form_defaults

pytestmark = pytest.mark.django_db

KEY = "vmx-ci-0123456789abcdef"

# The example of DESIGN.md 2.10, with the secret inline so no environment is needed.
BASE = f"""
connections:
  - name: openai-main
    provider: openai
    config: {{apiKey: sk-main-secret-0001}}
    capacity:
      - {{period: minute, requests: 500, tokens: 200000}}
resources:
  - name: default
    model: {{connection: openai-main, model: gpt-4.1}}
    capacity:
      - {{period: day, costUsd: 25}}
      - {{period: minute, requests: 20, dimension: metadata, dimensionField: user}}
apiKeys:
  - name: ci
    key: {KEY}
    resources: [default]
    capacity:
      - {{period: month, costUsd: 200}}
      - {{period: minute, requests: 60, dimension: source-ip}}
"""


@pytest.fixture(autouse=True)
def _fresh_snapshot():
    config_snapshot_invalidate()
    yield
    config_snapshot_invalidate()


def export() -> str:
    out = io.StringIO()
    call_command("vmx_export", stdout=out)
    return out.getvalue()


def limits_of(owner) -> list[tuple[object, ...]]:
    return [
        (e.position, e.period, e.requests, e.tokens, e.cost_usd, e.dimension, e.dimension_field, e.enabled)
        for e in owner.capacity_entries.all()
    ]


# ---------------------------------------------------------------------------------------------
# The model


@pytest.fixture
def key() -> APIKey:
    api_key, _, _ = api_key_save(name="ci", resources=None, key=KEY)
    return api_key


@pytest.mark.parametrize(
    ("fields", "field", "message"),
    [
        ({"period": "minute"}, "__all__", "Give at least one of requests, tokens or cost (USD)."),
        ({"period": "minute", "requests": 1, "dimension": "metadata"}, "dimension_field", "required when"),
        (
            {"period": "minute", "requests": 1, "dimension": "metadata", "dimension_field": "  "},
            "dimension_field",
            "required when",
        ),
        (
            {"period": "minute", "requests": 1, "dimension": "source-ip", "dimension_field": "user"},
            "dimension_field",
            "must be empty unless dimension is metadata",
        ),
        (
            {"period": "minute", "requests": 1, "dimension": "metadata", "dimension_field": "us\ner"},
            "dimension_field",
            "must not contain control characters",
        ),
        ({"period": "fortnight", "requests": 1}, "period", "not a valid choice"),
        ({"period": "day", "cost_usd": Decimal("-0.01")}, "cost_usd", "greater than or equal to 0"),
        ({"period": "day", "cost_usd": Decimal("0.0000001")}, "cost_usd", "no more than 6 decimal places"),
        ({"period": "day", "requests": 2_147_483_648}, "requests", "less than or equal to 2147483647"),
        ({"period": "day", "requests": 1, "dimension": "user"}, "dimension", "not a valid choice"),
    ],
)
def test_invalid_limits_are_refused_with_the_field_named(key, fields, field, message):
    with pytest.raises(ValidationError) as info:
        CapacityEntry(api_key=key, **fields).full_clean()
    assert any(message in text for text in info.value.message_dict[field]), info.value.message_dict


def test_a_limit_belongs_to_exactly_one_owner(key):
    connection, _ = connection_save(name="demo", provider="mock", config={})
    with pytest.raises(ValidationError, match="exactly one connection, resource or API key"):
        CapacityEntry(api_key=key, connection=connection, period="minute", requests=1).full_clean()
    # The database holds the rule too, for writes that skip validation.
    for owners in ({}, {"api_key": key, "connection": connection}):
        with pytest.raises(IntegrityError), transaction.atomic():
            CapacityEntry.objects.create(period="minute", requests=1, **owners)


def test_a_limit_reads_as_a_sentence(key):
    assert str(CapacityEntry(api_key=key, period="minute", requests=60)) == "60 requests per minute"
    both = CapacityEntry(api_key=key, period="minute", requests=500, tokens=200_000, enabled=False)
    assert str(both) == "500 requests per minute and 200,000 tokens per minute (disabled)"
    budget = CapacityEntry(api_key=key, period="month", cost_usd=Decimal(200), dimension="source-ip")
    assert str(budget) == "$200.00 per month per source IP"


# ---------------------------------------------------------------------------------------------
# The service


def test_replacing_with_the_same_limits_writes_nothing(key):
    specs = [CapacitySpec(period="month", cost_usd=Decimal("200")), CapacitySpec(period="minute", requests=60)]
    assert capacity_entries_replace(owner=key, specs=specs) is True
    revision, ids = config_revision_get(), list(key.capacity_entries.values_list("id", flat=True))
    # 200 and 200.000000 are the same amount: nothing to write, the revision stays.
    assert (
        capacity_entries_replace(
            owner=key, specs=[CapacitySpec(period="month", cost_usd=Decimal("200.000000")), specs[1]]
        )
        is False
    )
    assert config_revision_get() == revision
    assert list(key.capacity_entries.values_list("id", flat=True)) == ids
    # A different order is a change (the file's order is kept).
    assert capacity_entries_replace(owner=key, specs=specs[::-1]) is True
    assert config_revision_get() > revision
    assert [e[1] for e in limits_of(key)] == ["minute", "month"]


def test_an_invalid_spec_writes_nothing_and_names_its_index(key):
    capacity_entries_replace(owner=key, specs=[CapacitySpec(period="day", requests=1)])
    with pytest.raises(ValidationError) as info:
        capacity_entries_replace(
            owner=key,
            specs=[
                CapacitySpec(period="hour", requests=5),
                CapacitySpec(period="hour", dimension="metadata", requests=1),
            ],
        )
    assert "capacity.1.dimension_field" in info.value.message_dict
    assert limits_of(key) == [(0, "day", 1, None, None, "", "", True)]


def test_changing_a_limit_bumps_the_revision(key):
    capacity_entries_replace(owner=key, specs=[CapacitySpec(period="minute", requests=60)])
    revision = config_revision_get()
    entry = key.capacity_entries.get()
    entry.requests = 30
    entry.save()
    assert config_revision_get() > revision
    revision = config_revision_get()
    entry.delete()
    assert config_revision_get() > revision


# ---------------------------------------------------------------------------------------------
# The snapshot


def test_the_snapshot_holds_the_enabled_limits_in_order(tmp_path):
    apply(write(tmp_path, BASE))
    connection_save(name="unlimited", provider="mock", config={})
    key = APIKey.objects.get(name="ci")
    capacity_entries_replace(
        owner=key,
        specs=[
            CapacitySpec(period="month", cost_usd=Decimal("200.5")),
            CapacitySpec(period="hour", requests=1, enabled=False),
            CapacitySpec(period="minute", requests=60, dimension="source-ip"),
        ],
    )
    whole = config_snapshot_build()
    snapshot = whole.environment_named()
    assert snapshot.connection_capacity == {"openai-main": (CapacityLimit("minute", requests=500, tokens=200_000),)}
    assert snapshot.resources["default"].capacity == (
        CapacityLimit("day", cost_usd=25.0),
        CapacityLimit("minute", requests=20, dimension="metadata", dimension_field="user"),
    )
    info = api_key_lookup(snapshot=whole, key=KEY)
    assert info is not None
    # The disabled entry is not there; the cost is a float for the request path.
    assert info.capacity == (
        CapacityLimit("month", cost_usd=200.5),
        CapacityLimit("minute", requests=60, dimension="source-ip"),
    )
    assert isinstance(info.capacity[0].cost_usd, float)


def test_a_disabled_limit_is_not_in_the_snapshot(key):
    capacity_entries_replace(owner=key, specs=[CapacitySpec(period="minute", requests=1, enabled=False)])
    connection, _ = connection_save(name="demo", provider="mock", config={})
    capacity_entries_replace(owner=connection, specs=[CapacitySpec(period="minute", requests=1, enabled=False)])
    whole = config_snapshot_build()
    snapshot = whole.environment_named()
    assert api_key_lookup(snapshot=whole, key=KEY).capacity == ()
    assert "demo" not in snapshot.connection_capacity


def test_limits_cost_the_snapshot_one_query_however_many(key):
    def queries() -> int:
        with CaptureQueriesContext(db_connection) as captured:
            config_snapshot_build()
        return len(captured)

    capacity_entries_replace(owner=key, specs=[CapacitySpec(period="minute", requests=1)])
    one = queries()
    for index in range(3):
        other, _, _ = api_key_save(name=f"k{index}", resources=None)
        capacity_entries_replace(
            owner=other, specs=[CapacitySpec(period="minute", requests=1), CapacitySpec(period="day", tokens=5)]
        )
    connection, _ = connection_save(name="demo", provider="mock", config={})
    capacity_entries_replace(owner=connection, specs=[CapacitySpec(period="hour", requests=2)])
    assert queries() == one


# ---------------------------------------------------------------------------------------------
# The config file


def test_apply_creates_the_limits_and_twice_changes_nothing(tmp_path):
    output = apply(write(tmp_path, BASE))
    assert "api key ci: created" in output
    assert limits_of(Connection.objects.get(name="openai-main")) == [(0, "minute", 500, 200_000, None, "", "", True)]
    assert limits_of(AIResource.objects.get(name="default")) == [
        (0, "day", None, None, Decimal(25), "", "", True),
        (1, "minute", 20, None, None, "metadata", "user", True),
    ]
    assert limits_of(APIKey.objects.get(name="ci")) == [
        (0, "month", None, None, Decimal(200), "", "", True),
        (1, "minute", 60, None, None, "source-ip", "", True),
    ]
    revision = config_revision_get()
    assert "nothing changed" in apply(write(tmp_path, BASE))
    assert config_revision_get() == revision


def test_a_change_to_limits_alone_updates_the_owner(tmp_path):
    apply(write(tmp_path, BASE))
    output = apply(write(tmp_path, BASE.replace("requests: 60", "requests: 30")))
    assert "api key ci: updated" in output
    assert "connection openai-main: unchanged" in output and "resource default: unchanged" in output
    assert APIKey.objects.get(name="ci").capacity_entries.get(period="minute").requests == 30
    # A connection listed without `capacity` has no limits: the file describes it whole.
    without = BASE.replace("    capacity:\n      - {period: minute, requests: 500, tokens: 200000}\n", "")
    output = apply(write(tmp_path, without))
    assert "connection openai-main: updated" in output
    assert not Connection.objects.get(name="openai-main").capacity_entries.exists()


def test_export_writes_limits_and_round_trips_unchanged(tmp_path):
    text = BASE.replace(
        "      - {period: minute, requests: 60, dimension: source-ip}",
        "      - {period: minute, requests: 60, dimension: source-ip}\n"
        "      - {period: lifetime, tokens: 1000000, costUsd: 0.25, enabled: false}",
    )
    apply(write(tmp_path, text))
    exported = export()
    data = yaml.safe_load(exported)
    assert data["connections"][0]["capacity"] == [{"period": "minute", "requests": 500, "tokens": 200000}]
    assert data["resources"][0]["capacity"] == [
        {"period": "day", "costUsd": 25},
        {"period": "minute", "requests": 20, "dimension": "metadata", "dimensionField": "user"},
    ]
    assert data["apiKeys"][0]["capacity"] == [
        {"period": "month", "costUsd": 200},
        {"period": "minute", "requests": 60, "dimension": "source-ip"},
        {"period": "lifetime", "tokens": 1000000, "costUsd": 0.25, "enabled": False},
    ]
    assert "nothing changed" in apply(write(tmp_path, exported, "exported.yaml"))
    assert export() == exported
    # An object without limits gets no `capacity` key at all.
    connection_save(name="plain", provider="mock", config={})
    assert "capacity" not in next(c for c in yaml.safe_load(export())["connections"] if c["name"] == "plain")


@pytest.mark.parametrize(
    ("old", "new", "expected"),
    [
        (
            "{period: minute, requests: 60, dimension: source-ip}",
            "{period: minute, requests: 60, dimension: metadata}",
            "apiKeys[0].capacity[1].dimensionField: required when dimension is metadata",
        ),
        (
            "{period: day, costUsd: 25}",
            "{period: day}",
            "resources[0].capacity[0]: give at least one of requests, tokens, costUsd",
        ),
        (
            "period: month",
            "period: fortnight",
            "apiKeys[0].capacity[0].period: must be one of minute, hour, day, week, month, lifetime",
        ),
        ("{period: month, costUsd: 200}", "{costUsd: 200}", "apiKeys[0].capacity[0].period: required"),
        ("requests: 500", "requests: -1", "connections[0].capacity[0].requests: must be an integer >= 0"),
        ("requests: 500", "requests: true", "connections[0].capacity[0].requests: must be an integer"),
        ("requests: 500", "requests: 1.5", "connections[0].capacity[0].requests: must be an integer"),
        ("tokens: 200000", "tokens: '200000'", "connections[0].capacity[0].tokens: must be an integer"),
        ("tokens: 200000", "tokens: -5", "connections[0].capacity[0].tokens: must be an integer >= 0"),
        ("costUsd: 25", "costUsd: -1", "resources[0].capacity[0].costUsd: must be a number >= 0 (USD)"),
        ("costUsd: 25", "costUsd: true", "resources[0].capacity[0].costUsd: must be an integer or float"),
        ("costUsd: 25", "costUsd: lots", "resources[0].capacity[0].costUsd: must be an integer or float"),
        (
            "costUsd: 25",
            "costUsd: 0.0000001",
            "resources[0].capacity[0].costUsd: Ensure that there are no more than 6 decimal places",
        ),
        (
            "requests: 500",
            "requests: 3000000000",
            "connections[0].capacity[0].requests: Ensure this value is less than or equal to 2147483647",
        ),
        (
            "dimension: source-ip}",
            "dimension: source-ip, dimensionField: user}",
            "apiKeys[0].capacity[1].dimensionField: only allowed when dimension is metadata",
        ),
        ("dimension: source-ip", "dimension: ip", "apiKeys[0].capacity[1].dimension: must be source-ip or metadata"),
        (
            "dimensionField: user",
            'dimensionField: "us\\ter"',
            "resources[0].capacity[1].dimensionField: must not contain control characters",
        ),
        ("dimension: source-ip}", "dimension: source-ip, per: ip}", "apiKeys[0].capacity[1].per: unknown key"),
        (
            "dimension: source-ip}",
            "dimension: source-ip, enabled: maybe}",
            "apiKeys[0].capacity[1].enabled: must be true or false",
        ),
        (
            "    capacity:\n      - {period: minute, requests: 500, tokens: 200000}",
            "    capacity: {period: minute, requests: 500}",
            "connections[0].capacity: must be a list",
        ),
        ("- {period: month, costUsd: 200}", "- month", "apiKeys[0].capacity[0]: must be a mapping"),
    ],
)
def test_invalid_limits_change_nothing_and_name_the_path(tmp_path, old, new, expected):
    assert old in BASE
    with pytest.raises(CommandError) as info:
        apply(write(tmp_path, BASE.replace(old, new, 1)))
    assert expected in str(info.value)
    assert "nothing was changed" in str(info.value)
    assert not Connection.objects.exists() and not APIKey.objects.exists() and not CapacityEntry.objects.exists()


def test_an_invalid_limit_leaves_the_stored_ones_alone(tmp_path):
    apply(write(tmp_path, BASE))
    before = limits_of(APIKey.objects.get(name="ci"))
    broken = BASE.replace("requests: 60", "requests: 30").replace("costUsd: 25", "costUsd: 0.0000001")
    with pytest.raises(CommandError, match=re.escape("resources[0].capacity[0].costUsd")):
        apply(write(tmp_path, broken))
    assert limits_of(APIKey.objects.get(name="ci")) == before


# ---------------------------------------------------------------------------------------------
# The admin


def submit(client, url: str, **changes: str | list[str] | None):
    """GET the form, change some fields, POST it back (as a browser would)."""
    data = form_defaults(client.get(url).content.decode())
    data = {k: v for k, v in data.items() if "__prefix__" not in k}
    for name, value in changes.items():
        if value is None:
            data.pop(name, None)
        else:
            data[name] = value
    return client.post(url, data)


def errors(response) -> list[str]:
    return re.findall(r"errorlist[^>]*>(.*?)</ul>", response.content.decode(), re.DOTALL)


def test_adding_a_limit_to_an_api_key_in_the_admin_reaches_the_snapshot(admin_client, key):
    url = f"/admin/connections/apikey/{key.pk}/change/"
    revision = config_revision_get()
    response = submit(
        admin_client,
        url,
        **{
            "capacity_entries-TOTAL_FORMS": "2",
            "capacity_entries-0-api_key": str(key.pk),
            "capacity_entries-0-period": "minute",
            "capacity_entries-0-requests": "60",
            "capacity_entries-0-dimension": "source-ip",
            "capacity_entries-0-enabled": "on",
            "capacity_entries-1-api_key": str(key.pk),
            "capacity_entries-1-period": "month",
            "capacity_entries-1-cost_usd": "200.50",
            "capacity_entries-1-dimension": "",
        },
    )
    assert response.status_code == 302, errors(response)
    assert limits_of(key) == [
        (0, "minute", 60, None, None, "source-ip", "", True),
        (1, "month", None, None, Decimal("200.5"), "", "", False),
    ]
    assert config_revision_get() > revision
    info = api_key_lookup(snapshot=config_snapshot_build(), key=KEY)
    # The unticked row is kept but not enforced.
    assert info.capacity == (CapacityLimit("minute", requests=60, dimension="source-ip"),)


def test_an_invalid_row_gets_a_form_error_and_saves_nothing(admin_client, key):
    url = f"/admin/connections/apikey/{key.pk}/change/"
    response = submit(
        admin_client,
        url,
        **{
            "capacity_entries-TOTAL_FORMS": "2",
            "capacity_entries-0-period": "minute",
            "capacity_entries-0-requests": "10",
            "capacity_entries-0-dimension": "metadata",
            "capacity_entries-0-enabled": "on",
            "capacity_entries-1-period": "day",
            "capacity_entries-1-enabled": "on",
        },
    )
    assert response.status_code == 200
    page = response.content.decode()
    assert "required when dimension is metadata" in page
    assert "Give at least one of requests, tokens or cost (USD)." in page
    assert not CapacityEntry.objects.exists()


def test_editing_and_deleting_rows_keeps_positions_in_order(admin_client, key):
    capacity_entries_replace(
        owner=key,
        specs=[CapacitySpec(period="minute", requests=1), CapacitySpec(period="hour", requests=2)],
    )
    first, second = key.capacity_entries.all()
    url = f"/admin/connections/apikey/{key.pk}/change/"
    response = submit(
        admin_client,
        url,
        **{
            "capacity_entries-TOTAL_FORMS": "3",
            "capacity_entries-0-DELETE": "on",
            "capacity_entries-1-requests": "20",
            "capacity_entries-2-api_key": str(key.pk),
            "capacity_entries-2-period": "week",
            "capacity_entries-2-tokens": "1000",
            "capacity_entries-2-enabled": "on",
        },
    )
    assert response.status_code == 302, errors(response)
    assert limits_of(key) == [
        (0, "hour", 20, None, None, "", "", True),
        (1, "week", None, 1000, None, "", "", True),
    ]
    assert key.capacity_entries.first().pk == second.pk and not CapacityEntry.objects.filter(pk=first.pk).exists()


@pytest.mark.parametrize("owner_kind", ["connection", "resource", "api_key"])
def test_change_pages_show_limits_help_and_usage(admin_client, monkeypatch, tmp_path, owner_kind):
    apply(write(tmp_path, BASE))
    calls = []

    def usage_text(*, scope_kind: str, scope_name: str, limit: CapacityLimit, environment: str) -> str:
        calls.append((scope_kind, scope_name, limit))
        assert environment == ""  # default/default's counters keep their keys
        return f"7 of {limit.requests or limit.cost_usd}"

    monkeypatch.setattr("connections.admin.capacity.capacity_usage_text", usage_text)
    owner = {
        "connection": Connection.objects.get(name="openai-main"),
        "resource": AIResource.objects.get(name="default"),
        "api_key": APIKey.objects.get(name="ci"),
    }[owner_kind]
    url = f"/admin/connections/{owner._meta.model_name}/{owner.pk}/change/"
    page = admin_client.get(url).content.decode()
    assert "Capacity limits" in page and "fixed calendar windows in UTC" in page
    assert ("skipped" in page) == (owner_kind == "connection")
    assert "Used now" in page and "7 of " in page
    assert calls and all(kind == owner_kind and name == owner.name for kind, name, _ in calls)
    assert calls[0][2] == owner.capacity_entries.first().limit_get()


def test_usage_that_cannot_be_read_does_not_break_the_page(admin_client, key, monkeypatch):
    capacity_entries_replace(owner=key, specs=[CapacitySpec(period="minute", requests=60)])

    def broken(**kwargs: object) -> str:
        raise ConnectionError("redis is down")

    monkeypatch.setattr("connections.admin.capacity.capacity_usage_text", broken)
    url = f"/admin/connections/apikey/{key.pk}/change/"
    response = admin_client.get(url)
    assert response.status_code == 200 and "unavailable" in response.content.decode()
    # Saving still works.
    assert submit(admin_client, url, **{"capacity_entries-0-requests": "30"}).status_code == 302
    assert key.capacity_entries.get().requests == 30


def test_a_new_api_key_can_be_added_with_limits(admin_client):
    response = submit(
        admin_client,
        "/admin/connections/apikey/add/",
        name="fresh",
        all_resources="on",
        **{
            "capacity_entries-TOTAL_FORMS": "1",
            "capacity_entries-0-period": "day",
            "capacity_entries-0-requests": "1000",
            "capacity_entries-0-enabled": "on",
        },
    )
    assert response.status_code == 200, errors(response)  # the page that shows the new key once
    assert limits_of(APIKey.objects.get(name="fresh")) == [(0, "day", 1000, None, None, "", "", True)]
