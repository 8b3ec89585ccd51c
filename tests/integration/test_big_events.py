"""One 16 MiB upstream event, sent in small pieces, through every streaming endpoint.

Stream parsing must be linear in the size of the stream: the quadratic decoder spent ~100 s of a
worker's CPU on such an event, stalling every other request of that worker meanwhile. Each test
streams the event through real gunicorn workers to a real SDK, checks that the client gets the
whole text intact, and measures the CPU the gateway's workers spent (utime + stime of gunicorn's
children, from /proc, before and after). The bound is generous, so that a slow machine does not
fail it, yet far below what the quadratic version needed.

Responses streams are the fake's realistic ones: after the 16 MiB delta, `output_text.done`,
`content_part.done`, `output_item.done` and `response.completed` each repeat the whole text, so
the upstream sends five 16 MiB events.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import anthropic
import openai
import pytest

from tests.fakes.openai_upstream import FakeOpenAI, Reply, chat_stream, rechunk, responses_stream
from tests.integration.conftest import ALL_KEY, Gateway

SIZE = 16 * 1024 * 1024
PIECE = 16 * 1024
"""Bytes per upstream write: the big event arrives in ~1,000 pieces."""
CPU_BOUND_SECONDS = 5.0

pytestmark = pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="reads worker CPU from /proc")


def big_text() -> str:
    # No spaces: the fake's stream builders make one delta per space-separated word, so the whole
    # text is one delta, i.e. one SSE event. Mostly ASCII, so that the event is about SIZE bytes;
    # the few other characters travel as JSON escapes and must come back whole.
    unit = "lorem-ipsum,dolor.sit/amet|" * 40 + "é👋"
    return (unit * (SIZE // len(unit) + 1))[:SIZE]


def _stat_fields(pid: int | str) -> list[str]:
    # proc(5): the command name (field 2) may hold spaces and parentheses; fields after it don't.
    return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()


def workers_cpu(gateway) -> dict[int, float]:
    """CPU seconds (user + system) used so far by each gunicorn worker of `gateway`."""
    master = str(gateway.process.process.pid)
    seconds = {}
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            fields = _stat_fields(entry.name)
        except (OSError, IndexError):
            continue  # the process went away while /proc was listed
        if fields[1] == master:  # field 4, ppid
            seconds[int(entry.name)] = (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    return seconds


class WorkersCPU:
    """The CPU seconds the workers spent inside the `with` block."""

    def __init__(self, gateway) -> None:
        self.gateway = gateway
        self.seconds = 0.0

    def __enter__(self) -> WorkersCPU:
        self._before = workers_cpu(self.gateway)
        return self

    def __exit__(self, *exc: object) -> None:
        after = workers_cpu(self.gateway)
        self.seconds = sum(after[pid] - self._before[pid] for pid in after.keys() & self._before.keys())


def _openai(gateway) -> openai.OpenAI:
    return openai.OpenAI(api_key=ALL_KEY, base_url=f"{gateway.base_url}/v1", max_retries=0)


def _anthropic(gateway) -> anthropic.Anthropic:
    return anthropic.Anthropic(api_key=ALL_KEY, base_url=gateway.base_url, max_retries=0)


def _small_chat(gateway) -> None:
    with _openai(gateway) as client:
        list(client.chat.completions.create(model="default", messages=[{"role": "user", "content": "hi"}], stream=True))


def _small_responses(gateway) -> None:
    with _openai(gateway) as client:
        list(client.responses.create(model="default", input="hi", stream=True))


def _small_messages(gateway) -> None:
    with _anthropic(gateway) as client:
        list(
            client.messages.create(
                model="default", max_tokens=16, messages=[{"role": "user", "content": "hi"}], stream=True
            )
        )


@pytest.fixture(scope="module", autouse=True)
def warm_workers(gateway: Gateway, fake_openai: FakeOpenAI) -> None:
    """A worker's first upstream call loads the provider and builds its HTTP client (~0.5 s of
    CPU): that is not the cost of a big event, so every endpoint is first used on both workers.
    Concurrent slow streams make sure of it: while one worker is busy, the other accepts."""
    calls: list[tuple[str, Callable[..., None]]] = [
        ("/a/v1/chat/completions", _small_chat),
        ("/a/v1/responses", _small_responses),
        ("/a/v1/responses", _small_messages),
    ]
    for path, call in calls:
        fake_openai.reset()
        fake_openai.reply("POST", path, *(Reply(delay=0.3) for _ in range(6)))  # the default answer, late
        with ThreadPoolExecutor(6) as pool:
            for future in [pool.submit(call, gateway) for _ in range(6)]:
                future.result()
    fake_openai.reset()


def assert_cheap(cpu: WorkersCPU, endpoint: str, events: list[bytes | float]) -> None:
    sizes = [len(e) for e in events if isinstance(e, bytes)]
    mib = 1024 * 1024
    print(
        f"\n{endpoint}: largest upstream event {max(sizes) / mib:.1f} MiB, {sum(sizes) / mib:.1f} MiB upstream"
        f" in {PIECE // 1024} KiB writes: gateway workers CPU {cpu.seconds:.2f} s"
    )
    assert cpu.seconds < CPU_BOUND_SECONDS


def test_chat_completions(gateway, upstream):
    text = big_text()
    events = chat_stream("gpt-4.1", text, include_usage=True)
    upstream.reply("POST", "/a/v1/chat/completions", Reply(events=rechunk(events, PIECE)))
    with _openai(gateway) as client, WorkersCPU(gateway) as cpu:
        stream = client.chat.completions.create(
            model="default", messages=[{"role": "user", "content": "big"}], stream=True
        )
        received = "".join(chunk.choices[0].delta.content or "" for chunk in stream if chunk.choices)
    assert received == text + " "
    assert_cheap(cpu, "/v1/chat/completions", events)


def test_responses(gateway, upstream):
    text = big_text()
    events = responses_stream("gpt-4.1", text)
    upstream.reply("POST", "/a/v1/responses", Reply(events=rechunk(events, PIECE)))
    with _openai(gateway) as client, WorkersCPU(gateway) as cpu:
        stream = client.responses.create(model="default", input="big", stream=True)
        received = list(stream)
    deltas = [e.delta for e in received if e.type == "response.output_text.delta"]
    assert deltas == [text + " "]
    assert received[-1].type == "response.completed" and received[-1].response.output_text == text + " "
    assert_cheap(cpu, "/v1/responses", events)


def test_messages(gateway, upstream):
    text = big_text()
    events = responses_stream("gpt-4.1", text)
    upstream.reply("POST", "/a/v1/responses", Reply(events=rechunk(events, PIECE)))
    with _anthropic(gateway) as client, WorkersCPU(gateway) as cpu:
        stream = client.messages.create(
            model="default", max_tokens=1024, messages=[{"role": "user", "content": "big"}], stream=True
        )
        received = list(stream)
    deltas = [e.delta.text for e in received if e.type == "content_block_delta" and e.delta.type == "text_delta"]
    assert deltas == [text + " "]  # the `done` events that repeat the text add nothing
    assert received[-1].type == "message_stop"
    assert_cheap(cpu, "/v1/messages", events)
