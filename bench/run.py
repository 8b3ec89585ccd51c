"""`make bench`: the gateway beside a fast fake upstream (and, with --peers, Portkey's gateway).

Starts nginx + echo as a fake OpenAI upstream with a fixed 20 ms think time, measures it directly,
then through the gateway (gunicorn -c gunicorn.conf.py, 2 workers then 1, audit and auth on, a
fresh SQLite database), then the capacity-limits comparison (no limits / REDIS_URL set / a key
limit on Redis, interleaved), then optionally through Portkey's gateway, with wrk (latency, requests/s),
bench/streamclient.py (time to first byte of streams, the 2,000-stream hold test) and /proc (CPU
seconds, RSS). Writes docs/benchmarks.md and prints the tables. Loopback only; every process it
starts is stopped on exit, Ctrl-C included.

    .venv/bin/python bench/run.py [--peers] [--quick] [--note TEXT] [--no-limits-point | --limits-only]
    .venv/bin/python bench/run.py profile [--seconds 20]   # py-spy: top self-time frames of a worker
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import datetime as dt
import json
import os
import platform
import re
import resource
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx2

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path.insert(0, str(HERE))
import upstream  # noqa: E402

VENV_BIN = REPO / ".venv" / "bin"
TOOLS = REPO / ".tools"
PORTKEY_VERSION = "1.15.2"
PORTKEY_DIR = TOOLS / "portkey"
RESULTS_JSON = TOOLS / "bench" / "last-run.json"
DOC = REPO / "docs" / "benchmarks.md"
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


DASH = "\u2013"  # an en dash: "no value" in the tables


def log(message: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {message}", flush=True)


# ---------------------------------------------------------------------------------------------
# Processes: every child in its own session, stopped (group by group) on exit or Ctrl-C.


class Processes:
    def __init__(self) -> None:
        self.children: list[subprocess.Popen[bytes]] = []

    def start(
        self, command: list[str], log_path: Path, cwd: Path | None = None, env: dict[str, str] | None = None
    ) -> subprocess.Popen[bytes]:
        log_file = log_path.open("wb")
        child = subprocess.Popen(  # noqa: S603
            command, stdout=log_file, stderr=subprocess.STDOUT, start_new_session=True, cwd=cwd, env=env
        )
        log_file.close()
        self.children.append(child)
        return child

    def stop(self, child: subprocess.Popen[bytes], timeout: float = 20) -> None:
        if child.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(child.pid, signal.SIGTERM)
            try:
                child.wait(timeout)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(child.pid, signal.SIGKILL)
                child.wait(10)
        else:
            # the leader is gone; make sure nothing of its group stayed behind
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(child.pid, signal.SIGKILL)
        if child in self.children:
            self.children.remove(child)

    def stop_all(self) -> None:
        for child in reversed(list(self.children)):
            self.stop(child, timeout=15)


def _terminate(signum: int, frame: object) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


# ---------------------------------------------------------------------------------------------
# Tools


def run_quiet(
    command: list[str], timeout: float = 600, cwd: Path | None = None, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(  # noqa: S603
        command, capture_output=True, text=True, timeout=timeout, check=False, cwd=cwd, env=env
    )


def ensure_debian_tools() -> None:
    missing = []
    if not shutil.which("nginx") and not Path("/usr/sbin/nginx").exists():
        missing.append("nginx-light")
    if not upstream.NGINX_MODULE.exists():
        missing.append("libnginx-mod-http-echo")
    if not shutil.which("wrk"):
        missing.append("wrk")
    if not missing:
        return
    if os.geteuid() != 0:
        raise SystemExit(f"missing {', '.join(missing)}: run `sudo apt-get install -y {' '.join(missing)}`")
    log(f"installing {', '.join(missing)} with apt-get")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    for command in (["apt-get", "update", "-q"], ["apt-get", "install", "-y", "-q", *missing]):
        done = run_quiet(command, env=env)
        if done.returncode != 0:
            raise SystemExit(f"{' '.join(command)} failed:\n{done.stdout[-2000:]}{done.stderr[-2000:]}")


def nginx_binary() -> str:
    return shutil.which("nginx") or "/usr/sbin/nginx"


def portkey_entry() -> Path:
    return PORTKEY_DIR / "node_modules" / "@portkey-ai" / "gateway" / "build" / "start-server.js"


def ensure_portkey() -> None:
    for tool in ("node", "npm"):
        if not shutil.which(tool):
            raise SystemExit(f"--peers needs {tool} (apt-get install -y nodejs npm)")
    package = PORTKEY_DIR / "node_modules" / "@portkey-ai" / "gateway" / "package.json"
    installed = json.loads(package.read_text()).get("version") if package.exists() else None
    if installed != PORTKEY_VERSION or not portkey_entry().exists():
        log(f"installing @portkey-ai/gateway@{PORTKEY_VERSION} into {PORTKEY_DIR.relative_to(REPO)}")
        PORTKEY_DIR.mkdir(parents=True, exist_ok=True)
        done = run_quiet(
            [
                "npm",
                "install",
                "--no-audit",
                "--no-fund",
                "--prefix",
                str(PORTKEY_DIR),
                f"@portkey-ai/gateway@{PORTKEY_VERSION}",
            ]
        )
        if done.returncode != 0 or not portkey_entry().exists():
            raise SystemExit(f"npm install failed:\n{done.stdout[-2000:]}{done.stderr[-2000:]}")


def raise_open_files() -> tuple[int, int]:
    """Soft limit up to 65,536 (or the hard limit, if lower and not raisable); children inherit it."""
    _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = 65536
    if hard != resource.RLIM_INFINITY and hard < want:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (want, want))
            hard = want
        except (ValueError, PermissionError, OSError):
            pass
    target = want if hard == resource.RLIM_INFINITY else min(want, hard)
    resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_http(url: str, child: subprocess.Popen[bytes], log_path: Path, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if child.poll() is not None:
            raise RuntimeError(
                f"{url}: process exited with {child.returncode}:\n{log_path.read_text(errors='replace')[-3000:]}"
            )
        try:
            httpx2.get(url, timeout=1)
            return
        except httpx2.HTTPError:
            time.sleep(0.1)
    raise RuntimeError(f"{url} did not answer within {timeout} s:\n{log_path.read_text(errors='replace')[-3000:]}")


# ---------------------------------------------------------------------------------------------
# /proc


def process_tree(root: int) -> list[int]:
    """root and its descendants (gunicorn master and workers; nginx master and workers)."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        ppid = int(stat[stat.rindex(")") + 2 :].split()[1])
        children.setdefault(ppid, []).append(int(entry.name))
    tree, todo = [], [root]
    while todo:
        pid = todo.pop()
        tree.append(pid)
        todo.extend(children.get(pid, []))
    return tree


