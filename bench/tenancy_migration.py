"""The tenancy migration (DESIGN.md 2.15) over a big audit on PostgreSQL: how long `migrate`
takes, operation by operation, and proof that it rewrites no table; then the dashboard of a
reader who may view one environment, over the same rollups spread across environments.

    .venv/bin/python bench/tenancy_migration.py --database-url postgres://postgres@127.0.0.1:5432/vmx_tenancy
    .venv/bin/python bench/tenancy_migration.py --database-url ... --records 10000000 --replace

What it does, in order:
1. Creates the database named in `--database-url` (it must not exist; `--replace` drops it first)
   and migrates it to the schema before workspaces: gateway 0011, connections 0005 (every other
   app to its latest).
2. Fills it in SQL, without Python in the loop: `--records` audit records (default 1,000,000)
   with `INSERT ... SELECT ... FROM generate_series`, spread over `--days` days ending now, over
   `--keys` API keys (most traffic from a few) and `--resources` resources; then the per-minute
   rollups that the audit writer would have written for them (`GROUP BY` the minute and the
   dimensions, the latency and time-to-first-token histograms with the writer's buckets), and
   the per-hour and per-day rollups from those. `VACUUM ANALYZE`, as a database in service is.
3. Notes `pg_class.relfilenode` of the audit table and the rollup tables, then runs `migrate`
   (Django's own command) to the latest, timing every operation and every SQL statement it
   sends. A changed relfilenode means PostgreSQL rewrote the table; the script says so.
4. Times building the (workspace, environment, created_at) audit index both ways on the
   migrated table: `CREATE INDEX` (what the migration does) and `CREATE INDEX CONCURRENTLY`.
5. Unless `--no-dashboard`: relabels the rollups (not the records) across `--environments`
   environments of three workspaces, makes a viewer of one of them and a superuser, and loads
   `/admin/dashboard/` (Django's test client, as `bench/dashboard.py` does) for each period:
   the viewer unfiltered, the superuser filtered to that environment. It prints the median page
   time and `EXPLAIN (ANALYZE, BUFFERS)` of each rollup query a page sends.

It only reports: nothing asserts a time, and the test suite does not run it. The database is
left in place for a look with psql (drop it when done).
"""

from __future__ import annotations

import argparse
import os
import secrets
import statistics
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

BEFORE = {"gateway": "0011_audit_resource_known", "connections": "0005_management_tokens"}
"""The last migrations before workspaces and environments."""
AUDIT_TABLE = "gateway_auditrecord"
ROLLUP_TABLES = {
    "minute": "gateway_usagerollup",
    "hour": "gateway_hourlyusagerollup",
    "day": "gateway_dailyusagerollup",
}
CHUNK = 500_000
"""Records per INSERT ... SELECT (a progress line after each)."""
TENANTS = {"acme": ("dev", "staging", "prod"), "beta": ("dev", "prod"), "gamma": ("dev", "qa", "prod", "eu", "us")}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--database-url", required=True, help="postgres://...; the database is created")
    parser.add_argument("--replace", action="store_true", help="drop the database first if it exists")
    parser.add_argument("--records", type=int, default=1_000_000)
    parser.add_argument("--days", type=int, default=30)
    parser.add_argument("--keys", type=int, default=40)
    parser.add_argument("--resources", type=int, default=12)
    parser.add_argument("--environments", type=int, default=10, help="rollups spread over this many (at most 10)")
    parser.add_argument("--repeat", type=int, default=5, help="page loads per dashboard page")
    parser.add_argument("--no-dashboard", action="store_true")
    args = parser.parse_args()
    if urlsplit(args.database_url).scheme not in ("postgres", "postgresql"):
        raise SystemExit("--database-url: a PostgreSQL URL (postgres://user@host:port/name)")
    if not 1 <= args.environments <= 1 + sum(map(len, TENANTS.values())):
        raise SystemExit("--environments: between 1 and 11")

    database_create(args.database_url, replace=args.replace)
    os.environ["DATABASE_URL"] = args.database_url
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "vmx_project.settings")
    os.environ.setdefault("VMX_ENCRYPTION_KEY", "bench-" + "0" * 38)
    os.environ.setdefault("DJANGO_SECRET_KEY", secrets.token_urlsafe(32))
    os.environ.pop("REDIS_URL", None)
    import django

    django.setup()

    began = time.monotonic()
    schema_before_tenancy()
    print(f"schema before workspaces: {time.monotonic() - began:.1f} s", flush=True)
    records_fill(records=args.records, days=args.days, keys=args.keys, resources=args.resources)
    rollups_fill()
    sizes()
    files = relfilenodes()
    migrate_timed()
    rewritten = {table: (files[table], now) for table, now in relfilenodes().items() if now != files[table]}
    for table in files:
        verdict = f"REWRITTEN ({rewritten[table][0]} -> {rewritten[table][1]})" if table in rewritten else "unchanged"
        print(f"relfilenode of {table}: {verdict}")
    defaults_check()
    index_build_compared()
    if not args.no_dashboard:
        dashboard_timed(environments=args.environments, repeat=args.repeat)


