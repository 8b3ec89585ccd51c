"""`/metrics` access (DESIGN.md 2.12) and the label rules, in process."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from gateway.audit.entry import _outcome
from gateway.core.errors import GatewayError, UpstreamStatusError, UpstreamTimeoutError
from gateway.observability import metrics


def test_loopback_clients_read_metrics(client):
    response = client.get("/metrics", REMOTE_ADDR="127.0.0.1")
    assert response.status_code == 200
    names = {family.name for family in text_string_to_metric_families(response.content.decode())}
    assert {"vmx_requests", "vmx_open_streams", "vmx_audit_queue_depth", "vmx_audit_records_dropped"} <= names


@pytest.mark.parametrize("address", ["10.0.0.5", "192.168.1.20", "2001:db8::1"])
def test_other_clients_need_the_token(client, settings, address):
    assert client.get("/metrics", REMOTE_ADDR=address).status_code == 403
    settings.VMX_METRICS_TOKEN = "s3cret-metrics-token"
    assert client.get("/metrics", REMOTE_ADDR=address, HTTP_AUTHORIZATION="Bearer wrong").status_code == 403
    assert (
        client.get("/metrics", REMOTE_ADDR=address, HTTP_AUTHORIZATION="Bearer s3cret-metrics-token").status_code == 200
    )


def test_attempt_outcomes_are_a_small_fixed_set():
    assert _outcome(None, tries=1) == "ok"
    assert _outcome(GatewayError("capacity_exceeded"), tries=0) == "capacity_exceeded"
    assert _outcome(GatewayError("anything an upstream said"), tries=0) == "skipped"
    upstream = UpstreamStatusError(status=503, body=b"{}", headers={}, connection="up")
    assert _outcome(upstream, tries=1) == "http_503"
    assert _outcome(UpstreamTimeoutError("slow"), tries=3) == "upstream_timeout"


def test_a_request_of_an_unknown_resource_is_labelled_unknown():
    row = {"endpoint": "responses", "resource": "random-name-123", "status_code": 404, "duration_ms": 3.0}
    series = metrics.requests_total.labels("default", "default", "responses", metrics.UNKNOWN, "404")
    before = series._value.get()
    metrics.request_finished(row, resource_known=False)
    assert series._value.get() == before + 1


def test_the_request_families_carry_the_workspace_and_environment_of_the_record():
    """Each tenant's series count apart (DESIGN.md 2.15): a request of acme/prod moves acme/prod's
    series and not default/default's."""
    row = {
        "workspace": "acme",
        "environment": "prod",
        "endpoint": "chat.completions",
        "resource": "chat",
        "model": "gpt-4.1",
        "status_code": 200,
        "duration_ms": 300.0,
        "ttft_ms": 50.0,
        "input_tokens": 12,
        "cost_usd": 0.25,
    }

    def read() -> list[float]:
        return [
            metrics.requests_total.labels(*tenant, "chat.completions", "chat", "200")._value.get()
            + metrics.tokens_total.labels(*tenant, "chat", "gpt-4.1", "input")._value.get()
            + metrics.cost_usd_total.labels(*tenant, "chat", "gpt-4.1")._value.get()
            + sum(
                bucket.get()
                for family in (metrics.request_duration_seconds, metrics.time_to_first_token_seconds)
                for bucket in family.labels(*tenant, "chat.completions", "chat")._buckets
            )
            for tenant in (("acme", "prod"), ("default", "default"))
        ]

    acme, default = read()
    metrics.request_finished(row, resource_known=True)
    metrics.attempt_finished(connection="up", model="gpt-4.1", outcome="ok", workspace="acme", environment="prod")
    metrics.capacity_rejected(scope="api_key", code="capacity_exceeded", workspace="acme", environment="prod")
    # 1 request + 12 tokens + $0.25 + one observation in each histogram.
    assert read() == [pytest.approx(acme + 1 + 12 + 0.25 + 2), default]
    assert metrics.upstream_attempts_total.labels("acme", "prod", "up", "gpt-4.1", "ok")._value.get() >= 1
    assert metrics.capacity_rejections_total.labels("acme", "prod", "api_key", "capacity_exceeded")._value.get() >= 1


def test_the_readme_lists_every_family_with_its_labels():
    """The README's metrics table is what a scraper's author reads: each family's labels, in order."""
    readme = (Path(__file__).resolve().parents[3] / "README.md").read_text()
    rows = re.findall(r"^\| `(vmx_[a-z_]+)` \|([^|]*)\|", readme, flags=re.M)
    documented = {name: re.findall(r"`([a-z_]+)`", labels) for name, labels in rows}
    declared = {}
    for family in metrics.FAMILIES:
        name = family._name + ("_total" if family._type == "counter" else "")
        declared[name] = list(family._labelnames)
    assert documented == declared
    tenant = [name for name, labels in declared.items() if labels[:2] == ["workspace", "environment"]]
    assert len(tenant) == 7


@pytest.mark.django_db(transaction=True)
def test_capacity_rejections_count_each_refusal_once():
    from gateway.audit.entry import AuditEntry
    from gateway.audit.writer import audit_flush
    from gateway.core.errors import CapacityExceededError

    def count(scope: str):
        return metrics.capacity_rejections_total.labels("default", "default", scope, "capacity_exceeded")._value.get()

    before = {scope: count(scope) for scope in ("api_key", "connection")}
    refused = AuditEntry(request_id="req_metrics_1", endpoint="responses")
    refused.finish_error(CapacityExceededError("API key 'ci' reached its limit.", scope="api_key"))
    # Two connections skipped for their limits, then the 429 that says so: two refusals, not three.
    skipped = AuditEntry(request_id="req_metrics_2", endpoint="responses")
    for name in ("up-a", "up-b"):
        skipped.attempt(connection=name, model="m", started=0.0, error=GatewayError("capacity_exceeded"), tries=0)
    skipped.finish_error(CapacityExceededError("Connection 'up-a' reached its limit.", scope="connection"))
    audit_flush()
    assert count("api_key") - before["api_key"] == 1
    assert count("connection") - before["connection"] == 2
