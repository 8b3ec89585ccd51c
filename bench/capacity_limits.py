"""The capacity-limits comparison (bench/README.md): what capacity limits cost a request, measured
beside the same gateway without them. Gateways A to D, 2 workers each, up together against one
upstream, differing only in this:

- A: no REDIS_URL, no limit (today's default);
- B: REDIS_URL set, no limit (a request without limits must pay nothing for Redis being there);
- C: a minute limit on the bench key that is never reached (the price of counting);
- D: as C, with hiredis importable (redis-py's asyncio client parses with hiredis: is it worth
  a dependency?).

Plain chat at c=64 on each in turn, in rounds whose order rotates (interleave.py). Rendered by
report.render_limits.
"""

from __future__ import annotations

import argparse
import datetime as dt
import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from interleave import BenchProcesses, quiet_point, rotated
from loadpoints import probe, wrk_point
from procs import Processes, load_average, log
from targets import Scenario, Settings, gateway_chat, start_gateway
from tools import ensure_hiredis, hiredis_pythonpath

REDIS_HOST, REDIS_PORT = "127.0.0.1", 6379
LIMIT_ENTRY = "{period: minute, requests: 1000000000}"  # never reached: measures the counting alone
LIMITS_WORKERS = 2
LIMITS_KEYS = ("A", "B", "C", "D")


@dataclass(frozen=True)
class LimitsConfig:
    key: str
    label: str
    redis_db: int | None
    key_capacity: str | None
    extra_env: dict[str, str] = field(default_factory=dict)  # besides REDIS_URL
    hiredis: bool = False  # .tools/hiredis on the gateway's PYTHONPATH


def limits_configs(first_db: int, keys: tuple[str, ...] = LIMITS_KEYS) -> list[LimitsConfig]:
    """A: today's default; B: Redis configured but nothing limited; C: a minute limit on the key;
    D: C with hiredis. Each Redis configuration has a db of its own."""
    every = [
        LimitsConfig("A", "A: no limits, no REDIS_URL", None, None),
        LimitsConfig("B", f"B: no limits, REDIS_URL …/{first_db}", first_db, None),
        LimitsConfig("C", f"C: key limit `{LIMIT_ENTRY}`, REDIS_URL …/{first_db + 1}", first_db + 1, LIMIT_ENTRY),
        LimitsConfig(
            "D",
            "D: as C, with hiredis",
            first_db + 2,
            LIMIT_ENTRY,
            hiredis=True,
        ),
    ]
    return [config for config in every if config.key in keys]


def config_env(config: LimitsConfig) -> dict[str, str]:
    env = dict(config.extra_env)
    if config.redis_db is not None:
        env["REDIS_URL"] = redis_url(config.redis_db)
    if config.hiredis:
        env["PYTHONPATH"] = hiredis_pythonpath()
    return env


# ---------------------------------------------------------------------------------------------
# Redis


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


# ---------------------------------------------------------------------------------------------
# The comparison

Running = dict[str, tuple[subprocess.Popen[bytes], Scenario]]


def limits_comparison(
    procs: Processes, settings: Settings, nginx_pid: int, upstream_port: int, args: argparse.Namespace
) -> dict[str, Any]:
    """Gateways A to D (2 workers each) up together; chat c=64 on each in turn, the order rotated
    every round (ABCD, BCDA, CDAB, …) so drift and position in the round hit all alike."""
    configs = limits_configs(args.limits_redis_db, tuple(args.limits_configs))
    result = new_result(configs, settings, args)
    configs = without_unavailable(configs, result)
    dbs = [c.redis_db for c in configs if c.redis_db is not None]
    redis_flush(dbs, before=True)
    bench = BenchProcesses(nginx_pid, redis_server_pid(dbs[0]) if dbs else None)
    running: Running = {}
    try:
        start_gateways(procs, settings, upstream_port, configs, result, running)
        bench.gateways = [gunicorn for gunicorn, _ in running.values()]
        for _gunicorn, scenario in running.values():
            wrk_point(settings, scenario, 16, settings.warmup)
        measure_rounds(settings, args, bench, running, result)
        for config in configs:
            if config.redis_db is not None and config.key in running:
                result["configs"][config.key]["redis"] = redis_counted(config.redis_db)
    finally:
        for gunicorn, _ in running.values():
            procs.stop(gunicorn, timeout=30)
        redis_flush(dbs)
    for key, config_result in result["configs"].items():
        counted = config_result.get("redis")
        if counted:
            log(f"limits / {key}: its Redis db holds {counted['counters']} counters, {counted['requests']} requests")
    return result


