"""`run.py compare --base REV`: a change measured against an earlier revision in one run.

"after" is the working tree as it is (uncommitted changes included); "before" is REV exported
with `git archive` into a temporary directory under .tools/compare/ (removed at the end). Both
gateways run with the same .venv, each from its own tree's root (so that its own code is
imported) with its own fresh SQLite database, both up together against one nginx upstream, and
are measured in interleaved rounds whose order rotates (AB, BA, AB, ...) with the quiet wait of
the capacity-limits comparison before each point (interleave.py says why).

Prints a Markdown table (to paste into a commit message) and keeps the raw numbers in
.tools/bench/compare.json; never writes docs/.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import datetime as dt
import difflib
import json
import os
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from interleave import QUIET_CORES, BenchProcesses, median, per_1k, quiet_point, rotated
from loadpoints import probe, wrk_point
from procs import REPO, TOOLS, VENV_BIN, Processes, load_average, log, run_quiet
from report import DASH, fmt
from targets import COMPARE_SCENARIOS, TENANT_PREFIX, Scenario, Settings, gateway_target, start_gateway, start_nginx
from tools import ensure_debian_tools, raise_open_files

COMPARE_DIR = TOOLS / "compare"
RESULTS = TOOLS / "bench" / "compare.json"
SIDES = ("before", "after")
# Reading git must not write to it: no opportunistic index refresh by `git status` while someone
# else works in the same checkout.
GIT_ENV = {**os.environ, "GIT_OPTIONAL_LOCKS": "0"}

Running = dict[str, tuple[subprocess.Popen[bytes], dict[str, Scenario]]]


@dataclass(frozen=True)
class Revisions:
    base: str  # REV as given
    sha: str
    subject: str
    head: str  # the working tree's HEAD, short
    dirty: bool


def git(*args: str) -> str:
    done = run_quiet(["git", "-C", str(REPO), *args], timeout=120, env=GIT_ENV)
    if done.returncode != 0:
        raise SystemExit(f"git {' '.join(args)} failed: {done.stderr.strip()[-500:]}")
    return done.stdout


def resolve(base: str) -> Revisions:
    sha = git("rev-parse", "--verify", "--end-of-options", f"{base}^{{commit}}").strip()
    return Revisions(
        base=base,
        sha=sha,
        subject=git("log", "-1", "--format=%s", sha).strip(),
        head=git("rev-parse", "--short", "HEAD").strip(),
        dirty=bool(git("status", "--porcelain").strip()),
    )


def export_tree(sha: str) -> Path:
    """REV's files (`git archive REV | tar -x`) in a fresh directory under .tools/compare/."""
    COMPARE_DIR.mkdir(parents=True, exist_ok=True)
    tree = Path(tempfile.mkdtemp(prefix=f"{sha[:12]}-", dir=COMPARE_DIR))
    archive = subprocess.Popen(  # noqa: S603
        ["git", "-C", str(REPO), "archive", "--format=tar", sha],  # noqa: S607
        stdout=subprocess.PIPE,
        env=GIT_ENV,
    )
    try:
        done = subprocess.run(  # noqa: S603
            ["tar", "-x", "-C", str(tree)],  # noqa: S607
            stdin=archive.stdout,
            capture_output=True,
            timeout=300,
            check=False,
        )
    finally:
        if archive.stdout:
            archive.stdout.close()
        archive.wait(60)
    if archive.returncode != 0 or done.returncode != 0 or not (tree / "manage.py").exists():
        shutil.rmtree(tree, ignore_errors=True)
        raise SystemExit(f"could not export {sha[:12]} (git archive | tar -x): {done.stderr.decode()[-500:]}")
    return tree


def requirements_difference(sha: str) -> str | None:
    """None if requirements.txt asks for the same packages at REV as in the working tree (comments
    aside), else the changed lines: the before tree runs on the working tree's packages (one .venv)."""
    shown = run_quiet(["git", "-C", str(REPO), "show", f"{sha}:requirements.txt"], timeout=60, env=GIT_ENV)
    after_path = REPO / "requirements.txt"
    before = requirement_lines(shown.stdout if shown.returncode == 0 else "")
    after = requirement_lines(after_path.read_text() if after_path.exists() else "")
    if before == after:
        return None
    changed = [
        line
        for line in difflib.unified_diff(before, after, lineterm="", n=0)
        if line[:1] in "+-" and not line.startswith(("+++", "---"))
    ]
    return ", ".join(changed) or "the order of its lines"


def requirement_lines(text: str) -> list[str]:
    return [line.split("#", 1)[0].strip() for line in text.splitlines() if line.split("#", 1)[0].strip()]


