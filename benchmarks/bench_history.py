"""What keeping a transcript costs: a whole turn with it against without it, and an
append to a long transcript against an append to a short one. Ratios in one run.

    .venv/bin/python benchmarks/bench_history.py            # about a minute
    .venv/bin/python benchmarks/bench_history.py --quick    # small sizes: proves the harness works

Standalone: it needs tyqw, ``benchmarks/server.py`` (started in its own process, so its
CPU is not counted) and, for the Redis part, redis-py and a ``redis-server`` on PATH,
which it starts on a free port of 127.0.0.1 and stops. Measured in interleaved rounds,
medians reported:

- **turn**: CPU of this process per ``Session.send()`` of a 20-event reply, the
  transcript kept (``history=True``, 200 exchanges, at its cap: the rewrite that caps a
  ``FileStore`` transcript is included) against ``history=False``, over ``FileStore``
  and ``RedisStore`` (target: ratio <= 1.05). Both sides run with ``expiry=False``:
  the benchmark server answers every turn with the same id, so the round limit would
  make every 30th turn resend the transcript, which a real conversation does once in 50
  rounds or after an idle hour; that is the price of a different feature.
- **append**: wall time of ``append_transcript()`` on a transcript of 10,000
  exchanges against one of 1 (reset each round), for ``FileStore`` and ``RedisStore``
  (target: ratio <= 1.5, as ``bench_stores.py`` holds a store's other operations).

Exit status 1 when a target is missed (never with ``--quick``: sizes too small to mean
anything); timings are asserted nowhere else.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import gc
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from tyqw import Exchange, Reply, Session
from tyqw.stores import FileStore, Store

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from bench_stores import redis_server  # noqa: E402  (a sibling script, not a package)
from children import start_server, stop  # noqa: E402

APP_ID = "0123456789abcdef0123456789abcdef"
API_KEY = "sk-bench-0000"
PROMPT = "你好，请介绍一下杭州的西湖"
PARAMETERS = {"bench_events": 20, "bench_mode": "inc"}
TURN_TARGET = 1.05
APPEND_TARGET = 1.5


# -- a turn with and without the transcript ----------------------------------------------


async def turn_cpu(session: Session, turns: int) -> float:
    """CPU µs per turn of ``turns`` sends on ``session``."""
    gc.collect()
    start = time.process_time()
    for _ in range(turns):
        await session.send(PROMPT, parameters=PARAMETERS)
    return (time.process_time() - start) / turns * 1e6


async def bench_turns(
    base_url: str, stores: dict[str, Store], turns: int, rounds: int
) -> tuple[list[str], bool]:
    modes = {"kept": True, "off": False}
    cpu: dict[str, dict[str, list[float]]] = {s: {m: [] for m in modes} for s in stores}
    sessions = {
        (store_name, mode): Session(
            APP_ID,
            api_key=API_KEY,
            base_url=base_url,
            store=store,
            name=f"bench-{mode}",
            history=history,
            expiry=False,
        )
        for store_name, store in stores.items()
        for mode, history in modes.items()
    }
    try:
        for session in sessions.values():  # warm: connections, code paths, a full transcript
            for _ in range(210):
                await session.send(PROMPT, parameters=PARAMETERS)
        for rep in range(rounds):
            order = ("kept", "off") if rep % 2 == 0 else ("off", "kept")
            for store_name in stores:
                for mode in order:
                    cpu[store_name][mode].append(await turn_cpu(sessions[store_name, mode], turns))
    finally:
        for session in sessions.values():
            await session.aclose()
    lines = [
        f"A turn (20 events) with the transcript kept against history=False: CPU of this "
        f"process (median of {rounds} rounds x {turns:,} turns)",
        "",
        "| store | history=False | transcript kept | ratio |",
        "|---|---|---|---|",
    ]
    ok = True
    for store_name in stores:
        off = statistics.median(cpu[store_name]["off"])
        kept = statistics.median(cpu[store_name]["kept"])
        ratios = [
            k / o for k, o in zip(cpu[store_name]["kept"], cpu[store_name]["off"], strict=True)
        ]
        ratio = statistics.median(ratios)  # paired within a round: a noisy minute hurts both
        good = ratio <= TURN_TARGET
        ok &= good
        mark = "ok" if good else f"MISSED (target <= {TURN_TARGET})"
        lines.append(f"| {store_name} | {off:,.0f} µs | {kept:,.0f} µs | {ratio:.3f} {mark} |")
    return lines, ok


# -- an append against the transcript's length -------------------------------------------


def entry() -> dict[str, Any]:
    """One exchange's JSON form, as a 20-event turn leaves it."""
    now = dt.datetime.now(dt.timezone.utc)
    reply = Reply(
        text="今天的天气很好，适合出去散步。" * 5,
        session_id="7e570000000040008000000000000001",
        request_id="1d5c1b7e-3c4f-4a59-9f0e-8a3e1c2b4d5f",
        finish_reason="stop",
        usage={"models": [{"model_id": "qwen-plus", "input_tokens": 12, "output_tokens": 80}]},
    )
    return Exchange(PROMPT, reply, now, now).to_dict()