def cpu_seconds(pids: list[int]) -> float:
    ticks = os.sysconf("SC_CLK_TCK")
    total = 0
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += int(fields[11]) + int(fields[12])  # utime, stime (fields 14 and 15 of stat)
    return total / ticks


def machine_busy_seconds() -> float:
    """CPU seconds all cores spent busy since boot (/proc/stat: user, nice, system, irq, softirq, steal)."""
    fields = Path("/proc/stat").read_text().splitlines()[0].split()[1:]
    user, nice, system, _idle, _iowait, irq, softirq, steal = (int(v) for v in fields[:8])
    return (user + nice + system + irq + softirq + steal) / os.sysconf("SC_CLK_TCK")


def own_children_seconds() -> float:
    """CPU seconds of this process and of its finished children (wrk, the clients)."""
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    me = resource.getrusage(resource.RUSAGE_SELF)
    return children.ru_utime + children.ru_stime + me.ru_utime + me.ru_stime


def rss_mib(pid: int) -> float:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0


# ---------------------------------------------------------------------------------------------
# Targets


@dataclass
class Scenario:
    url: str
    body: dict[str, Any]
    headers: list[str]
    stream: bool


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


def body_file(workdir: Path, body: dict[str, Any]) -> Path:
    data = json.dumps(body, separators=(",", ":")).encode()
    path = workdir / f"body-{abs(hash(data))}.json"
    path.write_bytes(data)
    return path


def wrk_point(settings: Settings, scenario: Scenario, concurrency: int, duration: float) -> dict[str, Any]:
    env = {
        **os.environ,
        "BENCH_BODY_FILE": str(body_file(settings.workdir, scenario.body)),
        "BENCH_HEADERS": "\n".join(scenario.headers),
    }
    threads = min(2, concurrency)
    command = [
        "wrk", f"-t{threads}", f"-c{concurrency}", f"-d{duration:g}s", "--timeout", "30s",
        "-s", str(HERE / "wrk" / "post.lua"), scenario.url,
    ]  # fmt: skip
    done = run_quiet(command, timeout=duration + 90, env=env)
    match = re.search(r"^BENCH_JSON (\{.*\})$", done.stdout, re.M)
    if not match:
        raise RuntimeError(f"wrk gave no summary:\n{done.stdout[-2000:]}{done.stderr[-2000:]}")
    raw = json.loads(match.group(1))
    seconds = raw["duration_us"] / 1e6
    errors = raw["non2xx"] + raw["connect_errors"] + raw["read_errors"] + raw["write_errors"] + raw["timeouts"]
    return {
        "concurrency": concurrency,
        "requests": raw["requests"],
        "ok": raw["ok"],
        "errors": errors,
        "rps": raw["ok"] / seconds if seconds else 0.0,
        "p50_ms": raw["p50_us"] / 1000,
        "p99_ms": raw["p99_us"] / 1000,
        "seconds": seconds,
        "raw": raw,
    }


def client_command(mode: str, scenario: Scenario, settings: Settings, *args: str) -> list[str]:
    command = [
        str(VENV_BIN / "python"), str(HERE / "streamclient.py"), mode, "--url", scenario.url,
        "--body-file", str(body_file(settings.workdir, scenario.body)), *args,
    ]  # fmt: skip
    for header in scenario.headers:
        command += ["--header", header]
    return command


def ttfb_point(settings: Settings, scenario: Scenario, concurrency: int) -> dict[str, Any]:
    command = client_command(
        "ttfb", scenario, settings, "--concurrency", str(concurrency), "--duration", f"{settings.ttfb_duration:g}"
    )
    done = run_quiet(command, timeout=settings.ttfb_duration + 120)
    if done.returncode != 0:
        raise RuntimeError(f"streamclient failed:\n{done.stderr[-2000:]}")
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


def probe(scenario: Scenario) -> str | None:
    """None if one request answers 200 (and a stream ends with its marker), else why not."""
    headers = dict(h.split(": ", 1) for h in scenario.headers)
    try:
        response = httpx2.post(scenario.url, json=scenario.body, headers=headers, timeout=30)
    except httpx2.HTTPError as exc:
        return f"{type(exc).__name__}: {exc}"[:160]
    if response.status_code != 200:
        return f"HTTP {response.status_code}: {response.text[:120]}"
    if scenario.stream and not any(m in response.text for m in ("data: [DONE]", "response.completed", "message_stop")):
        return f"stream did not complete: {response.text[-120:]}"
    return None


def measure_target(target: Target, settings: Settings) -> dict[str, Any]:
    result: dict[str, Any] = {"label": target.label, "scenarios": {}}
    scenarios: dict[str, Any] = result["scenarios"]
    warmed = False
    for name, scenario in target.scenarios.items():
        if isinstance(scenario, str):
            scenarios[name] = {"na": scenario}
            continue
        problem = probe(scenario)
        if problem:
            log(f"{target.label} / {name}: n/a ({problem})")
            scenarios[name] = {"na": f"endpoint errored: {problem}"}
            continue
        if not warmed:
            wrk_point(settings, scenario, 16, settings.warmup)
            warmed = True
        points = []
        for concurrency in settings.concurrency:
            duration = settings.c1_duration if concurrency == 1 else settings.duration
            measure_cpu = (name, concurrency) == CPU_POINT
            if measure_cpu:
                pids = process_tree(target.root_pid())
                cpu_before = cpu_seconds(pids)
            point = wrk_point(settings, scenario, concurrency, duration)
            if measure_cpu:
                cpu = cpu_seconds(process_tree(target.root_pid())) - cpu_before
                result["cpu"] = {
                    "point": f"{name} c={concurrency}",
                    "requests": point["requests"],
                    "cpu_seconds": cpu,
                    "per_1k": cpu / point["requests"] * 1000 if point["requests"] else None,
                    "wall_seconds": point["seconds"],
                }
            if scenario.stream:
                point["ttfb"] = ttfb_point(settings, scenario, concurrency)
            points.append(point)
            ttfb = point.get("ttfb") or {}
            log(
                f"{target.label} / {name} c={concurrency}: p50 {point['p50_ms']:.1f} ms p99 {point['p99_ms']:.1f} ms "
                f"{point['rps']:.0f} req/s errors {point['errors']}"
                + (f" ttfb p50 {ttfb.get('ttfb_p50_ms')} p99 {ttfb.get('ttfb_p99_ms')}" if ttfb else "")
            )
        scenarios[name] = {"points": points}
    workers = target.worker_pids()
    result["rss"] = {
        "root_mib": rss_mib(target.root_pid()),
        "workers_mib": [rss_mib(pid) for pid in workers],
        "tree_mib": sum(rss_mib(pid) for pid in process_tree(target.root_pid())),
    }
    if target.hold is not None and settings.hold_streams:
        result["hold"] = hold_test(target, settings)
    return result


