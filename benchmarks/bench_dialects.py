"""What the relay's chat dialects cost next to its native endpoint, measured in one run.

    .venv/bin/python benchmarks/bench_dialects.py           # about a minute on 2 cores
    .venv/bin/python benchmarks/bench_dialects.py --quick   # seconds: the harness works
    .venv/bin/python benchmarks/bench_dialects.py --json results.json

The processes of bench_relay.py: its fast upstream (precomputed Bailian frames) and its
relay (``create_app()`` as ``tyqw serve`` runs it), which reports its own CPU time. The
client here reads each answer's bytes and nothing more, through the three endpoints in
turn: the native ``/api/v1/apps/{id}/completion`` (SSE), OpenAI's
``/v1/chat/completions`` (``"stream": true``) and the AI SDK's ``/api/chat``. Reported,
as medians over interleaved repetitions: the relay process's CPU per event through each,
and its ratio to the native endpoint's (the promise: within 10%).

Then, in this process: finding the conversation of a request with 200 earlier messages
(``_dialect.plan()``: the digest of the history and one read of a ``MemoryStore``), per
request (the promise: under a millisecond).
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import os
import statistics
import sys
import time
import uuid
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import bench_relay  # noqa: E402  (beside this file: its upstream and relay processes)
from children import stop  # noqa: E402  (beside this file)

FULL = {"long": (1, 20_000), "concurrent": (100, 200), "match": (200, 2_000)}
QUICK = {"long": (1, 2_000), "concurrent": (20, 50), "match": (200, 100)}
DIALECTS = ("native", "openai", "ui")
_tokens = itertools.count()


def request_for(
    dialect: str, root: str, prompt: str
) -> tuple[str, dict[str, Any], dict[str, str]]:
    """URL, body and headers of one streamed turn through ``dialect``."""
    headers = {"Authorization": f"Bearer user{next(_tokens)}"}
    if dialect == "native":
        body = {"input": {"prompt": prompt}, "parameters": {"incremental_output": True}}
        url = f"{root}/api/v1/apps/{bench_relay.APP_ID}/completion"
        return url, body, {**headers, "X-DashScope-SSE": "enable"}
    if dialect == "openai":
        body = {
            "model": bench_relay.APP_ID,
            "messages": [{"role": "user", "content": prompt}],
            "stream": True,
        }
        return f"{root}/v1/chat/completions", body, headers
    message = {"id": "u0", "role": "user", "parts": [{"type": "text", "text": prompt}]}
    body = {"id": uuid.uuid4().hex, "messages": [message], "trigger": "submit-message"}
    return f"{root}/api/chat", body, headers


async def measure(dialect: str, root: str, cpu_url: str, streams: int, events: int) -> float:
    """The relay's CPU per event (µs) for ``streams`` concurrent turns of ``events``."""
    import aiohttp

    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as http:

        async def turn(n: int) -> None:
            url, body, headers = request_for(dialect, root, f"events={n};pace_ms=0")
            async with http.post(url, json=body, headers=headers) as response:
                assert response.status == 200, await response.text()
                await response.read()

        async def cpu() -> float:
            async with http.get(cpu_url) as response:
                return float((await response.json())["cpu"])

        await turn(50)  # warm: the user's Session, the routes, the connection
        before = await cpu()
        await asyncio.gather(*(turn(events) for _ in range(streams)))
        return (await cpu() - before) / (streams * events) * 1e6


async def matching(messages: int, repeats: int) -> dict[str, float]:
    """Microseconds to find the conversation of a request with ``messages`` earlier
    messages, the pointer being there (found) and not (a new conversation)."""
    from tyqw.relay._dialect import ChatTurn, advance, plan
    from tyqw.stores import MemoryStore

    words = "The quick brown fox jumps over the lazy dog while the relay keeps count. "
    history = tuple(
        ("user" if i % 2 == 0 else "assistant", f"{i}: {words * 4}") for i in range(messages)
    )
    store = MemoryStore()
    earlier = ChatTurn("app", "alice", history[:-2], history[-2][1])
    how = await plan(store, earlier)
    await advance(store, earlier, how, "s" * 32, history[-1][1])
    found = ChatTurn("app", "alice", history, "and now?")
    unknown = ChatTurn("app", "alice", (*history[:-1], ("assistant", "edited")), "and now?")
    assert (await plan(store, found)).session_id == "s" * 32
    assert (await plan(store, unknown)).session_id is None
    result = {}
    for label, turn in (("found", found), ("not found", unknown)):
        times = []
        for _ in range(repeats):
            started = time.perf_counter()
            await plan(store, turn)
            times.append((time.perf_counter() - started) * 1e6)
        result[label] = statistics.median(times)
    await store.aclose()
    return result


async def drive(args: argparse.Namespace) -> dict[str, Any]:
    sizes = QUICK if args.quick else FULL
    reps = args.reps or (1 if args.quick else 5)
    upstream, up_port = bench_relay.start("upstream")
    relay, relay_port = bench_relay.start("relay", f"http://127.0.0.1:{up_port}/api/v1")
    root = f"http://127.0.0.1:{relay_port}/relay"
    cpu_url = f"http://127.0.0.1:{relay_port}/__cpu"
    results: dict[str, Any] = {}
    try:
        for scenario in ("long", "concurrent"):
            streams, events = sizes[scenario]
            runs: dict[str, list[float]] = {dialect: [] for dialect in DIALECTS}
            for rep in range(reps):
                order = DIALECTS if rep % 2 == 0 else DIALECTS[::-1]
                for dialect in order:
                    runs[dialect].append(await measure(dialect, root, cpu_url, streams, events))
            results[scenario] = {"size": [streams, events], **runs}
    finally:
        stop(relay, upstream, timeout=10)
    messages, repeats = sizes["match"]
    results["match"] = {"messages": messages, **await matching(messages, repeats)}
    return results


def report(results: dict[str, Any]) -> str:
    lines = [
        "| scenario | native µs/event | OpenAI µs/event | UI stream µs/event "
        "| OpenAI / native | UI / native |",
        "|---|--:|--:|--:|--:|--:|",
    ]
    for scenario, label in (
        ("long", "{0[0]} stream x {0[1]:,} events"),
        ("concurrent", "{0[0]} concurrent streams x {0[1]} events"),
    ):
        runs = results[scenario]
        med = {d: statistics.median(runs[d]) for d in DIALECTS}
        ratio = {
            d: statistics.median(a / b for a, b in zip(runs[d], runs["native"], strict=True))
            for d in ("openai", "ui")
        }
        lines.append(
            f"| {label.format(runs['size'])} | {med['native']:.1f} | {med['openai']:.1f} "
            f"| {med['ui']:.1f} | {ratio['openai']:.2f}x | {ratio['ui']:.2f}x |"
        )
    match = results["match"]
    lines += [
        "",
        f"Finding the conversation of a request with {match['messages']} earlier messages: "
        f"{match['found']:.0f} µs when it is stored, {match['not found']:.0f} µs when not.",
    ]
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="tiny sizes, one repetition")
    parser.add_argument("--reps", type=int, default=0, help="repetitions (default 5; quick 1)")
    parser.add_argument("--json", type=Path, help="also write the raw results here")
    args = parser.parse_args()
    results = asyncio.run(drive(args))
    print(
        f"tyqw relay dialects benchmark: Python {sys.version.split()[0]}, {os.cpu_count()} cores"
    )
    print(report(results))
    if args.json:
        args.json.write_text(json.dumps(results, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
