"""Pieces of the hardening (DESIGN.md 2.13) that are pure enough to test in process."""

from __future__ import annotations

import logging
import random

import orjson
import pytest

from gateway.core.errors import InvalidRequestError
from gateway.core.jsonchecks import ORJSON_MAX_DEPTH, json_depth_exceeds
from gateway.core.logs import ThrottledLog
from gateway.core.redaction import MASK, Redactor
from gateway.providers.base import url_problem
from gateway.services.envelope import body_merge, request_body_parse

SECRET = "sk-live-0123456789abcdef"


async def _chunks(pieces):
    for piece in pieces:
        yield piece


async def _collect(redactor, pieces):
    return [chunk async for chunk in redactor.stream(_chunks(pieces))]


async def test_a_secret_split_anywhere_across_chunks_is_masked():
    redactor = Redactor([SECRET, "short"])  # too short to mask safely: left alone
    stream = f'data: {{"error": "bad key {SECRET} (short)"}}\n\ndata: [DONE]\n\n'.encode()
    expected = stream.replace(SECRET.encode(), MASK.encode())
    for cut in range(1, len(stream)):
        out = await _collect(redactor, [stream[:cut], stream[cut:]])
        assert b"".join(out) == expected
    rng = random.Random(7)
    for _ in range(200):
        cuts = sorted(rng.sample(range(1, len(stream)), 6))
        pieces = [stream[a:b] for a, b in zip([0, *cuts], [*cuts, len(stream)], strict=True)]
        assert b"".join(await _collect(redactor, pieces)) == expected


async def test_event_ends_are_never_held_back():
    redactor = Redactor([SECRET])
    pieces = [b'data: {"a": "sk-l"}\n\n', b'data: {"b": 1}\n\n']
    out = await _collect(redactor, pieces)
    assert out == pieces  # each chunk leaves at once: a prefix of the key followed by more is not the key


def test_text_and_bytes_are_masked():
    redactor = Redactor([SECRET])
    assert redactor.text(f"a {SECRET} b {SECRET}") == f"a {MASK} b {MASK}"
    assert redactor.data(SECRET.encode()) == MASK.encode()
    assert not Redactor(["", "tiny"])


def test_repeated_failures_log_one_line_per_interval_with_a_count(caplog):
    log = ThrottledLog(logging.getLogger("vmx.test"), interval=60)
    with caplog.at_level(logging.WARNING, logger="vmx.test"):
        for _ in range(500):
            log.warning("db", "database down")
        log.warning("other", "another kind")
    assert [r.getMessage() for r in caplog.records] == ["database down", "another kind"]


@pytest.mark.parametrize(
    ("url", "problem"),
    [
        ("https://api.openai.com/v1", None),
        ("http://127.0.0.1:8080/v1", None),
        ("https://user:secret@proxy.example.com/v1", "must not contain credentials"),
        ("https://token@proxy.example.com/v1", "must not contain credentials"),
        ("ftp://example.com", "must be an http(s) URL"),
        ("https://example.com:99999/v1", "must be an http(s) URL"),
        ("https://exa mple.com/v1", "must not contain spaces or control characters"),
    ],
)
def test_base_urls_with_credentials_are_refused(url, problem):
    found = url_problem(url)
    assert (found is None) if problem is None else (found is not None and found.startswith(problem))


def _nested(depth: int) -> object:
    value: object = 1
    for _ in range(depth):
        value = [value]
    return value


def test_nesting_is_limited_exactly_at_200_levels():
    assert orjson.dumps(_nested(ORJSON_MAX_DEPTH))  # what the check relies on
    with pytest.raises(orjson.JSONEncodeError):
        orjson.dumps(_nested(ORJSON_MAX_DEPTH + 1))
    for depth, deeper in ((199, False), (200, False), (201, True), (5000, True)):
        body = {"model": "m", "x": _nested(depth - 1)}  # the body object is a level itself
        raw = orjson.dumps(body) if depth <= ORJSON_MAX_DEPTH else b"[" * (depth + 1)
        assert json_depth_exceeds(raw, body, 200) is deeper, depth
    raw = b'{"model": "m", "x": ' + b"[" * 201 + b"]" * 201 + b"}"
    with pytest.raises(InvalidRequestError, match="deeper than 200"):
        request_body_parse(raw)
    ok = b'{"model": "m", "x": ' + b"[" * 199 + b"]" * 199 + b"}"
    assert request_body_parse(ok)["model"] == "m"
    # Brackets inside strings are text, not nesting.
    assert request_body_parse(b'{"model": "m", "s": "' + b"[" * 500 + b'"}')["model"] == "m"


def test_merged_bodies_never_carry_the_envelope():
    merged = body_merge({"temperature": 1}, {"model": "m"}, {"vmx": {}, "__vmx_passthrough": 1, "user": "u"})
    assert merged == {"temperature": 1, "model": "m", "user": "u"}