def database_create(url: str, *, replace: bool) -> None:
    import psycopg

    parts = urlsplit(url)
    name = parts.path.lstrip("/")
    if not name or name in ("postgres", "template0", "template1"):
        raise SystemExit("--database-url: name a database of its own (it is created)")
    maintenance = urlunsplit(parts._replace(path="/postgres"))
    with psycopg.connect(maintenance, autocommit=True) as connection:
        exists = connection.execute("SELECT 1 FROM pg_database WHERE datname = %s", [name]).fetchone()
        if exists and not replace:
            raise SystemExit(f"database {name} exists: drop it, or pass --replace")
        quoted = psycopg.sql.Identifier(name)
        if exists:
            connection.execute(psycopg.sql.SQL("DROP DATABASE {} WITH (FORCE)").format(quoted))
        connection.execute(psycopg.sql.SQL("CREATE DATABASE {}").format(quoted))
    print(f"created database {name}", flush=True)


def schema_before_tenancy() -> None:
    from django.db import connection
    from django.db.migrations.executor import MigrationExecutor

    executor = MigrationExecutor(connection)
    # Every app to its latest but gateway and connections, which stop before workspaces.
    executor.migrate([(app, BEFORE.get(app, name)) for app, name in executor.loader.graph.leaf_nodes()])


def _bounds_sql() -> str:
    """The rollups' histogram bucket of a duration `x`, as `bucket_of` computes it (the number of
    bounds below `x`): 24 minus the bounds at or above it, counted by width_bucket on the
    negated, ascending bounds."""
    from gateway.audit.rollups import BUCKET_BOUNDS_MS

    negated = ", ".join(f"{-bound}" for bound in reversed(BUCKET_BOUNDS_MS))
    return f"({len(BUCKET_BOUNDS_MS)} - width_bucket(-({{x}}), ARRAY[{negated}]::float8[]))"


def records_fill(*, records: int, days: int, keys: int, resources: int) -> None:
    """`records` audit records over `days` days ending now, in chunks of CHUNK."""
    from django.db import connection

    began = time.monotonic()
    with connection.cursor() as cursor:
        cursor.execute("SELECT setseed(0.7)")
        for first in range(1, records + 1, CHUNK):
            last = min(records, first + CHUNK - 1)
            cursor.execute(
                _records_sql(),
                {"first": first, "last": last, "records": records, "days": days, "keys": keys, "resources": resources},
            )
            rate = last / (time.monotonic() - began)
            print(f"  {last:,} audit records ({rate:,.0f}/s)", flush=True)
    print(f"audit records written in {time.monotonic() - began:.1f} s", flush=True)