def hold_test(target: Target, settings: Settings) -> dict[str, Any]:
    assert target.hold is not None
    problem = probe_hold_quickly(target)
    if problem:
        log(f"{target.label} / hold: n/a ({problem})")
        return {"na": problem}
    command = client_command(
        "hold",
        target.hold,
        settings,
        "--concurrency",
        str(settings.hold_streams),
        "--timeout",
        f"{settings.hold_seconds + 40:g}",
    )
    out = settings.workdir / f"hold-{target.key}.json"
    with out.open("w") as sink:
        child = subprocess.Popen(  # noqa: S603
            command,
            stdout=sink,
            stderr=subprocess.PIPE,
            start_new_session=True,
        )
    peak_rss = 0.0
    deadline = time.monotonic() + settings.hold_seconds + 120
    try:
        while child.poll() is None and time.monotonic() < deadline:
            peak_rss = max(peak_rss, sum(rss_mib(pid) for pid in process_tree(target.root_pid())))
            time.sleep(0.5)
    finally:
        if child.poll() is None:
            os.killpg(child.pid, signal.SIGKILL)
        child.wait(10)
    text = out.read_text().strip()
    if not text:
        return {"na": f"client failed: {child.stderr.read().decode()[-300:] if child.stderr else ''}"}
    result: dict[str, Any] = json.loads(text.splitlines()[-1])
    result["peak_rss_mib"] = peak_rss
    log(
        f"{target.label} / hold: {result['ok']}/{result['streams']} ok, peak open {result['peak_open']}, "
        f"failures {result['failures']}, peak RSS {peak_rss:.0f} MiB"
    )
    return result


def probe_hold_quickly(target: Target) -> str | None:
    """The hold route answers (its first event) — without waiting for the slow stream's end."""
    assert target.hold is not None
    headers = dict(h.split(": ", 1) for h in target.hold.headers)
    try:
        with httpx2.stream("POST", target.hold.url, json=target.hold.body, headers=headers, timeout=30) as response:
            if response.status_code != 200:
                return f"HTTP {response.status_code}: {response.read()[:120]!r}"
            for chunk in response.iter_bytes():
                if chunk:
                    return None
    except httpx2.HTTPError as exc:
        return f"{type(exc).__name__}: {exc}"[:160]
    return "empty stream"


# ---------------------------------------------------------------------------------------------
# The systems under test


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


def start_gateway(
    procs: Processes,
    workdir: Path,
    upstream_port: int,
    workers: int,
    *,
    extra_env: dict[str, str] | None = None,
    key_capacity: str | None = None,
    tag: str = "",
) -> tuple[subprocess.Popen[bytes], int, Path]:
    """`extra_env` (e.g. REDIS_URL) is added to the clean environment; `key_capacity` is one
    `capacity:` entry (flow-style YAML) on the bench API key."""
    run_dir = Path(tempfile.mkdtemp(prefix=f"gw{workers}{tag}-", dir=workdir))
    # A clean environment for the gateway, except the upstream transport switch (for A/B runs).
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
    config = run_dir / "bench.yaml"
    config.write_text(gateway_config(upstream_port, key_capacity))
    python = str(VENV_BIN / "python")
    for args in (["migrate", "--no-input", "-v", "0"], ["vmx_apply", str(config)]):
        done = run_quiet([python, "manage.py", *args], timeout=180, cwd=REPO, env=env)
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
    child = procs.start(command, log_path, cwd=REPO, env=env)
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


# ---------------------------------------------------------------------------------------------
# Capacity limits: the same gateway without limits, with REDIS_URL set, and with a key limit


REDIS_HOST, REDIS_PORT = "127.0.0.1", 6379
LIMIT_ENTRY = "{period: minute, requests: 1000000000}"  # never reached: measures the counting alone
LIMITS_WORKERS = 2
QUIET_CORES = 0.1  # other load (cores) below which the machine counts as quiet for a limits point


@dataclass(frozen=True)
class LimitsConfig:
    key: str
    label: str
    redis_db: int | None
    key_capacity: str | None


def limits_configs(first_db: int) -> list[LimitsConfig]:
    """A: today's default; B: Redis configured but nothing limited; C: a minute limit on the key."""
    return [
        LimitsConfig("A", "A: no limits, no REDIS_URL", None, None),
        LimitsConfig("B", f"B: no limits, REDIS_URL …/{first_db}", first_db, None),
        LimitsConfig("C", f"C: key limit `{LIMIT_ENTRY}`, REDIS_URL …/{first_db + 1}", first_db + 1, LIMIT_ENTRY),
    ]


def redis_url(db: int) -> str:
    return f"redis://{REDIS_HOST}:{REDIS_PORT}/{db}"


def redis_client(db: int) -> Any:
    import redis

    return redis.Redis(host=REDIS_HOST, port=REDIS_PORT, db=db, socket_timeout=3, socket_connect_timeout=2)


def redis_problem(db: int) -> str | None:
    """None if Redis answers PING on 127.0.0.1:6379, else why not."""
    import redis

    try:
        client = redis_client(db)
        client.ping()
        client.close()
    except (redis.RedisError, OSError) as exc:
        return f"{type(exc).__name__}: {exc}"[:160]
    return None


def redis_flush(dbs: list[int], *, before: bool = False) -> None:
    """FLUSHDB each of `dbs`; `before` the run, name a db that already held keys (someone else's?)."""
    import redis

    for db in dbs:
        try:
            client = redis_client(db)
            held = client.dbsize() if before else 0
            if held:
                log(f"limits: flushing Redis db {db} ({held} keys; pick other dbs with --limits-redis-db if not ours)")
            client.flushdb()
            client.close()
        except (redis.RedisError, OSError) as exc:
            log(f"limits: could not flush Redis db {db}: {exc}")


def redis_server_pid(db: int) -> int | None:
    """The Redis server's process id (INFO), if it runs on this machine and /proc shows it."""
    import redis

    try:
        client = redis_client(db)
        pid = int(client.info("server").get("process_id", 0))
        client.close()
    except (redis.RedisError, OSError, ValueError):
        return None
    return pid if pid and Path(f"/proc/{pid}/stat").exists() else None


def redis_counted(db: int) -> dict[str, int]:
    """The capacity counters in `db`: how many, and the requests they counted (field `r`)."""
    client = redis_client(db)
    try:
        # Counters of keys, resources and connections (reservations live under `reservations:`).
        keys = list(client.scan_iter(match="vmx:{cap}:[krc]:*", count=1000))
        requests = sum(int(client.hget(k, "r") or 0) for k in keys)
    finally:
        client.close()
    return {"counters": len(keys), "requests": requests}


