"""`/metrics` against the real server (gunicorn, two workers), parsed with the Prometheus client's
own parser: the counters move by exactly the requests sent, whichever worker served them."""

from __future__ import annotations

import re
import secrets
from collections.abc import Iterator
from pathlib import Path

import httpx2
import openai
import pytest
import yaml
from cryptography.fernet import Fernet
from prometheus_client.parser import text_string_to_metric_families

from tests.fakes.openai_upstream import FakeOpenAI
from tests.integration.conftest import ALL_KEY, gateway_config
from tests.integration.server import GatewayProcess, gateway_env, gateway_start, manage

TOKEN = "metrics-" + secrets.token_hex(8)
TENANT = {"workspace": "default", "environment": "default"}
"""Every request family's first labels: a key made without an environment is default/default's."""


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory, fake_openai: FakeOpenAI) -> Iterator[tuple[GatewayProcess, Path]]:
    from tests.integration.conftest import _database

    directory = tmp_path_factory.mktemp("metrics")
    metrics_dir = directory / "prometheus"
    databases = _database(directory)
    env = gateway_env(
        database_url=next(databases),
        encryption_key=Fernet.generate_key().decode(),
        VMX_METRICS_TOKEN=TOKEN,
        PROMETHEUS_MULTIPROC_DIR=str(metrics_dir),
    )
    manage(env, "migrate", "--no-input", "-v", "0")
    (directory / "vmx.yaml").write_text(yaml.safe_dump(gateway_config(fake_openai)))
    manage(env, "vmx_apply", str(directory / "vmx.yaml"))
    process = gateway_start(env, directory / "gunicorn.log", "--workers", "2")
    yield process, metrics_dir
    process.stop()
    for _ in databases:
        pass


def samples(base_url: str) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    response = httpx2.get(f"{base_url}/metrics")
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/plain")
    found = {}
    for family in text_string_to_metric_families(response.text):
        for sample in family.samples:
            found[(sample.name, frozenset(sample.labels.items()))] = sample.value
    return found


def value(found, name: str, **labels: str):
    """A series of `name`; the request families' `workspace` and `environment` are those of
    default/default unless given."""
    if name in TENANT_FAMILIES:
        labels = {"workspace": "default", "environment": "default", **labels}
    return found.get((name, frozenset(labels.items())), 0.0)


TENANT_FAMILIES = {
    "vmx_requests_total",
    "vmx_request_duration_seconds_count",
    "vmx_request_duration_seconds_sum",
    "vmx_time_to_first_token_seconds_count",
    "vmx_upstream_attempts_total",
    "vmx_tokens_total",
    "vmx_cost_usd_total",
    "vmx_capacity_rejections_total",
}


def documented_families() -> set[str]:
    """The series the README's metrics table names (the families a scraper may alert on)."""
    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    return set(re.findall(r"^\| `(vmx_[a-z_]+)` \|", readme, flags=re.M))


def test_every_documented_family_is_there_from_the_start(tmp_path: Path, fake_openai: FakeOpenAI):
    """A fresh instance, nothing served yet: every family of the table is in the scrape (with its
    HELP and TYPE), so an alert on `rate(vmx_capacity_rejections_total[5m])` has a series to read
    instead of "no data" until the first rejection."""
    from tests.integration.conftest import _database

    databases = _database(tmp_path)
    env = gateway_env(
        database_url=next(databases),
        encryption_key=Fernet.generate_key().decode(),
        PROMETHEUS_MULTIPROC_DIR=str(tmp_path / "prometheus"),
    )
    manage(env, "migrate", "--no-input", "-v", "0")
    process = gateway_start(env, tmp_path / "gunicorn.log", "--workers", "2")
    try:
        response = httpx2.get(f"{process.base_url}/metrics")
        assert response.status_code == 200
        scraped = set()
        for family in text_string_to_metric_families(response.text):
            scraped |= {family.name, f"{family.name}_total"}
        expected = documented_families()
        assert len(expected) >= 14
        assert expected - scraped == set()
        assert response.text.count("# HELP vmx_capacity_rejections_total ") == 1
    finally:
        process.stop()
        for _ in databases:
            pass


