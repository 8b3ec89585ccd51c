"""Hostile input, broken upstreams and careless clients against the running gateway (DESIGN.md 2.13).

Each test reproduces a failure a user could see before the gateway was hardened: a request that
crashed or wedged something, leaked a secret or was never audited. The gateway runs under
gunicorn (2 workers) in front of the fake OpenAI upstream; clients are the real SDKs or raw HTTP.
"""

from __future__ import annotations

import json
import math
import select
import socket
import time

import anthropic
import httpx2
import openai
import pytest

from tests.fakes.openai_upstream import Reply, sse
from tests.integration.conftest import ALL_KEY, LIMITED_KEY, MAX_BODY
from tests.integration.server import manage

MESSAGES = [{"role": "user", "content": "Hello gateway"}]
UPSTREAM_KEY = "sk-upstream-up-a"  # the connection's secret (tests/integration/conftest.py)


@pytest.fixture
def http(gateway):
    with httpx2.Client(base_url=gateway.base_url, timeout=30) as raw:
        yield raw


def auth(key: str = ALL_KEY) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def chat(http, body, headers=None):
    return http.post("/v1/chat/completions", json=body, headers={**auth(), **(headers or {})})


def messages(http, body, headers=None):
    return http.post("/v1/messages", json=body, headers={**auth(), **(headers or {})})


def anthropic_body(**extra):
    return {"model": "default", "max_tokens": 64, "messages": MESSAGES, **extra}


# -- items 1, 5, 8, 10: what the gateway echoes or stores is validated first ----------------------


@pytest.mark.parametrize(
    ("vmx", "headers", "param"),
    [
        ({"correlationId": "run\x0042"}, {}, "vmx.correlationId"),
        ({"correlationId": "line\r\nbreak"}, {}, "vmx.correlationId"),
        ({"correlationId": "del\x7f"}, {}, "vmx.correlationId"),
        ({"correlationId": "sep\u2028arator"}, {}, "vmx.correlationId"),
        ({"correlationId": "x" * 257}, {}, "vmx.correlationId"),
        ({"metadata": {"team": "gro\x00wth"}}, {}, "vmx.metadata"),
        ({"metadata": {"te\x00am": "growth"}}, {}, "vmx.metadata"),
        ({"metadata": {"team": "x" * 513}}, {}, "vmx.metadata"),
        ({"metadata": {"k" * 65: "v"}}, {}, "vmx.metadata"),
        ({"metadata": {f"k{i}": "v" for i in range(33)}}, {}, "vmx.metadata"),
        ({}, {"x-vmx-correlation-id": "tab\there"}, "vmx.correlationId"),
        ({}, {"x-vmx-metadata-team": "paragraph\u2029".encode()}, "vmx.metadata"),
    ],
)
def test_unstorable_envelope_values_are_400_before_any_upstream_call(http, upstream, vmx, headers, param):
    response = chat(http, {"model": "default", "messages": MESSAGES, "vmx": vmx}, headers)
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert error["type"] == "invalid_request_error" and error["param"] == param
    assert upstream.requests == []
    # The same on the Anthropic endpoint, in its shape.
    response = messages(http, anthropic_body(vmx=vmx), headers)
    assert response.status_code == 400
    assert response.json()["type"] == "error"
    assert response.json()["error"]["type"] == "invalid_request_error"
    assert upstream.requests == []


def test_metadata_at_the_limits_is_accepted_and_audited(http, upstream, gateway):
    metadata = {f"k{i:02}": "v" * 512 for i in range(32)}
    metadata["k" * 64] = metadata.pop("k00")
    response = chat(http, {"model": "default", "messages": MESSAGES, "vmx": {"metadata": metadata}})
    assert response.status_code == 200
    assert gateway.audit(response.headers["x-vmx-request-id"])["metadata"] == metadata


def test_utf8_header_metadata_is_read_as_utf8(http, upstream, gateway):
    response = chat(http, {"model": "default", "messages": MESSAGES}, {"x-vmx-metadata-team": "Grüße".encode()})
    assert response.status_code == 200
    assert gateway.audit(response.headers["x-vmx-request-id"])["metadata"] == {"team": "Grüße"}


def test_control_characters_in_a_connection_address_are_400(http, upstream):
    response = chat(http, {"model": "up-a/gpt-4.1\x00", "messages": MESSAGES})
    assert response.status_code == 400 and response.json()["error"]["param"] == "model"
    assert upstream.requests == []


