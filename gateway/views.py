"""Health endpoints. The /v1/ API views live beside these as the endpoints land."""

from __future__ import annotations

from asgiref.sync import sync_to_async
from django.core.cache import cache
from django.db import connection
from django.http import HttpRequest, JsonResponse


async def healthz(request: HttpRequest) -> JsonResponse:
    """The process is alive. Touches nothing, so a database outage never restarts workers."""
    return JsonResponse({"status": "ok"})


def _database_ping() -> None:
    with connection.cursor() as cursor:
        cursor.execute("SELECT 1")


async def readyz(request: HttpRequest) -> JsonResponse:
    """The database and the cache answer; 503 with the failing parts otherwise."""
    checks: dict[str, str] = {}
    try:
        await sync_to_async(_database_ping)()
        checks["database"] = "ok"
    except Exception as exc:  # any failure means not ready; the message says which
        checks["database"] = f"error: {type(exc).__name__}"
    try:
        await cache.aset("vmx:readyz", "1", timeout=5)
        checks["cache"] = "ok" if await cache.aget("vmx:readyz") == "1" else "error: value not stored"
    except Exception as exc:
        checks["cache"] = f"error: {type(exc).__name__}"
    ready = all(value == "ok" for value in checks.values())
    return JsonResponse({"status": "ok" if ready else "unavailable", "checks": checks}, status=200 if ready else 503)
