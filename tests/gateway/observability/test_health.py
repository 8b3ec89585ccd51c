from __future__ import annotations

import pytest


async def test_healthz_answers_even_when_dependencies_are_down(async_client, settings):
    settings.CACHES = {
        "default": {"BACKEND": "django.core.cache.backends.redis.RedisCache", "LOCATION": "redis://127.0.0.1:9/0"}
    }
    # No django_db mark: any database access here would fail the test.
    response = await async_client.get("/healthz")
    assert response.status_code == 200
    assert response.json() == {"status": "ok"}


# The readiness checks use the sync test client: its requests run the view's database work in the
# test's own thread and connection, which the test database teardown can then close.
@pytest.mark.django_db
def test_readyz_reports_database_and_cache(client):
    response = client.get("/readyz")
    assert response.status_code == 200
    body = response.json()
    assert body["status"] == "ok"
    assert body["checks"] == {"configuration": "ok", "database": "ok", "cache": "ok", "capacity": "ok"}
    assert body["capacity_breaker"] == "closed"


@pytest.mark.django_db
def test_readyz_stays_ready_when_only_the_cache_is_down(client, settings):
    # The instance can still serve (configuration loaded): a load balancer must not pull it
    # because a dependency blinked; the body says what is down (DESIGN.md 2.13).
    settings.CACHES = {
        "default": {"BACKEND": "django.core.cache.backends.redis.RedisCache", "LOCATION": "redis://127.0.0.1:9/0"}
    }
    response = client.get("/readyz")
    assert response.status_code == 200
    assert response.json()["checks"] == {"configuration": "ok", "database": "ok", "cache": "down", "capacity": "ok"}


async def test_no_trailing_slash_redirects(async_client):
    assert (await async_client.get("/healthz/")).status_code == 404


@pytest.mark.django_db
def test_readyz_checks_the_connection_the_limits_use(client, settings):
    """`capacity` is asked through the limits' own client, not the cache's: here the cache
    answers while the limits' Redis (another address) does not."""
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        dead = probe.getsockname()[1]
    settings.REDIS_URL = f"redis://127.0.0.1:{dead}/0"
    response = client.get("/readyz")
    assert response.status_code == 200
    assert response.json()["checks"]["cache"] == "ok"
    assert response.json()["checks"]["capacity"] == "down"