def test_json_nested_past_200_levels_is_400_not_500(http, upstream):
    deep: object = "x"
    for _ in range(300):
        deep = [deep]
    for path, shape in (("/v1/chat/completions", "openai"), ("/v1/messages", "anthropic")):
        body = anthropic_body(metadata={"deep": deep}) if shape == "anthropic" else {"model": "default", "deep": deep}
        response = http.post(path, content=json.dumps(body), headers={**auth(), "Content-Type": "application/json"})
        assert response.status_code == 400, response.text
        assert "deeper than 200" in (response.json()["error"]["message"])
    deep = "x"
    for _ in range(150):
        deep = {"a": deep}
    response = chat(http, {"model": "default", "messages": MESSAGES, "extra": deep})
    assert response.status_code == 200  # deep, but within the limit: forwarded
    assert upstream.calls("/a/v1/chat/completions")[0].json()["extra"] == deep


def test_a_nul_in_upstream_error_text_does_not_stop_the_audit(http, upstream, gateway):
    # PostgreSQL refuses NUL in text: before, one such record blocked every later record of the worker.
    for _ in range(4):  # both workers see one
        upstream.reply("POST", "/a/v1/chat/completions", Reply(status=400, body={"error": {"message": "bad\x00byte"}}))
    failed = [chat(http, {"model": "default", "messages": MESSAGES}) for _ in range(4)]
    assert {r.status_code for r in failed} == {400}
    later = [chat(http, {"model": "default", "messages": MESSAGES}) for _ in range(4)]
    for response in failed + later:
        record = gateway.audit(response.headers["x-vmx-request-id"])
        assert record["status_code"] == response.status_code
    assert "bad" in gateway.audit(failed[0].headers["x-vmx-request-id"])["error_message"]


# -- item 2: the key before the body, bodies bounded while they arrive ------------------------------


def _chunked_post(
    base_url: str, path: str, headers: dict[str, str], chunk: bytes, chunks: int
) -> tuple[int, bytes, int, dict[str, str]]:
    """POST a chunked body piece by piece, stopping as soon as the server answers.
    Returns (status, body, bytes of body sent, response headers)."""
    host, port = base_url.removeprefix("http://").split(":")
    head = [f"POST {path} HTTP/1.1", f"Host: {host}:{port}", "Transfer-Encoding: chunked"]
    head += [f"{name}: {value}" for name, value in headers.items()]
    sent = 0
    with socket.create_connection((host, int(port)), timeout=20) as sock:
        sock.sendall(("\r\n".join(head) + "\r\n\r\n").encode())
        for _ in range(chunks):
            if select.select([sock], [], [], 0)[0]:
                break  # the server answered: stop sending
            try:
                sock.sendall(f"{len(chunk):x}\r\n".encode() + chunk + b"\r\n")
            except OSError:  # closed, reset, or no longer read (timeout): it answered
                break
            sent += len(chunk)
        data = b""
        while b"\r\n\r\n" not in data:
            more = sock.recv(65536)
            if not more:
                break
            data += more
        head_bytes, _, body = data.partition(b"\r\n\r\n")
        length = next(
            int(line.split(b":")[1]) for line in head_bytes.split(b"\r\n") if line.lower().startswith(b"content-length")
        )
        while len(body) < length:
            body += sock.recv(65536)
    answer_headers = {}
    for line in head_bytes.split(b"\r\n")[1:]:
        name, _, value = line.decode("latin-1").partition(":")
        answer_headers[name.strip().lower()] = value.strip()
    return int(head_bytes.split()[1]), body, sent, answer_headers


def test_a_chunked_body_without_a_key_is_refused_before_it_is_read(gateway):
    chunk = b"x" * (1024 * 1024)
    status, body, sent, _ = _chunked_post(gateway.base_url, "/v1/chat/completions", {}, chunk, chunks=2048)
    assert status == 401
    assert json.loads(body)["error"]["code"] == "invalid_api_key"
    assert sent < 256 * 1024 * 1024  # answered long before 2 GB arrived (it used to read it all, to disk)


def test_a_chunked_body_is_refused_as_soon_as_it_crosses_the_limit(gateway):
    chunk = b"x" * (1024 * 1024)
    for path, shape in (("/v1/chat/completions", "openai"), ("/v1/messages", "anthropic")):
        status, body, sent, _ = _chunked_post(gateway.base_url, path, auth(), chunk, chunks=512)
        assert status == 413
        parsed = json.loads(body)
        error = parsed["error"]
        assert (
            (error["type"] == "request_too_large") if shape == "anthropic" else (error["code"] == "request_too_large")
        )
        assert sent < 4 * MAX_BODY


