"""The admin's "Used now" column, read from the store the gateway counts in (no stand-ins)."""

from __future__ import annotations

import secrets
import time

import pytest
from asgiref.sync import async_to_sync

from connections.services import CapacitySpec, api_key_save, capacity_entries_replace
from gateway.capacity.policy import Estimate, Scope, counters_for
from gateway.capacity.stores import Charge, capacity_store
from gateway.core.limits import CapacityLimit

pytestmark = pytest.mark.django_db(transaction=True)  # the database store works in its own threads


def _count(name: str, limits: list[CapacityLimit], *, user: str = "", tokens: int = 0) -> None:
    counters = counters_for(
        Scope("api_key", name), limits, now=time.time(), source_ip=None, metadata={"user": user} if user else {}
    )
    async_to_sync(capacity_store().admit)(
        groups=[[Charge(counter, Estimate(tokens=tokens)) for counter in counters], []],
        reservation=secrets.token_hex(4),
        reservation_seconds=60,
    )


def test_the_change_page_shows_each_limits_current_window(admin_client):
    name = f"usage-{secrets.token_hex(3)}"  # Redis keeps counters between tests within a window
    key, _, _ = api_key_save(name=name, resources=None, key="vmx-" + secrets.token_hex(16))
    capacity_entries_replace(
        owner=key,
        specs=[
            CapacitySpec(period="minute", requests=5, tokens=1000),
            CapacitySpec(period="day", requests=100, dimension="metadata", dimension_field="user"),
        ],
    )
    whole = CapacityLimit(period="minute", requests=5, tokens=1000)
    per_user = CapacityLimit(period="day", requests=100, dimension="metadata", dimension_field="user")
    for _ in range(2):
        _count(name, [whole], tokens=150)  # still running: its tokens are reserved
    for user in ("alice", "alice", "alice", "bob"):
        _count(name, [per_user], user=user)

    page = admin_client.get(f"/admin/connections/apikey/{key.pk}/change/").content.decode()
    assert "2 / 5 requests, 300 / 1,000 tokens" in page
    assert "busiest: &#x27;alice&#x27;: 3 / 100 requests; &#x27;bob&#x27;: 1 / 100 requests" in page