async def append_wall(store: Store, name: str, calls: int, keep: int) -> float:
    """Wall µs per ``append_transcript()``."""
    data = entry()
    append = store.append_transcript  # type: ignore[attr-defined]
    start = time.perf_counter()
    for _ in range(calls):
        await append(APP_ID, name, data, keep)
    return (time.perf_counter() - start) / calls * 1e6


async def bench_appends(
    stores: dict[str, Store], long: int, calls: int, rounds: int
) -> tuple[list[str], bool]:
    keep = 10 * (long + calls * rounds)  # never capped here: only the length differs
    data = entry()
    walls: dict[str, dict[str, list[float]]] = {s: {"1": [], "long": []} for s in stores}
    for store_name, store in stores.items():
        print(f"filling a {store_name} transcript with {long:,} exchanges ...", flush=True)
        for _ in range(long):
            await store.append_transcript(APP_ID, "long", data, keep)  # type: ignore[attr-defined]
        await append_wall(store, "warm", calls, keep)
        for _ in range(rounds):
            await store.delete_transcript(APP_ID, "short")  # type: ignore[attr-defined]
            await store.append_transcript(APP_ID, "short", data, keep)  # type: ignore[attr-defined]
            walls[store_name]["1"].append(await append_wall(store, "short", calls, keep))
            walls[store_name]["long"].append(await append_wall(store, "long", calls, keep))
    lines = [
        f"An append to a transcript of {long:,} exchanges against one of 1: wall time "
        f"(median of {rounds} rounds x {calls:,} appends)",
        "",
        f"| store | 1 exchange | {long:,} exchanges | ratio |",
        "|---|---|---|---|",
    ]
    ok = True
    for store_name in stores:
        short = statistics.median(walls[store_name]["1"])
        lengthy = statistics.median(walls[store_name]["long"])
        ratio = lengthy / short
        good = ratio <= APPEND_TARGET
        ok &= good
        mark = "ok" if good else f"MISSED (target <= {APPEND_TARGET})"
        lines.append(
            f"| {store_name} | {short:,.1f} µs | {lengthy:,.1f} µs | {ratio:.2f} {mark} |"
        )
    return lines, ok


# -- the run -------------------------------------------------------------------------------


async def run(base_url: str, root: Path, redis_url: str | None, quick: bool) -> bool:
    turns, turn_rounds = (40, 2) if quick else (300, 7)
    long, calls, append_rounds = (500, 100, 1) if quick else (10_000, 500, 5)
    stores: dict[str, Store] = {"FileStore": FileStore(root / "turns")}
    appends: dict[str, Store] = {"FileStore": FileStore(root / "appends")}
    if redis_url is not None:
        from tyqw.stores import RedisStore

        stores["RedisStore"] = RedisStore.from_url(redis_url, key_prefix="turns:")
        appends["RedisStore"] = RedisStore.from_url(redis_url, key_prefix="appends:")
    try:
        lines, turns_ok = await bench_turns(base_url, stores, turns, turn_rounds)
        print("\n".join(lines), "", sep="\n", flush=True)
        lines, appends_ok = await bench_appends(appends, long, calls, append_rounds)
        print("\n".join(lines), flush=True)
    finally:
        for store in (*stores.values(), *appends.values()):
            await store.aclose()
    return turns_ok and appends_ok


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="small sizes, few rounds")
    args = parser.parse_args(argv)
    redis_note = None
    try:
        import redis  # noqa: F401
    except ImportError:
        redis_note = "RedisStore: skipped (pip install 'tyqw[redis]')"
    if redis_note is None and shutil.which("redis-server") is None:
        redis_note = "RedisStore: skipped (no redis-server on PATH)"
    server, base_url = start_server()
    try:
        with tempfile.TemporaryDirectory(prefix="tyqw-bench-history-") as root:
            if redis_note is not None:
                print(redis_note, flush=True)
                ok = asyncio.run(run(base_url, Path(root), None, args.quick))
            else:
                with redis_server() as (redis_url, _):
                    ok = asyncio.run(run(base_url, Path(root), redis_url, args.quick))
    finally:
        stop(server)
    if args.quick:
        return 0  # the sizes are too small for the targets to mean anything
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