def test_a_refused_large_body_is_audited(gateway):
    status, _, _, headers = _chunked_post(gateway.base_url, "/v1/responses", auth(LIMITED_KEY), b"x" * 1024 * 1024, 512)
    assert status == 413
    # The id the client was given finds the record (the request id is the same in both).
    record = gateway.audit(headers["x-vmx-request-id"])
    assert record["status_code"] == 413 and record["error_type"] == "request_too_large"
    assert record["api_key"] == "limited" and record["endpoint"] == "responses"


# -- item 3: the connection's secret never leaves the gateway ----------------------------------------


def test_an_upstream_error_quoting_the_key_is_redacted_everywhere(http, upstream, gateway):
    quoted = f"Incorrect API key provided: {UPSTREAM_KEY}. You can find your key at …"
    error_body = {"error": {"message": quoted, "type": "invalid_request_error", "param": None, "code": "bad"}}
    calls = [
        ("/v1/chat/completions", {"model": "default", "messages": MESSAGES}, "/a/v1/chat/completions"),
        ("/v1/chat/completions", {"model": "default", "messages": MESSAGES, "stream": True}, "/a/v1/chat/completions"),
        ("/v1/responses", {"model": "default", "input": "Hi"}, "/a/v1/responses"),
        ("/v1/responses", {"model": "default", "input": "Hi", "stream": True}, "/a/v1/responses"),
        ("/v1/messages", anthropic_body(), "/a/v1/responses"),
        ("/v1/messages", anthropic_body(stream=True), "/a/v1/responses"),
    ]
    for path, body, upstream_path in calls:
        upstream.reply("POST", upstream_path, Reply(status=400, body=error_body))
        response = http.post(path, json=body, headers=auth())
        assert response.status_code == 400
        assert UPSTREAM_KEY not in response.text and "********" in response.text
        record = gateway.audit(response.headers["x-vmx-request-id"])
        assert UPSTREAM_KEY not in json.dumps(record)


def test_a_stream_quoting_the_key_is_redacted(http, upstream, gateway):
    first = {"id": "c1", "object": "chat.completion.chunk", "created": 1, "model": "m"}
    events = [
        sse({**first, "choices": [{"index": 0, "delta": {"content": "your key is " + UPSTREAM_KEY[:5]}}]}),
        sse({**first, "choices": [{"index": 0, "delta": {"content": UPSTREAM_KEY[5:]}}]}),
        # The key split across two network writes of one event must not slip through either.
        b'data: {"error": {"message": "quota for ' + UPSTREAM_KEY[:9].encode(),
        0.05,
        UPSTREAM_KEY[9:].encode() + b' exceeded", "type": "server_error"}}\n\n',
    ]
    upstream.reply("POST", "/a/v1/chat/completions", Reply(events=events))
    response = chat(http, {"model": "default", "messages": MESSAGES, "stream": True})
    assert "quota for ******** exceeded" in response.text
    assert UPSTREAM_KEY not in response.text
    record = gateway.audit(response.headers["x-vmx-request-id"])
    assert UPSTREAM_KEY not in json.dumps(record)


# -- items 11, 12, 13, 15: upstream failures ----------------------------------------------------------


def test_provider_args_cannot_put_the_envelope_back(http, upstream):
    body = {
        "model": "default",
        "messages": MESSAGES,
        "vmx": {"providerArgs": {"vmx": {"x": 1}, "__vmx_passthrough": True, "user": "u-1"}},
    }
    assert chat(http, body).status_code == 200
    sent = upstream.calls("/a/v1/chat/completions")[0].json()
    assert "vmx" not in sent and "__vmx_passthrough" not in sent and sent["user"] == "u-1"
    assert messages(http, anthropic_body(vmx=body["vmx"])).status_code == 200
    sent = upstream.calls("/a/v1/responses")[0].json()
    assert "vmx" not in sent and "__vmx_passthrough" not in sent and sent["user"] == "u-1"


def test_retries_inside_a_leg_are_counted_as_tries(http, upstream, gateway):
    boom = Reply(status=500, body={"error": {"message": "boom", "type": "server_error"}})
    upstream.reply("POST", "/a/v1/chat/completions", boom, boom, boom)
    response = chat(http, {"model": "retrying", "messages": MESSAGES})
    assert response.status_code == 500
    [attempt] = gateway.audit(response.headers["x-vmx-request-id"])["attempts"]
    assert attempt["tries"] == 3
    assert len(upstream.calls("/a/v1/chat/completions")) == 3

    upstream.reset()
    upstream.reply("POST", "/a/v1/chat/completions", boom)
    response = chat(http, {"model": "retrying", "messages": MESSAGES})
    assert response.status_code == 200
    [attempt] = gateway.audit(response.headers["x-vmx-request-id"])["attempts"]
    assert attempt["tries"] == 2 and attempt["status_code"] == 200


