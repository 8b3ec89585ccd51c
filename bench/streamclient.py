"""A small asyncio HTTP/1.1 client on raw sockets, for what wrk cannot measure.

- `ttfb`: N keep-alive connections, each sending the same POST in a loop for a fixed time;
  per request it records the time to the first body byte (the first SSE event: the gateway sends
  its headers together with it) and the time to the end of the stream.
- `hold`: N streams opened at once, one per connection; each must answer 200 and end with the
  stream's completion marker. Reports how many succeeded and how many were open at once.

Prints one JSON object. Standard library only (uvloop if importable). Loopback targets only.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

END_MARKERS = (b"data: [DONE]", b"response.completed", b"message_stop")


class HTTPError(Exception):
    pass


def build_request(url: str, body: bytes, headers: list[str]) -> tuple[str, int, bytes]:
    parts = urlsplit(url)
    host = parts.hostname or ""
    if host not in ("127.0.0.1", "localhost", "::1"):
        raise SystemExit(f"refusing non-loopback target {host!r}")
    port = parts.port or 80
    lines = [
        f"POST {parts.path or '/'} HTTP/1.1",
        f"Host: {host}:{port}",
        "Content-Type: application/json",
        "Accept: text/event-stream",
        f"Content-Length: {len(body)}",
        *headers,
    ]
    head = ("\r\n".join(lines) + "\r\n\r\n").encode()
    return host, port, head + body


async def one_request(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter, request: bytes
) -> tuple[int, float, float, bool, bool]:
    """Send one request; (status, ttfb s, total s, completed, keep_alive)."""
    started = time.perf_counter()
    writer.write(request)
    status_line = await reader.readline()
    if not status_line:
        raise HTTPError("connection closed before the status line")
    status = int(status_line.split()[1])
    chunked = False
    length = None
    keep_alive = True
    while True:
        line = await reader.readline()
        if line in (b"\r\n", b"\n", b""):
            break
        name, _, value = line.decode("latin-1").partition(":")
        name = name.strip().lower()
        value = value.strip()
        if name == "transfer-encoding" and "chunked" in value.lower():
            chunked = True
        elif name == "content-length":
            length = int(value)
        elif name == "connection" and value.lower() == "close":
            keep_alive = False
    ttfb = None
    tail = b""
    completed = False
    if chunked:
        while True:
            size_line = await reader.readline()
            if not size_line:
                raise HTTPError("connection closed inside a chunked body")
            size = int(size_line.split(b";")[0].strip() or b"0", 16)
            if size == 0:
                # trailers (none expected) up to the empty line
                while (await reader.readline()) not in (b"\r\n", b"\n", b""):
                    pass
                break
            data = await reader.readexactly(size + 2)
            if ttfb is None:
                ttfb = time.perf_counter() - started
            tail = (tail + data[:-2])[-256:]
            if not completed and any(marker in tail for marker in END_MARKERS):
                completed = True
    elif length is not None:
        data = await reader.readexactly(length) if length else b""
        ttfb = time.perf_counter() - started
        completed = any(marker in data for marker in END_MARKERS)
    else:
        data = b""
        async for chunk in _read_to_eof(reader):
            if ttfb is None:
                ttfb = time.perf_counter() - started
            data = (data + chunk)[-256:]
        completed = any(marker in data for marker in END_MARKERS)
        keep_alive = False
    total = time.perf_counter() - started
    return status, (ttfb if ttfb is not None else total), total, completed, keep_alive


async def _read_to_eof(reader: asyncio.StreamReader):  # type: ignore[no-untyped-def]
    while True:
        chunk = await reader.read(65536)
        if not chunk:
            return
        yield chunk


def percentile(values: list[float], pct: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(pct / 100 * len(ordered) + 0.5) - 1))
    return ordered[index]


async def run_ttfb(url: str, request: bytes, host: str, port: int, concurrency: int, duration: float) -> dict[str, Any]:
    ttfbs: list[float] = []
    totals: list[float] = []
    counts = {"ok": 0, "bad_status": 0, "incomplete": 0, "errors": 0}
    deadline = time.perf_counter() + duration
    request_timeout = 30.0

    async def worker() -> None:
        writer = None
        reader = None
        while time.perf_counter() < deadline:
            try:
                if writer is None:
                    reader, writer = await asyncio.wait_for(asyncio.open_connection(host, port), 10)
                assert reader is not None and writer is not None
                status, ttfb, total, completed, keep_alive = await asyncio.wait_for(
                    one_request(reader, writer, request), request_timeout
                )
            except (OSError, HTTPError, TimeoutError, asyncio.IncompleteReadError, ValueError, IndexError):
                counts["errors"] += 1
                if writer is not None:
                    writer.close()
                writer = None
                await asyncio.sleep(0.01)
                continue
            if status != 200:
                counts["bad_status"] += 1
            elif not completed:
                counts["incomplete"] += 1
            else:
                counts["ok"] += 1
                ttfbs.append(ttfb)
                totals.append(total)
            if not keep_alive:
                writer.close()
                writer = None
        if writer is not None:
            writer.close()

    started = time.perf_counter()
    await asyncio.wait_for(asyncio.gather(*(worker() for _ in range(concurrency))), duration + 60)
    elapsed = time.perf_counter() - started
    return {
        "mode": "ttfb",
        "concurrency": concurrency,
        "elapsed_s": elapsed,
        **counts,
        "rps": counts["ok"] / elapsed if elapsed else 0.0,
        "ttfb_p50_ms": _ms(percentile(ttfbs, 50)),
        "ttfb_p99_ms": _ms(percentile(ttfbs, 99)),
        "total_p50_ms": _ms(percentile(totals, 50)),
        "total_p99_ms": _ms(percentile(totals, 99)),
    }


async def run_hold(request: bytes, host: str, port: int, streams: int, limit: float) -> dict[str, Any]:
    """Open `streams` streams at once; each must answer 200 and complete."""
    first_bytes: list[float] = []
    spans: list[tuple[float, float]] = []
    failures: dict[str, int] = {}
    connect_gate = asyncio.Semaphore(256)  # open connections in waves: no SYN-backlog overflow

    def fail(reason: str) -> None:
        failures[reason] = failures.get(reason, 0) + 1

    async def one() -> None:
        writer = None
        try:
            async with connect_gate:
                reader, writer = await asyncio.wait_for(asyncio.open_connection(host, port), 20)
            status, ttfb, total, completed, _ = await asyncio.wait_for(one_request(reader, writer, request), limit)
        except TimeoutError:
            fail("timeout")
            return
        except (OSError, HTTPError, asyncio.IncompleteReadError, ValueError, IndexError) as exc:
            fail(type(exc).__name__)
            return
        finally:
            if writer is not None:
                writer.close()
        if status != 200:
            fail(f"status {status}")
        elif not completed:
            fail("incomplete")
        else:
            end = time.perf_counter()
            spans.append((end - total + ttfb, end))
            first_bytes.append(ttfb)

    started = time.perf_counter()
    tasks = [asyncio.ensure_future(one()) for _ in range(streams)]
    await asyncio.wait_for(asyncio.gather(*tasks), limit + 60)
    elapsed = time.perf_counter() - started
    events = sorted([(s, 1) for s, _ in spans] + [(e, -1) for _, e in spans])
    open_now = peak = 0
    for _, delta in events:
        open_now += delta
        peak = max(peak, open_now)
    return {
        "mode": "hold",
        "streams": streams,
        "ok": len(spans),
        "failures": failures,
        "peak_open": peak,
        "elapsed_s": elapsed,
        "ttfb_p50_ms": _ms(percentile(first_bytes, 50)),
        "ttfb_p99_ms": _ms(percentile(first_bytes, 99)),
    }


def _ms(value: float | None) -> float | None:
    return None if value is None else round(value * 1000, 2)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("mode", choices=["ttfb", "hold"])
    parser.add_argument("--url", required=True)
    parser.add_argument("--body-file", required=True)
    parser.add_argument("--header", action="append", default=[], help='"Name: value", repeatable')
    parser.add_argument("--concurrency", type=int, default=1)
    parser.add_argument("--duration", type=float, default=5.0)
    parser.add_argument("--timeout", type=float, default=40.0, help="hold: per-stream limit in seconds")
    args = parser.parse_args()
    if not (0 < args.concurrency <= 5000 and 0 < args.duration <= 120 and 0 < args.timeout <= 300):
        raise SystemExit("concurrency, duration or timeout out of bounds")
    try:
        import uvloop

        asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
    except ImportError:
        pass
    host, port, request = build_request(args.url, Path(args.body_file).read_bytes(), args.header)
    if args.mode == "ttfb":
        result = asyncio.run(run_ttfb(args.url, request, host, port, args.concurrency, args.duration))
    else:
        result = asyncio.run(run_hold(request, host, port, args.concurrency, args.timeout))
    json.dump(result, sys.stdout)
    sys.stdout.write("\n")


if __name__ == "__main__":
    main()
