"""The dashboard over a big audit: fill a database with N audit records (default ten million)
through the audit writer itself (records and rollups in the same transactions, as the server
writes them), then time the dashboard page for every period, with and without filters.

    .venv/bin/python bench/dashboard.py --database-url sqlite:////tmp/vmx-dash.sqlite3
    .venv/bin/python bench/dashboard.py --database-url postgres://postgres@127.0.0.1:5432/vmx_dash

A database that already holds the records is reused (the fill is skipped), so the timing can be
repeated. `--from-sqlite PATH` fills an empty PostgreSQL database with COPY from a SQLite
database this script filled (the same records and the rollups the writer computed for them):
the writer's own path fills PostgreSQL at about 1,300 records/s here (psycopg converts the
placeholders of a 1,000-row statement in Python on every call), more than two hours for ten
million. Times are of the whole page (Django's test client: middleware, session, queries,
template), median and worst of `--repeat` loads each. It only reports: nothing asserts a time.

The traffic is shaped like a team's: 30 days ending now, busier in working hours; 40 API keys,
each on one endpoint and one to three of 12 resources, most traffic from a few keys (Zipf); 2 % of
requests fall back to a second model, 3 % fail. That gives about 60 distinct rollup rows a
minute; the `--keys`/`--resources` options raise the cardinality.
"""

from __future__ import annotations

import argparse
import math
import os
import random
import re
import statistics
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import quote

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

BATCH = 1_000
"""Rows per write: ten times the server's batch (a faster fill; the rollups come out the same)."""
ENDPOINTS = ("chat.completions", "responses", "messages")
RESOURCES = (
    "chat",
    "support-bot",
    "summarize",
    "code-review",
    "search-answers",
    "extract",
    "translate",
    "agent",
    "classify",
    "draft-email",
    "sql-helper",
    "vision",
)
TEAMS = ("web-app", "mobile-app", "ci", "data-team", "support", "research", "sales-tools", "docs", "ops", "growth")
MODELS = (("gpt-4.1", 2.0, 8.0), ("gpt-4.1-mini", 0.4, 1.6), ("gpt-4o", 2.5, 10.0), ("o4-mini", 1.1, 4.4))
"""(model, input and output USD per million tokens)."""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--database-url", required=True)
    parser.add_argument("--records", type=int, default=10_000_000)
    parser.add_argument("--days", type=int, default=30)
    parser.add_argument("--keys", type=int, default=40)
    parser.add_argument("--resources", type=int, default=12)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--from-sqlite", metavar="PATH", help="PostgreSQL: COPY the tables of a filled SQLite database")
    args = parser.parse_args()

    os.environ["DATABASE_URL"] = args.database_url
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "vmx_project.settings")
    os.environ.setdefault("VMX_ENCRYPTION_KEY", "bench-" + "0" * 38)
    import django

    django.setup()
    from django.core.management import call_command

    call_command("migrate", "--no-input", verbosity=0)
    from gateway.models import AuditRecord

    have = AuditRecord.objects.count()
    if args.from_sqlite and not have:
        copy_from_sqlite(args.from_sqlite)
        have = AuditRecord.objects.count()
    if have < args.records:
        fill(have=have, target=args.records, days=args.days, keys=args.keys, resources=args.resources, seed=args.seed)
    sizes()
    time_pages(args.repeat)