@pytest.mark.parametrize("drop", ["close", "reset"])
def test_a_connection_closed_or_reset_is_502_unavailable_not_a_timeout(http, upstream, gateway, drop):
    # The SDK's aiohttp transport reports a closed connection as a connect *timeout*: it used to
    # become 504 "did not answer within 600 s" after a few milliseconds.
    upstream.reply("POST", "/a/v1/chat/completions", Reply(drop=drop))
    started = time.monotonic()
    response = chat(http, {"model": "default", "messages": MESSAGES})
    assert response.status_code == 502, response.text
    assert response.json()["error"]["code"] == "upstream_unavailable"
    assert "did not answer" not in response.text
    assert time.monotonic() - started < 5
    # And with a fallback, the failed leg moves on.
    upstream.reply("POST", "/a/v1/chat/completions", Reply(drop=drop))
    response = chat(http, {"model": "fallback", "messages": MESSAGES})
    assert response.status_code == 200 and response.headers["x-vmx-connection"] == "up-b"


# -- items 14, 16: rejections are audited; hosts and unknown paths ------------------------------------


@pytest.mark.parametrize(
    ("body", "key", "status"),
    [
        (b"{not json", ALL_KEY, 400),
        (json.dumps({"model": "only-a", "messages": MESSAGES}).encode(), ALL_KEY, 404),
        (json.dumps({"model": "default", "messages": MESSAGES}).encode(), LIMITED_KEY, 403),
        (json.dumps({"model": "nope-model", "messages": MESSAGES}).encode(), ALL_KEY, 404),
    ],
)
def test_rejections_after_authentication_are_audited(http, gateway, upstream, body, key, status):
    if status == 404 and b"only-a" in body:
        body = body.replace(b"only-a", b"missing-resource")
    response = http.post(
        "/v1/chat/completions", content=body, headers={**auth(key), "Content-Type": "application/json"}
    )
    assert response.status_code == status
    record = gateway.audit(response.headers["x-vmx-request-id"])
    assert record["status_code"] == status and record["endpoint"] == "chat.completions"
    assert record["api_key"] == ("limited" if key == LIMITED_KEY else "all")


def test_a_client_that_leaves_before_a_non_stream_answer_is_audited_499(gateway, upstream):
    upstream.reply("POST", "/a/v1/chat/completions", Reply(delay=1.5))
    with httpx2.Client(base_url=gateway.base_url, timeout=0.4) as impatient, pytest.raises(httpx2.ReadTimeout):
        impatient.post(
            "/v1/chat/completions",
            json={"model": "default", "messages": MESSAGES, "vmx": {"correlationId": "left-early"}},
            headers=auth(),
        )
    record = gateway.audit_by(correlation_id="left-early")
    assert record["status_code"] == 499 and record["error_type"] == "client_disconnected"


def test_401_floods_leave_a_bounded_trace(gateway):
    before = gateway.process.log().count("401 for 127.0.0.1")
    started = time.monotonic()
    with httpx2.Client(base_url=gateway.base_url, timeout=10) as raw:
        for _ in range(60):
            assert raw.post("/v1/chat/completions", json={}, headers=auth("vmx-wrong")).status_code == 401
    seconds = time.monotonic() - started
    time.sleep(0.3)
    logged = gateway.process.log().count("401 for 127.0.0.1") - before
    # At most one line a second per address and worker (2 workers), not one per request.
    assert 1 <= logged <= 2 * (math.ceil(seconds) + 1) < 60


def test_allowed_hosts_apply_to_the_api(http):
    response = http.post(
        "/v1/chat/completions", json={"model": "default"}, headers={**auth(), "Host": "evil.example.com"}
    )
    assert response.status_code == 400
    assert response.json()["error"]["code"] == "bad_host"


@pytest.mark.parametrize("path", ["/V1/chat/completions", "//v1/chat/completions", "/v2/models", "/nothing"])
def test_unknown_paths_get_a_json_404(http, path):
    response = http.post(path, json={"model": "default"}, headers=auth())
    assert response.status_code == 404
    assert response.headers["content-type"].startswith("application/json")
    assert response.json()["error"]["code"] == "unknown_url"


