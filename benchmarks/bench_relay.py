"""What streaming through the relay costs: the same turns made through ``tyqw serve``'s
relay and directly with ``Session``, measured in one run.

    .venv/bin/python benchmarks/bench_relay.py            # about a minute on 2 cores
    .venv/bin/python benchmarks/bench_relay.py --quick    # a few seconds: proves the harness works
    .venv/bin/python benchmarks/bench_relay.py --json results.json
    .venv/bin/python benchmarks/bench_relay.py --scenarios long --profile relay.prof

Three processes: a fast upstream (precomputed Bailian frames, no checks), the relay
(``create_app()`` behind aiohttp, as ``tyqw serve`` runs it), and the client, a tyqw
``Session`` pointed either at the upstream ("direct") or at the relay. Reported, as
medians over interleaved repetitions:

- per event and per request: the client's wall time, and the relay process's CPU next
  to the direct client's own CPU (what a ``Session`` costs for the same turns: the relay
  runs one per user and adds re-framing and a write per event);
- latency: each event carries the upstream's ``time.monotonic_ns()`` when written
  (CLOCK_MONOTONIC, shared by every process of the machine); the client reports how long
  after that it arrived, direct and through the relay, and the time to the first event.

Run it with the repository's environment (``.venv/bin/python``); it needs only tyqw.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from children import start_role, stop  # noqa: E402  (beside this file)

from tyqw._wire import dumps, frame  # noqa: E402  (the one Bailian frame writer)

APP_ID = "bench"
KEY = "sk-bench-upstream"

FULL = {"long": 20_000, "short": (300, 20), "concurrent": (200, 100), "paced": (100, 2.0)}
QUICK = {"long": 2_000, "short": (30, 20), "concurrent": (20, 20), "paced": (20, 2.0)}


# -- the upstream: precomputed frames, as little CPU per event as possible ----------------


def _frame(n: int, session_id: str, request_id: str, text: str, finish: str) -> bytes:
    output = {"session_id": session_id, "finish_reason": finish, "text": text}
    return frame(n, dumps({"output": output, "usage": {}, "request_id": request_id}))


async def upstream_main() -> None:
    from aiohttp import web

    cache: dict[int, list[bytes]] = {}

    async def completion(request: web.Request) -> web.StreamResponse:
        body = await request.json()
        spec = dict(part.split("=") for part in body["input"]["prompt"].split(";"))
        events, pace = int(spec["events"]), float(spec.get("pace_ms", 0)) / 1000
        session_id = body["input"].get("session_id") or uuid.uuid4().hex
        response = web.StreamResponse(
            headers={"Content-Type": "text/event-stream;charset=UTF-8", "x-request-id": "r"}
        )
        await response.prepare(request)
        if pace:
            for n in range(1, events + 1):
                stamp = str(time.monotonic_ns())
                await response.write(_frame(n, session_id, "r", stamp, "null"))
                await asyncio.sleep(pace)
        else:
            if events not in cache:
                cache[events] = [
                    _frame(n, "S" * 32, "r", "x", "null") for n in range(1, events + 1)
                ]
            frames = cache[events]
            for start in range(0, len(frames), 256):
                block = b"".join(frames[start : start + 256]).replace(
                    b"S" * 32, session_id.encode()
                )
                await response.write(block)
        await response.write(_frame(events + 1, session_id, "r", "", "stop"))
        await response.write_eof()
        return response

    app = web.Application()
    app.router.add_post("/api/v1/apps/{app_id}/completion", completion)
    await _serve(app)


async def relay_main(upstream: str, profile: str = "") -> None:
    from aiohttp import web

    from tyqw.relay import create_app

    async def cpu(request: web.Request) -> web.Response:
        return web.json_response({"cpu": time.process_time()})

    def user(request: web.Request) -> str:
        return request.headers["Authorization"].removeprefix("Bearer ")  # one user per Session

    relay = create_app(
        [APP_ID], authenticate=user, rate=None, api_key=KEY, base_url=upstream, max_prompt=200
    )
    root = web.Application()
    root.router.add_get("/__cpu", cpu)
    root.add_subapp("/relay", relay)
    await _serve(root, profile)


async def _serve(app: Any, profile: str = "") -> None:
    from aiohttp import web

    runner = web.AppRunner(app, handler_cancellation=True, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0, backlog=1024)
    await site.start()
    print(json.dumps({"port": runner.addresses[0][1]}), flush=True)
    profiler = None
    if profile:
        import cProfile

        profiler = cProfile.Profile()
        profiler.enable()
    # Serve until the parent closes our stdin (so we never outlive it).
    await asyncio.get_running_loop().run_in_executor(None, sys.stdin.read)
    if profiler is not None:
        profiler.disable()
        profiler.dump_stats(profile)
    await runner.cleanup()


# -- the client ----------------------------------------------------------------------------


class Target:
    def __init__(self, name: str, base_url: str, cpu_url: str | None) -> None:
        self.name, self.base_url, self.cpu_url = name, base_url, cpu_url


async def relay_cpu(http: Any, target: Target) -> float:
    if target.cpu_url is None:
        return 0.0
    async with http.get(target.cpu_url) as response:
        return float((await response.json())["cpu"])


async def measure(target: Target, scenario: str, size: Any, state: Path) -> dict[str, float]:
    """One scenario against one target: wall, client CPU and relay CPU, per unit."""
    import aiohttp

    from tyqw import Session

    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as http:

        def session(name: str) -> Session:
            return Session(
                APP_ID,
                api_key=KEY,
                base_url=target.base_url,
                state_dir=state,
                name=name,
                http_session=http,
                # The relay refuses input.messages, which an expired conversation sends
                # (the short scenario runs 300 rounds in one).
                expiry=False,
            )

        async def turn(s: Session, events: int, pace_ms: float = 0) -> list[Any]:
            return [m async for m in s.stream(f"events={events};pace_ms={pace_ms}")]

        warm = session("warm")
        await turn(warm, 50)
        latencies: list[float] = []
        first: list[float] = []
        relay0, cpu0, wall0 = (
            await relay_cpu(http, target),
            time.process_time(),
            time.perf_counter(),
        )
        if scenario == "long":
            await turn(session("long"), size)
            units = size
        elif scenario == "short":
            requests, events = size
            s = session("short")
            for _ in range(requests):
                await turn(s, events)
            units = requests
        elif scenario == "concurrent":
            streams, events = size
            await asyncio.gather(*(turn(session(f"c{i}"), events) for i in range(streams)))
            units = streams * events
        else:  # paced: latency of each event after the upstream wrote it
            events, pace = size
            s = session("paced")
            started = time.perf_counter()
            async for message in s.stream(f"events={events};pace_ms={pace}"):
                now = time.monotonic_ns()
                if not first:
                    first.append((time.perf_counter() - started) * 1000)
                if message.delta:
                    latencies.append((now - int(message.delta)) / 1000)
            units = events
        wall, cpu = time.perf_counter() - wall0, time.process_time() - cpu0
        relay = await relay_cpu(http, target) - relay0
    result = {
        "wall_us": wall / units * 1e6,
        "client_cpu_us": cpu / units * 1e6,
        "relay_cpu_us": relay / units * 1e6,
    }
    if latencies:
        latencies.sort()
        result["latency_p50_us"] = statistics.median(latencies)
        result["latency_p95_us"] = latencies[int(len(latencies) * 0.95) - 1]
        result["first_event_ms"] = first[0]
    return result


def start(role: str, *args: str) -> tuple[subprocess.Popen[str], int]:
    """Start this script as ``role``; return the process and the port it serves on."""
    return start_role(__file__, role, *args)


def report(results: dict[str, dict[str, list[dict[str, float]]]]) -> str:
    def med(scenario: str, target: str, key: str) -> float:
        return statistics.median(r[key] for r in results[scenario][target])

    def ratio(scenario: str, top: tuple[str, str], bottom: tuple[str, str]) -> float:
        pairs = zip(results[scenario][top[0]], results[scenario][bottom[0]], strict=True)
        return statistics.median(a[top[1]] / b[bottom[1]] for a, b in pairs if b[bottom[1]])

    lines = [
        "| scenario | client wall, direct | client wall, via relay | direct Session CPU "
        "| relay CPU | relay CPU / Session CPU |",
        "|---|--:|--:|--:|--:|--:|",
    ]
    labels = {
        "long": "1 stream x {0:,} events (µs/event)",
        "short": "{0[0]:,} requests x {0[1]} events (µs/request)",
        "concurrent": "{0[0]} concurrent streams x {0[1]} events (µs/event)",
    }
    for scenario, label in labels.items():
        if scenario not in results:
            continue
        lines.append(
            f"| {label.format(results[scenario]['size'])} "
            f"| {med(scenario, 'direct', 'wall_us'):,.1f} "
            f"| {med(scenario, 'relay', 'wall_us'):,.1f} "
            f"({ratio(scenario, ('relay', 'wall_us'), ('direct', 'wall_us')):.2f}x) "
            f"| {med(scenario, 'direct', 'client_cpu_us'):,.1f} "
            f"| {med(scenario, 'relay', 'relay_cpu_us'):,.1f} "
            f"| {ratio(scenario, ('relay', 'relay_cpu_us'), ('direct', 'client_cpu_us')):.2f}x |"
        )
    if "paced" in results:
        size = results["paced"]["size"]
        lines += [
            "",
            f"Latency, {size[0]} events written {size[1]:g} ms apart (µs after the upstream "
            "wrote each event; first event in ms after the request):",
            "",
            "| | p50 | p95 | first event |",
            "|---|--:|--:|--:|",
        ]
        for target in ("direct", "relay"):
            lines.append(
                f"| {target} | {med('paced', target, 'latency_p50_us'):,.0f} "
                f"| {med('paced', target, 'latency_p95_us'):,.0f} "
                f"| {med('paced', target, 'first_event_ms'):.2f} |"
            )
    return "\n".join(lines)


async def drive(args: argparse.Namespace) -> dict[str, Any]:
    import tempfile

    sizes = QUICK if args.quick else FULL
    reps = args.reps or (1 if args.quick else 5)
    upstream, up_port = start("upstream")
    extra = ("--profile", str(args.profile)) if args.profile else ()
    relay, relay_port = start("relay", f"http://127.0.0.1:{up_port}/api/v1", *extra)
    targets = [
        Target("direct", f"http://127.0.0.1:{up_port}/api/v1", None),
        Target(
            "relay",
            f"http://127.0.0.1:{relay_port}/relay/api/v1",
            f"http://127.0.0.1:{relay_port}/__cpu",
        ),
    ]
    results: dict[str, Any] = {}
    try:
        with tempfile.TemporaryDirectory() as state:
            for scenario, size in sizes.items():
                if args.scenarios and scenario not in args.scenarios.split(","):
                    continue
                results[scenario] = {"size": size, "direct": [], "relay": []}
                for rep in range(reps):
                    order = targets if rep % 2 == 0 else targets[::-1]
                    for target in order:
                        fresh = Path(state) / f"{scenario}-{rep}-{target.name}"
                        measured = await measure(target, scenario, size, fresh)
                        results[scenario][target.name].append(measured)
    finally:
        stop(relay, upstream, timeout=10)
    return results


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="tiny sizes, one repetition")
    parser.add_argument("--reps", type=int, default=0, help="repetitions (default 5; quick 1)")
    parser.add_argument("--json", type=Path, help="also write the raw results here")
    parser.add_argument(
        "--profile", type=Path, help="cProfile the relay process into this file (slows it)"
    )
    parser.add_argument(
        "--scenarios", default="", help="comma-separated: long,short,concurrent,paced (all)"
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
    results = asyncio.run(drive(args))
    print(f"tyqw relay benchmark: Python {sys.version.split()[0]}, {os.cpu_count()} cores")
    print(report(results))
    if args.json:
        args.json.write_text(json.dumps(results, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