def traffic_shape(keys: int, resources: int, rng: random.Random) -> list[dict[str, Any]]:
    """The API keys: each with its endpoint, its resources and its share of the traffic (Zipf)."""
    shape = []
    for index in range(keys):
        own = rng.sample(range(resources), k=min(resources, rng.choice((1, 1, 2, 3))))
        stage = ("prod", "dev", "batch", "staging")[index // len(TEAMS) % 4]
        cycle = index // (4 * len(TEAMS))  # beyond 40 keys (--keys): numbered
        shape.append(
            {
                "key": f"{TEAMS[index % len(TEAMS)]}-{stage}" + (f"-{cycle}" if cycle else ""),
                "endpoint": ENDPOINTS[index % len(ENDPOINTS)],
                "resources": [_resource_name(r) for r in own],
                "weight": 1 / (index + 1),
            }
        )
    return shape


def _resource_name(index: int) -> str:
    name = RESOURCES[index % len(RESOURCES)]
    return name if index < len(RESOURCES) else f"{name}-{index // len(RESOURCES)}"


def fill(*, have: int, target: int, days: int, keys: int, resources: int, seed: int) -> None:
    from gateway.audit.store import rows_write

    rng = random.Random(seed + have)
    shape = traffic_shape(keys, resources, random.Random(seed))
    weights = [k["weight"] for k in shape]
    end = datetime.now(UTC)
    start = end - timedelta(days=days)
    span = (end - start).total_seconds()
    print(f"filling {target - have:,} audit records over {days} days ({have:,} already there)", flush=True)
    began = time.monotonic()
    n = have
    while n < target:
        count = min(BATCH, target - n)
        # Chronological, as a server writes: this batch's share of the period, busier by day.
        moments = sorted(_moment(start, span, (n + i) / target, rng) for i in range(count))
        rows = [_row(n + i, moments[i], rng.choices(shape, weights)[0], rng) for i in range(count)]
        rows_write(rows)
        n += count
        if n % 200_000 < BATCH:
            rate = (n - have) / (time.monotonic() - began)
            print(f"  {n:,} records, {rate:,.0f}/s, {(target - n) / rate / 60:.1f} min to go", flush=True)
    print(f"filled in {time.monotonic() - began:.0f} s", flush=True)


def _moment(start: datetime, span: float, fraction: float, rng: random.Random) -> datetime:
    jitter = rng.uniform(-0.5, 0.5) * 60
    moment = start + timedelta(seconds=min(span - 1, max(0.0, fraction * span + jitter)))
    # Thin out the night: a record at night moves to the afternoon of the same day half the time
    # (unless that afternoon is still to come).
    end = start + timedelta(seconds=span - 1)
    if moment.hour < 7 and rng.random() < 0.5 and moment.replace(hour=13 + moment.hour) < end:
        moment = moment.replace(hour=13 + moment.hour)
    return min(moment, end)


def _row(n: int, moment: datetime, key: dict[str, Any], rng: random.Random) -> dict[str, Any]:
    resource = rng.choice(key["resources"])
    model, price_in, price_out = MODELS[sum(map(ord, resource)) % len(MODELS)]
    connection = "openai-main"
    attempts = [{"connection": connection, "model": model, "status_code": 200, "error": None, "tries": 1}]
    if rng.random() < 0.02:  # the primary failed: the fallback answered
        attempts[0].update(status_code=503, error="upstream unavailable")
        model, price_in, price_out = MODELS[1]
        connection = "openai-backup"
        attempts.append({"connection": connection, "model": model, "status_code": 200, "error": None, "tries": 1})
    status = 200
    failure = rng.random()
    if failure < 0.015:
        status = 429
    elif failure < 0.025:
        status = 400
    elif failure < 0.03:
        status = 502
    stream = rng.random() < 0.5
    duration = math.exp(rng.gauss(math.log(900), 0.8))
    input_tokens = int(math.exp(rng.gauss(math.log(1200), 1.0)))
    output_tokens = int(math.exp(rng.gauss(math.log(250), 0.9))) if status == 200 else 0
    cached = int(input_tokens * rng.choice((0, 0, 0.5, 0.8)))
    reasoning = int(output_tokens * 0.4) if model.startswith("o") else 0
    if status != 200:
        input_tokens = cached = 0
    cost = (input_tokens * price_in + output_tokens * price_out) / 1e6 if status == 200 else None
    return {
        "request_id": f"req_bench_{n:012d}",
        "created_at": moment,
        "endpoint": key["endpoint"],
        "stream": stream,
        "api_key": key["key"],
        "resource": resource,
        "correlation_id": "",
        "metadata": {},
        "source_ip": f"10.0.0.{n % 250 + 1}",
        "status_code": status,
        "error_type": "" if status == 200 else "rate_limit_exceeded" if status == 429 else "upstream_error",
        "error_message": "" if status == 200 else "the upstream refused the request",
        "duration_ms": round(duration, 1),
        "ttft_ms": round(duration * rng.uniform(0.1, 0.4), 1) if stream and status == 200 else None,
        "connection": connection if status != 400 else "",
        "model": model if status != 400 else "",
        "attempts": attempts if status != 400 else [],
        "input_tokens": input_tokens,
        "cached_tokens": cached,
        "output_tokens": output_tokens,
        "reasoning_tokens": reasoning,
        "total_tokens": input_tokens + output_tokens,
        "cost_usd": cost,
    }


def copy_from_sqlite(path: str) -> None:
    import sqlite3

    from django.db import connection

    from gateway.models import AuditRecord, DailyUsageRollup, HourlyUsageRollup, UsageRollup

    if connection.vendor != "postgresql":
        raise SystemExit("--from-sqlite fills a PostgreSQL database")
    source = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    connection.ensure_connection()
    raw = connection.connection
    began = time.monotonic()
    for model in (AuditRecord, UsageRollup, HourlyUsageRollup, DailyUsageRollup):
        table = model._meta.db_table
        columns = ", ".join(connection.ops.quote_name(f.column or f.name) for f in model._meta.concrete_fields)
        copied = 0
        with raw.cursor() as cursor:
            cursor.execute("SET TIME ZONE 'UTC'")  # SQLite's datetimes are UTC, without an offset
            with cursor.copy(f"COPY {table} ({columns}) FROM STDIN") as copy:
                for row in source.execute(f"SELECT {columns} FROM {table}"):  # noqa: S608
                    copy.write_row(row)
                    copied += 1
            cursor.execute(f"SELECT setval(pg_get_serial_sequence('{table}', 'id'), (SELECT MAX(id) FROM {table}))")  # noqa: S608
        print(f"copied {copied:,} rows of {table} ({time.monotonic() - began:.0f} s)", flush=True)
    with raw.cursor() as cursor:
        cursor.execute("ANALYZE")


def sizes() -> None:
    from django.db import connection

    from gateway.models import AuditRecord, DailyUsageRollup, HourlyUsageRollup, UsageRollup

    records = AuditRecord.objects.count()
    print(f"audit records: {records:,}")
    print(f"per-minute rollup rows: {UsageRollup.objects.count():,}")
    print(f"per-hour rollup rows: {HourlyUsageRollup.objects.count():,}")
    print(f"per-day rollup rows: {DailyUsageRollup.objects.count():,}")
    tables = {
        "audit": AuditRecord._meta.db_table,
        "minute rollups": UsageRollup._meta.db_table,
        "hour rollups": HourlyUsageRollup._meta.db_table,
        "day rollups": DailyUsageRollup._meta.db_table,
    }
    with connection.cursor() as cursor:
        for label, table in tables.items():
            if connection.vendor == "postgresql":
                cursor.execute("SELECT pg_total_relation_size(%s)", [table])
            else:  # the table and its indexes, from SQLite's page statistics
                cursor.execute(
                    "SELECT SUM(pgsize) FROM dbstat WHERE name = %s OR name IN "
                    "(SELECT name FROM sqlite_master WHERE type = 'index' AND tbl_name = %s)",
                    [table, table],
                )
            size = cursor.fetchone()[0] or 0
            line = f"{label}: {size / 2**30:.2f} GiB with indexes"
            if label == "audit" and records:
                line += f" ({size / records * 1e6 / 2**20:,.0f} MiB per million records)"
            print(line, flush=True)


def time_pages(repeat: int) -> None:
    from django.contrib.auth.models import User
    from django.test import Client

    from gateway.observability.dashboard import PERIODS

    user = User.objects.filter(username="bench-admin").first() or User.objects.create_superuser("bench-admin", "", "x")
    client = Client(HTTP_HOST="127.0.0.1")
    client.force_login(user)
    # Filter by the busiest values, whatever names the database holds.
    from django.db.models import Sum

    from gateway.models import HourlyUsageRollup

    def busiest(field: str) -> str:
        top = HourlyUsageRollup.objects.values(field).annotate(n=Sum("requests")).order_by("-n").first()
        return quote(str(top[field])) if top else ""

    print(f"\n{'page':<52} {'median':>8} {'worst':>8} {'requests shown':>15}")
    for query in [f"period={key}" for key in PERIODS] + [
        f"period=30d&resource={busiest('resource')}",
        f"period=30d&api_key={busiest('api_key')}",
        f"period=24h&model={busiest('model')}",
        f"period=1h&api_key={busiest('api_key')}",
    ]:
        url = f"/admin/dashboard/?{query}"
        client.get(url)  # warm: the first load pays for imports and the template's compilation
        times = []
        for _ in range(repeat):
            began = time.perf_counter()
            response = client.get(url)
            times.append(time.perf_counter() - began)
            assert response.status_code == 200, response.status_code
        # What the page counted: a period the fill did not reach (it ends when the fill started)
        # shows 0 here and times an empty page.
        shown = re.search(r'data-figure="requests">.*?class="value">([^<]*)<', response.content.decode(), re.S)
        counted = shown.group(1) if shown else "?"
        median, worst = statistics.median(times) * 1000, max(times) * 1000
        print(f"{url:<52} {median:>6.0f} ms {worst:>6.0f} ms {counted:>15}", flush=True)


if __name__ == "__main__":
    main()