def _records_sql() -> str:
    # One key is one team's service: an endpoint, one to three resources, a share of the traffic
    # (k = keys * u^3: the first keys are the busiest). A resource answers with one model; 2 % of
    # requests fell back to a backup connection; 3 % failed (429, 400, 502).
    return """
    INSERT INTO gateway_auditrecord (
        request_id, created_at, endpoint, stream, api_key, resource, resource_known, correlation_id,
        metadata, source_ip, status_code, error_type, error_message, duration_ms, ttft_ms,
        connection, model, attempts, input_tokens, cached_tokens, output_tokens, reasoning_tokens,
        audio_tokens, accepted_prediction_tokens, rejected_prediction_tokens, total_tokens, cost_usd,
        request_body, response_body)
    SELECT
        'req_mig_' || lpad(n::text, 12, '0'),
        now() - make_interval(days => %(days)s) * (1 - n::float8 / %(records)s),
        (ARRAY['chat.completions', 'responses', 'messages'])[1 + k %% 3],
        stream,
        'key-' || lpad(k::text, 3, '0'),
        'resource-' || lpad(r::text, 2, '0'),
        true, '', '{}'::jsonb, ('10.0.' || (n %% 200) || '.' || (1 + n %% 250))::inet,
        status,
        CASE status WHEN 200 THEN '' WHEN 429 THEN 'rate_limit_exceeded' ELSE 'upstream_error' END,
        CASE status WHEN 200 THEN '' ELSE 'the upstream refused the request' END,
        duration,
        CASE WHEN stream AND status = 200 THEN round((duration * 0.25)::numeric, 1)::float8 END,
        CASE WHEN status = 400 THEN '' WHEN fallback THEN 'openai-backup' ELSE 'openai-main' END,
        CASE WHEN status = 400 THEN '' ELSE (ARRAY['gpt-4.1', 'gpt-4.1-mini', 'gpt-4o', 'o4-mini'])[1 + r %% 4] END,
        CASE WHEN status = 400 THEN '[]'::jsonb ELSE jsonb_build_array(jsonb_build_object(
            'connection', 'openai-main', 'status_code', 200, 'tries', 1)) END,
        input, 0, output, 0, 0, 0, 0, input + output,
        CASE WHEN status = 200 THEN (input * 2.0 + output * 8.0) / 1e6 END,
        NULL, NULL
    FROM (
        SELECT n, k, (k * 5 + floor(random() * 3)::int) %% %(resources)s AS r,
               random() < 0.5 AS stream, random() < 0.02 AS fallback,
               CASE WHEN f < 0.015 THEN 429 WHEN f < 0.025 THEN 400 WHEN f < 0.03 THEN 502 ELSE 200 END AS status,
               round((80 + 4000 * power(random(), 2))::numeric, 1)::float8 AS duration,
               (100 + floor(3000 * power(random(), 2)))::int AS input,
               (10 + floor(800 * power(random(), 2)))::int AS output
        FROM (
            SELECT n, floor(%(keys)s * power(random(), 3))::int AS k, random() AS f
            FROM generate_series(%(first)s::bigint, %(last)s::bigint) AS n
        ) AS drawn
    ) AS shaped
    """


def rollups_fill() -> None:
    """The rollups of every record, as the audit writer sums them (gateway/audit/rollups.py)."""
    from django.db import connection

    from gateway.audit.rollups import BUCKETS, TOKEN_FIELDS, UNKNOWN_RESOURCE

    bucket = _bounds_sql()
    dimensions = "endpoint, resource, api_key, connection, model, status_class"
    sums = [
        "requests",
        *TOKEN_FIELDS,
        "cost_usd",
        "priced",
        "duration_ms_sum",
        "ttft_ms_sum",
        "ttft_count",
        *(f"latency_{i:02d}" for i in range(BUCKETS)),
        *(f"ttft_{i:02d}" for i in range(BUCKETS)),
    ]
    from_records = [
        "count(*)",
        *(f"sum({name})" for name in TOKEN_FIELDS),
        "coalesce(sum(cost_usd), 0)",
        "count(cost_usd)",
        "sum(duration_ms)",
        "coalesce(sum(ttft_ms), 0)",
        "count(ttft_ms)",
        *(f"count(*) FILTER (WHERE {bucket.format(x='duration_ms')} = {i})" for i in range(BUCKETS)),
        *(f"count(*) FILTER (WHERE {bucket.format(x='ttft_ms')} = {i})" for i in range(BUCKETS)),
    ]
    columns = ", ".join(sums)
    began = time.monotonic()
    with connection.cursor() as cursor:
        cursor.execute("SET TIME ZONE 'UTC'")  # minutes, hours and days of UTC, as the writer's
        cursor.execute(
            f"INSERT INTO {ROLLUP_TABLES['minute']} (minute, {dimensions}, {columns}) "  # noqa: S608
            f"SELECT date_trunc('minute', created_at), endpoint, "
            f"CASE WHEN resource_known IS FALSE THEN '{UNKNOWN_RESOURCE}' ELSE resource END, "
            f"api_key, connection, model, status_code / 100, {', '.join(from_records)} "
            f"FROM {AUDIT_TABLE} GROUP BY 1, 2, 3, 4, 5, 6, 7"
        )
        print(f"  per-minute rollups: {cursor.rowcount:,} rows ({time.monotonic() - began:.1f} s)", flush=True)
        for unit, source in (("hour", "minute"), ("day", "hour")):
            cursor.execute(
                f"INSERT INTO {ROLLUP_TABLES[unit]} ({unit}, {dimensions}, {columns}) "  # noqa: S608
                f"SELECT date_trunc('{unit}', {source}), {dimensions}, {', '.join(f'sum({c})' for c in sums)} "
                f"FROM {ROLLUP_TABLES[source]} GROUP BY 1, 2, 3, 4, 5, 6, 7"
            )
            print(f"  per-{unit} rollups: {cursor.rowcount:,} rows ({time.monotonic() - began:.1f} s)", flush=True)
    with connection.cursor() as cursor:  # Django's autocommit: VACUUM runs outside a transaction
        cursor.execute("VACUUM ANALYZE")
    print(f"rollups written and the tables analyzed in {time.monotonic() - began:.1f} s", flush=True)