def test_counters_move_by_exactly_the_requests_sent_across_both_workers(served, upstream):
    process, metrics_dir = served
    before = samples(process.base_url)
    sent = 24
    for _ in range(sent):  # a new connection each time: either worker may take it
        client = openai.OpenAI(base_url=f"{process.base_url}/v1", api_key=ALL_KEY, max_retries=0)
        client.chat.completions.create(model="default", messages=[{"role": "user", "content": "hi"}])
        client.close()
    # Two streams, to the end.
    client = openai.OpenAI(base_url=f"{process.base_url}/v1", api_key=ALL_KEY, max_retries=0)
    for _ in range(2):
        for _chunk in client.chat.completions.create(
            model="default", messages=[{"role": "user", "content": "hi"}], stream=True
        ):
            pass
    with pytest.raises(openai.NotFoundError):
        client.chat.completions.create(
            model=f"no-such-{secrets.token_hex(4)}", messages=[{"role": "user", "content": "x"}]
        )
    with pytest.raises(openai.AuthenticationError):
        openai.OpenAI(
            base_url=f"{process.base_url}/v1", api_key="vmx-wrong-key-0123456789", max_retries=0
        ).models.list()

    after = samples(process.base_url)
    ok = {**TENANT, "endpoint": "chat.completions", "resource": "default", "status_code": "200"}
    assert value(after, "vmx_requests_total", **ok) - value(before, "vmx_requests_total", **ok) == sent + 2
    # A name the gateway does not know is not a label: no client can grow the series.
    unknown = {**TENANT, "endpoint": "chat.completions", "resource": "(unknown)", "status_code": "404"}
    assert value(after, "vmx_requests_total", **unknown) - value(before, "vmx_requests_total", **unknown) == 1
    assert value(after, "vmx_auth_failures_total") - value(before, "vmx_auth_failures_total") == 1
    latency = {**TENANT, "endpoint": "chat.completions", "resource": "default"}
    counted = value(after, "vmx_request_duration_seconds_count", **latency)
    assert counted - value(before, "vmx_request_duration_seconds_count", **latency) == sent + 2
    first_tokens = value(after, "vmx_time_to_first_token_seconds_count", **latency)
    assert first_tokens - value(before, "vmx_time_to_first_token_seconds_count", **latency) >= 2
    tokens = {**TENANT, "resource": "default", "model": "gpt-4.1"}
    moved = value(after, "vmx_tokens_total", kind="input", **tokens) - value(
        before, "vmx_tokens_total", kind="input", **tokens
    )
    assert moved == 40 * (sent + 2)  # the fake upstream's prompt_tokens per answer
    attempts = {**TENANT, "connection": "up-a", "model": "gpt-4.1", "outcome": "ok"}
    assert (
        value(after, "vmx_upstream_attempts_total", **attempts)
        - value(before, "vmx_upstream_attempts_total", **attempts)
        == sent + 2
    )
    assert value(after, "vmx_open_streams") == 0  # both streams ended
    # Both workers served and wrote values of their own.
    assert len({path.name.rsplit("_", 1)[-1] for path in metrics_dir.glob("counter_*.db")}) >= 2


def test_metrics_need_loopback_or_the_token(served):
    process, _ = served
    # This client is on loopback: allowed. The token works from anywhere, a wrong one does not.
    assert httpx2.get(f"{process.base_url}/metrics").status_code == 200
    assert httpx2.get(f"{process.base_url}/metrics", headers={"Authorization": f"Bearer {TOKEN}"}).status_code == 200


def test_direct_addresses_do_not_grow_the_series(served, upstream):
    """A key allowed everything may send `connection/any-model-id` as the model: those ids are the
    client's text, so the series are labelled by the connection and the fixed `(direct)` marker,
    and forty invented ids add no series at all after the first."""
    process, _ = served
    client = openai.OpenAI(base_url=f"{process.base_url}/v1", api_key=ALL_KEY, max_retries=0)

    def send(n: int) -> None:
        for _ in range(n):
            client.chat.completions.create(
                model=f"up-a/made-up-{secrets.token_hex(6)}", messages=[{"role": "user", "content": "hi"}]
            )

    send(2)
    first = samples(process.base_url)
    send(40)
    after = samples(process.base_url)
    client.close()
    assert len(after) == len(first)  # no new series
    assert not [labels for _, labels in after if any("made-up-" in value for _, value in labels)]
    direct = {**TENANT, "endpoint": "chat.completions", "resource": "(direct)", "status_code": "200"}
    assert value(after, "vmx_requests_total", **direct) - value(first, "vmx_requests_total", **direct) == 40
    attempts = {**TENANT, "connection": "up-a", "model": "(direct)", "outcome": "ok"}
    moved = value(after, "vmx_upstream_attempts_total", **attempts) - value(
        first, "vmx_upstream_attempts_total", **attempts
    )
    assert moved == 40