def new_result(configs: list[LimitsConfig], settings: Settings, args: argparse.Namespace) -> dict[str, Any]:
    return {
        "date": dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "load_before": load_average(),
        "workers": LIMITS_WORKERS,
        "concurrency": list(args.limits_concurrency),
        "rounds": args.limits_rounds,
        "duration": settings.duration,
        "warmup": settings.warmup,
        "quiet_wait": args.limits_quiet_wait,
        "configs": {c.key: {"label": c.label, "points": []} for c in configs},
        "order": [],
    }


def without_unavailable(configs: list[LimitsConfig], result: dict[str, Any]) -> list[LimitsConfig]:
    """The configurations that can run: without Redis only A (the bench does not fail for it), and
    D only if hiredis could be installed. The others are marked n/a in `result`."""
    dbs = [c.redis_db for c in configs if c.redis_db is not None]
    problem = redis_problem(dbs[0]) if dbs else None
    if problem:
        skipped = [c.key for c in configs if c.redis_db is not None]
        where = f"{REDIS_HOST}:{REDIS_PORT}"
        log(f"limits: no Redis on {where} ({problem}); configurations {and_list(skipped)} are skipped")
        result["redis_missing"] = problem
        for config in configs:
            if config.redis_db is not None:
                result["configs"][config.key]["na"] = f"skipped: no Redis on {REDIS_HOST}:{REDIS_PORT}"
        return [c for c in configs if c.redis_db is None]
    hiredis_problem = ensure_hiredis() if any(c.hiredis for c in configs) else None
    if hiredis_problem:
        log(f"limits: {hiredis_problem}; the hiredis configurations are skipped")
        for config in configs:
            if config.hiredis:
                result["configs"][config.key]["na"] = f"skipped: {hiredis_problem[:200]}"
        return [c for c in configs if not c.hiredis]
    return configs


def and_list(names: list[str]) -> str:
    """`B`, `B and C`, `B, C and D`."""
    return " and ".join([", ".join(names[:-1]), names[-1]] if len(names) > 1 else names)


def start_gateways(
    procs: Processes,
    settings: Settings,
    upstream_port: int,
    configs: list[LimitsConfig],
    result: dict[str, Any],
    running: Running,
) -> None:
    """Each configuration's gateway, probed; one that does not start or answer is n/a, not fatal."""
    for config in configs:
        try:
            gunicorn, port, _ = start_gateway(
                procs,
                settings.workdir,
                upstream_port,
                LIMITS_WORKERS,
                extra_env=config_env(config),
                key_capacity=config.key_capacity,
                tag=config.key,
            )
        except RuntimeError as exc:  # e.g. vmx_apply rejected the limit: report it, go on
            log(f"limits / {config.label}: n/a (gateway did not start: {exc})")
            result["configs"][config.key]["na"] = f"gateway did not start: {str(exc)[:200]}"
            continue
        scenario = gateway_chat(gunicorn, port, LIMITS_WORKERS)
        failed = probe(scenario)
        if failed:
            log(f"limits / {config.label}: n/a ({failed})")
            result["configs"][config.key]["na"] = f"endpoint errored: {failed}"
            procs.stop(gunicorn, timeout=30)
            continue
        running[config.key] = (gunicorn, scenario)
        log(f"limits / {config.label}: gateway on 127.0.0.1:{port}")


def measure_rounds(
    settings: Settings, args: argparse.Namespace, bench: BenchProcesses, running: Running, result: dict[str, Any]
) -> None:
    keys = list(running)
    for round_index in range(args.limits_rounds):
        order = rotated(keys, round_index)
        result["order"].append("".join(order))
        for concurrency in args.limits_concurrency:
            for key in order:
                gunicorn, scenario = running[key]
                point = quiet_point(
                    settings,
                    bench,
                    gunicorn,
                    scenario,
                    concurrency,
                    round_number=round_index + 1,
                    quiet_wait=args.limits_quiet_wait,
                    log_prefix="limits: ",
                )
                result["configs"][key]["points"].append(point)
                log(
                    f"limits round {round_index + 1} / {key} c={concurrency}: {point['rps']:.0f} req/s "
                    f"p50 {point['p50_ms']:.1f} ms p99 {point['p99_ms']:.1f} ms errors {point['errors']}, "
                    f"other load {point['other_cores']:.2f} cores"
                )