def limits_comparison(
    procs: Processes, settings: Settings, nginx_pid: int, upstream_port: int, args: argparse.Namespace
) -> dict[str, Any]:
    """Gateways A, B and C (2 workers each) up together; chat c=64 on each in turn, the order
    rotated every round (ABC, BCA, CAB, …) so drift and position in the round hit all alike."""
    configs = limits_configs(args.limits_redis_db)
    dbs = [c.redis_db for c in configs if c.redis_db is not None]
    result: dict[str, Any] = {
        "date": dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "load_before": " ".join(Path("/proc/loadavg").read_text().split()[:3]),
        "workers": LIMITS_WORKERS,
        "concurrency": list(args.limits_concurrency),
        "rounds": args.limits_rounds,
        "duration": settings.duration,
        "warmup": settings.warmup,
        "quiet_wait": args.limits_quiet_wait,
        "configs": {c.key: {"label": c.label, "points": []} for c in configs},
        "order": [],
    }
    problem = redis_problem(dbs[0])
    if problem:
        log(f"limits: no Redis on {REDIS_HOST}:{REDIS_PORT} ({problem}); configurations B and C are skipped")
        result["redis_missing"] = problem
        for config in configs:
            if config.redis_db is not None:
                result["configs"][config.key]["na"] = f"skipped: no Redis on {REDIS_HOST}:{REDIS_PORT}"
        configs, dbs = [c for c in configs if c.redis_db is None], []
    redis_flush(dbs, before=True)
    redis_pid = redis_server_pid(dbs[0]) if dbs else None
    running: dict[str, tuple[subprocess.Popen[bytes], Scenario]] = {}

    def bench_cpu_seconds() -> float:
        trees = [pid for gunicorn, _ in running.values() for pid in process_tree(gunicorn.pid)]
        trees += process_tree(nginx_pid) + ([redis_pid] if redis_pid else [])
        return cpu_seconds(trees) + own_children_seconds()

    def wait_quiet() -> tuple[float, float]:
        """Wait (at most --limits-quiet-wait s) until processes outside the bench use < 0.1 cores
        over a second; (seconds waited, the last such load)."""
        started = time.monotonic()
        while True:
            ours, busy = bench_cpu_seconds(), machine_busy_seconds()
            time.sleep(1.0)
            other = max(0.0, (machine_busy_seconds() - busy) - (bench_cpu_seconds() - ours))
            waited = time.monotonic() - started
            if other < QUIET_CORES or waited >= args.limits_quiet_wait:
                return waited, other

    try:
        for config in configs:
            env = {"REDIS_URL": redis_url(config.redis_db)} if config.redis_db is not None else {}
            try:
                gunicorn, port, _ = start_gateway(
                    procs,
                    settings.workdir,
                    upstream_port,
                    LIMITS_WORKERS,
                    extra_env=env,
                    key_capacity=config.key_capacity,
                    tag=config.key,
                )
            except RuntimeError as exc:  # e.g. vmx_apply rejected the limit: report it, go on
                log(f"limits / {config.label}: n/a (gateway did not start: {exc})")
                result["configs"][config.key]["na"] = f"gateway did not start: {str(exc)[:200]}"
                continue
            scenario = gateway_target(gunicorn, port, LIMITS_WORKERS).scenarios["chat"]
            assert isinstance(scenario, Scenario)
            failed = probe(scenario)
            if failed:
                log(f"limits / {config.label}: n/a ({failed})")
                result["configs"][config.key]["na"] = f"endpoint errored: {failed}"
                procs.stop(gunicorn, timeout=30)
                continue
            running[config.key] = (gunicorn, scenario)
            log(f"limits / {config.label}: gateway on 127.0.0.1:{port}")
        for _gunicorn, scenario in running.values():
            wrk_point(settings, scenario, 16, settings.warmup)
        keys = list(running)
        for round_index in range(args.limits_rounds):
            shift = round_index % len(keys) if keys else 0
            order = keys[shift:] + keys[:shift]
            result["order"].append("".join(order))
            for concurrency in args.limits_concurrency:
                for key in order:
                    gunicorn, scenario = running[key]
                    waited, other_before = wait_quiet() if args.limits_quiet_wait else (0.0, 0.0)
                    if other_before >= QUIET_CORES:
                        log(f"limits: still {other_before:.2f} cores of other load after {waited:.0f} s; measuring")
                    pids = process_tree(gunicorn.pid)
                    cpu_before = cpu_seconds(pids)
                    redis_before = cpu_seconds([redis_pid]) if redis_pid else 0.0
                    ours_before, busy_before = bench_cpu_seconds(), machine_busy_seconds()
                    point = wrk_point(settings, scenario, concurrency, settings.duration)
                    point["cpu_seconds"] = cpu_seconds(process_tree(gunicorn.pid)) - cpu_before
                    if redis_pid:
                        point["redis_cpu_seconds"] = cpu_seconds([redis_pid]) - redis_before
                    # What the machine spent outside the bench (its gateways, nginx, Redis, wrk):
                    # other work that competed with this point, in cores.
                    outside = (machine_busy_seconds() - busy_before) - (bench_cpu_seconds() - ours_before)
                    point["other_cores"] = max(0.0, outside) / point["seconds"] if point["seconds"] else 0.0
                    point["round"] = round_index + 1
                    point["waited_for_quiet_s"] = waited
                    point.pop("raw", None)
                    result["configs"][key]["points"].append(point)
                    log(
                        f"limits round {round_index + 1} / {key} c={concurrency}: {point['rps']:.0f} req/s "
                        f"p50 {point['p50_ms']:.1f} ms p99 {point['p99_ms']:.1f} ms errors {point['errors']}, "
                        f"other load {point['other_cores']:.2f} cores"
                    )
        for config in configs:
            if config.redis_db is not None and config.key in running:
                result["configs"][config.key]["redis"] = redis_counted(config.redis_db)
    finally:
        for gunicorn, _ in running.values():
            procs.stop(gunicorn, timeout=30)
        redis_flush(dbs)
    for key, config in result["configs"].items():
        counted = config.get("redis")
        if counted:
            log(f"limits / {key}: its Redis db holds {counted['counters']} counters, {counted['requests']} requests")
    return result


def limits_summary(points: list[dict[str, Any]], concurrency: int) -> dict[str, Any] | None:
    """All rounds at `concurrency` together: requests/s over the summed time, median p50 and p99,
    gateway CPU seconds per 1,000 requests."""
    mine = [p for p in points if p["concurrency"] == concurrency]
    if not mine:
        return None
    seconds = sum(p["seconds"] for p in mine)
    requests = sum(p["requests"] for p in mine)

    def median(values: list[float]) -> float:
        ordered = sorted(values)
        middle = len(ordered) // 2
        return ordered[middle] if len(ordered) % 2 else (ordered[middle - 1] + ordered[middle]) / 2

    return {
        "rps": sum(p["ok"] for p in mine) / seconds if seconds else 0.0,
        "rounds_rps": [p["rps"] for p in mine],
        "p50_ms": median([p["p50_ms"] for p in mine]),
        "p99_ms": median([p["p99_ms"] for p in mine]),
        "errors": sum(p["errors"] for p in mine),
        "cpu_per_1k": sum(p.get("cpu_seconds", 0.0) for p in mine) / requests * 1000 if requests else None,
        "other_cores": max((p.get("other_cores", 0.0) for p in mine), default=0.0),
        "redis_cpu_per_1k": (
            sum(p["redis_cpu_seconds"] for p in mine) / requests * 1000
            if requests and all("redis_cpu_seconds" in p for p in mine)
            else None
        ),
    }


