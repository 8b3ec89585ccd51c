"""Run the gateway as production does (`gunicorn -c gunicorn.conf.py`) for integration tests."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import httpx2

REPO = Path(__file__).resolve().parents[2]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def gateway_env(*, database_url: str, encryption_key: str, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("VMX_", "DJANGO_", "OPENAI_"))}
    env.update(
        DATABASE_URL=database_url,
        DJANGO_SECRET_KEY="integration-tests-secret-key-0123456789abcdef",
        VMX_ENCRYPTION_KEY=encryption_key,
        DJANGO_SETTINGS_MODULE="vmx_project.settings",
        PYTHONUNBUFFERED="1",
    )
    env.update(extra)
    return env


def manage(env: dict[str, str], *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "manage.py", *args],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        check=check,
        timeout=120,
    )


@dataclass
class GatewayProcess:
    process: subprocess.Popen[str]
    base_url: str
    log_path: Path

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def stop(self, timeout: float = 30) -> int:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(10)
        return self.process.returncode


def gateway_start(
    env: dict[str, str], log_path: Path, *args: str, port: int | None = None, wait: bool = True
) -> GatewayProcess:
    """Start gunicorn; with `wait`, return once /healthz answers (or raise with the log)."""
    port = port or free_port()
    command = [sys.executable, "-m", "gunicorn", "-c", "gunicorn.conf.py", *args]
    if "--bind" not in args:
        command += ["--bind", f"127.0.0.1:{port}"]
    log = log_path.open("w")
    process = subprocess.Popen(command, cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT, text=True)
    gateway = GatewayProcess(process, f"http://127.0.0.1:{port}", log_path)
    if wait:
        wait_until_healthy(gateway)
    return gateway


def wait_until_healthy(gateway: GatewayProcess, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if gateway.process.poll() is not None:
            raise RuntimeError(f"gateway exited with {gateway.process.returncode}:\n{gateway.log()}")
        try:
            if httpx2.get(f"{gateway.base_url}/healthz", timeout=1).status_code == 200:
                return
        except httpx2.HTTPError:
            pass
        time.sleep(0.1)
    gateway.stop()
    raise RuntimeError(f"gateway did not become healthy in {timeout} s:\n{gateway.log()}")
