"""Prometheus series (DESIGN.md 2.12), correct across every gunicorn worker of an instance.

Under gunicorn (`gunicorn.conf.py`) `PROMETHEUS_MULTIPROC_DIR` is set before any worker starts, so
prometheus-client's multiprocess mode keeps each worker's values in files of its own, and
`/metrics` sums them at scrape time (a dead worker's counters keep counting; its live gauges go).
Without it (a test, `manage.py`) the values live in the process and `/metrics` shows those.

Invariants:
- Updating a series never raises into the request path.
- Label values come from the configuration, never straight from a client: a resource the client
  named but the gateway does not know is labelled `(unknown)`, and a `connection/model-id` address
  is labelled by its connection with `(direct)` for the resource and the model, so no client can
  grow the number of series (and the files behind them) without bound.
- The request families carry `workspace` and `environment` first (DESIGN.md 2.15): names from
  the configuration, like every other label.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator, Mapping
from typing import Any

if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
    # gunicorn.conf.py makes it; a command run with the variable in its environment may come first.
    os.makedirs(os.environ["PROMETHEUS_MULTIPROC_DIR"], exist_ok=True)

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client import multiprocess as _multiprocess
from prometheus_client.metrics_core import Metric
from prometheus_client.registry import REGISTRY

from gateway.audit.rollups import UNKNOWN_RESOURCE

logger = logging.getLogger("vmx.metrics")

UNKNOWN = UNKNOWN_RESOURCE
DIRECT = "(direct)"
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
_LATENCY_BUCKETS = (0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0)

requests_total = Counter(
    "vmx_requests_total",
    "Client requests answered, by endpoint, resource and status.",
    ["workspace", "environment", "endpoint", "resource", "status_code"],
)
request_duration_seconds = Histogram(
    "vmx_request_duration_seconds",
    "Time from the request's arrival to its end (a stream's last byte).",
    ["workspace", "environment", "endpoint", "resource"],
    buckets=_LATENCY_BUCKETS,
)
time_to_first_token_seconds = Histogram(
    "vmx_time_to_first_token_seconds",
    "Time from the request's arrival to the first byte sent to the client.",
    ["workspace", "environment", "endpoint", "resource"],
    buckets=_LATENCY_BUCKETS,
)
upstream_attempts_total = Counter(
    "vmx_upstream_attempts_total",
    "Upstream legs, by connection, model and outcome (ok, or the error code: timeout, capacity_exceeded, ...).",
    ["workspace", "environment", "connection", "model", "outcome"],
)
tokens_total = Counter(
    "vmx_tokens_total",
    "Tokens counted, by resource, model and kind.",
    ["workspace", "environment", "resource", "model", "kind"],
)
cost_usd_total = Counter(
    "vmx_cost_usd_total", "Cost (USD) at the models' prices.", ["workspace", "environment", "resource", "model"]
)
capacity_rejections_total = Counter(
    "vmx_capacity_rejections_total",
    "Requests refused (api_key, resource) or legs skipped (connection) by capacity limits.",
    ["workspace", "environment", "scope", "code"],
)
capacity_store_failures_total = Counter(
    "vmx_capacity_store_failures_total", "Times the capacity store could not be reached (requests served uncounted)."
)
capacity_breaker_open = Gauge(
    "vmx_capacity_breaker_open",
    "Workers whose limits' Redis failed and has not answered since (its commands are not sent: "
    "requests get the fail-open / fail-closed rule at once).",
    multiprocess_mode="livesum",
)
capacity_breaker_trips_total = Counter(
    "vmx_capacity_breaker_trips_total",
    "Times a worker found the limits' Redis unreachable or silent and stopped asking it.",
)
auth_failures_total = Counter("vmx_auth_failures_total", "Requests refused for a missing or unknown API key (401).")
open_streams = Gauge("vmx_open_streams", "Streams open to clients now.", multiprocess_mode="livesum")
audit_queue_depth = Gauge("vmx_audit_queue_depth", "Audit records waiting to be written.", multiprocess_mode="livesum")
audit_records_dropped_total = Counter(
    "vmx_audit_records_dropped_total", "Audit records the database refused even cleaned, or lost to a full queue."
)

TOKEN_KINDS = {
    "input": "input_tokens",
    "cached": "cached_tokens",
    "output": "output_tokens",
    "reasoning": "reasoning_tokens",
}


def request_finished(row: Mapping[str, Any], *, resource_known: bool, direct: bool = False) -> None:
    """Count one audited request (its row as the audit writes it)."""
    try:
        tenant = (row.get("workspace") or "default", row.get("environment") or "default")
        endpoint = row["endpoint"]
        resource = DIRECT if direct else row["resource"] if resource_known else UNKNOWN
        requests_total.labels(*tenant, endpoint, resource, str(row["status_code"])).inc()
        request_duration_seconds.labels(*tenant, endpoint, resource).observe(row["duration_ms"] / 1000)
        if row.get("ttft_ms") is not None:
            time_to_first_token_seconds.labels(*tenant, endpoint, resource).observe(row["ttft_ms"] / 1000)
        model = (DIRECT if direct else row.get("model")) or ""
        if model:
            for kind, name in TOKEN_KINDS.items():
                count = row.get(name) or 0
                if count:
                    tokens_total.labels(*tenant, resource, model, kind).inc(count)
            if row.get("cost_usd"):
                cost_usd_total.labels(*tenant, resource, model).inc(row["cost_usd"])
    except Exception:  # metrics must never fail a request
        logger.exception("metrics: could not count a request")


def attempt_finished(
    *, connection: str, model: str, outcome: str, workspace: str = "default", environment: str = "default"
) -> None:
    try:
        upstream_attempts_total.labels(workspace, environment, connection, model, outcome).inc()
    except Exception:
        logger.exception("metrics: could not count an attempt")


def capacity_rejected(*, scope: str, code: str, workspace: str = "default", environment: str = "default") -> None:
    try:
        capacity_rejections_total.labels(workspace, environment, scope, code).inc()
    except Exception:
        logger.exception("metrics: could not count a capacity rejection")


def capacity_breaker_changed(*, open_now: bool) -> None:
    try:
        capacity_breaker_open.set(1 if open_now else 0)
        if open_now:
            capacity_breaker_trips_total.inc()
    except Exception:
        logger.exception("metrics: could not record the capacity breaker")


FAMILIES: tuple[Counter | Gauge | Histogram, ...] = (
    requests_total,
    request_duration_seconds,
    time_to_first_token_seconds,
    upstream_attempts_total,
    tokens_total,
    cost_usd_total,
    capacity_rejections_total,
    capacity_store_failures_total,
    capacity_breaker_open,
    capacity_breaker_trips_total,
    auth_failures_total,
    open_streams,
    audit_queue_depth,
    audit_records_dropped_total,
)
"""Every family `/metrics` documents: each is in every scrape, with or without samples."""


class _EveryFamily:
    """The workers' summed families, then a sample-less HELP/TYPE header for each declared family
    none of them has written yet (multiprocess mode only knows a labelled family from its first
    sample, so `vmx_capacity_rejections_total` would be missing until the first rejection)."""

    def __init__(self) -> None:
        self._workers = _multiprocess.MultiProcessCollector(None)  # type: ignore[no-untyped-call]

    def collect(self) -> Iterator[Metric]:
        seen = set()
        for family in self._workers.collect():  # type: ignore[no-untyped-call]
            seen.add(family.name)
            yield family
        for declared in FAMILIES:
            for family in declared.describe():
                if family.name not in seen:
                    yield family


def metrics_text() -> bytes:
    """The exposition of every series, summed over the instance's workers when under gunicorn."""
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        registry = CollectorRegistry(auto_describe=False)
        registry.register(_EveryFamily())
        return generate_latest(registry)
    return generate_latest(REGISTRY)
