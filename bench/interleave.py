"""Interleaved comparisons of gateways that are up together: the machinery the capacity-limits
comparison, `run.py compare` and adrf_point.py share.

Why interleave: on a shared 2-core machine throughput drifts by several percent over a minute
(other load, CPU frequency, the page cache), and the point just after another one is a little
different. Short points on each configuration in turn, the order rotated every round (ABC, BCA,
CAB, ...), spread that drift over all configurations alike; and waiting for the machine to be
quiet before each point keeps a busy neighbour, which moves a point far more than the effects
measured, out of most of them.
"""

from __future__ import annotations

import subprocess
import time
from dataclasses import dataclass, field
from typing import Any

from loadpoints import wrk_point
from procs import cpu_seconds, log, machine_busy_seconds, own_children_seconds, process_tree
from targets import Scenario, Settings

QUIET_CORES = 0.1  # other load (cores) below which the machine counts as quiet for a point


@dataclass
class BenchProcesses:
    """The processes of the bench itself (its gateways, nginx, Redis, and wrk through this
    process's children): what is *not* other load."""

    nginx_pid: int
    redis_pid: int | None = None
    gateways: list[subprocess.Popen[bytes]] = field(default_factory=list)

    def cpu_seconds(self) -> float:
        trees = [pid for gunicorn in self.gateways for pid in process_tree(gunicorn.pid)]
        trees += process_tree(self.nginx_pid) + ([self.redis_pid] if self.redis_pid else [])
        return cpu_seconds(trees) + own_children_seconds()


def wait_quiet(bench: BenchProcesses, limit: float) -> tuple[float, float]:
    """Wait (at most `limit` s) until processes outside the bench use < QUIET_CORES cores over a
    second; (seconds waited, the last such load). (0, 0) at once if `limit` is 0."""
    if not limit:
        return 0.0, 0.0
    started = time.monotonic()
    while True:
        ours, busy = bench.cpu_seconds(), machine_busy_seconds()
        time.sleep(1.0)
        other = max(0.0, (machine_busy_seconds() - busy) - (bench.cpu_seconds() - ours))
        waited = time.monotonic() - started
        if other < QUIET_CORES or waited >= limit:
            return waited, other


def rotated(keys: list[str], round_index: int) -> list[str]:
    """The order of round `round_index` (from 0): ABC, BCA, CAB, ABC, ..."""
    shift = round_index % len(keys) if keys else 0
    return keys[shift:] + keys[:shift]


def quiet_point(
    settings: Settings,
    bench: BenchProcesses,
    gunicorn: subprocess.Popen[bytes],
    scenario: Scenario,
    concurrency: int,
    *,
    round_number: int,
    quiet_wait: float,
    log_prefix: str,
) -> dict[str, Any]:
    """One wrk point after the quiet wait, with the CPU seconds of the gateway's processes (and of
    the Redis server, if the bench has one) and the other load during the point, in cores."""
    waited, other_before = wait_quiet(bench, quiet_wait)
    if other_before >= QUIET_CORES:
        log(f"{log_prefix}still {other_before:.2f} cores of other load after {waited:.0f} s; measuring")
    cpu_before = cpu_seconds(process_tree(gunicorn.pid))
    redis_before = cpu_seconds([bench.redis_pid]) if bench.redis_pid else 0.0
    ours_before, busy_before = bench.cpu_seconds(), machine_busy_seconds()
    point = wrk_point(settings, scenario, concurrency, settings.duration)
    point["cpu_seconds"] = cpu_seconds(process_tree(gunicorn.pid)) - cpu_before
    if bench.redis_pid:
        point["redis_cpu_seconds"] = cpu_seconds([bench.redis_pid]) - redis_before
    # What the machine spent outside the bench (its gateways, nginx, Redis, wrk): other work that
    # competed with this point, in cores.
    outside = (machine_busy_seconds() - busy_before) - (bench.cpu_seconds() - ours_before)
    point["other_cores"] = max(0.0, outside) / point["seconds"] if point["seconds"] else 0.0
    point["round"] = round_number
    point["waited_for_quiet_s"] = waited
    point.pop("raw", None)
    return point


def median(values: list[float]) -> float:
    ordered = sorted(values)
    middle = len(ordered) // 2
    return ordered[middle] if len(ordered) % 2 else (ordered[middle - 1] + ordered[middle]) / 2


def per_1k(point: dict[str, Any]) -> float | None:
    """The gateway's CPU seconds per 1,000 requests of one point."""
    return float(point["cpu_seconds"]) / point["requests"] * 1000 if point["requests"] else None
