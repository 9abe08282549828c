"""One relay worker at a chatbot's scale: thousands of open streams, paced as the service
paces them, and what the relay adds to each event's latency.

    .venv/bin/python benchmarks/bench_relay_scale.py              # 2,000 streams, ~1 minute
    .venv/bin/python benchmarks/bench_relay_scale.py --streams 500 --reps 3
    .venv/bin/python benchmarks/bench_relay_scale.py --quick      # 100 streams: harness check
    .venv/bin/python benchmarks/bench_relay_scale.py --json out.json

Three processes, loopback only:

- the upstream: a raw ``asyncio`` server in Bailian's framing that writes one event per
  stream every ``--interval-ms`` (30 ms, as the service paces a reply), each carrying the
  upstream's ``time.monotonic_ns()`` as its text (CLOCK_MONOTONIC is shared by every
  process of the machine); stream starts are spread over ``--ramp`` seconds, as users
  arrive, so the events of different streams do not fall on the same instant;
- the relay: ``tyqw.relay.create_app()`` behind aiohttp (one worker, as ``tyqw serve``
  runs it; one user per stream, the default memory store);
- the client: a raw ``asyncio`` reader per stream (no HTTP library, so that the client's
  own cost per event stays small next to the relay's) that takes each event's stamp.

Each repetition runs the same streams twice, in turn: ``direct`` (the client reads the
upstream itself: the latency of loopback and of the client's own reading) and ``relay``.
Reported, medians over repetitions: p50 / p99 of the time from the upstream's write to the
client's read, direct and through the relay, and their difference (what the relay adds);
the relay's CPU per event and its CPU / wall (near 1.0: the worker is saturated, and the
latency is queueing); the relay's memory per open stream (RSS with every stream open, less
RSS before the first, over the streams). The goal for 2,000 streams: p99 added < 20 ms.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import re
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from children import start_role, stop  # noqa: E402  (beside this file)

from tyqw._wire import dumps, frame  # noqa: E402  (the one Bailian frame writer)

APP_ID = "bench"
KEY = "sk-bench-upstream"
PAGE = os.sysconf("SC_PAGE_SIZE")
TICKS = os.sysconf("SC_CLK_TCK")
STAMP = re.compile(rb'"text":"(\d+)"')


def raise_open_files() -> None:
    """Thousands of sockets per process: lift the soft limit to the hard one."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY or hard > soft:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


# -- the upstream: one timer per stream, a pre-rendered frame with the stamp put in ---------


def _event(n: int, text: str, finish: str, session_id: str) -> bytes:
    output = {"session_id": session_id, "finish_reason": finish, "text": text}
    data = frame(n, dumps({"output": output, "usage": {}, "request_id": "r"}))
    return b"%x\r\n%s\r\n" % (len(data), data)


class Upstream(asyncio.Protocol):
    """One connection; each request's body says ``events`` and ``interval_ms``."""

    def __init__(self) -> None:
        self.buf = b""
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        self.buf += data
        head, sep, rest = self.buf.partition(b"\r\n\r\n")
        if not sep:
            return
        length = 0
        for line in head.split(b"\r\n")[1:]:
            name, _, value = line.partition(b":")
            if name.strip().lower() == b"content-length":
                length = int(value)
        if len(rest) < length:
            return
        body = json.loads(rest[:length])
        self.buf = b""
        spec = dict(part.split("=") for part in body["input"]["prompt"].split(";"))
        session_id = body["input"].get("session_id") or os.urandom(16).hex()
        assert self.transport is not None
        self.transport.write(
            b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream;charset=UTF-8\r\n"
            b"transfer-encoding: chunked\r\nconnection: close\r\nx-request-id: r\r\n\r\n"
        )
        loop = asyncio.get_running_loop()
        self.write_events(loop, 1, int(spec["events"]), float(spec["interval_ms"]), session_id)

    def write_events(
        self, loop: asyncio.AbstractEventLoop, n: int, events: int, ms: float, sid: str
    ) -> None:
        transport = self.transport
        if transport is None or transport.is_closing():
            return
        if n > events:
            transport.write(_event(n, "", "stop", sid) + b"0\r\n\r\n")
            transport.close()  # one request per connection: the reply's end is the close
            return
        transport.write(_event(n, str(time.monotonic_ns()), "null", sid))
        loop.call_later(ms / 1000, self.write_events, loop, n + 1, events, ms, sid)

    def connection_lost(self, exc: Exception | None) -> None:
        self.transport = None


async def upstream_main() -> None:
    raise_open_files()
    loop = asyncio.get_running_loop()
    server = await loop.create_server(Upstream, "127.0.0.1", 0, backlog=4096)
    print(json.dumps({"port": server.sockets[0].getsockname()[1]}), flush=True)
    await loop.run_in_executor(None, sys.stdin.read)  # until the parent goes away
    server.close()


# -- the relay, as ``tyqw serve`` runs it ----------------------------------------------------