def render_limits(limits: dict[str, Any]) -> list[str]:
    configs: dict[str, Any] = limits["configs"]
    lines = [
        f"## Capacity limits ({limits['workers']} workers, Chat Completions plain)",
        "",
        f"Run {limits['date']} (load average before {limits['load_before']}). Three gateways up together, "
        f"each with {limits['workers']} workers and its own database; after a {limits['warmup']:g} s warm-up "
        f"each, {limits['rounds']} rounds of {limits['duration']:g} s points, the order rotated every round "
        f"({', '.join(limits['order']) or DASH}). *requests/s* is over all rounds together; p50 / p99 are "
        "the median of the rounds; CPU: utime + stime of the gateway's processes (master and workers) and, "
        "separately, of the Redis server over the points, per 1,000 requests. Before each point the harness "
        f"waited (at most {limits.get('quiet_wait', 0):g} s) for other load below {QUIET_CORES:g} cores: "
        f"{sum(p.get('waited_for_quiet_s', 0.0) for c in configs.values() for p in c.get('points', [])):.0f} s "
        "in all. *Other load*: the most CPU "
        "(in cores, of 2) that processes outside the bench used during one of the configuration's points "
        "(/proc/stat minus the bench's gateways, nginx, Redis and wrk): above ~0.1 the point competed with "
        "other work and the comparison is noisier.",
        "",
        "| configuration | c | requests/s | vs A | requests/s per round | p50 / p99 (ms) | CPU s / 1,000 req: "
        "gateway · Redis | other load |",
        "|---|---:|---:|---:|---|---:|---:|---:|",
    ]
    for concurrency in limits["concurrency"]:
        base = limits_summary(configs.get("A", {}).get("points", []), concurrency)
        for config in configs.values():
            if "na" in config:
                lines.append(
                    f"| {config['label']} | {concurrency} | n/a | {DASH} | {config['na']} | {DASH} | {DASH} | {DASH} |"
                )
                continue
            summary = limits_summary(config["points"], concurrency)
            if summary is None:
                continue
            if config is configs.get("A"):
                change = "base"
            else:
                change = f"{(summary['rps'] / base['rps'] - 1) * 100:+.1f} %" if base and base["rps"] else DASH
            errors = f" ⚠ {summary['errors']:,} failed" if summary["errors"] else ""
            lines.append(
                f"| {config['label']} | {concurrency} | {summary['rps']:,.0f}{errors} | {change} | "
                + " / ".join(f"{v:,.0f}" for v in summary["rounds_rps"])
                + f" | {summary['p50_ms']:.1f} / {summary['p99_ms']:.1f} | {fmt(summary['cpu_per_1k'], 3)} · "
                f"{fmt(summary['redis_cpu_per_1k'], 3)} | {summary['other_cores']:.2f} |"
            )
    lines.append("")
    for key, config in configs.items():
        counted = config.get("redis")
        if counted is None:
            continue
        if not counted["counters"]:
            lines.append(f"- {key}: its Redis db held no capacity counter afterwards (nothing was counted).")
            continue
        made = sum(p["requests"] for p in config["points"])
        lines.append(
            f"- {key}: its Redis db held {counted['counters']} capacity counter(s) (one per minute window) with "
            f"{counted['requests']:,} requests counted; wrk completed {made:,} in the measured points, besides the "
            "probe and the warm-up."
        )
    if limits.get("redis_missing"):
        lines.append(f"- B and C skipped: no Redis on {REDIS_HOST}:{REDIS_PORT} ({limits['redis_missing']}).")
    lines.append("")
    return lines


# ---------------------------------------------------------------------------------------------
# Report


def versions(with_portkey: bool) -> dict[str, str]:
    def first_line(command: list[str]) -> str:
        try:
            done = run_quiet(command, timeout=30)
        except (OSError, subprocess.TimeoutExpired):
            return "?"
        text = (done.stdout or done.stderr).strip().splitlines()
        return text[0] if text else "?"

    pip = run_quiet([str(VENV_BIN / "python"), "-m", "pip", "list", "--format=json", "--disable-pip-version-check"])
    packages = {p["name"].lower(): p["version"] for p in json.loads(pip.stdout or "[]")}
    rev = first_line(["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"])
    dirty = run_quiet(["git", "-C", str(REPO), "status", "--porcelain", "--untracked-files=no"]).stdout.strip()
    found = {
        "gateway": f"{rev}{' + uncommitted changes' if dirty else ''}",
        "python": platform.python_version(),
        **{
            name: packages.get(name, "?")
            for name in ("django", "gunicorn", "uvicorn", "uvicorn-worker", "uvloop", "httptools", "openai")
        },
        "nginx": first_line([nginx_binary(), "-v"]).replace("nginx version: ", ""),
        "wrk": first_line(["wrk", "-v"]).split(" [")[0],
    }
    if with_portkey:
        found["node"] = first_line(["node", "--version"])
        found["@portkey-ai/gateway"] = PORTKEY_VERSION
    return found


def machine() -> dict[str, str]:
    model = "?"
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            model = line.split(":", 1)[1].strip()
            break
    mem_kib = 0
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemTotal:"):
            mem_kib = int(line.split()[1])
    nproc = run_quiet(["nproc"]).stdout.strip()
    return {
        "cores": nproc,
        "memory": f"{mem_kib / 1024 / 1024:.1f} GiB",
        "cpu": model,
        "kernel": platform.release(),
        "load_before": " ".join(Path("/proc/loadavg").read_text().split()[:3]),
    }


def fmt(value: object, digits: int = 1) -> str:
    if value is None:
        return DASH
    if isinstance(value, float):
        return f"{value:,.{digits}f}"
    return f"{value:,}" if isinstance(value, int) else str(value)