def sizes() -> None:
    from django.db import connection

    with connection.cursor() as cursor:
        for table in (AUDIT_TABLE, *ROLLUP_TABLES.values()):
            cursor.execute(f"SELECT count(*), pg_total_relation_size(%s) FROM {table}", [table])  # noqa: S608
            rows, size = cursor.fetchone()
            print(f"{table}: {rows:,} rows, {size / 2**20:,.0f} MiB with indexes")


def relfilenodes() -> dict[str, int]:
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT relname, relfilenode FROM pg_class WHERE relname = ANY(%s)",
            [[AUDIT_TABLE, *ROLLUP_TABLES.values()]],
        )
        return dict(cursor.fetchall())


@contextmanager
def statements_timed(log: list[tuple[str, str, float]], current: list[str]) -> Iterator[None]:
    """Every SQL statement sent inside, with the operation it belongs to and its time."""
    from django.db import connection

    def timed(execute: Callable[..., Any], sql: str, params: Any, many: bool, context: Any) -> Any:
        began = time.perf_counter()
        try:
            return execute(sql, params, many, context)
        finally:
            log.append((current[0], " ".join(sql.split()), time.perf_counter() - began))

    with connection.execute_wrapper(timed):
        yield


def migrate_timed() -> None:
    """`manage.py migrate` to the latest, every operation of every migration timed."""
    from django.core.management import call_command
    from django.db import connection
    from django.db.migrations.loader import MigrationLoader

    loader = MigrationLoader(connection)
    applied = set(loader.applied_migrations)
    operations: list[tuple[str, float]] = []
    current = ["(migrate itself: plan, checks, the applied-migrations table, content types, permissions)"]
    for key, migration in loader.graph.nodes.items():
        if key in applied:
            continue
        for operation in migration.operations:
            label = f"{key[0]}.{key[1]}: {operation.describe()}"
            forwards = operation.database_forwards

            def database_forwards(*args: Any, _forwards: Any = forwards, _label: str = label) -> None:
                current[0] = _label
                began = time.perf_counter()
                try:
                    _forwards(*args)
                finally:
                    operations.append((_label, time.perf_counter() - began))
                    # What follows until the next operation: the migration's deferred statements
                    # (indexes of foreign keys) and its row in django_migrations.
                    current[0] = f"{_label.split(':')[0]}: deferred statements and bookkeeping"

            # The loader's Migration objects share their operations with the ones `migrate` loads.
            operation.database_forwards = database_forwards
    log: list[tuple[str, str, float]] = []
    print("\nmigrate to the latest:", flush=True)
    began = time.perf_counter()
    with statements_timed(log, current):
        call_command("migrate", "--no-input", verbosity=1)
    total = time.perf_counter() - began
    print(f"\n{'seconds':>8}  operation")
    for label, seconds in operations:
        print(f"{seconds:8.3f}  {label}")
    print(f"{total:8.3f}  migrate, in all ({total - sum(s for _, s in operations):.3f} s outside the operations)")
    outside: dict[str, float] = {}
    for label, _, seconds in log:
        if "deferred" in label or label.startswith("("):
            outside[label] = outside.get(label, 0.0) + seconds
    for label, seconds in outside.items():
        print(f"{seconds:8.3f}  SQL of {label}")
    print("\nslowest statements:")
    for label, sql, seconds in sorted(log, key=lambda entry: -entry[2])[:12]:
        print(f"{seconds:8.3f}  {sql[:150]}{'…' if len(sql) > 150 else ''}  [{label.split(':')[0]}]")


def defaults_check() -> None:
    """Every record and rollup made before is default/default's, read through the new columns."""
    from django.db.models import Count

    from gateway.models import AuditRecord, UsageRollup

    for model in (AuditRecord, UsageRollup):
        counted = list(model.objects.values("workspace", "environment").annotate(n=Count("id")))
        print(f"{model._meta.db_table} by workspace and environment: {counted}")