def imports_from(tree: Path) -> str | None:
    """None if Python started in `tree` (as manage.py and gunicorn are) imports that tree's gateway
    package, else where it came from: a PYTHONPATH or an installed copy would make it the other's."""
    done = run_quiet([str(VENV_BIN / "python"), "-c", "import gateway; print(gateway.__file__)"], timeout=60, cwd=tree)
    found = done.stdout.strip()
    if done.returncode != 0 or not Path(found).resolve().is_relative_to(tree.resolve()):
        return found or done.stderr.strip()[-300:]
    return None


def run_compare(args: argparse.Namespace) -> dict[str, Any]:
    ensure_debian_tools()
    nofile = raise_open_files()
    revisions = resolve(args.base)
    difference = requirements_difference(revisions.sha)
    if difference:
        shout(f"requirements.txt differs between {args.base} and the working tree ({difference}): the before tree runs "
              "on the working tree's packages (.venv), not on its own")  # fmt: skip
    workdir = Path(tempfile.mkdtemp(prefix="vmx-compare-"))
    settings = Settings(args.duration, 1, 1, args.warmup, 0, 10, tuple(args.concurrency), workdir)
    result = new_result(args, revisions, difference, nofile)
    procs = Processes()
    before_tree: Path | None = None
    try:
        before_tree = export_tree(revisions.sha)
        log(f"before: {args.base} ({revisions.sha[:12]} {revisions.subject}), exported to {before_tree}")
        trees = {"before": before_tree, "after": REPO}
        for side, tree in trees.items():
            wrong = imports_from(tree)
            if wrong:
                raise SystemExit(f"the {side} tree ({tree}) would import its gateway from elsewhere: {wrong}")
        nginx, upstream_port = start_nginx(procs, workdir, 10)
        log(f"upstream nginx on 127.0.0.1:{upstream_port}")
        running = start_sides(procs, settings, upstream_port, trees, args.workers)
        bench = BenchProcesses(nginx.pid, None, [gunicorn for gunicorn, _ in running.values()])
        scenarios = usable_scenarios(settings, running, args.scenarios, result)
        measure_rounds(settings, args, bench, running, scenarios, result)
    finally:
        procs.stop_all()
        if before_tree is not None:
            shutil.rmtree(before_tree, ignore_errors=True)
            with contextlib.suppress(OSError):  # .tools/compare/ itself, unless another run uses it
                COMPARE_DIR.rmdir()
        shutil.rmtree(workdir, ignore_errors=True)
    result["summary"] = summarise(result)
    return result


def shout(message: str) -> None:
    """A warning that must not scroll past unseen."""
    bar = "!" * 100
    log(bar)
    log(f"WARNING: {message}")
    log(bar)


def new_result(
    args: argparse.Namespace, revisions: Revisions, difference: str | None, nofile: tuple[int, int]
) -> dict[str, Any]:
    return {
        "date": dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "load_before": load_average(),
        "nofile": list(nofile),
        "base": revisions.base,
        "base_sha": revisions.sha,
        "base_subject": revisions.subject,
        "after": f"working tree ({revisions.head}{' + uncommitted changes' if revisions.dirty else ''})",
        "requirements_differ": difference,
        "workers": args.workers,
        "concurrency": list(args.concurrency),
        "scenarios": list(args.scenarios),
        "rounds": args.rounds,
        "duration": args.duration,
        "warmup": args.warmup,
        "quiet_wait": args.quiet_wait,
        "order": [],
        "na": {},
        "points": {side: [] for side in SIDES},
    }


def start_sides(
    procs: Processes, settings: Settings, upstream_port: int, trees: dict[str, Path], workers: int
) -> Running:
    running: Running = {}
    for side, tree in trees.items():
        try:
            gunicorn, port, _ = start_gateway(procs, settings.workdir, upstream_port, workers, tag=side, tree=tree)
        except RuntimeError as exc:
            raise SystemExit(f"the {side} gateway did not start: {exc}") from exc
        target = gateway_target(gunicorn, port, workers)
        scenarios = {name: s for name, s in target.scenarios.items() if isinstance(s, Scenario)}
        chat = scenarios["chat"]
        base, _, path = chat.url.partition("/v1/")
        scenarios["chat_tenant"] = dataclasses.replace(chat, url=f"{base}{TENANT_PREFIX}/{path}", fallback_url=chat.url)
        running[side] = (gunicorn, scenarios)
        log(f"{side}: gateway on 127.0.0.1:{port} (from {tree})")
    return running


