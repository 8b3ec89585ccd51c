"""The systems under test and what is sent to them: the nginx fake upstream, the gateway (gunicorn
from a source tree, configured with manage.py migrate + vmx_apply) and Portkey's gateway, each
described as a Target with the request of every scenario.

`start_gateway` takes the tree to run from, so that `run.py compare` can start an earlier revision
exported beside the working tree with the same venv: the tree's root is the working directory of
manage.py and gunicorn, which puts its own code first on sys.path.
"""

from __future__ import annotations

import base64
import os
import secrets
import subprocess
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import upstream
from procs import REPO, VENV_BIN, Processes, free_port, process_tree, run_quiet, wait_http
from tools import PORTKEY_VERSION, nginx_binary, portkey_entry

API_KEY = "vmx-bench-0123456789abcdef"
CONCURRENCY = (1, 16, 64, 256)
CPU_POINT = ("chat", 64)  # the wrk point that CPU seconds per 1,000 requests are measured over

CHAT_BODY = {"model": "bench", "messages": [{"role": "user", "content": "hi"}]}
STREAM_BODY = {**CHAT_BODY, "stream": True}
MESSAGES_BODY = {"model": "bench", "max_tokens": 64, "messages": [{"role": "user", "content": "hi"}]}
# What the gateway sends upstream for MESSAGES_BODY, roughly: the direct baseline of that row.
RESPONSES_BODY = {"model": "bench", "max_output_tokens": 64, "input": [{"role": "user", "content": "hi"}]}
HOLD_BODY = {"model": "bench-slow", "messages": [{"role": "user", "content": "hi"}], "stream": True}

SCENARIOS = {
    "chat": "Chat Completions, plain",
    "chat_stream": "Chat Completions, stream",
    "messages": "Anthropic Messages (/v1/messages → upstream Responses), plain",
}
COMPARE_SCENARIOS = {
    **SCENARIOS,
    "chat_tenant": "Chat Completions, plain, on VM-X's tenant path (/v1/completion/default/default/…)",
}
"""Before/after comparisons also measure the tenant path (against the flat one on a revision
from before it existed)."""
TENANT_PREFIX = "/v1/completion/default/default"


@dataclass
class Scenario:
    url: str
    body: dict[str, Any]
    headers: list[str]
    stream: bool
    fallback_url: str | None = None
    """Where a gateway that lacks this path serves the same request (a revision from before it
    existed): comparisons then measure the new path against the old one."""


@dataclass
class Target:
    key: str
    label: str
    root_pid: Callable[[], int]
    scenarios: dict[str, Scenario | str]  # str: why the scenario is not measured
    hold: Scenario | None
    worker_pids: Callable[[], list[int]] = field(default=lambda: [])


@dataclass
class Settings:
    duration: float
    c1_duration: float
    ttfb_duration: float
    warmup: float
    hold_streams: int
    hold_seconds: float
    concurrency: tuple[int, ...]
    workdir: Path


def start_nginx(procs: Processes, workdir: Path, hold_seconds: float) -> tuple[subprocess.Popen[bytes], int]:
    port = free_port()
    prefix = workdir / "nginx"
    prefix.mkdir()
    config = upstream.render_config(prefix, port, upstream.nginx_workers(), hold_seconds)
    log_path = workdir / "nginx.log"
    check = run_quiet([nginx_binary(), "-t", "-p", str(prefix), "-c", str(config), "-g", "daemon off;"])
    if check.returncode != 0:
        raise RuntimeError(f"nginx config rejected:\n{check.stderr}")
    child = procs.start([nginx_binary(), "-p", str(prefix), "-c", str(config), "-g", "daemon off;"], log_path)
    wait_http(f"http://127.0.0.1:{port}/v1/models", child, log_path, timeout=20)
    return child, port


def direct_target(nginx: subprocess.Popen[bytes], port: int) -> Target:
    base = f"http://127.0.0.1:{port}"
    headers = ["Authorization: Bearer sk-bench"]
    return Target(
        key="direct",
        label="direct (nginx)",
        root_pid=lambda: nginx.pid,
        worker_pids=lambda: process_tree(nginx.pid)[1:],
        scenarios={
            "chat": Scenario(f"{base}/v1/chat/completions", CHAT_BODY, headers, False),
            "chat_stream": Scenario(f"{base}/v1/chat/completions", STREAM_BODY, headers, True),
            "messages": Scenario(f"{base}/v1/responses", RESPONSES_BODY, headers, False),
        },
        hold=Scenario(f"{base}/slow/v1/chat/completions", HOLD_BODY, headers, True),
    )


def gateway_config(upstream_port: int, key_capacity: str | None = None) -> str:
    base = f"http://127.0.0.1:{upstream_port}"
    capacity = f"    capacity:\n      - {key_capacity}\n" if key_capacity else ""
    return f"""\
connections:
  - name: bench
    provider: openai
    config: {{apiKey: sk-bench, baseURL: "{base}/v1"}}
  - name: bench-slow
    provider: openai
    config: {{apiKey: sk-bench, baseURL: "{base}/slow/v1"}}
resources:
  - name: bench
    model: {{connection: bench, model: bench-model}}
  - name: bench-slow
    model: {{connection: bench-slow, model: bench-model}}
apiKeys:
  - name: bench
    key: {API_KEY}
    resources: "*"
{capacity}"""