async def relay_main(upstream: str, profile: str = "") -> None:
    from aiohttp import web

    from tyqw.relay import create_app

    raise_open_files()

    def user(request: web.Request) -> str:
        return request.headers["Authorization"].removeprefix("Bearer ")  # one user a stream

    app = create_app(
        [APP_ID], authenticate=user, rate=None, api_key=KEY, base_url=upstream, max_prompt=200
    )
    runner = web.AppRunner(app, handler_cancellation=True, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0, backlog=4096)
    await site.start()
    print(json.dumps({"port": runner.addresses[0][1]}), flush=True)
    profiler = None
    if profile:
        import cProfile

        profiler = cProfile.Profile()
        profiler.enable()
    await asyncio.get_running_loop().run_in_executor(None, sys.stdin.read)
    if profiler is not None:
        profiler.disable()
        profiler.dump_stats(profile)
    await runner.cleanup()


# -- the client: a raw reader per stream -----------------------------------------------------


class Reader(asyncio.Protocol):
    """Sends one request, then takes the stamp of every event it reads."""

    def __init__(self, request: bytes, latencies: list[int], done: asyncio.Future[None]) -> None:
        self.request = request
        self.latencies = latencies
        self.done = done
        self.tail = b""
        self.ended = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        transport.write(self.request)

    def data_received(self, data: bytes) -> None:
        now = time.monotonic_ns()
        data = self.tail + data
        cut = data.rfind(b"\n\n") + 2  # whole events only; the rest waits for the next read
        self.tail = data[cut:]
        self.latencies.extend(now - int(m) for m in STAMP.findall(data, 0, cut))
        if b'"finish_reason":"stop"' in data:
            self.ended = True

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.done.done():
            if self.ended:
                self.done.set_result(None)
            else:
                self.done.set_exception(RuntimeError(f"stream cut short: {exc}"))


