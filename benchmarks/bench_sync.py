"""SyncSession against the async Session: client CPU per event and per turn, one run.

Starts ``benchmarks/server.py`` (the raw local Bailian server, in its own process, so its
CPU is not counted) and measures, for each scenario, the async ``Session`` and the
``SyncSession`` one after the other, alternating which goes first, over repetitions:

``stream``  one reply of N incremental events, one write per event: ``async for`` over
            ``Session.stream()`` vs ``for`` over ``SyncSession.stream()``   (µs/event)
``burst``   the same reply written in one go, so every read is a full buffer  (µs/event)
``send``    the same reply through ``send()`` with one ``message`` handler    (µs/event)
``turns``   sequential 20-event replies on one session: the cost of a turn   (µs/turn)

CPU is ``time.process_time()`` (every thread of this process, the loop thread included)
around the scenario only, after a warm-up turn. The report gives medians and, in
brackets, the median of the per-repetition ratios sync / async; the target is a
``stream`` ratio of at most 1.2.

Run from the repository root, with tyqw installed (``pip install -e .``)::

    python benchmarks/bench_sync.py            # 5 repetitions, about a minute
    python benchmarks/bench_sync.py --quick    # small sizes, 1 repetition, a few seconds
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from children import start_server, stop  # beside this script, which runs from here

from tyqw import Message, Session, SyncSession

HERE = Path(__file__).resolve().parent
APP_ID = "0123456789abcdef0123456789abcdef"
API_KEY = "sk-bench-0000"
PROMPT = "你好"
TARGET = 1.2
SCENARIOS = ("stream", "burst", "send", "turns")


def parameters(events: int, burst: bool = False) -> dict[str, Any]:
    """What benchmarks/server.py reads to shape a reply (see scenarios.py)."""
    params: dict[str, Any] = {"bench_events": events, "bench_mode": "inc"}
    if burst:
        params["bench_burst"] = True
    return params


def shape(scenario: str, quick: bool) -> tuple[int, int, dict[str, Any]]:
    """(turns, events per turn, request parameters) of a scenario."""
    events = 2_000 if quick else 20_000
    if scenario == "turns":
        return (50 if quick else 500), 20, parameters(20)
    return 1, events, parameters(events, burst=scenario == "burst")


# -- the two clients -----------------------------------------------------------------


async def run_async(base_url: str, state_dir: str, scenario: str, quick: bool) -> float:
    """CPU seconds of the scenario with the async Session."""
    turns, events, params = shape(scenario, quick)
    chars = 0

    def count(message: Message) -> None:
        nonlocal chars
        chars += len(message.delta)

    async with Session(APP_ID, api_key=API_KEY, base_url=base_url, state_dir=state_dir) as s:
        if scenario == "send":
            s.on("message", count)
        await s.send(PROMPT, parameters=parameters(20))  # warm: connection, code paths
        chars = 0
        gc.collect()
        start = time.process_time()
        for _ in range(turns):
            if scenario == "send":
                await s.send(PROMPT, parameters=params)
            else:
                async for message in s.stream(PROMPT, parameters=params):
                    chars += len(message.delta)
        cpu = time.process_time() - start
    check(chars, turns, events)
    return cpu


def run_sync(base_url: str, state_dir: str, scenario: str, quick: bool) -> float:
    """CPU seconds of the scenario with SyncSession."""
    turns, events, params = shape(scenario, quick)
    chars = 0

    def count(message: Message) -> None:
        nonlocal chars
        chars += len(message.delta)

    with SyncSession(APP_ID, api_key=API_KEY, base_url=base_url, state_dir=state_dir) as s:
        if scenario == "send":
            s.on("message", count)
        s.send(PROMPT, parameters=parameters(20))
        chars = 0
        gc.collect()
        start = time.process_time()
        for _ in range(turns):
            if scenario == "send":
                s.send(PROMPT, parameters=params)
            else:
                for message in s.stream(PROMPT, parameters=params):
                    chars += len(message.delta)
        cpu = time.process_time() - start
    check(chars, turns, events)
    return cpu


def check(chars: int, turns: int, events: int) -> None:
    """Every piece arrived: the server's pieces are 4 characters, one per event but the last."""
    expected = turns * (events - 1) * 4
    if chars != expected:
        raise SystemExit(f"received {chars} characters, expected {expected}")


# -- the run -------------------------------------------------------------------------


def measure(base_url: str, scenarios: tuple[str, ...], reps: int, quick: bool) -> dict[str, Any]:
    clients: dict[str, Callable[[str, str, str, bool], float]] = {
        "async": lambda *a: asyncio.run(run_async(*a)),
        "sync": run_sync,
    }
    cpu: dict[str, dict[str, list[float]]] = {s: {"async": [], "sync": []} for s in scenarios}
    with tempfile.TemporaryDirectory() as state_dir:
        for rep in range(reps):
            order = ("async", "sync") if rep % 2 == 0 else ("sync", "async")
            for scenario in scenarios:
                for name in order:
                    cpu[scenario][name].append(clients[name](base_url, state_dir, scenario, quick))
    results: dict[str, Any] = {}
    for scenario in scenarios:
        turns, events, _ = shape(scenario, quick)
        per = turns if scenario == "turns" else turns * events
        a = [c / per * 1e6 for c in cpu[scenario]["async"]]
        s = [c / per * 1e6 for c in cpu[scenario]["sync"]]
        results[scenario] = {
            "unit": "us/turn" if scenario == "turns" else "us/event",
            "async": statistics.median(a),
            "sync": statistics.median(s),
            "ratio": statistics.median(y / x for x, y in zip(a, s, strict=True)),
            "async_runs": a,
            "sync_runs": s,
        }
    return results


def report(results: dict[str, Any], reps: int) -> str:
    lines = [
        f"SyncSession vs Session, client CPU, median of {reps} (ratio sync/async in brackets)",
        "",
        "| scenario | unit | async Session | SyncSession |",
        "|---|---|--:|--:|",
    ]
    for scenario, r in results.items():
        sync = f"{r['sync']:.2f} ({r['ratio']:.2f}x)"
        lines.append(f"| {scenario} | {r['unit']} | {r['async']:.2f} | {sync} |")
    if "stream" in results:
        ratio = results["stream"]["ratio"]
        verdict = "met" if ratio <= TARGET else "MISSED"
        lines += ["", f"target: stream ratio <= {TARGET}: {ratio:.2f}x, {verdict}"]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small sizes, 1 repetition")
    parser.add_argument("--reps", type=int, help="repetitions (default 5; quick 1)")
    parser.add_argument("--scenarios", default=",".join(SCENARIOS), help="comma-separated")
    parser.add_argument("--json", type=Path, help="also write the raw results here")
    args = parser.parse_args(argv)
    reps = args.reps or (1 if args.quick else 5)
    scenarios = tuple(s for s in args.scenarios.split(",") if s)
    unknown = set(scenarios) - set(SCENARIOS)
    if unknown:
        parser.error(f"unknown scenarios: {', '.join(sorted(unknown))}")
    server, base_url = start_server()
    try:
        results = measure(base_url, scenarios, reps, args.quick)
    finally:
        stop(server)
    print(report(results, reps))
    if args.json:
        args.json.write_text(json.dumps({"reps": reps, "quick": args.quick, **results}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
