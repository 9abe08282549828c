"""What the conversation stores cost: FileStore against its folder size, RedisStore
against MemoryStore.

    .venv/bin/python benchmarks/bench_stores.py            # 100,000 conversations, ~1 min
    .venv/bin/python benchmarks/bench_stores.py --quick    # 2,000: proves the harness works

Standalone: it needs tyqw and, for the Redis part, redis-py and a ``redis-server`` on
PATH, which it starts on a free port of 127.0.0.1 (no persistence) and stops. Every
figure is a ratio to a peer measured in the same run, in interleaved rounds:

- FileStore save, lookup and turn (lock + read + write + release) in a folder of N
  conversations against a folder of 1 (target: ratio <= 1.5). tyqw 0.1's save, which
  scanned the folder for stale temporaries, is measured the same way for contrast.
- RedisStore per turn (``begin_turn`` + ``end_turn``) against MemoryStore: requests
  sent to Redis (counted on the client's connections), wall time and CPU of this
  process per turn, and redis-server's own CPU per turn (from /proc), sequential and
  with 200 conversations at once.

Exit status 1 when a target is missed; timings are never asserted anywhere else.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from tyqw.stores import FileStore, MemoryStore, Store
from tyqw.stores._base import begin_turn, end_turn

TARGET_RATIO = 1.5


def per_call(fn: Callable[[int], None], calls: int) -> float:
    """Wall time per call of ``fn(i)``, in µs."""
    start = time.perf_counter()
    for i in range(calls):
        fn(i)
    return (time.perf_counter() - start) / calls * 1e6


# -- FileStore against the size of its folder -------------------------------------------


def save_like_0_1(directory: Path, app_id: str, name: str, session_id: str) -> None:
    """tyqw 0.1's save, for contrast: its stale-temporary sweep globbed the whole folder."""
    import hashlib
    import json

    digest = hashlib.sha256(f"{app_id}\0{name}".encode()).hexdigest()[:32]
    fd, tmp = tempfile.mkstemp(dir=directory, prefix=f".{digest}.", suffix=".tmp")
    with os.fdopen(fd, "wb") as f:
        f.write(json.dumps({"app_id": app_id, "name": name, "session_id": session_id}).encode())
    os.replace(tmp, directory / f"{digest}.json")
    cutoff = time.time() - 60
    for leftover in directory.glob(f".{digest}.*.tmp"):
        if leftover.stat().st_mtime < cutoff:
            leftover.unlink()


def fill(store: FileStore, count: int) -> None:
    for i in range(count):
        store.set_now("app", f"user-{i}", {"session_id": f"{i:032x}", "updated_at": 1.0})


async def turn_cost(store: Store, calls: int) -> float:
    start = time.perf_counter()
    for i in range(calls):
        held, _ = await begin_turn(store, "app", "user-0")
        await end_turn(store, held, "app", "user-0", {"session_id": f"{i:032x}"})
    return (time.perf_counter() - start) / calls * 1e6


def bench_file_store(many: int, calls: int, rounds: int, root: Path) -> tuple[list[str], bool]:
    small, big = FileStore(root / "one"), FileStore(root / "many")
    print(f"filling a folder with {many:,} conversations ...", flush=True)
    fill(small, 1)
    fill(big, many)
    results: dict[str, dict[str, list[float]]] = {
        what: {"one": [], "many": []} for what in ("save", "lookup", "turn", "0.1 save")
    }
    for _ in range(rounds):
        for label, store in (("one", small), ("many", big)):
            results["save"][label].append(
                per_call(
                    lambda i, s=store: s.set_now("app", "user-0", {"session_id": f"{i:x}"}), calls
                )
            )
            results["lookup"][label].append(
                per_call(lambda i, s=store: s.get_now("app", "user-0") and None, calls)
            )
            results["turn"][label].append(asyncio.run(turn_cost(store, calls)))
            results["0.1 save"][label].append(
                per_call(
                    lambda i, d=store.directory: save_like_0_1(d, "app", "user-0", f"{i:x}"),
                    calls // 10 or 1,
                )
            )
    lines = [
        f"FileStore, a folder of {many:,} conversations against a folder of 1 "
        f"(median of {rounds} rounds x {calls:,} calls)",
        "",
        "| operation | 1 conversation | " + f"{many:,} conversations | ratio |",
        "|---|---|---|---|",
    ]
    ok = True
    for what, by_size in results.items():
        one, lots = statistics.median(by_size["one"]), statistics.median(by_size["many"])
        ratio = lots / one
        mark = ""
        if what != "0.1 save":
            ok &= ratio <= TARGET_RATIO
            mark = " ok" if ratio <= TARGET_RATIO else f" MISSED (target <= {TARGET_RATIO})"
        lines.append(f"| {what} | {one:,.1f} µs | {lots:,.1f} µs | {ratio:.2f}{mark} |")
    return lines, ok


# -- RedisStore against MemoryStore ------------------------------------------------------


