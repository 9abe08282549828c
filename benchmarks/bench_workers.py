"""Worker processes sharing a RedisStore against one process with a MemoryStore, whole
turns through the simulator.

    .venv/bin/python benchmarks/bench_workers.py            # 3 rounds, about a minute and a half
    .venv/bin/python benchmarks/bench_workers.py --quick    # 1 small round, under 20 s

Standalone: it needs tyqw, redis-py and a ``redis-server`` on PATH (started on a free
port of 127.0.0.1 and stopped, as ``bench_stores.py`` does). The simulator runs in a
process of its own; each worker is this script with ``--worker``: a bot that keeps one
Session per end user, with one aiohttp session for them all, and serves the turns a
driver sends it over a pipe. The driver (this process) runs the end users: each sends
its turns one after another, each to a random worker of the configuration.

Measured in the same run, in interleaved rounds (figures are ratios to the peer):

- Throughput: 600 users at once (3 workers x 200) with a RedisStore, against the same
  load on one worker with a MemoryStore (the peer), and on one worker with a RedisStore
  (to tell the store's cost from the spread over processes). Turns/s, the workers' CPU
  per turn and redis-server's CPU per turn.
- Redis requests per turn (``total_commands_processed``; expected 2: one to lock and
  read, one to write and release).
- Added latency: one user's sequential turns on one worker, RedisStore against
  MemoryStore, median of each.

Timings are reported, never asserted; the exit status is 1 only if a turn failed.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import os
import random
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve()
WORKERS = 3
USERS_PER_WORKER = 200
SIM_CHUNK = 16  # characters per event: a short reply of a few events, so the store shows


# -- the processes the driver talks to ----------------------------------------------------


async def run_simulator() -> None:
    """``--simulator``: print the base URL, serve until stdin closes."""
    from tyqw.testing import BailianSimulator

    async with BailianSimulator(chunk_size=SIM_CHUNK) as sim:
        print(json.dumps({"base_url": sim.base_url, "api_key": sim.api_key, "app_id": sim.app_id}))
        sys.stdout.flush()
        await asyncio.get_running_loop().run_in_executor(None, sys.stdin.read)


async def run_worker(where: str, base_url: str, api_key: str, app_id: str) -> None:
    """``--worker``: a bot over ``where`` (``memory`` or a Redis URL); one JSON line per
    turn in (``{"id", "user", "prompt"}``), one out (``{"id"}`` or ``{"id", "error"}``).
    ``{"id", "sent": true}`` asks how many requests it has sent to Redis so far."""
    import aiohttp
    import redis.asyncio as aioredis

    from tyqw import Session, TyqwError
    from tyqw.stores import MemoryStore, RedisStore, Store

    class Counting(aioredis.Connection):
        """Counts the requests sent to Redis (a script call is one)."""

        sent = 0

        async def send_packed_command(self, command: Any, check_health: bool = True) -> None:
            Counting.sent += 1
            await super().send_packed_command(command, check_health)

    store: Store = (
        MemoryStore()
        if where == "memory"
        else RedisStore.from_url(where, connection_class=Counting)
    )
    sessions: dict[str, Session] = {}
    loop = asyncio.get_running_loop()
    stdin = asyncio.StreamReader(limit=1 << 20)
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(stdin), sys.stdin)
    out = sys.stdout
    running: set[asyncio.Task[None]] = set()

    async def turn(http: aiohttp.ClientSession, request: dict[str, Any]) -> None:
        if request.get("sent"):
            out.write(json.dumps({"id": request["id"], "sent": Counting.sent}) + "\n")
            out.flush()
            return
        user = request["user"]
        session = sessions.get(user)
        if session is None:
            session = sessions[user] = Session(
                app_id, api_key=api_key, base_url=base_url, name=user, store=store,
                http_session=http,
            )  # fmt: skip
        answer: dict[str, Any] = {"id": request["id"]}
        try:
            await session.send(request["prompt"])
        except TyqwError as exc:
            answer["error"] = f"{type(exc).__name__}: {exc}"
        out.write(json.dumps(answer) + "\n")
        out.flush()

    connector = aiohttp.TCPConnector(limit=0)  # no cap: only the store and processes differ
    async with aiohttp.ClientSession(connector=connector) as http:
        out.write('{"ready": true}\n')
        out.flush()
        while line := await stdin.readline():
            task = asyncio.create_task(turn(http, json.loads(line)))
            running.add(task)
            task.add_done_callback(running.discard)
        await asyncio.gather(*running)
        for session in sessions.values():
            await session.aclose()
    await store.aclose()


class Worker:
    """A ``--worker`` process seen from the driver."""

    def __init__(self, process: asyncio.subprocess.Process) -> None:
        self.process = process
        self.pending: dict[int, asyncio.Future[dict[str, Any]]] = {}
        self.ids = itertools.count()
        self.reader: asyncio.Task[None] | None = None

    @classmethod
    async def start(cls, where: str, sim: dict[str, str]) -> Worker:
        process = await asyncio.create_subprocess_exec(
            sys.executable, str(HERE), "--worker", where, sim["base_url"], sim["api_key"],
            sim["app_id"], stdin=subprocess.PIPE, stdout=subprocess.PIPE, limit=1 << 20,
        )  # fmt: skip
        worker = cls(process)
        assert process.stdout is not None
        assert json.loads(await asyncio.wait_for(process.stdout.readline(), 60)) == {"ready": True}
        worker.reader = asyncio.create_task(worker._read())
        return worker

    async def _read(self) -> None:
        assert self.process.stdout is not None
        while line := await self.process.stdout.readline():
            answer = json.loads(line)
            self.pending.pop(answer["id"]).set_result(answer)
        for future in self.pending.values():
            future.set_result({"error": "the worker process ended"})

    def send(self, user: str, prompt: str) -> asyncio.Future[dict[str, Any]]:
        return self._ask({"user": user, "prompt": prompt})

    async def sent(self) -> int:
        """How many requests this worker has sent to Redis."""
        return int((await self._ask({"sent": True}))["sent"])

    def _ask(self, request: dict[str, Any]) -> asyncio.Future[dict[str, Any]]:
        assert self.process.stdin is not None
        request_id = next(self.ids)
        future = self.pending[request_id] = asyncio.get_running_loop().create_future()
        self.process.stdin.write(json.dumps({"id": request_id, **request}).encode() + b"\n")
        return future

    def cpu(self) -> float:
        return process_cpu(self.process.pid)

    async def close(self) -> None:
        assert self.process.stdin is not None
        self.process.stdin.close()
        try:
            await asyncio.wait_for(self.process.wait(), 60)
        finally:
            if self.process.returncode is None:
                self.process.kill()
                await self.process.wait()
        if self.reader is not None:
            await self.reader


def process_cpu(pid: int) -> float:
    """CPU seconds a process has used (user + system), from /proc."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


