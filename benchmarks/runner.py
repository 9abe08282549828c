"""Run one client through one scenario in this (fresh) process; print one JSON line.

    python benchmarks/runner.py --client floor --scenario single \\
        --base-url http://127.0.0.1:PORT/api/v1 [--quick] [--profile out.prof]

CPU is this process's own (``time.process_time()``, all threads), measured around the
scenario only, after a warm-up; the server runs in another process. The result line is
``{"client", "scenario", "status", "events", "cpu_s", "wall_s", "cpu_us_per_event", ...}``
with ``status`` one of ``ok``, ``fails`` (the client could not read the reply),
``n/a`` (the scenario does not apply: concurrency for sync clients) or ``unavailable``
(the client cannot be imported, e.g. tyqw before its ``Session`` exists).
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import importlib
import inspect
import json
import os
import platform
import resource
import statistics
import sys
import time
import traceback
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from clients import CLIENTS
from clients.base import NO_PROBE, BenchClient, Probe
from scenarios import Reply, Scenario, scenarios

PAGE = os.sysconf("SC_PAGE_SIZE")


def rss_kb() -> int:
    """Current resident set size in KiB (Linux), else the peak."""
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * PAGE // 1024
    except OSError:
        return peak_rss_kb()


def peak_rss_kb() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss


async def call(result: Any) -> Any:
    """Await what an async client returns; take a sync client's result as is."""
    if inspect.isawaitable(result):
        return await result
    return result


async def consume(
    client: BenchClient, reply: Reply, probe: Probe = NO_PROBE, slot: int = 0
) -> tuple[int, int]:
    return await call(client.consume(reply, probe, slot))  # type: ignore[no-any-return]


class Clock:
    def __init__(self) -> None:
        self.cpu = time.process_time()
        self.wall = time.perf_counter()

    def stop(self) -> tuple[float, float]:
        return time.process_time() - self.cpu, time.perf_counter() - self.wall


async def measure(client: BenchClient, sc: Scenario, profiler: Any) -> dict[str, Any]:
    """Run the scenario; return the measured fields."""
    out: dict[str, Any] = {}
    reply = sc.reply
    slots = sc.streams if sc.kind == "concurrent" else 1
    client.shared_state = sc.shared_state
    client.seed_history = sc.seed_history
    await call(client.open(slots))
    try:
        # Warm-up: the same pattern, so pools, caches and lazy imports are in place.
        for _ in range(sc.warmup_count):
            if sc.kind == "concurrent":
                await asyncio.gather(*(consume(client, sc.warmup, slot=i) for i in range(slots)))
            else:
                await consume(client, sc.warmup)
        gc.collect()
        rss_before = rss_kb()
        events_seen = chars = 0
        first: list[float] = []
        probe = NO_PROBE
        if profiler is not None:
            profiler.enable()
        clock = Clock()
        if sc.kind == "concurrent":
            for _ in range(sc.repeat):
                results = await asyncio.gather(
                    *(consume(client, reply, slot=i) for i in range(slots))
                )
                events_seen += sum(e for e, _ in results)
                chars += sum(c for _, c in results)
            requests = slots * sc.repeat
        else:
            requests = sc.repeat
            for i in range(sc.repeat):
                if sc.kind == "ttfe":
                    probe = Probe((1,))
                elif sc.flat_window and i == 0:
                    # Last text event is events - 1 (the final "stop" event may carry no text).
                    w, last = sc.flat_window, reply.events - 1
                    probe = Probe((1, 1 + w, last - w, last))
                else:
                    probe = NO_PROBE
                started = time.perf_counter()
                e, c = await consume(client, reply, probe)
                events_seen += e
                chars += c
                if sc.kind == "ttfe":
                    first.append(probe.marks[0][2] - started)
                elif probe.marks and len(probe.marks) == 4:
                    (_, c0, _), (_, c1, _), (_, c2, _), (_, c3, _) = probe.marks
                    out["flat_first_us"] = (c1 - c0) / sc.flat_window * 1e6
                    out["flat_last_us"] = (c3 - c2) / sc.flat_window * 1e6
                    out["flat_ratio"] = (c3 - c2) / (c1 - c0) if c1 > c0 else None
        cpu_s, wall_s = clock.stop()
        if profiler is not None:
            profiler.disable()
        gc.collect()
        rss_after = rss_kb()
    finally:
        await call(client.close())
    events = reply.events * requests
    out.update(
        events=events,
        requests=requests,
        events_seen=events_seen,
        chars=chars,
        cpu_s=cpu_s,
        wall_s=wall_s,
        cpu_util=cpu_s / wall_s if wall_s else None,
        cpu_us_per_event=cpu_s / events * 1e6,
        cpu_us_per_request=cpu_s / requests * 1e6,
        rss_before_kb=rss_before,
        rss_after_kb=rss_after,
        rss_growth_kb=rss_after - rss_before,
        peak_rss_kb=peak_rss_kb(),
    )
    if reply.incremental:
        out["chars_ok"] = chars == reply.expected_chars() * requests
    if first:
        out["ttfe_ms"] = statistics.median(first) * 1e3
        out["ttfe_min_ms"] = min(first) * 1e3
    return out


def run(client_name: str, scenario_name: str, base_url: str, quick: bool, profile: str) -> dict:
    sc = scenarios(quick)[scenario_name]
    result: dict[str, Any] = {
        "client": client_name,
        "scenario": scenario_name,
        "quick": quick,
        "python": platform.python_version(),
    }
    try:
        module = importlib.import_module(f"clients.{CLIENTS[client_name][0]}")
    except ImportError as exc:
        return {**result, "status": "unavailable", "error": f"{type(exc).__name__}: {exc}"}
    client: BenchClient = module.Client(base_url)
    result["version"] = client.version()
    if client.sync and sc.kind == "concurrent":
        return {**result, "status": "n/a", "error": "synchronous client"}
    profiler = None
    if profile:
        import cProfile

        profiler = cProfile.Profile()
    try:
        result.update(asyncio.run(measure(client, sc, profiler)))
        result["status"] = "ok"
    except Exception as exc:
        result["status"] = "fails"
        result["expected_failure"] = scenario_name in client.expected_failures
        result["error"] = " ".join(f"{type(exc).__name__}: {exc}".split())[:500]
        if not result["expected_failure"]:
            traceback.print_exc(file=sys.stderr)
    if profiler is not None:
        profiler.dump_stats(profile)
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Run one client through one scenario.")
    parser.add_argument("--client", required=True, choices=list(CLIENTS))
    parser.add_argument("--scenario", required=True, choices=list(scenarios()))
    parser.add_argument("--base-url", required=True, help="e.g. http://127.0.0.1:PORT/api/v1")
    parser.add_argument("--quick", action="store_true", help="tiny sizes (harness check)")
    parser.add_argument("--profile", default="", help="write cProfile stats of the scenario here")
    args = parser.parse_args(argv)
    result = run(args.client, args.scenario, args.base_url, args.quick, args.profile)
    sys.stdout.write(json.dumps(result) + "\n")
    sys.stdout.flush()
    return 0


if __name__ == "__main__":
    sys.exit(main())
