"""Load points against one target: wrk for latency and requests/s, bench/streamclient.py for the
time to first byte of streams and for the hold test, a one-request probe before each scenario, and
`measure_target`, the main run's pass over every scenario and concurrency of a target.

Every load loop is bounded in time (wrk -d, the client's --duration / --timeout, a deadline on
the hold test) and in concurrency.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import time
from pathlib import Path
from typing import Any

import httpx2
from procs import HERE, VENV_BIN, cpu_seconds, log, process_tree, rss_mib, run_quiet
from targets import CPU_POINT, Scenario, Settings, Target


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
    """Every scenario at every concurrency (a warm-up before the first), then RSS and the hold test."""
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
        scenarios[name] = {"points": measure_scenario(target, settings, name, scenario, result)}
    workers = target.worker_pids()
    result["rss"] = {
        "root_mib": rss_mib(target.root_pid()),
        "workers_mib": [rss_mib(pid) for pid in workers],
        "tree_mib": sum(rss_mib(pid) for pid in process_tree(target.root_pid())),
    }
    if target.hold is not None and settings.hold_streams:
        result["hold"] = hold_test(target, settings)
    return result


def measure_scenario(
    target: Target, settings: Settings, name: str, scenario: Scenario, result: dict[str, Any]
) -> list[dict[str, Any]]:
    """One scenario's points; at CPU_POINT also the CPU seconds of the target, into result["cpu"]."""
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
    return points


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
