"""`run.py profile`: py-spy one gateway worker under wrk chat load (c=64) and print the top frames by
self time, self time by package, and the gateway's own frames by total time. `--with-limit` runs
configuration C of the capacity-limits comparison (a key limit counted on Redis).

Not named profile.py: that would shadow the standard library's module of that name (cProfile
imports it) for everything run from bench/.
"""

from __future__ import annotations

import argparse
import re
import shutil
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from capacity_limits import LIMIT_ENTRY, REDIS_HOST, REDIS_PORT, redis_flush, redis_problem, redis_url
from loadpoints import wrk_point
from procs import REPO, TOOLS, VENV_BIN, Processes, process_tree, run_quiet
from targets import Settings, gateway_chat, start_gateway, start_nginx
from tools import ensure_debian_tools, raise_open_files

PROFILE_RAW = TOOLS / "bench" / "profile-raw.txt"


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
        scenario = gateway_chat(gunicorn, port, args.workers)
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
        PROFILE_RAW.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(raw, PROFILE_RAW)
        summary = summarise_profile(raw.read_text(), args.top)
        print(summary)
        if args.output:
            Path(args.output).write_text(summary + "\n")
    finally:
        procs.stop_all()
        shutil.rmtree(workdir, ignore_errors=True)
        if args.with_limit:
            redis_flush([args.redis_db])


def count_frames(collapsed: str) -> tuple[int, dict[str, int], dict[str, int], dict[str, int]]:
    """py-spy's raw (collapsed) stacks: samples, and counts by leaf frame, by any frame, by package."""
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
    return samples, self_counts, total_counts, by_package


def summarise_profile(collapsed: str, top: int) -> str:
    """Self time (leaf frames), self time by package, and the repo's own frames by total time."""
    samples, self_counts, total_counts, by_package = count_frames(collapsed)
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