# -- the load -----------------------------------------------------------------------------


class Failures(Exception):
    pass


async def load(workers: list[Worker], users: int, turns: int, tag: str) -> float:
    """``users`` end users at once, ``turns`` each, every turn to a random worker; the
    wall time in seconds."""
    rng = random.Random(tag)
    errors: list[str] = []

    async def user(u: int) -> None:
        for t in range(turns):
            answer = await rng.choice(workers).send(f"{tag}-user-{u}", f"turn {t}")
            if "error" in answer:
                errors.append(answer["error"])

    start = time.perf_counter()
    await asyncio.gather(*(user(u) for u in range(users)))
    wall = time.perf_counter() - start
    if errors:
        raise Failures(f"{len(errors)} turns failed, the first: {errors[0]}")
    return wall


async def latencies(worker: Worker, turns: int, tag: str) -> list[float]:
    """One user's sequential turns: the time of each, in ms."""
    times = []
    for t in range(turns):
        start = time.perf_counter()
        answer = await worker.send(f"{tag}-latency", f"turn {t}")
        times.append((time.perf_counter() - start) * 1e3)
        if "error" in answer:
            raise Failures(answer["error"])
    return times


async def bench(
    url: str, redis_pid: int, rounds: int, turns: int, latency_turns: int
) -> list[str]:
    simulator = await asyncio.create_subprocess_exec(
        sys.executable, str(HERE), "--simulator", stdin=subprocess.PIPE, stdout=subprocess.PIPE
    )
    assert simulator.stdout is not None and simulator.stdin is not None
    sim = json.loads(await asyncio.wait_for(simulator.stdout.readline(), 60))
    memory = [await Worker.start("memory", sim)]
    redis_one = [await Worker.start(url, sim)]
    redis_many = [await Worker.start(url, sim) for _ in range(WORKERS)]
    configs = {
        "memory, 1 worker (the peer)": memory,
        "redis, 1 worker": redis_one,
        f"redis, {WORKERS} workers": redis_many,
    }
    users = WORKERS * USERS_PER_WORKER
    rates: dict[str, list[float]] = {label: [] for label in configs}
    worker_cpu: dict[str, list[float]] = {label: [] for label in configs}
    server_cpu: dict[str, list[float]] = {label: [] for label in configs}
    sent: list[float] = []
    added: dict[str, list[float]] = {"memory": [], "redis": []}
    try:
        for workers in configs.values():  # warm-up: connections, scripts, Sessions
            await load(workers, users, 1, "warm")
        order = list(configs)
        for round_ in range(rounds):
            for label in order[round_ % len(order) :] + order[: round_ % len(order)]:
                workers = configs[label]
                cpu_before = [w.cpu() for w in workers]
                redis_before = process_cpu(redis_pid)
                sent_before = sum([await w.sent() for w in workers])
                wall = await load(workers, users, turns, f"r{round_}")
                count = users * turns
                rates[label].append(count / wall)
                used = sum(w.cpu() - b for w, b in zip(workers, cpu_before, strict=True))
                worker_cpu[label].append(used / count * 1e6)
                server_cpu[label].append((process_cpu(redis_pid) - redis_before) / count * 1e6)
                if "redis" in label:
                    sent.append((sum([await w.sent() for w in workers]) - sent_before) / count)
            for kind, workers in (("memory", memory), ("redis", redis_one)):
                added[kind].append(
                    statistics.median(await latencies(workers[0], latency_turns, f"r{round_}"))
                )
    finally:
        for worker in [*memory, *redis_one, *redis_many]:
            await worker.close()
        simulator.stdin.close()
        await asyncio.wait_for(simulator.wait(), 60)

    peer = statistics.median(rates["memory, 1 worker (the peer)"])
    lines = [
        f"Whole turns through the simulator (a reply of ~{SIM_CHUNK}-character events), "
        f"{users} end users at once, {turns} turns each, every turn to a random worker; "
        f"median of {rounds} interleaved round(s), {os.cpu_count()} cores",
        "",
        "| configuration | turns/s | vs the peer | workers' CPU per turn "
        "| redis-server CPU per turn |",
        "|---|--:|--:|--:|--:|",
    ]
    for label in configs:
        rate = statistics.median(rates[label])
        lines.append(
            f"| {label} | {rate:,.0f} | {rate / peer:.2f}x | "
            f"{statistics.median(worker_cpu[label]):,.0f} µs | "
            f"{statistics.median(server_cpu[label]):,.0f} µs |"
        )
    memory_ms, redis_ms = statistics.median(added["memory"]), statistics.median(added["redis"])
    lines += [
        "",
        f"Redis requests per turn, counted on the workers' connections: "
        f"{statistics.median(sent):.2f} (expected 2: lock + read, write + release)",
        f"Latency of one user's sequential turns ({latency_turns} per round), median: "
        f"MemoryStore {memory_ms:.2f} ms, RedisStore {redis_ms:.2f} ms; added by Redis "
        f"{redis_ms - memory_ms:+.2f} ms per turn ({redis_ms / memory_ms:.2f}x)",
    ]
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="1 small round: proves the harness")
    parser.add_argument("--worker", nargs=4, metavar=("STORE", "BASE_URL", "KEY", "APP"))
    parser.add_argument("--simulator", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.simulator:
        asyncio.run(run_simulator())
        return 0
    if args.worker:
        asyncio.run(run_worker(*args.worker))
        return 0
    try:
        import redis  # noqa: F401
    except ImportError:
        print("skipped: RedisStore needs redis-py (pip install 'tyqw[redis]')")
        return 0
    if shutil.which("redis-server") is None:
        print("skipped: no redis-server on PATH (apt-get install redis-server)")
        return 0
    sys.path.insert(0, str(HERE.parent))
    from bench_stores import redis_server

    rounds, turns, latency_turns = (1, 2, 100) if args.quick else (3, 10, 300)
    with redis_server() as (url, pid):
        try:
            lines = asyncio.run(bench(url, pid, rounds, turns, latency_turns))
        except Failures as exc:
            print(f"a turn failed: {exc}")
            return 1
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
