"""Where capacity counters live (DESIGN.md 2.10): Redis when `REDIS_URL` is set, else the
database. The public surface: the shapes (`base`), the two stores, and `capacity_store()`.

Redis clients are made by `factory` only, the request path's behind a circuit breaker (`breaker`).
"""

from __future__ import annotations

from gateway.capacity.stores.base import (
    Admission,
    CapacityStore,
    Charge,
    Settlement,
    StoreUnavailableError,
    reservation_of,
    settle_in_background,
    settlements_finished,
)
from gateway.capacity.stores.database import DatabaseCapacityStore
from gateway.capacity.stores.factory import redis_url
from gateway.capacity.stores.redis import RedisCapacityStore

__all__ = [
    "Admission",
    "CapacityStore",
    "Charge",
    "DatabaseCapacityStore",
    "RedisCapacityStore",
    "Settlement",
    "StoreUnavailableError",
    "capacity_store",
    "reservation_of",
    "settle_in_background",
    "settlements_finished",
]

_stores: dict[str, CapacityStore] = {}


def capacity_store() -> CapacityStore:
    """The configured store: Redis when `REDIS_URL` is set, else the database."""
    url = redis_url()
    store = _stores.get(url)
    if store is None:
        store = RedisCapacityStore(url) if url else DatabaseCapacityStore()
        _stores.clear()
        _stores[url] = store
    return store
