from __future__ import annotations

import json
import secrets
import socket
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg
import pytest
import yaml
from cryptography.fernet import Fernet
from django.conf import settings
from psycopg.conninfo import make_conninfo

from tests.fakes.openai_upstream import FakeOpenAI
from tests.integration.server import GatewayProcess, gateway_env, gateway_start, manage


def _postgres_params() -> dict[str, str]:
    db = settings.DATABASES["default"]
    return {k.lower(): str(db[k]) for k in ("HOST", "PORT", "USER", "PASSWORD") if db.get(k)}


def _database(directory: Path) -> Iterator[str]:
    """An empty database of the suite's backend, for a gateway process of its own."""
    db = settings.DATABASES["default"]
    if db["ENGINE"] != "django.db.backends.postgresql":
        yield f"sqlite:///{directory / 'gateway.sqlite3'}"
        return
    name = f"vmx_it_{secrets.token_hex(4)}"
    params = _postgres_params()
    with psycopg.connect(make_conninfo(dbname="postgres", **params), autocommit=True) as admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    credentials = params.get("user", "")
    if params.get("password"):
        credentials += f":{params['password']}"
    yield f"postgres://{credentials + '@' if credentials else ''}{params.get('host', '127.0.0.1')}:{params.get('port', '5432')}/{name}"
    with psycopg.connect(make_conninfo(dbname="postgres", **params), autocommit=True) as admin:
        admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture
def server_database_url(tmp_path: Path) -> Iterator[str]:
    yield from _database(tmp_path)


def postgres_reachable() -> dict[str, str] | None:
    """Connection parameters of a PostgreSQL server for tests that need one whatever the suite's
    backend (several instances on one database, a database that goes away); None when none answers."""
    db = settings.DATABASES["default"]
    if db["ENGINE"] == "django.db.backends.postgresql":
        params = _postgres_params()
    else:
        params = {"host": "127.0.0.1", "port": "5432", "user": "postgres"}
    try:
        psycopg.connect(make_conninfo(dbname="postgres", connect_timeout=2, **params)).close()
    except psycopg.Error:
        return None
    return params


def postgres_url(params: dict[str, str], name: str, *, host: str | None = None, port: int | str | None = None) -> str:
    credentials = params.get("user", "")
    if params.get("password"):
        credentials += f":{params['password']}"
    host = host or params.get("host", "127.0.0.1")
    return f"postgres://{credentials}@{host}:{port or params.get('port', '5432')}/{name}"


@pytest.fixture
def postgres_database() -> Iterator[tuple[dict[str, str], str]]:
    """An empty PostgreSQL database of its own: (connection parameters, name)."""
    params = postgres_reachable()
    if params is None:
        pytest.skip("no PostgreSQL on 127.0.0.1:5432 for this test")
    name = f"vmx_it_{secrets.token_hex(4)}"
    with psycopg.connect(make_conninfo(dbname="postgres", **params), autocommit=True) as admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    yield params, name
    with psycopg.connect(make_conninfo(dbname="postgres", **params), autocommit=True) as admin:
        admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture(scope="session")
def fake_openai() -> Iterator[FakeOpenAI]:
    fake = FakeOpenAI().start()
    yield fake
    fake.stop()


@pytest.fixture
def upstream(fake_openai: FakeOpenAI) -> FakeOpenAI:
    """The session's fake OpenAI, with no scripted replies and no recorded requests."""
    fake_openai.reset()
    return fake_openai


ALL_KEY = "vmx-it-all-0123456789abcdef"
LIMITED_KEY = "vmx-it-limited-0123456789abcdef"
MAX_BODY = 32 * 1024 * 1024  # the default VMX_MAX_BODY_BYTES