def gateway_env(run_dir: Path, extra_env: dict[str, str] | None) -> dict[str, str]:
    """A clean environment for the gateway, except the upstream transport switch (for A/B runs),
    with a fresh SQLite database in `run_dir` and generated keys; `extra_env` on top."""
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("VMX_", "DJANGO_", "OPENAI_", "DATABASE_", "REDIS_")) or k == "VMX_UPSTREAM_TRANSPORT"
    }
    env.update(
        DATABASE_URL=f"sqlite:///{run_dir}/db.sqlite3",  # absolute path: sqlite:////tmp/...
        DJANGO_SECRET_KEY=secrets.token_urlsafe(50),
        VMX_ENCRYPTION_KEY=base64.urlsafe_b64encode(os.urandom(32)).decode(),
        VMX_GRACEFUL_TIMEOUT="10",
        DJANGO_SETTINGS_MODULE="vmx_project.settings",
        PYTHONUNBUFFERED="1",
    )
    env.update(extra_env or {})
    return env


def start_gateway(
    procs: Processes,
    workdir: Path,
    upstream_port: int,
    workers: int,
    *,
    extra_env: dict[str, str] | None = None,
    key_capacity: str | None = None,
    tag: str = "",
    tree: Path = REPO,
) -> tuple[subprocess.Popen[bytes], int, Path]:
    """`extra_env` (e.g. REDIS_URL) is added to the clean environment; `key_capacity` is one
    `capacity:` entry (flow-style YAML) on the bench API key; `tree` is the source tree to run."""
    run_dir = Path(tempfile.mkdtemp(prefix=f"gw{workers}{tag}-", dir=workdir))
    env = gateway_env(run_dir, extra_env)
    config = run_dir / "bench.yaml"
    config.write_text(gateway_config(upstream_port, key_capacity))
    python = str(VENV_BIN / "python")
    for args in (["migrate", "--no-input", "-v", "0"], ["vmx_apply", str(config)]):
        done = run_quiet([python, "manage.py", *args], timeout=180, cwd=tree, env=env)
        if done.returncode != 0:
            raise RuntimeError(f"manage.py {args[0]} failed:\n{done.stdout}{done.stderr}")
    port = free_port()
    log_path = run_dir / "gunicorn.log"
    command = [
        str(VENV_BIN / "gunicorn"),
        "-c",
        "gunicorn.conf.py",
        "--workers",
        str(workers),
        "--bind",
        f"127.0.0.1:{port}",
    ]
    child = procs.start(command, log_path, cwd=tree, env=env)
    wait_http(f"http://127.0.0.1:{port}/healthz", child, log_path, timeout=60)
    # every worker up (gunicorn starts them one by one)
    deadline = time.monotonic() + 30
    while len(process_tree(child.pid)) < workers + 1 and time.monotonic() < deadline:
        time.sleep(0.2)
    return child, port, log_path


def gateway_target(gunicorn: subprocess.Popen[bytes], port: int, workers: int) -> Target:
    base = f"http://127.0.0.1:{port}"
    bearer = [f"Authorization: Bearer {API_KEY}"]
    anthropic = [f"x-api-key: {API_KEY}", "anthropic-version: 2023-06-01"]
    return Target(
        key=f"gateway{workers}",
        label=f"gateway ({workers} worker{'s' if workers > 1 else ''})",
        root_pid=lambda: gunicorn.pid,
        worker_pids=lambda: process_tree(gunicorn.pid)[1:],
        scenarios={
            "chat": Scenario(f"{base}/v1/chat/completions", CHAT_BODY, bearer, False),
            "chat_stream": Scenario(f"{base}/v1/chat/completions", STREAM_BODY, bearer, True),
            "messages": Scenario(f"{base}/v1/messages", MESSAGES_BODY, anthropic, False),
        },
        hold=Scenario(f"{base}/v1/chat/completions", HOLD_BODY, bearer, True),
    )


def gateway_chat(gunicorn: subprocess.Popen[bytes], port: int, workers: int) -> Scenario:
    """The plain Chat Completions request of a gateway: what the interleaved comparisons measure."""
    scenario = gateway_target(gunicorn, port, workers).scenarios["chat"]
    assert isinstance(scenario, Scenario)
    return scenario


def start_portkey(procs: Processes, workdir: Path) -> tuple[subprocess.Popen[bytes], int]:
    port = free_port()
    log_path = workdir / "portkey.log"
    child = procs.start(["node", str(portkey_entry()), f"--port={port}"], log_path, cwd=workdir)
    wait_http(f"http://127.0.0.1:{port}/", child, log_path, timeout=60)
    return child, port


def portkey_target(node: subprocess.Popen[bytes], port: int, upstream_port: int) -> Target:
    base = f"http://127.0.0.1:{port}"

    def headers(path: str) -> list[str]:
        return [
            "Authorization: Bearer sk-bench",
            "x-portkey-provider: openai",
            f"x-portkey-custom-host: http://127.0.0.1:{upstream_port}{path}",
        ]

    chat = {**CHAT_BODY, "model": "bench-model"}
    return Target(
        key="portkey",
        label=f"Portkey {PORTKEY_VERSION}",
        root_pid=lambda: node.pid,
        worker_pids=lambda: [node.pid],
        scenarios={
            "chat": Scenario(f"{base}/v1/chat/completions", chat, headers("/v1"), False),
            "chat_stream": Scenario(f"{base}/v1/chat/completions", {**chat, "stream": True}, headers("/v1"), True),
            "messages": "not measured (Portkey's /v1/messages targets Anthropic-format providers)",
        },
        hold=Scenario(f"{base}/v1/chat/completions", {**HOLD_BODY, "model": "bench-model"}, headers("/slow/v1"), True),
    )