def render(report: dict[str, Any]) -> str:
    targets: dict[str, Any] = report["targets"]
    keys = list(targets)
    lines = [
        "# Benchmarks",
        "",
        "Produced by `make bench` (`make bench-peers` adds Portkey's gateway); method and how to run in",
        "[`bench/README.md`](../bench/README.md). The numbers below are from the last run.",
        "",
    ]
    if report.get("note"):
        lines += [f"> **{report['note']}**", ""]
    m = report["machine"]
    lines += [
        f"- **Date**: {report['date']}",
        f"- **Machine**: {m['cores']} cores ({m['cpu']}), {m['memory']} memory, Linux {m['kernel']}; "
        f"load average before the run {m['load_before']}",
        "- **Versions**: " + ", ".join(f"{k} {v}" for k, v in report["versions"].items()),
        f"- **Settings**: {report['settings']}",
        f"- **Open-file limit** of the servers and load clients: {report['nofile']}",
        "",
        "Upstream: nginx + echo module on loopback, fixed 20 ms think time before the first byte. "
        "Every latency includes those 20 ms; *added p50* is the gateway's p50 minus the direct p50 at "
        "the same concurrency. Cells: **p50 / p99 latency (ms) · requests/s**; ⚠ marks failed requests.",
        "",
    ]
    for name, title in SCENARIOS.items() if keys else ():
        lines += [f"## {title}", ""]
        header = ["c"] + [targets[k]["label"] for k in keys]
        direct = targets.get("direct", {}).get("scenarios", {}).get(name, {})
        direct_p50 = {p["concurrency"]: p["p50_ms"] for p in direct.get("points", [])}
        added_for = [k for k in keys if k != "direct" and "points" in targets[k]["scenarios"].get(name, {})]
        header += [f"added p50, {targets[k]['label']}" for k in added_for]
        lines += ["| " + " | ".join(header) + " |", "|" + "---:|" * len(header)]
        for concurrency in report["concurrency"]:
            row = [str(concurrency)]
            for k in keys:
                row.append(cell(targets[k]["scenarios"].get(name, {}), concurrency))
            for k in added_for:
                point = point_at(targets[k]["scenarios"][name], concurrency)
                base = direct_p50.get(concurrency)
                row.append(f"+{point['p50_ms'] - base:.1f} ms" if point and base is not None else DASH)
            lines.append("| " + " | ".join(row) + " |")
        lines.append("")
        if name == "chat_stream":
            lines += [
                "Time to first byte of the stream (ms, p50 / p99), measured by `bench/streamclient.py`:",
                "",
                "| c | " + " | ".join(targets[k]["label"] for k in keys) + " |",
                "|" + "---:|" * (len(keys) + 1),
            ]
            for concurrency in report["concurrency"]:
                row = [str(concurrency)]
                for k in keys:
                    point = point_at(targets[k]["scenarios"].get(name, {}), concurrency)
                    ttfb = (point or {}).get("ttfb")
                    if not ttfb:
                        row.append("n/a" if point is None else DASH)
                        continue
                    bad = ttfb["bad_status"] + ttfb["incomplete"] + ttfb["errors"]
                    row.append(
                        f"{fmt(ttfb['ttfb_p50_ms'])} / {fmt(ttfb['ttfb_p99_ms'])}" + (f" ⚠ {bad} failed" if bad else "")
                    )
                lines.append("| " + " | ".join(row) + " |")
            lines.append("")
        for k in keys:
            na = targets[k]["scenarios"].get(name, {}).get("na")
            if na:
                lines.append(f"- {targets[k]['label']}: n/a, {na}")
        lines.append("")
    lines += (
        []
        if not keys
        else [
            "## Resources",
            "",
            "| | " + " | ".join(targets[k]["label"] for k in keys) + " |",
            "|---|" + "---:|" * len(keys),
        ]
    )
    rows: dict[str, Callable[[dict[str, Any]], str]] = {
        "peak requests/s, plain chat (any c)": peak_rps,
        "CPU s per 1,000 requests (chat c=64, all processes)": lambda t: fmt((t.get("cpu") or {}).get("per_1k"), 3),
        "RSS per worker after the runs (MiB)": lambda t: (
            " / ".join(f"{v:.0f}" for v in t["rss"]["workers_mib"]) or DASH
        ),
        "RSS, all processes, after the runs (MiB)": lambda t: fmt(t["rss"]["tree_mib"], 0),
        f"hold: {report['hold_streams']:,} streams x {report['hold_seconds']:g} s, succeeded": hold_ok,
        "hold: peak streams open at once": lambda t: fmt((t.get("hold") or {}).get("peak_open")),
        "hold: peak RSS, all processes (MiB)": lambda t: fmt((t.get("hold") or {}).get("peak_rss_mib"), 0),
    }
    for title, get in rows.items() if keys else ():
        lines.append(f"| {title} | " + " | ".join(get(targets[k]) for k in keys) + " |")
    lines.append("")
    if report.get("limits"):
        lines += render_limits(report["limits"])
    if report.get("profile"):
        lines += ["## Profile", "", report["profile"], ""]
    return "\n".join(lines)


def peak_rps(target: dict[str, Any]) -> str:
    points = target["scenarios"].get("chat", {}).get("points", [])
    return fmt(max(p["rps"] for p in points), 0) if points else DASH


def hold_ok(target: dict[str, Any]) -> str:
    hold = target.get("hold")
    if not hold:
        return DASH
    if "na" in hold:
        return f"n/a ({hold['na'].split(':')[0]})"
    failures = ", ".join(f"{v} {k}" for k, v in hold["failures"].items())
    return f"{hold['ok']:,} / {hold['streams']:,}" + (f" ⚠ {failures}" if failures else "")


def point_at(scenario: dict[str, Any], concurrency: int) -> dict[str, Any] | None:
    for point in scenario.get("points", []):
        if point["concurrency"] == concurrency:
            found: dict[str, Any] = point
            return found
    return None


def cell(scenario: dict[str, Any], concurrency: int) -> str:
    if "na" in scenario:
        return "n/a"
    point = point_at(scenario, concurrency)
    if point is None:
        return DASH
    text = f"{point['p50_ms']:.1f} / {point['p99_ms']:.1f} · {point['rps']:,.0f}"
    if point["errors"]:
        text += f" ⚠ {point['errors']:,} failed"
    return text


def write_doc(report: dict[str, Any]) -> None:
    """Replace everything in docs/benchmarks.md above a `<!-- bench:keep -->` line, if present."""
    DOC.parent.mkdir(exist_ok=True)
    keep = ""
    if DOC.exists():
        text = DOC.read_text()
        marker = "<!-- bench:keep -->"
        if marker in text:
            keep = "\n" + text[text.index(marker) :]
    DOC.write_text(render(report) + keep + ("" if keep.endswith("\n") or not keep else "\n"))


# ---------------------------------------------------------------------------------------------
# Main