def usable_scenarios(settings: Settings, running: Running, wanted: list[str], result: dict[str, Any]) -> list[str]:
    """The scenarios both gateways answer (a one-request probe each), warmed up; the others n/a."""
    usable = []
    for name in wanted:
        for side, (_, scenarios) in running.items():
            scenario = scenarios[name]
            if scenario.fallback_url and probe(scenario):  # a revision from before the path existed
                scenarios[name] = dataclasses.replace(scenario, url=scenario.fallback_url, fallback_url=None)
                log(f"{name}: the {side} gateway lacks {scenario.url}; measured on {scenario.fallback_url}")
        problems = {side: probe(scenarios[name]) for side, (_, scenarios) in running.items()}
        failed = {side: problem for side, problem in problems.items() if problem}
        if failed:
            log(f"{name}: n/a ({'; '.join(f'{side}: {problem}' for side, problem in failed.items())})")
            result["na"][name] = failed
            continue
        for _gunicorn, scenarios in running.values():
            wrk_point(settings, scenarios[name], 16, settings.warmup)
        usable.append(name)
    return usable


def measure_rounds(
    settings: Settings,
    args: argparse.Namespace,
    bench: BenchProcesses,
    running: Running,
    scenarios: list[str],
    result: dict[str, Any],
) -> None:
    """Round by round, each scenario and concurrency on both sides back to back (so the pair of a
    round saw the same machine), the side that goes first alternating."""
    for round_index in range(args.rounds):
        order = rotated(list(SIDES), round_index)
        result["order"].append("".join("A" if side == "before" else "B" for side in order))
        for name in scenarios:
            for concurrency in args.concurrency:
                for side in order:
                    gunicorn, by_name = running[side]
                    point = quiet_point(
                        settings,
                        bench,
                        gunicorn,
                        by_name[name],
                        concurrency,
                        round_number=round_index + 1,
                        quiet_wait=args.quiet_wait,
                        log_prefix="compare: ",
                    )
                    point["scenario"] = name
                    point["cpu_per_1k"] = per_1k(point)
                    result["points"][side].append(point)
                    log(
                        f"compare round {round_index + 1} / {side} / {name} c={concurrency}: {point['rps']:.0f} req/s "
                        f"p50 {point['p50_ms']:.1f} ms p99 {point['p99_ms']:.1f} ms, CPU "
                        f"{point['cpu_per_1k'] or 0:.3f} s/1k req, errors {point['errors']}, "
                        f"other load {point['other_cores']:.2f} cores"
                    )


# ---------------------------------------------------------------------------------------------
# Summary and table


def summarise(result: dict[str, Any]) -> list[dict[str, Any]]:
    """Per scenario x concurrency: medians over rounds per side, and after - before paired by round."""
    rows = []
    for name in result["scenarios"]:
        for concurrency in result["concurrency"]:
            sides = {
                side: sorted(
                    (p for p in result["points"][side] if p["scenario"] == name and p["concurrency"] == concurrency),
                    key=lambda p: int(p["round"]),
                )
                for side in SIDES
            }
            if all(sides.values()):
                rows.append(summary_row(name, concurrency, sides["before"], sides["after"]))
    return rows


def summary_row(
    name: str, concurrency: int, before: list[dict[str, Any]], after: list[dict[str, Any]]
) -> dict[str, Any]:
    def side(points: list[dict[str, Any]]) -> dict[str, Any]:
        cpu = [p["cpu_per_1k"] for p in points if p["cpu_per_1k"] is not None]
        return {
            "rps": median([p["rps"] for p in points]),
            "rounds_rps": [p["rps"] for p in points],
            "p50_ms": median([p["p50_ms"] for p in points]),
            "p99_ms": median([p["p99_ms"] for p in points]),
            "cpu_per_1k": median(cpu) if cpu else None,
            "errors": sum(p["errors"] for p in points),
        }

    by_round = {p["round"]: p for p in before}
    diffs = [
        (p["cpu_per_1k"] - by_round[p["round"]]["cpu_per_1k"]) * 1000
        for p in after
        if p["round"] in by_round and p["cpu_per_1k"] is not None and by_round[p["round"]]["cpu_per_1k"] is not None
    ]
    before_side, after_side = side(before), side(after)
    row: dict[str, Any] = {"scenario": name, "concurrency": concurrency, "before": before_side, "after": after_side}
    base_rps = before_side["rps"]
    row["change_pct"] = (after_side["rps"] / base_rps - 1) * 100 if base_rps else None
    row["cpu_us_per_request_diff"] = {
        "median": median(diffs) if diffs else None,
        "min": min(diffs, default=None),
        "max": max(diffs, default=None),
        "rounds": diffs,
    }
    row["other_cores"] = max(p.get("other_cores", 0.0) for p in before + after)
    return row


