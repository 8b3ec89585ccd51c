"""Redis servers a test owns: a real `redis-server` with a configuration of its own (TLS, a tiny
`maxmemory`), and a TCP server that accepts connections and never answers (a hung Redis).

Each real server runs on a free loopback port in the test's temporary directory and is stopped
when the test ends, so the shared Redis of the suite is never reconfigured.
"""

from __future__ import annotations

import contextlib
import shutil
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@dataclass(frozen=True)
class Certificate:
    """A self-signed certificate for 127.0.0.1 (it is its own CA) and its key."""

    cert: Path
    key: Path


def self_signed_certificate(directory: Path) -> Certificate:
    cert, key = directory / "redis.crt", directory / "redis.key"
    command = "openssl req -x509 -newkey rsa:2048 -nodes -days 1 -subj /CN=127.0.0.1"
    command += " -addext subjectAltName=IP:127.0.0.1"
    subprocess.run(
        [*command.split(), "-keyout", str(key), "-out", str(cert)], check=True, capture_output=True, timeout=60
    )
    return Certificate(cert=cert, key=key)


def redis_server_available() -> bool:
    return shutil.which("redis-server") is not None


@contextlib.contextmanager
def redis_server(directory: Path, *options: str, certificate: Certificate | None = None) -> Iterator[str]:
    """A `redis-server` of its own; yields its URL (`rediss://` with `certificate`)."""
    port = _free_port()
    command = ["redis-server", "--bind", "127.0.0.1", "--save", "", "--appendonly", "no", "--dir", str(directory)]
    if certificate is not None:
        command += [
            "--port", "0", "--tls-port", str(port),
            "--tls-cert-file", str(certificate.cert), "--tls-key-file", str(certificate.key),
            "--tls-ca-cert-file", str(certificate.cert), "--tls-auth-clients", "no",
        ]  # fmt: skip
    else:
        command += ["--port", str(port)]
    command += list(options)
    log = (directory / f"redis-{port}.log").open("w")
    process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 10
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
                break
            except OSError:
                if process.poll() is not None or time.monotonic() > deadline:
                    log_text = (directory / f"redis-{port}.log").read_text()
                    raise RuntimeError(f"redis-server did not start: {log_text}") from None
                time.sleep(0.05)
        yield f"{'rediss' if certificate else 'redis'}://127.0.0.1:{port}/0"
    finally:
        process.terminate()
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(10)
        log.close()


class SilentServer:
    """Accepts TCP connections and never answers: a Redis that hangs instead of refusing.
    `connections` counts the connections it accepted."""

    def __init__(self) -> None:
        self._listener = socket.socket()
        self._listener.bind(("127.0.0.1", 0))
        self._listener.listen(128)
        self.port = int(self._listener.getsockname()[1])
        self._accepted: list[socket.socket] = []
        self._lock = threading.Lock()
        threading.Thread(target=self._accept, daemon=True).start()

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    @property
    def connections(self) -> int:
        with self._lock:
            return len(self._accepted)

    def _accept(self) -> None:
        while True:
            try:
                connection, _ = self._listener.accept()
            except OSError:
                return
            with self._lock:
                self._accepted.append(connection)

    def close(self) -> None:
        self._listener.close()
        with self._lock:
            for connection in self._accepted:
                connection.close()