def run_bench(args: argparse.Namespace) -> None:
    ensure_debian_tools()
    if args.peers:
        ensure_portkey()
    nofile = raise_open_files()
    log(f"open-file limit {nofile[0]} (hard {nofile[1]})")
    if nofile[0] < args.hold_streams * 2 + 200:
        log(f"warning: open-file limit {nofile[0]} is low for {args.hold_streams} held streams")
    settings = Settings(
        duration=args.duration,
        c1_duration=args.c1_duration,
        ttfb_duration=args.ttfb_duration,
        warmup=args.warmup,
        hold_streams=args.hold_streams,
        hold_seconds=args.hold_seconds,
        concurrency=tuple(args.concurrency),
        workdir=Path(tempfile.mkdtemp(prefix="vmx-bench-")),
    )
    report: dict[str, Any] = {
        "date": dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "machine": machine(),
        "versions": versions(args.peers),
        "note": args.note,
        "nofile": f"{nofile[0]} (hard {nofile[1]})",
        "concurrency": list(settings.concurrency),
        "hold_streams": settings.hold_streams,
        "hold_seconds": settings.hold_seconds,
        "settings": ("only the capacity-limits comparison ran (--limits-only); " if args.limits_only else "")
        + (
            f"wrk {settings.duration:g} s per point ({settings.c1_duration:g} s at c=1), 2 threads, after a "
            f"{settings.warmup:g} s warm-up; TTFB client {settings.ttfb_duration:g} s per point; gateway "
            f"workers {', '.join(map(str, args.workers))}; nginx {upstream.nginx_workers()} workers"
        ),
        "targets": {},
    }
    targets: dict[str, Any] = report["targets"]
    procs = Processes()
    started = time.monotonic()
    try:
        nginx, upstream_port = start_nginx(procs, settings.workdir, settings.hold_seconds)
        log(f"upstream nginx on 127.0.0.1:{upstream_port}")
        if not args.limits_only:
            targets["direct"] = measure_target(direct_target(nginx, upstream_port), settings)
        for index, workers in enumerate([] if args.limits_only else args.workers):
            gunicorn, port, _ = start_gateway(procs, settings.workdir, upstream_port, workers)
            target = gateway_target(gunicorn, port, workers)
            log(f"{target.label} on 127.0.0.1:{port}")
            if index > 0 and not args.hold_every_run:
                target.hold = None  # the hold test runs once, on the first (production-like) worker count
            targets[target.key] = measure_target(target, settings)
            procs.stop(gunicorn, timeout=30)
        if args.limits_only or not args.no_limits_point:
            report["limits"] = limits_comparison(procs, settings, nginx.pid, upstream_port, args)
        if args.peers and not args.limits_only:
            node, port = start_portkey(procs, settings.workdir)
            log(f"Portkey on 127.0.0.1:{port}")
            targets["portkey"] = measure_target(portkey_target(node, port, upstream_port), settings)
            procs.stop(node)
    finally:
        procs.stop_all()
    report["elapsed_s"] = time.monotonic() - started
    if args.limits_only and RESULTS_JSON.exists():
        # the comparison alone: it replaces the limits section of the last full run's results
        last: dict[str, Any] = json.loads(RESULTS_JSON.read_text())
        if last.get("targets"):
            last["limits"] = report["limits"]
            report = {**last, "elapsed_s": report["elapsed_s"]}
    RESULTS_JSON.parent.mkdir(parents=True, exist_ok=True)
    RESULTS_JSON.write_text(json.dumps(report, indent=1, default=str))
    if not args.no_doc:
        write_doc(report)
        log(f"wrote {DOC.relative_to(REPO)} (raw results: {RESULTS_JSON.relative_to(REPO)})")
    print()
    print(render(report))
    log(f"done in {report['elapsed_s']:.0f} s; work files in {settings.workdir}")
    shutil.rmtree(settings.workdir, ignore_errors=True)


def run_profile(args: argparse.Namespace) -> None:
    """py-spy one gateway worker under wrk chat c=64; print the top self-time frames."""
    py_spy = args.py_spy or shutil.which("py-spy") or str(VENV_BIN / "py-spy")
    if not Path(py_spy).exists() and not shutil.which(py_spy):
        raise SystemExit("py-spy not found: pip install py-spy (e.g. into a temporary venv) and pass --py-spy PATH")
    ensure_debian_tools()
    raise_open_files()
    workdir = Path(tempfile.mkdtemp(prefix="vmx-profile-"))
    settings = Settings(args.seconds + 5, 1, 1, 2, 0, 10, (args.concurrency,), workdir)
    procs = Processes()
    limits: dict[str, Any] = {}
    if args.with_limit:
        problem = redis_problem(args.redis_db)
        if problem:
            raise SystemExit(f"--with-limit needs Redis on {REDIS_HOST}:{REDIS_PORT}: {problem}")
        redis_flush([args.redis_db], before=True)
        limits = {"extra_env": {"REDIS_URL": redis_url(args.redis_db)}, "key_capacity": LIMIT_ENTRY}
    try:
        _nginx, upstream_port = start_nginx(procs, workdir, 10)
        gunicorn, port, _ = start_gateway(procs, workdir, upstream_port, args.workers, **limits)
        scenario = gateway_target(gunicorn, port, args.workers).scenarios["chat"]
        assert isinstance(scenario, Scenario)
        wrk_point(settings, scenario, 16, 2)
        worker = process_tree(gunicorn.pid)[1]
        raw = workdir / "profile.txt"
        load = threading.Thread(target=lambda: wrk_point(settings, scenario, args.concurrency, args.seconds + 4))
        load.start()
        time.sleep(1)
        done = run_quiet(
            [py_spy, "record", "--pid", str(worker), "--duration", str(args.seconds), "--rate", "200",
             "--format", "raw", "--output", str(raw), "--nonblocking"],
            timeout=args.seconds + 60,
        )  # fmt: skip
        load.join(args.seconds + 90)
        if done.returncode != 0 or not raw.exists():
            raise SystemExit(f"py-spy failed:\n{done.stdout[-2000:]}{done.stderr[-2000:]}")
        RESULTS_JSON.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(raw, RESULTS_JSON.parent / "profile-raw.txt")
        summary = summarise_profile(raw.read_text(), args.top)
        print(summary)
        if args.output:
            Path(args.output).write_text(summary + "\n")
    finally:
        procs.stop_all()
        shutil.rmtree(workdir, ignore_errors=True)
        if args.with_limit:
            redis_flush([args.redis_db])


