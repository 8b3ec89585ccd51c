"""`make bench`: the gateway beside a fast fake upstream (and, with --peers, Portkey's gateway).

Starts nginx + echo as a fake OpenAI upstream with a fixed 20 ms think time, measures it directly,
then through the gateway (gunicorn -c gunicorn.conf.py, 2 workers then 1, audit and auth on, a
fresh SQLite database), then the capacity-limits comparison (no limits / REDIS_URL set / a key
limit on Redis / the same with hiredis, interleaved), then optionally through
Portkey's gateway, with wrk (latency, requests/s), bench/streamclient.py (time to first byte of
streams, the 2,000-stream hold test) and /proc (CPU seconds, RSS). Writes docs/benchmarks.md and
prints the tables. Loopback only; every process it starts is stopped on exit, Ctrl-C included.

    .venv/bin/python bench/run.py [--peers] [--quick] [--note TEXT] [--no-limits-point | --limits-only]
    .venv/bin/python bench/run.py profile [--seconds 20]   # py-spy: top self-time frames of a worker
    .venv/bin/python bench/run.py compare [--base REV]     # the working tree against REV, interleaved

This module is the entry point and the main run; the parts live beside it: procs.py (processes,
/proc), tools.py (installing nginx, wrk, Portkey, hiredis), targets.py (what is measured and how
it is started), loadpoints.py (wrk and the stream client), interleave.py (rounds of points on
gateways up together), capacity_limits.py, report.py (docs/benchmarks.md), profiling.py and
compare_revs.py.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import compare_revs
from capacity_limits import LIMIT_ENTRY, LIMITS_KEYS, limits_comparison
from loadpoints import measure_target
from procs import REPO, TOOLS, Processes, log, stop_on_signals
from profiling import run_profile
from report import DOC, machine, render, settings_line, versions, write_doc
from targets import (
    CONCURRENCY,
    Settings,
    direct_target,
    gateway_target,
    portkey_target,
    start_gateway,
    start_nginx,
    start_portkey,
)
from tools import ensure_debian_tools, ensure_portkey, raise_open_files

RESULTS_JSON = TOOLS / "bench" / "last-run.json"


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
        "settings": settings_line(args),
        "targets": {},
    }
    started = time.monotonic()
    measure_all(args, settings, report)
    report["elapsed_s"] = time.monotonic() - started
    save_and_print(args, report)
    log(f"done in {report['elapsed_s']:.0f} s; work files in {settings.workdir}")
    shutil.rmtree(settings.workdir, ignore_errors=True)


def measure_all(args: argparse.Namespace, settings: Settings, report: dict[str, Any]) -> None:
    """Upstream alone, the gateway at each worker count, the limits comparison, Portkey: into report."""
    targets: dict[str, Any] = report["targets"]
    procs = Processes()
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


def save_and_print(args: argparse.Namespace, report: dict[str, Any]) -> None:
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


def build_parser() -> argparse.ArgumentParser:
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
    add_limits_options(parser)
    parser.add_argument("--no-doc", action="store_true", help="print only; leave docs/benchmarks.md alone")
    parser.add_argument(
        "--render-only", action="store_true", help="rewrite docs/benchmarks.md from the last run's JSON"
    )
    add_profile_parser(sub)
    compare_revs.add_parser(sub)
    return parser


def add_limits_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--no-limits-point", action="store_true", help="skip the capacity-limits comparison (A-D, bench/README.md)"
    )
    parser.add_argument(
        "--limits-only",
        action="store_true",
        help="run only the capacity-limits comparison; it replaces that section of the last run's doc and JSON",
    )
    parser.add_argument("--limits-rounds", type=int, default=3, help="rounds of A, B, C, D points (order rotated)")
    parser.add_argument("--limits-concurrency", type=int, nargs="+", default=[64], help="c of the limits points")
    parser.add_argument(
        "--limits-redis-db",
        type=int,
        default=8,
        help="Redis db N for B, N+1 for C and N+2 for D (flushed before and after)",
    )
    parser.add_argument(
        "--limits-quiet-wait",
        type=float,
        default=60.0,
        help="before each limits point, wait up to this many seconds for other load to drop below 0.1 cores",
    )
    parser.add_argument(
        "--limits-configs",
        nargs="+",
        choices=LIMITS_KEYS,
        default=list(LIMITS_KEYS),
        help="the configurations to run (B, C and D need Redis)",
    )


def add_profile_parser(sub: Any) -> None:
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


def check_main_options(args: argparse.Namespace) -> None:
    """--quick shortens everything; then every option within its bounds (each load loop stays bounded)."""
    if args.quick:
        args.duration, args.c1_duration, args.ttfb_duration, args.warmup = 2.0, 1.0, 1.0, 1.0
        args.hold_streams, args.hold_seconds = min(args.hold_streams, 200), min(args.hold_seconds, 2.0)
        args.limits_rounds = min(args.limits_rounds, 2)
    bounds = (0 < args.duration <= 120, 0 < args.c1_duration <= 120, 0 < args.ttfb_duration <= 60,
              0 <= args.hold_streams <= 5000, 0 < args.hold_seconds <= 60,
              all(0 < c <= 2000 for c in args.concurrency), all(0 < w <= 16 for w in args.workers),
              0 < args.limits_rounds <= 10, all(0 < c <= 2000 for c in args.limits_concurrency),
              0 <= args.limits_redis_db <= 13, 0 <= args.limits_quiet_wait <= 600)  # fmt: skip
    if not all(bounds):
        raise SystemExit("an option is out of bounds (see --help)")


def main() -> None:
    args = build_parser().parse_args()
    stop_on_signals()
    if args.command == "profile":
        if not 1 <= args.seconds <= 300 or not 0 <= args.redis_db <= 15:
            raise SystemExit("--seconds must be 1..300, --redis-db 0..15")
        run_profile(args)
        return
    if args.command == "compare":
        compare_revs.main(args)
        return
    if args.render_only:
        write_doc(json.loads(RESULTS_JSON.read_text()))
        print(DOC.read_text())
        return
    check_main_options(args)
    run_bench(args)


if __name__ == "__main__":
    try:
        main()
    except KeyboardInterrupt:
        print("\n[bench] interrupted; every started process was stopped", file=sys.stderr)
        sys.exit(130)