def render(result: dict[str, Any]) -> str:
    waited = sum(p.get("waited_for_quiet_s", 0.0) for side in SIDES for p in result["points"][side])
    lines = [
        f"Before/after ({result['date']}): before = {result['base']} ({result['base_sha'][:12]} "
        f'"{result["base_subject"]}"), after = {result["after"]}. Gateways with {result["workers"]} '
        f"worker(s) each, up together, their own SQLite databases, one nginx upstream (20 ms think time); "
        f"{result['rounds']} rounds of {result['duration']:g} s wrk points, order {', '.join(result['order'])} "
        f"(A = before); before each point a wait (at most {result['quiet_wait']:g} s, {waited:.0f} s in all) "
        f"for other load below {QUIET_CORES:g} cores. Medians over rounds; CPU: utime + stime of the gateway's "
        "processes; *other load*: the most cores used outside the bench during one of the row's points.",
        "",
    ]
    if result.get("requirements_differ"):
        lines += [
            f"⚠ requirements.txt differs ({result['requirements_differ']}): the before tree ran on the after "
            "tree's packages.",
            "",
        ]
    lines += [
        "| scenario | c | req/s before (rounds) | req/s after (rounds) | change | p50 / p99 ms, before → after "
        "| CPU s / 1,000 req, before → after | CPU µs / req, after - before (range) | other load |",
        "|---|---:|---|---|---:|---|---|---|---:|",
    ]
    lines += [render_row(row) for row in result["summary"]]
    for name, failed in result["na"].items():
        why = "; ".join(f"{side} errored: {problem}" for side, problem in failed.items()).replace("|", "/")
        lines.append(f"| {name} | {DASH} | n/a | n/a | {DASH} | {why} | {DASH} | {DASH} | {DASH} |")
    lines.append("")
    return "\n".join(lines)


def render_row(row: dict[str, Any]) -> str:
    def rps(side: dict[str, Any]) -> str:
        errors = f" ⚠ {side['errors']:,} failed" if side["errors"] else ""
        return f"{side['rps']:,.0f}{errors} ({' / '.join(f'{v:,.0f}' for v in side['rounds_rps'])})"

    before, after, diff = row["before"], row["after"], row["cpu_us_per_request_diff"]
    change = f"{row['change_pct']:+.1f} %" if row["change_pct"] is not None else DASH
    paired = DASH
    if diff["median"] is not None:
        paired = f"{diff['median']:+.0f} ({diff['min']:+.0f} … {diff['max']:+.0f})"
    return (
        f"| {row['scenario']} | {row['concurrency']} | {rps(before)} | {rps(after)} | {change} | "
        f"{before['p50_ms']:.1f} / {before['p99_ms']:.1f} → {after['p50_ms']:.1f} / {after['p99_ms']:.1f} | "
        f"{fmt(before['cpu_per_1k'], 3)} → {fmt(after['cpu_per_1k'], 3)} | {paired} | {row['other_cores']:.2f} |"
    )


def add_parser(sub: Any) -> None:
    compare = sub.add_parser("compare", help="the working tree against an earlier revision", allow_abbrev=False)
    compare.add_argument("--base", default="HEAD", help="the revision to compare with (any git revision)")
    compare.add_argument("--rounds", type=int, default=3, help="rounds of before/after points (at least 3)")
    compare.add_argument("--duration", type=float, default=8.0, help="wrk seconds per point")
    compare.add_argument("--workers", type=int, default=2, help="gateway workers, each side")
    compare.add_argument("--concurrency", type=int, nargs="+", default=[64])
    compare.add_argument("--scenarios", nargs="+", choices=list(COMPARE_SCENARIOS), default=list(COMPARE_SCENARIOS))
    compare.add_argument(
        "--quiet-wait",
        type=float,
        default=60.0,
        help="before each point, wait up to this many seconds for other load to drop below 0.1 cores",
    )
    compare.add_argument("--quick", action="store_true", help="2 s points, 1 s warm-ups: a smoke run")


def main(args: argparse.Namespace) -> None:
    args.warmup = 1.0 if args.quick else 2.0
    if args.quick:
        args.duration = 2.0
    bounds = (3 <= args.rounds <= 20, 0 < args.duration <= 120, 0 < args.workers <= 16,
              all(0 < c <= 2000 for c in args.concurrency), 0 <= args.quiet_wait <= 600)  # fmt: skip
    if not all(bounds):
        raise SystemExit("an option is out of bounds (see compare --help; --rounds is at least 3, for a median)")
    result = run_compare(args)
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(result, indent=1))
    print()
    print(render(result))
    if result["requirements_differ"]:  # again, after the table, where it is read
        shout(f"requirements.txt differs ({result['requirements_differ']}): the before tree ran on these packages")
    log(f"raw results: {RESULTS.relative_to(REPO)}")