def index_build_compared() -> None:
    """The audit index of the migration, dropped and built again each way."""
    from django.db import connection

    from gateway.models import AuditRecord

    index = next(i for i in AuditRecord._meta.indexes if i.name == "audit_tenant_created")
    columns = ", ".join(connection.ops.quote_name(field) for field in index.fields)
    print("\nthe (workspace, environment, created_at) index on the migrated audit table:")
    # Django's autocommit: each statement its own transaction, as CONCURRENTLY needs.
    with connection.cursor() as cursor:
        for how in ("", "CONCURRENTLY "):
            cursor.execute(f"DROP INDEX {index.name}")
            began = time.perf_counter()
            cursor.execute(f"CREATE INDEX {how}{index.name} ON {AUDIT_TABLE} ({columns})")
            print(f"{time.perf_counter() - began:8.3f}  CREATE INDEX {how}")


def dashboard_timed(*, environments: int, repeat: int) -> None:
    """Rollups spread across environments; a viewer of one and a superuser load the dashboard."""
    from django.contrib.auth.models import User
    from django.db import connection
    from django.test import Client
    from django.test.utils import CaptureQueriesContext

    from connections.models import Workspace
    from connections.services import environment_get_or_create, membership_save
    from gateway.observability.dashboard import PERIODS

    labels = ["default/default"] + [f"{ws}/{env}" for ws, names in TENANTS.items() for env in names]
    labels = labels[:environments]
    for label in labels:
        environment_get_or_create(label=label)
    began = time.perf_counter()
    with connection.cursor() as cursor:
        cases = " ".join(f"WHEN {i} THEN '{label}'" for i, label in enumerate(labels))
        for table in ROLLUP_TABLES.values():
            # Each row moves whole to one environment: (period, dimensions) stay unique.
            cursor.execute(
                f"UPDATE {table} SET workspace = split_part(t.label, '/', 1), "  # noqa: S608
                f"environment = split_part(t.label, '/', 2) "
                f"FROM (SELECT id, CASE (id % {len(labels)}) {cases} END AS label FROM {table}) AS t "
                f"WHERE {table}.id = t.id"
            )
    with connection.cursor() as cursor:  # Django's autocommit: VACUUM runs outside a transaction
        cursor.execute("VACUUM ANALYZE")
    print(f"\nrollups spread over {len(labels)} environments in {time.perf_counter() - began:.1f} s")

    chosen = labels[-1] if len(labels) > 1 else labels[0]
    workspace, environment = chosen.split("/")
    viewer = User.objects.create_user("bench-viewer")
    membership_save(
        workspace=Workspace.objects.get(name=workspace), user=viewer, role="viewer", environments=[environment]
    )
    root = User.objects.create_superuser("bench-root", "", None)
    pages = [(viewer, f"period={key}") for key in PERIODS] + [
        (root, f"period={key}&workspace={workspace}&environment={environment}") for key in PERIODS
    ]
    print(f"\nthe dashboard of {chosen} (median and worst of {repeat} loads):")
    print(f"{'who':<14} {'page':<50} {'median':>8} {'worst':>8}")
    plans = []
    for user, query in pages:
        client = Client(HTTP_HOST="127.0.0.1")
        client.force_login(user)
        url = f"/admin/dashboard/?{query}"
        client.get(url)  # warm
        times = []
        for _ in range(repeat):
            began = time.perf_counter()
            response = client.get(url)
            times.append(time.perf_counter() - began)
            assert response.status_code == 200, response.status_code
        with CaptureQueriesContext(connection) as captured:
            client.get(url)
        plans += [(user.username, query, q["sql"]) for q in captured if "rollup" in q["sql"]]
        who = "viewer" if user == viewer else "superuser"
        print(f"{who:<14} {url:<50} {statistics.median(times) * 1000:6.0f} ms {max(times) * 1000:6.0f} ms", flush=True)
    print("\nplans of the rollup queries (EXPLAIN ANALYZE; scan nodes and execution time):")
    with connection.cursor() as cursor:
        for who, query, sql in plans:
            cursor.execute(f"EXPLAIN (ANALYZE, BUFFERS) {sql}")
            lines = [row[0] for row in cursor.fetchall()]
            print(f"- {who} {query}")
            for line in lines:
                if "Scan" in line or "Execution Time" in line or "Index Cond" in line:
                    print(f"    {line.strip()[:400]}")


if __name__ == "__main__":
    main()
