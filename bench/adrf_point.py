"""What Django REST framework's async APIView (adrf) costs on `/v1/chat/completions`, beside ours.

Three gateways (four with --with-async-auth) up together (2 workers each, their own SQLite
database, the same nginx upstream as `make bench`), differing only in the view that serves `POST /v1/chat/completions`:

- A: the project's view as shipped (`gateway.views.ChatCompletionsView`);
- B: an `adrf.views.APIView` doing the same work (`bench/adrf_views.py`);
- C: B with an async `initial()` that only authenticates and checks permissions;
- D (`--with-async-auth`): B with an async authenticator, which adrf runs with `async_to_sync`.

All three take the lean `/v1/` ASGI path (gateway/asgi/handler.py), which dispatches B and C as it
dispatches ours, so the difference is the view layer alone. Plain Chat Completions at c=64 on each
in turn, in rounds whose order rotates (ABC, BCA, CAB, ...), each point after waiting for the
machine to be quiet, as the capacity-limits comparison of `run.py` does. adrf 0.1.14 and
djangorestframework 3.18.3 are installed into `.tools/adrf` (git-ignored) and put on the
PYTHONPATH of B and C only. Prints the tables; keeps the raw numbers in
`.tools/bench/adrf-point.json`; never writes docs/.

    .venv/bin/python bench/adrf_point.py [--rounds 6] [--duration 8] [--concurrency 64] [--with-async-auth] [--quick]
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx2

sys.path.insert(0, str(Path(__file__).resolve().parent))
from interleave import BenchProcesses, median, per_1k, quiet_point, rotated
from loadpoints import probe, wrk_point
from procs import HERE, REPO, TOOLS, VENV_BIN, Processes, load_average, log, run_quiet, stop_on_signals
from report import fmt, limits_summary
from targets import Scenario, Settings, gateway_chat, start_gateway, start_nginx
from tools import ensure_debian_tools, raise_open_files

ADRF_DIR = TOOLS / "adrf"
ADRF_PINS = {"adrf": "0.1.14", "djangorestframework": "3.18.3"}
RESULTS = TOOLS / "bench" / "adrf-point.json"
WORKERS = 2

Running = dict[str, tuple[subprocess.Popen[bytes], Scenario]]


@dataclass(frozen=True)
class ViewConfig:
    key: str
    label: str
    env: dict[str, str]


def ensure_adrf() -> None:
    """adrf and REST framework, pinned, in `.tools/adrf`: never in the project's venv. `--no-deps`:
    Django and asgiref come from the venv, and adrf's other requirement (async-property) is used
    only by its serializers, which the bench view does not import."""
    wanted = [ADRF_DIR / f"{name}-{version}.dist-info" for name, version in ADRF_PINS.items()]
    if all(path.is_dir() for path in wanted):
        return
    log(f"installing {', '.join(f'{n}=={v}' for n, v in ADRF_PINS.items())} into {ADRF_DIR.relative_to(REPO)}")
    done = run_quiet(
        [
            str(VENV_BIN / "python"), "-m", "pip", "install", "--quiet", "--disable-pip-version-check",
            "--no-deps", "--upgrade", "--target", str(ADRF_DIR), *(f"{n}=={v}" for n, v in ADRF_PINS.items()),
        ]
    )  # fmt: skip
    if done.returncode != 0 or not all(path.is_dir() for path in wanted):
        raise SystemExit(f"pip install into {ADRF_DIR} failed:\n{done.stdout[-2000:]}{done.stderr[-2000:]}")


def view_configs(with_c: bool, with_d: bool) -> list[ViewConfig]:
    path = os.pathsep.join([str(ADRF_DIR), str(HERE), *filter(None, [os.environ.get("PYTHONPATH")])])
    adrf_env = {"PYTHONPATH": path, "DJANGO_SETTINGS_MODULE": "adrf_settings"}
    configs = [
        ViewConfig("A", "A: the project's view (GatewayAPIView)", {}),
        ViewConfig("B", f"B: adrf {ADRF_PINS['adrf']} APIView", {**adrf_env, "BENCH_ADRF_VIEW": "B"}),
    ]
    if with_c:
        configs.append(
            ViewConfig("C", "C: adrf, async initial() (auth + permissions only)", {**adrf_env, "BENCH_ADRF_VIEW": "C"})
        )
    if with_d:
        configs.append(ViewConfig("D", "D: adrf, async authenticator", {**adrf_env, "BENCH_ADRF_VIEW": "D"}))
    return configs


def check_view(config: ViewConfig, scenario: Scenario) -> str | None:
    """None if the answer came through the intended view layer: REST framework's finalize_response
    adds `Allow` (B, C), ours does not (A)."""
    headers = dict(h.split(": ", 1) for h in scenario.headers)
    response = httpx2.post(scenario.url, json=scenario.body, headers=headers, timeout=30)
    if response.status_code != 200 or "x-vmx-request-id" not in response.headers:
        return f"HTTP {response.status_code}, headers {dict(response.headers)}"
    drf = "allow" in response.headers
    if drf != (config.key != "A"):
        return f"{'REST framework' if drf else 'our view'} answered (Allow: {response.headers.get('allow')})"
    return None


def compare(args: argparse.Namespace) -> dict[str, Any]:
    ensure_debian_tools()
    ensure_adrf()
    nofile = raise_open_files()
    workdir = Path(tempfile.mkdtemp(prefix="vmx-adrf-"))
    settings = Settings(args.duration, 1, 1, args.warmup, 0, 10, (args.concurrency,), workdir)
    configs = view_configs(not args.no_c, args.with_async_auth)
    result: dict[str, Any] = {
        "date": dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "load_before": load_average(),
        "nofile": list(nofile),
        "workers": WORKERS,
        "concurrency": args.concurrency,
        "rounds": args.rounds,
        "duration": args.duration,
        "warmup": args.warmup,
        "quiet_wait": args.quiet_wait,
        "versions": {"adrf": ADRF_PINS["adrf"], "djangorestframework": ADRF_PINS["djangorestframework"]},
        "configs": {c.key: {"label": c.label, "points": []} for c in configs},
        "order": [],
    }
    procs = Processes()
    try:
        nginx, upstream_port = start_nginx(procs, workdir, 10)
        log(f"upstream nginx on 127.0.0.1:{upstream_port}")
        running = start_views(procs, workdir, upstream_port, configs)
        bench = BenchProcesses(nginx.pid, None, [gunicorn for gunicorn, _ in running.values()])
        for _gunicorn, scenario in running.values():
            wrk_point(settings, scenario, 16, settings.warmup)
        measure_rounds(settings, args, bench, running, result)
    finally:
        procs.stop_all()
        shutil.rmtree(workdir, ignore_errors=True)
    return result


def start_views(procs: Processes, workdir: Path, upstream_port: int, configs: list[ViewConfig]) -> Running:
    """A gateway per configuration, each checked to answer through the view layer it should."""
    running: Running = {}
    for config in configs:
        gunicorn, port, _ = start_gateway(procs, workdir, upstream_port, WORKERS, extra_env=config.env, tag=config.key)
        scenario = gateway_chat(gunicorn, port, WORKERS)
        problem = probe(scenario) or check_view(config, scenario)
        if problem:
            raise SystemExit(f"{config.label}: {problem}")
        running[config.key] = (gunicorn, scenario)
        log(f"{config.label}: gateway on 127.0.0.1:{port}")
    return running


def measure_rounds(
    settings: Settings, args: argparse.Namespace, bench: BenchProcesses, running: Running, result: dict[str, Any]
) -> None:
    keys = list(running)
    for round_index in range(args.rounds):
        order = rotated(keys, round_index)
        result["order"].append("".join(order))
        for key in order:
            gunicorn, scenario = running[key]
            point = quiet_point(
                settings,
                bench,
                gunicorn,
                scenario,
                args.concurrency,
                round_number=round_index + 1,
                quiet_wait=args.quiet_wait,
                log_prefix="",
            )
            point["cpu_per_1k"] = per_1k(point)
            result["configs"][key]["points"].append(point)
            log(
                f"round {round_index + 1} / {key}: {point['rps']:.0f} req/s p50 {point['p50_ms']:.1f} ms "
                f"p99 {point['p99_ms']:.1f} ms, CPU {point['cpu_per_1k'] or 0:.3f} s/1k req, "
                f"errors {point['errors']}, other load {point['other_cores']:.2f} cores"
            )


def render(result: dict[str, Any]) -> str:
    configs: dict[str, Any] = result["configs"]
    lines = [
        f"## adrf APIView vs the project's view (chat plain, c={result['concurrency']}, {result['workers']} workers)",
        "",
        f"Run {result['date']} (load average before {result['load_before']}); adrf "
        f"{result['versions']['adrf']}, djangorestframework {result['versions']['djangorestframework']}; "
        f"{result['rounds']} rounds of {result['duration']:g} s points after a {result['warmup']:g} s warm-up "
        f"each, order {', '.join(result['order'])}. CPU: utime + stime of the gateway's processes per 1,000 "
        "requests; *other load*: cores used outside the bench during the point.",
        "",
        "| configuration | round | requests/s | p50 / p99 (ms) | CPU s / 1,000 req | other load |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for config in configs.values():
        for point in config["points"]:
            errors = f" ⚠ {point['errors']:,} failed" if point["errors"] else ""
            lines.append(
                f"| {config['label']} | {point['round']} | {point['rps']:,.0f}{errors} | "
                f"{point['p50_ms']:.1f} / {point['p99_ms']:.1f} | {fmt(point['cpu_per_1k'], 3)} | "
                f"{point['other_cores']:.2f} |"
            )
    lines += [
        "",
        "Medians of the rounds; *pooled*: over all rounds together; *paired*: the median over rounds of "
        "(this configuration's point - A's point in the same round).",
        "",
        "| configuration | requests/s (pooled) | p50 / p99 (ms) | CPU s / 1,000 req (pooled) | CPU µs / req "
        "| vs A: requests/s | vs A: CPU µs / req (paired) |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    base = configs.get("A", {}).get("points", [])
    base_cpu = median([p["cpu_per_1k"] for p in base]) if base else None
    base_rps = median([p["rps"] for p in base]) if base else None
    for key, config in configs.items():
        points = config["points"]
        if not points:
            continue
        pooled = limits_summary(points, result["concurrency"]) or {}
        rps = median([p["rps"] for p in points])
        cpu = median([p["cpu_per_1k"] for p in points])
        if key == "A" or base_cpu is None or base_rps is None:
            change, paired = "base", "base"
        else:
            by_round = {p["round"]: p for p in base}
            diffs = [(p["cpu_per_1k"] - by_round[p["round"]]["cpu_per_1k"]) * 1000 for p in points]
            change = f"{(rps / base_rps - 1) * 100:+.1f} %"
            paired = f"{median(diffs):+.0f} (rounds {', '.join(f'{d:+.0f}' for d in diffs)})"
        lines.append(
            f"| {config['label']} | {rps:,.0f} ({pooled.get('rps', 0):,.0f}) | "
            f"{pooled.get('p50_ms', 0):.1f} / {pooled.get('p99_ms', 0):.1f} | "
            f"{cpu:.3f} ({fmt(pooled.get('cpu_per_1k'), 3)}) | {cpu * 1000:.0f} | {change} | {paired} |"
        )
    lines.append("")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description="adrf APIView vs the project's view (bench/README.md)")
    parser.add_argument("--rounds", type=int, default=6, help="rounds of A, B, C points (order rotated)")
    parser.add_argument("--duration", type=float, default=8.0, help="wrk seconds per point")
    parser.add_argument("--warmup", type=float, default=2.0)
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument(
        "--quiet-wait", type=float, default=60.0, help="wait up to this long for other load < 0.1 cores"
    )
    parser.add_argument("--no-c", action="store_true", help="without C")
    parser.add_argument(
        "--with-async-auth",
        action="store_true",
        help="also D: B with an async authenticator (async_to_sync in initial)",
    )
    parser.add_argument("--quick", action="store_true", help="a smoke run: 2 rounds of 2 s points")
    args = parser.parse_args()
    if args.quick:
        args.rounds, args.duration, args.warmup = min(args.rounds, 2), 2.0, 1.0
    if not (0 < args.rounds <= 20 and 0 < args.duration <= 120 and 0 < args.concurrency <= 2000):
        raise SystemExit("an option is out of bounds (see --help)")
    stop_on_signals()
    result = compare(args)
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(result, indent=1))
    print()
    print(render(result))
    log(f"raw results: {RESULTS.relative_to(REPO)}")


if __name__ == "__main__":
    try:
        main()
    except KeyboardInterrupt:
        print("\n[bench] interrupted; every started process was stopped", file=sys.stderr)
        sys.exit(130)