def request_bytes(path: str, user: str, events: int, interval_ms: float) -> bytes:
    body = json.dumps(
        {
            "input": {"prompt": f"events={events};interval_ms={interval_ms}"},
            "parameters": {"incremental_output": True},
        }
    ).encode()
    return (
        f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {user}\r\n"
        "Content-Type: application/json\r\nAccept: text/event-stream\r\n"
        "X-DashScope-SSE: enable\r\nConnection: close\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    ).encode() + body


def proc_cpu_rss(pid: int | None) -> tuple[float, int]:
    """CPU seconds and RSS bytes of another process (Linux /proc)."""
    if pid is None:
        return 0.0, 0
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    cpu = (int(fields[11]) + int(fields[12])) / TICKS
    with open(f"/proc/{pid}/statm") as f:
        rss = int(f.read().split()[1]) * PAGE
    return cpu, rss


async def run_streams(
    port: int, path: str, pid: int | None, args: argparse.Namespace, tag: str, rss_base: int = 0
) -> dict[str, Any]:
    """Open ``args.streams`` streams to ``port``, read them to their end; the latencies,
    and the CPU and memory of process ``pid`` (the relay) meanwhile. Memory per stream is
    RSS with every stream open less ``rss_base`` (the relay's RSS before the first
    repetition: a later one reuses the memory an earlier one took)."""
    loop = asyncio.get_running_loop()
    latencies: list[int] = []
    done: list[asyncio.Future[None]] = []
    rng = random.Random(7)
    starts = sorted(rng.uniform(0, args.ramp) for _ in range(args.streams))
    cpu0, rss0 = proc_cpu_rss(pid)
    rss0 = rss_base or rss0
    wall0 = time.perf_counter()
    # Every stream is open from the end of the ramp until the first one ends.
    sample_at = args.ramp + min(1.0, args.events * args.interval_ms / 2000)
    rss_open = 0

    async def sample() -> None:
        nonlocal rss_open
        await asyncio.sleep(sample_at)
        rss_open = proc_cpu_rss(pid)[1]

    sampler = loop.create_task(sample())
    for i, at in enumerate(starts):
        delay = wall0 + at - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        future = loop.create_future()
        request = request_bytes(path, f"{tag}-{i}", args.events, args.interval_ms)
        await loop.create_connection(
            lambda r=request, f=future: Reader(r, latencies, f), "127.0.0.1", port
        )
        done.append(future)
    bound = args.ramp + args.events * args.interval_ms / 1000 * 4 + 30
    await asyncio.wait_for(asyncio.gather(*done), bound)
    await sampler
    wall = time.perf_counter() - wall0
    cpu1, _ = proc_cpu_rss(pid)
    latencies.sort()
    events = args.streams * args.events
    if len(latencies) != events:
        raise RuntimeError(f"{tag}: {len(latencies)} stamps for {events} events")
    return {
        "p50_ms": latencies[len(latencies) // 2] / 1e6,
        "p99_ms": latencies[int(len(latencies) * 0.99) - 1] / 1e6,
        "max_ms": latencies[-1] / 1e6,
        "relay_cpu_us_per_event": (cpu1 - cpu0) / events * 1e6,
        "relay_cpu_util": (cpu1 - cpu0) / wall,
        "relay_kb_per_stream": (rss_open - rss0) / args.streams / 1024,
    }


def start(role: str, *extra: str) -> tuple[subprocess.Popen[str], int]:
    """Start this script as ``role``; return the process and the port it serves on."""
    return start_role(__file__, role, *extra)


async def drive(args: argparse.Namespace) -> dict[str, Any]:
    raise_open_files()
    upstream, up_port = start("upstream")
    extra = ("--profile", str(args.profile)) if args.profile else ()
    relay, relay_port = start("relay", f"http://127.0.0.1:{up_port}/api/v1", *extra)
    path = f"/apps/{APP_ID}/completion"
    results: dict[str, list[dict[str, Any]]] = {"direct": [], "relay": []}
    try:
        # Warm-up: the relay's first requests (imports, pools) are not measured.
        warm = argparse.Namespace(**{**vars(args), "streams": 20, "events": 5, "ramp": 0.1})
        await run_streams(relay_port, f"/api/v1{path}", relay.pid, warm, "warm")
        rss_base = proc_cpu_rss(relay.pid)[1]
        for rep in range(args.reps):
            for target in ("direct", "relay") if rep % 2 == 0 else ("relay", "direct"):
                if target == "direct":
                    measured = await run_streams(up_port, f"/api/v1{path}", None, args, "d")
                else:
                    tag = f"u{rep}"  # new users each repetition: a conversation each
                    measured = await run_streams(
                        relay_port, f"/api/v1{path}", relay.pid, args, tag, rss_base
                    )
                results[target].append(measured)
                print(f"[{rep + 1}/{args.reps}] {target}: {measured}", file=sys.stderr)
    finally:
        stop(relay, upstream, timeout=10)
    return results


def report(results: dict[str, list[dict[str, Any]]], args: argparse.Namespace) -> str:
    def med(target: str, key: str) -> float:
        return statistics.median(r[key] for r in results[target])

    def added(key: str) -> float:
        pairs = zip(results["relay"], results["direct"], strict=True)
        return statistics.median(r[key] - d[key] for r, d in pairs)

    p99 = added("p99_ms")
    lines = [
        f"{args.streams:,} streams x {args.events} events, one every {args.interval_ms:g} ms "
        f"(starts spread over {args.ramp:g} s); medians of {args.reps} repetition(s)",
        "",
        "| | p50 (ms) | p99 (ms) | max (ms) |",
        "|---|--:|--:|--:|",
        f"| direct | {med('direct', 'p50_ms'):.2f} | {med('direct', 'p99_ms'):.2f} "
        f"| {med('direct', 'max_ms'):.1f} |",
        f"| through the relay | {med('relay', 'p50_ms'):.2f} | {med('relay', 'p99_ms'):.2f} "
        f"| {med('relay', 'max_ms'):.1f} |",
        f"| added by the relay | {added('p50_ms'):.2f} | {p99:.2f} | |",
        "",
        f"relay CPU per event: {med('relay', 'relay_cpu_us_per_event'):.1f} µs; "
        f"relay CPU / wall: {med('relay', 'relay_cpu_util'):.2f}; "
        f"relay memory per open stream: {med('relay', 'relay_kb_per_stream'):.1f} KiB",
        f"goal p99 added < 20 ms: {'PASS' if p99 < 20 else 'FAIL'} ({p99:.2f} ms)",
    ]
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--streams", type=int, default=0, help="open streams (2,000)")
    parser.add_argument("--events", type=int, default=0, help="events per stream (100)")
    parser.add_argument("--interval-ms", type=float, default=30.0, help="pace (30 ms)")
    parser.add_argument("--ramp", type=float, default=0.0, help="seconds to open them (2)")
    parser.add_argument("--reps", type=int, default=0, help="repetitions (3; quick 1)")
    parser.add_argument("--quick", action="store_true", help="100 streams x 20 events, once")
    parser.add_argument("--json", type=Path, help="also write the raw results here")
    parser.add_argument(
        "--profile", type=Path, help="cProfile the relay process into this file (slows it)"
    )
    parser.add_argument("--role", choices=["upstream", "relay"], help=argparse.SUPPRESS)
    parser.add_argument("upstream", nargs="?", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.role == "upstream":
        asyncio.run(upstream_main())
        return 0
    if args.role == "relay":
        asyncio.run(relay_main(args.upstream, str(args.profile or "")))
        return 0
    args.streams = args.streams or (100 if args.quick else 2000)
    args.events = args.events or (20 if args.quick else 100)
    args.ramp = args.ramp or (0.5 if args.quick else 2.0)
    args.reps = args.reps or (1 if args.quick else 3)
    results = asyncio.run(drive(args))
    print(f"tyqw relay at scale: Python {sys.version.split()[0]}, {os.cpu_count()} cores")
    print(report(results, args))
    if args.json:
        saved = {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()}
        args.json.write_text(json.dumps({"args": saved, **results}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