def gateway_config(fake: FakeOpenAI) -> dict[str, Any]:
    root = f"http://127.0.0.1:{fake.port}"

    def conn(name: str, base: str) -> dict[str, Any]:
        return {"name": name, "provider": "openai", "config": {"apiKey": f"sk-upstream-{name}", "baseURL": base}}

    return {
        "connections": [
            conn("up-a", f"{root}/a/v1"),
            conn("up-b", f"{root}/b/v1"),
            conn("dead", "http://127.0.0.1:9/v1"),
            {"name": "offline", "provider": "mock", "config": {}},
        ],
        "resources": [
            {"name": "default", "model": {"connection": "up-a", "model": "gpt-4.1"}},
            {
                "name": "fallback",
                "model": {"connection": "up-a", "model": "gpt-4.1"},
                "fallbackModels": [{"connection": "up-b", "model": "gpt-4o-mini"}],
            },
            {"name": "retrying", "model": {"connection": "up-a", "model": "gpt-4.1", "maxRetries": 2}},
            {
                "name": "dead-first",
                "model": {"connection": "dead", "model": "gpt-4.1", "timeoutMs": 2000},
                "fallbackModels": [{"connection": "up-b", "model": "gpt-4o-mini"}],
            },
            {
                "name": "slow-first",
                "model": {"connection": "up-a", "model": "gpt-4.1", "timeoutMs": 500},
                "fallbackModels": [{"connection": "up-b", "model": "gpt-4o-mini"}],
            },
            {
                "name": "with-defaults",
                "model": {"connection": "up-a", "model": "gpt-4.1"},
                "defaultArgs": {"temperature": 0.2, "max_tokens": 50, "user": "from-defaults"},
            },
            {"name": "only-a", "model": {"connection": "up-a", "model": "gpt-4.1-nano"}},
            {"name": "demo", "model": {"connection": "offline", "model": "mock-1"}},
            # What Claude Code sends as `model`: operators name resources after Claude model ids.
            {"name": "claude-sonnet-4-6", "model": {"connection": "up-a", "model": "gpt-4.1"}},
        ],
        "apiKeys": [
            {"name": "all", "key": ALL_KEY, "resources": "*"},
            {"name": "limited", "key": LIMITED_KEY, "resources": ["only-a"]},
        ],
    }


def post_declaring_length(
    base_url: str, path: str, headers: dict[str, str], content_length: int
) -> tuple[int, dict[str, Any]]:
    """POST that only declares a large Content-Length and sends no body: what a client uploading
    a huge body looks like before its body arrives. Returns (status, JSON body)."""
    host, port = base_url.removeprefix("http://").split(":")
    lines = [
        f"POST {path} HTTP/1.1",
        f"Host: {host}:{port}",
        "Content-Type: application/json",
        f"Content-Length: {content_length}",
    ]
    lines += [f"{name}: {value}" for name, value in headers.items()]
    with socket.create_connection((host, int(port)), timeout=10) as sock:
        sock.sendall(("\r\n".join(lines) + "\r\n\r\n").encode())
        data = b""
        while b"\r\n\r\n" not in data or len(data.split(b"\r\n\r\n", 1)[1]) < _declared_length(data):
            chunk = sock.recv(65536)
            if not chunk:
                break
            data += chunk
    head, body = data.split(b"\r\n\r\n", 1)
    return int(head.split()[1]), json.loads(body)


def _declared_length(data: bytes) -> int:
    for line in data.split(b"\r\n\r\n", 1)[0].split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            return int(value)
    return 0


@dataclass
class Gateway:
    process: GatewayProcess
    env: dict[str, str]

    @property
    def base_url(self) -> str:
        return self.process.base_url

    def audit(self, request_id: str) -> dict[str, Any]:
        """The audit record of `request_id`, waiting for the batch writer (DESIGN.md: within 1 s)."""
        return self.audit_by(request_id=request_id)

    def audit_by(self, timeout: float = 5.0, **filters: str) -> dict[str, Any]:
        """The newest audit record matching `filters` (vmx_audit options, e.g. correlation_id)."""
        options = [part for name, value in filters.items() for part in (f"--{name.replace('_', '-')}", value)]
        deadline = time.monotonic() + timeout
        while True:
            out = manage(self.env, "vmx_audit", "--format", "jsonl", "--limit", "1", *options).stdout.strip()
            if out:
                return dict(json.loads(out))
            if time.monotonic() > deadline:
                raise AssertionError(f"no audit record for {filters} after {timeout} s")
            time.sleep(0.2)


@pytest.fixture(scope="session")
def gateway(tmp_path_factory: pytest.TempPathFactory, fake_openai: FakeOpenAI) -> Iterator[Gateway]:
    directory = tmp_path_factory.mktemp("gateway")
    databases = _database(directory)
    database_url = next(databases)
    env = gateway_env(
        database_url=database_url,
        encryption_key=Fernet.generate_key().decode(),
        VMX_CONFIG_REFRESH_SECONDS="0.2",
        VMX_STREAM_PING_SECONDS="0.5",
    )
    manage(env, "migrate", "--no-input", "-v", "0")
    config_file = directory / "vmx.yaml"
    config_file.write_text(yaml.safe_dump(gateway_config(fake_openai)))
    manage(env, "vmx_apply", str(config_file))
    process = gateway_start(env, directory / "gunicorn.log", "--workers", "2")
    yield Gateway(process, env)
    process.stop()
    for _ in databases:  # drop the PostgreSQL database
        pass
