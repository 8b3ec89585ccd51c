"""docs/benchmarks.md: the machine and versions a run had, and the Markdown tables of its results
(one per scenario, time to first byte, resources, the capacity-limits comparison). `render` works
from the run's JSON alone, so `--render-only` rewrites the doc from .tools/bench/last-run.json.
"""

from __future__ import annotations

import json
import platform
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import upstream
from capacity_limits import REDIS_HOST, REDIS_PORT, and_list
from interleave import QUIET_CORES, median
from procs import REPO, VENV_BIN, load_average, run_quiet
from targets import SCENARIOS
from tools import PORTKEY_VERSION, nginx_binary

DOC = REPO / "docs" / "benchmarks.md"
DASH = "\u2013"  # an en dash: "no value" in the tables
COUNT_WORDS = {1: "One", 2: "Two", 3: "Three", 4: "Four", 5: "Five"}


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
        "load_before": load_average(),
    }


def fmt(value: object, digits: int = 1) -> str:
    if value is None:
        return DASH
    if isinstance(value, float):
        return f"{value:,.{digits}f}"
    return f"{value:,}" if isinstance(value, int) else str(value)


def settings_line(args: Any) -> str:
    """The *Settings* line of the doc, from the command line the run had."""
    return ("only the capacity-limits comparison ran (--limits-only); " if args.limits_only else "") + (
        f"wrk {args.duration:g} s per point ({args.c1_duration:g} s at c=1), 2 threads, after a "
        f"{args.warmup:g} s warm-up; TTFB client {args.ttfb_duration:g} s per point; gateway "
        f"workers {', '.join(map(str, args.workers))}; nginx {upstream.nginx_workers()} workers"
    )


def render(report: dict[str, Any]) -> str:
    targets: dict[str, Any] = report["targets"]
    keys = list(targets)
    lines = render_header(report)
    for name, title in SCENARIOS.items() if keys else ():
        lines += render_scenario(report, name, title)
    lines += render_resources(report) if keys else [""]
    if report.get("limits"):
        lines += render_limits(report["limits"])
    if report.get("profile"):
        lines += ["## Profile", "", report["profile"], ""]
    return "\n".join(lines)


def render_header(report: dict[str, Any]) -> list[str]:
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
    return lines


def render_scenario(report: dict[str, Any], name: str, title: str) -> list[str]:
    """One scenario's table (every target at every c, and what each gateway adds to the direct p50)."""
    targets: dict[str, Any] = report["targets"]
    keys = list(targets)
    lines = [f"## {title}", ""]
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
        lines += render_ttfb(report, name)
    for k in keys:
        na = targets[k]["scenarios"].get(name, {}).get("na")
        if na:
            lines.append(f"- {targets[k]['label']}: n/a, {na}")
    lines.append("")
    return lines


def render_ttfb(report: dict[str, Any], name: str) -> list[str]:
    targets: dict[str, Any] = report["targets"]
    keys = list(targets)
    lines = [
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
            row.append(f"{fmt(ttfb['ttfb_p50_ms'])} / {fmt(ttfb['ttfb_p99_ms'])}" + (f" ⚠ {bad} failed" if bad else ""))
        lines.append("| " + " | ".join(row) + " |")
    lines.append("")
    return lines


def render_resources(report: dict[str, Any]) -> list[str]:
    targets: dict[str, Any] = report["targets"]
    keys = list(targets)
    lines = [
        "## Resources",
        "",
        "| | " + " | ".join(targets[k]["label"] for k in keys) + " |",
        "|---|" + "---:|" * len(keys),
    ]
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
    for title, get in rows.items():
        lines.append(f"| {title} | " + " | ".join(get(targets[k]) for k in keys) + " |")
    lines.append("")
    return lines


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
# The capacity-limits section


def limits_summary(points: list[dict[str, Any]], concurrency: int) -> dict[str, Any] | None:
    """All rounds at `concurrency` together: requests/s over the summed time, median p50 and p99,
    gateway CPU seconds per 1,000 requests."""
    mine = [p for p in points if p["concurrency"] == concurrency]
    if not mine:
        return None
    seconds = sum(p["seconds"] for p in mine)
    requests = sum(p["requests"] for p in mine)
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
    waited = sum(p.get("waited_for_quiet_s", 0.0) for c in configs.values() for p in c.get("points", []))
    lines = [
        f"## Capacity limits ({limits['workers']} workers, Chat Completions plain)",
        "",
        f"Run {limits['date']} (load average before {limits['load_before']}). "
        f"{COUNT_WORDS.get(len(configs), str(len(configs)))} gateways up together, "
        f"each with {limits['workers']} workers and its own database; after a {limits['warmup']:g} s warm-up "
        f"each, {limits['rounds']} rounds of {limits['duration']:g} s points, the order rotated every round "
        f"({', '.join(limits['order']) or DASH}). *requests/s* is over all rounds together; p50 / p99 are "
        "the median of the rounds; CPU: utime + stime of the gateway's processes (master and workers) and, "
        "separately, of the Redis server over the points, per 1,000 requests. Before each point the harness "
        f"waited (at most {limits.get('quiet_wait', 0):g} s) for other load below {QUIET_CORES:g} cores: "
        f"{waited:.0f} s in all. *Other load*: the most CPU "
        "(in cores, of 2) that processes outside the bench used during one of the configuration's points "
        "(/proc/stat minus the bench's gateways, nginx, Redis and wrk): above ~0.1 the point competed with "
        "other work and the comparison is noisier.",
        "",
        "| configuration | c | requests/s | vs A | requests/s per round | p50 / p99 (ms) | CPU s / 1,000 req: "
        "gateway · Redis | other load |",
        "|---|---:|---:|---:|---|---:|---:|---:|",
    ]
    for concurrency in limits["concurrency"]:
        lines += limits_rows(configs, concurrency)
    lines.append("")
    lines += limits_notes(limits)
    lines.append("")
    return lines


def limits_rows(configs: dict[str, Any], concurrency: int) -> list[str]:
    """One row per configuration at `concurrency`, its requests/s against A's."""
    lines = []
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
    return lines


def limits_notes(limits: dict[str, Any]) -> list[str]:
    """What each Redis db held afterwards (the counting happened, and only where it should)."""
    lines = []
    for key, config in limits["configs"].items():
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
        skipped = [k for k, c in limits["configs"].items() if str(c.get("na", "")).startswith("skipped: no Redis")]
        where = f"{REDIS_HOST}:{REDIS_PORT}"
        lines.append(f"- {and_list(skipped)} skipped: no Redis on {where} ({limits['redis_missing']}).")
    return lines