def test_sdks_see_the_new_errors_in_their_own_shapes(gateway, upstream):
    client = openai.OpenAI(api_key=ALL_KEY, base_url=f"{gateway.base_url}/v1", max_retries=0)
    with pytest.raises(openai.BadRequestError) as info:
        client.chat.completions.create(
            model="default", messages=MESSAGES, extra_body={"vmx": {"correlationId": "a\nb"}}
        )
    assert info.value.body["param"] == "vmx.correlationId"
    claude = anthropic.Anthropic(api_key=ALL_KEY, base_url=gateway.base_url, max_retries=0)
    with pytest.raises(anthropic.BadRequestError):
        claude.messages.create(
            model="default", max_tokens=32, messages=MESSAGES, extra_body={"vmx": {"metadata": {"a": "\x00"}}}
        )
    assert upstream.requests == []


def test_an_unexpected_provider_exception_is_that_legs_failure(http, gateway, upstream):
    # A baseURL with credentials (refused by validation now, but stored by older versions) makes
    # the SDK's transport raise a plain ValueError: before, a 500 that skipped the fallbacks.
    code = (
        "from connections.models import Connection, AIResource, ModelEntry;"
        "from connections.signals import config_revision_bump;"
        "c = Connection.objects.create(name='creds', provider='openai', config={'baseURL': 'http://user:hunter2@127.0.0.1:9/v1'});"
        "c.secrets_set({'apiKey': 'sk-creds-0123456789'}); c.save();"
        "r = AIResource.objects.create(name='creds-first');"
        "ModelEntry.objects.create(resource=r, position=0, connection=c, model='gpt-4.1');"
        "ModelEntry.objects.create(resource=r, position=1, connection=Connection.objects.get(name='up-b'), model='gpt-4o-mini');"
        "config_revision_bump()"
    )
    manage(gateway.env, "shell", "-c", code)
    try:
        deadline = time.monotonic() + 5
        while True:
            response = chat(http, {"model": "creds-first", "messages": MESSAGES})
            if response.status_code != 404 or time.monotonic() > deadline:
                break
            time.sleep(0.2)
        assert response.status_code == 200, response.text
        assert response.headers["x-vmx-connection"] == "up-b"
        record = gateway.audit(response.headers["x-vmx-request-id"])
        assert record["attempts"][0]["connection"] == "creds" and "ValueError" in record["attempts"][0]["error"]
        assert "hunter2" not in json.dumps(record)

        check = manage(gateway.env, "vmx_check_connection", "creds", check=False)
        assert check.returncode != 0 and "Traceback" not in check.stderr
        assert "the check failed" in check.stderr
        exported = manage(gateway.env, "vmx_export").stdout
        assert "hunter2" not in exported and "//********@127.0.0.1" in exported
    finally:
        manage(
            gateway.env,
            "shell",
            "-c",
            "from connections.models import Connection, AIResource;"
            "AIResource.objects.filter(name='creds-first').delete(); Connection.objects.filter(name='creds').delete()",
        )


def test_unreadable_upstream_events_end_the_stream_as_failed(http, upstream, gateway):
    # A `response.failed` whose `response` is not an object used to raise inside the relay: the
    # stream stopped with no error event and the audit said 200.
    events = [
        sse({"type": "response.created", "sequence_number": 0, "response": {"id": "r"}}, "response.created"),
        sse({"type": "response.failed", "sequence_number": 1, "response": "x"}, "response.failed"),
    ]
    upstream.reply("POST", "/a/v1/responses", Reply(events=events))
    response = http.post("/v1/responses", json={"model": "default", "input": "Hi", "stream": True}, headers=auth())
    assert response.status_code == 200
    # The upstream's failure reaches the client as the stream's last event, and the audit says so.
    assert response.text.rstrip().splitlines()[-2] == "event: response.failed"
    record = gateway.audit(response.headers["x-vmx-request-id"])
    assert record["error_type"] == "upstream_stream_error"


def test_provider_args_of_the_wrong_type_never_make_a_500(http, upstream, gateway):
    # The reasoning retry of /v1/messages read `include` and `input` as lists: an upstream 400
    # with providerArgs {"include": 5} became a 500.
    rejected = Reply(
        status=400,
        body={"error": {"message": "Unsupported parameter: 'reasoning'", "type": "invalid_request_error"}},
    )
    for args in ({"include": 5}, {"input": 5}):
        upstream.reply("POST", "/a/v1/responses", rejected)
        response = messages(
            http, anthropic_body(thinking={"type": "enabled", "budget_tokens": 1024}, vmx={"providerArgs": args})
        )
        assert response.status_code < 500, response.text  # answered, or refused in Anthropic's shape
        assert response.json()["type"] in ("message", "error")
        assert gateway.audit(response.headers["x-vmx-request-id"])["status_code"] == response.status_code
