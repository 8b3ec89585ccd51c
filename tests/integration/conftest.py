from __future__ import annotations

import secrets
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
from django.conf import settings
from psycopg.conninfo import make_conninfo


@pytest.fixture
def server_database_url(tmp_path: Path) -> Iterator[str]:
    """An empty database of the suite's backend, for a gateway process of its own."""
    db = settings.DATABASES["default"]
    if db["ENGINE"] != "django.db.backends.postgresql":
        yield f"sqlite:///{tmp_path / 'gateway.sqlite3'}"
        return
    name = f"vmx_it_{secrets.token_hex(4)}"
    params: dict[str, str] = {k.lower(): str(db[k]) for k in ("HOST", "PORT", "USER", "PASSWORD") if db.get(k)}
    with psycopg.connect(make_conninfo(dbname="postgres", **params), autocommit=True) as admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    user = f"{db['USER']}@" if db.get("USER") else ""
    if db.get("PASSWORD"):
        user = f"{db['USER']}:{db['PASSWORD']}@"
    yield f"postgres://{user}{db.get('HOST') or '127.0.0.1'}:{db.get('PORT') or 5432}/{name}"
    with psycopg.connect(make_conninfo(dbname="postgres", **params), autocommit=True) as admin:
        admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