def summarise_profile(collapsed: str, top: int) -> str:
    """Self time (leaf frames), self time by package, and the repo's own frames by total time."""
    self_counts: dict[str, int] = {}
    total_counts: dict[str, int] = {}
    by_package: dict[str, int] = {}
    samples = 0
    for line in collapsed.splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        count = int(count_text)
        samples += count
        frames = [short_frame(f) for f in stack.split(";")]
        leaf = frames[-1]
        self_counts[leaf] = self_counts.get(leaf, 0) + count
        package = package_of(leaf)
        by_package[package] = by_package.get(package, 0) + count
        for frame in set(frames):
            total_counts[frame] = total_counts.get(frame, 0) + count
    if not samples:
        return "no samples"

    def pct(count: int) -> str:
        return f"{count / samples * 100:.1f}"

    lines = [
        f"{samples:,} samples. Top {top} frames by self time:",
        "",
        "| self % | total % | frame |",
        "|---:|---:|---|",
    ]
    for frame, count in sorted(self_counts.items(), key=lambda kv: -kv[1])[:top]:
        lines.append(f"| {pct(count)} | {pct(total_counts[frame])} | `{frame}` |")
    lines += ["", "Self time by package:", "", "| self % | package |", "|---:|---|"]
    for package, count in sorted(by_package.items(), key=lambda kv: -kv[1])[:top]:
        lines.append(f"| {pct(count)} | {package} |")
    own = {
        f: c
        for f, c in total_counts.items()
        if package_of(f).split(" ")[0] in ("gateway", "connections", "vmx_project")
    }
    lines += ["", f"The gateway's own frames by total time (top {top}):", "", "| total % | frame |", "|---:|---|"]
    for frame, count in sorted(own.items(), key=lambda kv: -kv[1])[:top]:
        lines.append(f"| {pct(count)} | `{frame}` |")
    return "\n".join(lines)


def package_of(frame: str) -> str:
    match = re.search(r"\((.*):\d+\)$", frame)
    path = match.group(1) if match else frame
    if path.startswith("<frozen") or "/" not in path:
        return "stdlib" if path.startswith("<frozen") or path.endswith(".py") else path
    head = path.split("/", 1)[0]
    return "stdlib" if head.startswith(".") or head == "python3" else head


def short_frame(frame: str) -> str:
    """`func (/long/path/site-packages/pkg/mod.py:12)` -> `func (pkg/mod.py:12)`."""
    match = re.match(r"^(.*) \((.*):(\d+)\)$", frame.strip())
    if not match:
        return frame.strip()
    name, path, line = match.groups()
    for anchor in ("site-packages/", str(REPO) + "/"):
        if anchor in path:
            path = path.split(anchor, 1)[1]
            break
    else:
        path = re.sub(r"^.*/lib/python3\.\d+/", "", path)
    return f"{name} ({path}:{line})"


def main() -> None:
    parser = argparse.ArgumentParser(description="VM-X gateway benchmark (see bench/README.md)", allow_abbrev=False)
    sub = parser.add_subparsers(dest="command")
    parser.add_argument("--peers", action="store_true", help="also measure Portkey's gateway")
    parser.add_argument("--quick", action="store_true", help="short points, fewer streams: a smoke run")
    parser.add_argument("--duration", type=float, default=8.0, help="wrk seconds per point (c>1)")
    parser.add_argument("--c1-duration", type=float, default=4.0, help="wrk seconds at c=1")
    parser.add_argument("--ttfb-duration", type=float, default=3.0, help="TTFB client seconds per point")
    parser.add_argument("--warmup", type=float, default=2.0)
    parser.add_argument("--concurrency", type=int, nargs="+", default=list(CONCURRENCY))
    parser.add_argument("--workers", type=int, nargs="+", default=[2, 1], help="gateway worker counts to run")
    parser.add_argument("--hold-streams", type=int, default=2000)
    parser.add_argument("--hold-seconds", type=float, default=10.0)
    parser.add_argument("--hold-every-run", action="store_true", help="hold test for every worker count")
    parser.add_argument("--note", default="", help="a line shown at the top of docs/benchmarks.md")
    parser.add_argument(
        "--no-limits-point", action="store_true", help="skip the capacity-limits comparison (A/B/C, bench/README.md)"
    )
    parser.add_argument(
        "--limits-only",
        action="store_true",
        help="run only the capacity-limits comparison; it replaces that section of the last run's doc and JSON",
    )
    parser.add_argument("--limits-rounds", type=int, default=3, help="rounds of A, B, C points (order rotated)")
    parser.add_argument("--limits-concurrency", type=int, nargs="+", default=[64], help="c of the limits points")
    parser.add_argument(
        "--limits-redis-db", type=int, default=8, help="Redis db N for B and N+1 for C (flushed before and after)"
    )
    parser.add_argument(
        "--limits-quiet-wait",
        type=float,
        default=60.0,
        help="before each limits point, wait up to this many seconds for other load to drop below 0.1 cores",
    )
    parser.add_argument("--no-doc", action="store_true", help="print only; leave docs/benchmarks.md alone")
    parser.add_argument(
        "--render-only", action="store_true", help="rewrite docs/benchmarks.md from the last run's JSON"
    )
    profile = sub.add_parser("profile", help="py-spy one gateway worker under load", allow_abbrev=False)
    profile.add_argument("--seconds", type=int, default=20)
    profile.add_argument("--concurrency", type=int, default=64)
    profile.add_argument("--workers", type=int, default=2)
    profile.add_argument("--top", type=int, default=15)
    profile.add_argument("--py-spy", default="")
    profile.add_argument("--output", default="")
    profile.add_argument(
        "--with-limit", action="store_true", help=f"profile configuration C: key limit {LIMIT_ENTRY} on Redis"
    )
    profile.add_argument("--redis-db", type=int, default=9, help="Redis db for --with-limit (flushed before and after)")
    args = parser.parse_args()
    # SIGINT too: a shell that starts us in the background leaves it ignored otherwise
    for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(signum, _terminate)
    if args.command == "profile":
        if not 1 <= args.seconds <= 300 or not 0 <= args.redis_db <= 15:
            raise SystemExit("--seconds must be 1..300, --redis-db 0..15")
        run_profile(args)
        return
    if args.render_only:
        write_doc(json.loads(RESULTS_JSON.read_text()))
        print(DOC.read_text())
        return
    if args.quick:
        args.duration, args.c1_duration, args.ttfb_duration, args.warmup = 2.0, 1.0, 1.0, 1.0
        args.hold_streams, args.hold_seconds = min(args.hold_streams, 200), min(args.hold_seconds, 2.0)
        args.limits_rounds = min(args.limits_rounds, 2)
    bounds = (0 < args.duration <= 120, 0 < args.c1_duration <= 120, 0 < args.ttfb_duration <= 60,
              0 <= args.hold_streams <= 5000, 0 < args.hold_seconds <= 60,
              all(0 < c <= 2000 for c in args.concurrency), all(0 < w <= 16 for w in args.workers),
              0 < args.limits_rounds <= 10, all(0 < c <= 2000 for c in args.limits_concurrency),
              0 <= args.limits_redis_db <= 14, 0 <= args.limits_quiet_wait <= 600)  # fmt: skip
    if not all(bounds):
        raise SystemExit("an option is out of bounds (see --help)")
    run_bench(args)


if __name__ == "__main__":
    try:
        main()
    except KeyboardInterrupt:
        print("\n[bench] interrupted; every started process was stopped", file=sys.stderr)
        sys.exit(130)