@contextlib.contextmanager
def redis_server() -> Iterator[tuple[str, int]]:
    """A redis-server on a free port, as tests/helpers.py RedisProcess starts one."""
    binary = shutil.which("redis-server")
    if binary is None:
        raise RuntimeError("no redis-server on PATH (apt-get install redis-server)")
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    args = ["--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"]
    process = subprocess.Popen(
        [binary, *args], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    try:
        deadline = time.monotonic() + 10
        while True:
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=1) as sock:
                    sock.sendall(b"PING\r\n")
                    if sock.recv(64).startswith(b"+PONG"):
                        break
            except OSError:
                pass
            if process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("redis-server did not start")
            time.sleep(0.01)
        yield f"redis://127.0.0.1:{port}/0", process.pid
    finally:
        process.kill()
        process.wait(10)


def server_cpu(pid: int) -> float:
    """CPU seconds redis-server has used (user + system), from /proc."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def turns(store: Store, count: int, users: int) -> tuple[float, float]:
    """Wall and CPU seconds for ``count`` turns spread over ``users`` concurrent users."""

    async def user(u: int) -> None:
        for i in range(count // users):
            held, _ = await begin_turn(store, "app", f"user-{u}")
            new = {
                "session_id": f"{u}-{i}",
                "usage": {"m": {"input_tokens": i, "output_tokens": 1}},
            }
            await end_turn(store, held, "app", f"user-{u}", new)

    wall, cpu = time.perf_counter(), time.process_time()
    await asyncio.gather(*(user(u) for u in range(users)))
    return time.perf_counter() - wall, time.process_time() - cpu


async def bench_redis(count: int, rounds: int) -> list[str]:
    import redis.asyncio as aioredis

    from tyqw.stores import RedisStore

    class Counting(aioredis.Connection):
        sent = 0

        async def send_packed_command(self, command: Any, check_health: bool = True) -> None:
            Counting.sent += 1
            await super().send_packed_command(command, check_health)

    lines: list[str] = []
    with redis_server() as (url, pid):
        pool = aioredis.BlockingConnectionPool.from_url(url, connection_class=Counting)
        client = aioredis.Redis(connection_pool=pool)
        redis_store, memory = RedisStore(client), MemoryStore()
        for store in (redis_store, memory):
            await turns(store, 200, 1)  # warm-up: scripts loaded, connections open
        sent = Counting.sent
        await turns(redis_store, 100, 1)
        requests = (Counting.sent - sent) / 100
        lines += [
            f"RedisStore against MemoryStore, loopback, per turn (begin_turn + end_turn; "
            f"median of {rounds} rounds x {count:,} turns)",
            "",
            f"Requests sent to Redis per turn: {requests:g} (one to lock and read, one to "
            "write and release)",
            "",
            "| users at once | MemoryStore wall | RedisStore wall | added wall | "
            "added CPU (this process) | redis-server CPU |",
            "|---|---|---|---|---|---|",
        ]
        for users in (1, 200):
            walls: dict[str, list[float]] = {"memory": [], "redis": []}
            cpus: dict[str, list[float]] = {"memory": [], "redis": []}
            server: list[float] = []
            for _ in range(rounds):
                for label, store in (("memory", memory), ("redis", redis_store)):
                    before = server_cpu(pid)
                    wall, cpu = await turns(store, count, users)
                    walls[label].append(wall / count * 1e6)
                    cpus[label].append(cpu / count * 1e6)
                    if label == "redis":
                        server.append((server_cpu(pid) - before) / count * 1e6)
            mem_wall, red_wall = (
                statistics.median(walls["memory"]),
                statistics.median(walls["redis"]),
            )
            mem_cpu, red_cpu = statistics.median(cpus["memory"]), statistics.median(cpus["redis"])
            lines.append(
                f"| {users} | {mem_wall:,.1f} µs | {red_wall:,.1f} µs | "
                f"+{red_wall - mem_wall:,.1f} µs ({red_wall / mem_wall:.1f}x) | "
                f"+{red_cpu - mem_cpu:,.1f} µs ({red_cpu / mem_cpu:.1f}x) | "
                f"{statistics.median(server):,.1f} µs |"
            )
        await client.aclose()
        await pool.disconnect()
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="small sizes, one round")
    args = parser.parse_args(argv)
    many, calls, rounds, redis_turns = (
        (2_000, 200, 1, 400) if args.quick else (100_000, 2_000, 5, 4_000)
    )
    ok = True
    with tempfile.TemporaryDirectory(prefix="tyqw-bench-stores-") as root:
        lines, ok = bench_file_store(many, calls, rounds, Path(root))
    print("\n".join(lines), flush=True)
    print()
    try:
        import redis  # noqa: F401
    except ImportError:
        print("RedisStore: skipped (pip install 'tyqw[redis]')")
    else:
        if shutil.which("redis-server") is None:
            print("RedisStore: skipped (no redis-server on PATH)")
        else:
            print("\n".join(asyncio.run(bench_redis(redis_turns, rounds))))
    if args.quick:
        return 0  # the sizes are too small for the targets to mean anything
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
