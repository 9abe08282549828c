"""Many worker processes sharing one store, as a bot behind a load balancer runs.

Each worker is ``tests/workers/worker.py``, a separate Python process that keeps one
Session per end user over a shared ``RedisStore`` (a real redis-server) or ``FileStore``
(one folder), and serves turns sent over its stdin. The driver here sends each turn to
a random worker; the simulator, in this process, sees every request. Its reply hook
notes, as each request arrives, whether an earlier request of the same user is still
being answered: that would be two turns of one conversation at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import random
import re
import signal
import subprocess
import sys
import time
from collections import Counter, defaultdict
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from tyqw.stores import FileStore
from tyqw.testing import BailianSimulator, Fault, SimRequest, default_reply

from .cli_helpers import clean_env
from .helpers import RedisProcess, free_port, missing

try:
    from tyqw.stores import RedisStore
except ImportError:  # pragma: no cover - the dev extra installs redis-py
    RedisStore = None  # type: ignore[assignment,misc]

BOUND = 30.0
ROOT = Path(__file__).resolve().parent.parent
WORKER = ROOT / "tests" / "workers" / "worker.py"


class Worker:
    """One worker process: ``send()`` a turn, get its answer line as a future."""

    def __init__(self, process: asyncio.subprocess.Process) -> None:
        self.process = process
        self.pending: dict[int, asyncio.Future[dict[str, Any]]] = {}
        self.ids = itertools.count()
        self.reading: asyncio.Task[None] | None = None

    @classmethod
    async def start(cls, where: str, sim: BailianSimulator, lease: float = 30.0) -> Worker:
        process = await asyncio.create_subprocess_exec(
            sys.executable,
            str(WORKER),
            where,
            sim.base_url,
            sim.api_key,
            sim.app_id,
            str(lease),
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
        )
        return cls(process)

    async def ready(self) -> None:
        assert self.process.stdout is not None
        line = await asyncio.wait_for(self.process.stdout.readline(), BOUND)
        assert json.loads(line) == {"ready": self.process.pid}, line
        self.reading = asyncio.create_task(self._read())

    async def _read(self) -> None:
        assert self.process.stdout is not None
        while line := await self.process.stdout.readline():
            answer = json.loads(line)
            self.pending.pop(answer["id"]).set_result(answer)
        for future in self.pending.values():  # the process is gone
            future.set_result({"error": "WorkerGone", "message": "", "reply": False})
        self.pending.clear()

    def send(self, user: str, prompt: str) -> asyncio.Future[dict[str, Any]]:
        assert self.process.stdin is not None
        request_id = next(self.ids)
        future = self.pending[request_id] = asyncio.get_running_loop().create_future()
        line = {"id": request_id, "user": user, "prompt": prompt}
        self.process.stdin.write(json.dumps(line).encode() + b"\n")
        return future

    async def close(self) -> None:
        """Close stdin: the worker finishes its turns, closes its Sessions and leaves."""
        if self.process.returncode is None:
            assert self.process.stdin is not None
            self.process.stdin.close()
            try:
                await asyncio.wait_for(self.process.wait(), BOUND)
            finally:
                if self.process.returncode is None:
                    self.process.kill()
                    await self.process.wait()
        if self.reading is not None:
            await self.reading


class Arrivals:
    """The simulator's reply hook: when each prompt's request arrived, and any request
    that arrived while an earlier one of the same user was still being answered."""

    def __init__(self, sim: BailianSimulator) -> None:
        self.sim = sim
        self.events: defaultdict[str, asyncio.Event] = defaultdict(asyncio.Event)
        self.at: dict[str, float] = {}
        self.of_user: defaultdict[str, list[SimRequest]] = defaultdict(list)
        self.overlaps: list[tuple[str, str]] = []
        sim.reply = self

    def __call__(self, prompt: str, history: list[tuple[str, str]]) -> str:
        self.at[prompt] = time.monotonic()
        request = next(r for r in reversed(self.sim.requests) if prompt_of(r) == prompt)
        user = prompt.split()[0]
        for earlier in self.of_user[user]:
            if not earlier.done.is_set():
                self.overlaps.append((prompt_of(earlier), prompt))
        self.of_user[user].append(request)
        self.events[prompt].set()
        return default_reply(prompt, history)

    async def arrived(self, prompt: str, answer: asyncio.Future[dict[str, Any]]) -> None:
        """Wait until the request of ``prompt`` reached the simulator (or it failed)."""
        event = asyncio.ensure_future(self.events[prompt].wait())
        waiters: set[asyncio.Future[Any]] = {event, answer}
        done, _ = await asyncio.wait(waiters, timeout=BOUND, return_when=asyncio.FIRST_COMPLETED)
        event.cancel()
        assert done, f"{prompt!r} neither arrived nor failed"


def prompt_of(request: SimRequest) -> str:
    prompt: str = request.body["input"]["prompt"]
    return prompt


def sent_id(request: SimRequest) -> str | None:
    session_id: str | None = request.body["input"].get("session_id")
    return session_id


def history(sim: BailianSimulator, session_id: str) -> list[str]:
    kept = sim.history(session_id)
    assert kept is not None, f"the simulator has no conversation {session_id}"
    return [user for user, _ in kept]


WorkerFactory = Callable[..., Awaitable[list[Worker]]]


@pytest.fixture
async def start_workers(sim: BailianSimulator) -> AsyncIterator[WorkerFactory]:
    """``await start_workers(3, where)``: worker processes, ready; all gone at the end."""
    started: list[Worker] = []

    async def start(count: int, where: str, lease: float = 30.0) -> list[Worker]:
        made = [await Worker.start(where, sim, lease) for _ in range(count)]
        started.extend(made)
        await asyncio.gather(*(worker.ready() for worker in made))
        return made

    yield start
    for worker in started:
        if worker.process.returncode is None:
            with contextlib.suppress(ProcessLookupError):  # killed by the test already
                worker.process.kill()
        await worker.close()


@pytest.fixture
def own_redis() -> Iterator[RedisProcess]:
    """A redis-server of this test's own, to stop and start."""
    redis = RedisProcess()
    redis.start()
    yield redis
    redis.stop()


def shared(kind: str, request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """Where the workers keep conversations: a Redis URL or a folder."""
    if kind == "redis":
        if RedisStore is None:
            missing("RedisStore needs redis-py: pip install 'tyqw[redis]'")
        url: str = request.getfixturevalue("redis_url")
        return url
    return str(tmp_path / "state")


async def stored_id(kind: str, where: str, app_id: str, name: str) -> str | None:
    store = RedisStore.from_url(where) if kind == "redis" else FileStore(where)
    try:
        record = await store.get(app_id, name)
    finally:
        await store.aclose()
    return None if record is None else str(record["session_id"])


async def overlapping_turns(
    sim: BailianSimulator,
    start_workers: WorkerFactory,
    where: str,
    users: int,
    turns: int,
    seed: int,
) -> tuple[list[Worker], Arrivals, dict[str, list[dict[str, Any]]]]:
    """Three workers sharing the store at ``where``; ``users`` users (``user00``...) each
    send ``turns`` prompts (``<name> says <n>``), each to a random worker and sent while
    the previous one is still being answered. The workers, what arrived, and each user's
    answers in order."""
    arrivals = Arrivals(sim)
    sim.delay = 0.002  # a turn takes a while: time enough to overlap, were it possible
    workers = await start_workers(3, where)
    rng = random.Random(seed)

    async def user(name: str) -> list[dict[str, Any]]:
        answers = []
        for turn in range(turns):
            prompt = f"{name} says {turn}"
            answer = rng.choice(workers).send(name, prompt)
            answers.append(answer)
            # The next turn goes out while this one runs: only the store keeps them apart.
            await arrivals.arrived(prompt, answer)
        return [await asyncio.wait_for(answer, BOUND) for answer in answers]

    names = [f"user{n:02d}" for n in range(users)]
    answers = await asyncio.gather(*map(user, names))
    return workers, arrivals, dict(zip(names, answers, strict=True))


# -- many workers -------------------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["redis", "file"])
async def test_three_workers_keep_each_users_conversation_whole(
    kind: str,
    sim: BailianSimulator,
    start_workers: WorkerFactory,
    request: pytest.FixtureRequest,
    tmp_path: Path,
) -> None:
    """50 users, 5 turns each, every turn to a random one of 3 workers, each sent while
    the user's previous turn is still being answered: each user ends with exactly one
    conversation holding their 5 prompts in order, and no two turns of a user overlap."""
    where = shared(kind, request, tmp_path)
    workers, arrivals, results = await overlapping_turns(
        sim, start_workers, where, 50, 5, 20240610
    )

    assert arrivals.overlaps == []
    assert len(sim.requests) == 250  # no turn sent twice
    served_by = {name: {a.get("worker") for a in answers} for name, answers in results.items()}
    assert set().union(*served_by.values()) == {w.process.pid for w in workers}
    assert sum(len(pids) > 1 for pids in served_by.values()) > 40  # users move between workers
    conversations = set()
    for name, answers in results.items():
        prompts = [f"{name} says {turn}" for turn in range(5)]
        assert [a.get("error") for a in answers] == [None] * 5, answers
        [session_id] = {a["session_id"] for a in answers}
        conversations.add(session_id)
        assert history(sim, session_id) == prompts
        requests = arrivals.of_user[name]
        assert [prompt_of(r) for r in requests] == prompts
        assert [sent_id(r) for r in requests] == [None] + [session_id] * 4
        for prompt, answer in zip(prompts, answers, strict=True):  # no cross-talk
            assert f'you said "{prompt}"' in answer["text"]
        assert await stored_id(kind, where, sim.app_id, name) == session_id
    assert len(conversations) == 50


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["redis", "file"])
async def test_three_workers_write_one_transcript_per_user(
    kind: str,
    sim: BailianSimulator,
    start_workers: WorkerFactory,
    request: pytest.FixtureRequest,
    tmp_path: Path,
) -> None:
    """30 users, 6 turns each to a random one of 3 workers, each sent while the previous
    one is answered: each user's transcript in the shared store holds exactly their 6
    prompts, in order, each with its reply; none missing, none twice."""
    where = shared(kind, request, tmp_path)
    *_, results = await overlapping_turns(sim, start_workers, where, 30, 6, 20261207)

    store = RedisStore.from_url(where) if kind == "redis" else FileStore(where)
    try:
        for name, answers in results.items():
            assert [a.get("error") for a in answers] == [None] * 6, answers
            entries = await store.read_transcript(sim.app_id, name)
            assert [e["prompt"] for e in entries] == [f"{name} says {t}" for t in range(6)]
            assert [e["reply"]["text"] for e in entries] == [a["text"] for a in answers]
            assert {e["reply"]["session_id"] for e in entries} == {answers[0]["session_id"]}
    finally:
        await store.aclose()
    served_by = {name: {a["worker"] for a in answers} for name, answers in results.items()}
    assert sum(len(pids) > 1 for pids in served_by.values()) > 20  # users move between workers


# -- faults ---------------------------------------------------------------------------------


@pytest.mark.slow
async def test_redis_stopped_mid_run_fails_turns_before_they_are_sent(
    sim: BailianSimulator, start_workers: WorkerFactory, own_redis: RedisProcess
) -> None:
    """Redis stopped under load: every failing turn is a StoreError, and one that failed
    at its start sent nothing; with Redis back, every worker serves turns again."""
    if RedisStore is None:
        missing("RedisStore needs redis-py: pip install 'tyqw[redis]'")
    workers = await start_workers(3, own_redis.url)
    rng = random.Random(7)
    outcomes: list[tuple[str, dict[str, Any]]] = []
    served, failed, stop = asyncio.Event(), asyncio.Event(), asyncio.Event()

    async def user(name: str) -> None:
        for turn in itertools.count():
            if stop.is_set():
                return
            prompt = f"{name} says {turn}"
            answer = await asyncio.wait_for(rng.choice(workers).send(name, prompt), BOUND)
            outcomes.append((prompt, answer))
            errors = sum("error" in a for _, a in outcomes)
            if len(outcomes) - errors >= 30:
                served.set()
            if errors >= 30:
                failed.set()

    load = asyncio.gather(*(user(f"user{n}") for n in range(10)))
    try:
        await asyncio.wait_for(served.wait(), BOUND)
        own_redis.stop()
        await asyncio.wait_for(failed.wait(), BOUND)
    finally:
        stop.set()
        await asyncio.wait_for(load, BOUND)

    sent = Counter(prompt_of(r) for r in sim.requests)
    errors = [(prompt, a) for prompt, a in outcomes if "error" in a]
    assert {a["error"] for _, a in errors} == {"StoreError"}
    before = [prompt for prompt, a in errors if not a["reply"]]
    assert len(before) >= 20
    assert [prompt for prompt in before if sent[prompt]] == []  # nothing was sent
    assert max(sent.values()) == 1  # and no turn was sent twice

    own_redis.start()
    back = [
        worker.send(f"user{n}", f"user{n} is back on {i}")
        for i, worker in enumerate(workers)
        for n in range(3)
    ]
    answers = await asyncio.wait_for(asyncio.gather(*back), BOUND)
    assert [a.get("error") for a in answers] == [None] * 9, answers


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["redis", "file"])
async def test_a_killed_worker_blocks_its_user_only_until_the_lease_expires(
    kind: str,
    sim: BailianSimulator,
    start_workers: WorkerFactory,
    request: pytest.FixtureRequest,
    tmp_path: Path,
) -> None:
    """A worker SIGKILLed in the middle of a user's turn: another worker serves that user
    once the lease (1 s) expires, within lease + 1 s (with FileStore the OS frees the lock
    at once), and continues the user's conversation."""
    lease = 1.0
    where = shared(kind, request, tmp_path)
    arrivals = Arrivals(sim)
    doomed, survivor = await start_workers(2, where, lease)
    first = await asyncio.wait_for(doomed.send("alice", "alice says hello"), BOUND)
    session_id = first["session_id"]
    sim.inject(Fault.stall(60, after=1))
    cut = doomed.send("alice", "alice is cut off")
    await arrivals.arrived("alice is cut off", cut)
    doomed.process.kill()
    killed_at = time.monotonic()
    answer = await asyncio.wait_for(survivor.send("alice", "alice goes on"), lease + BOUND)
    waited = arrivals.at["alice goes on"] - killed_at

    assert (await cut)["error"] == "WorkerGone"
    assert answer.get("error") is None, answer
    assert answer["session_id"] == session_id
    assert history(sim, session_id) == ["alice says hello", "alice goes on"]
    if kind == "redis":
        # Held until the lease ran out (renewed every lease / 3 until the kill)...
        assert waited > lease / 2
    assert waited < lease + 1.0


# -- the bot of docs/many-workers.md ----------------------------------------------------


def readme_bot() -> str:
    """The first Python block of docs/many-workers.md."""
    text = (ROOT / "docs" / "many-workers.md").read_text(encoding="utf-8")
    block = re.search(r"```python\n(.*?)```", text, re.S)
    assert block is not None, "no Python block in docs/many-workers.md"
    return block.group(1)


@pytest.mark.slow
async def test_the_readme_bot_runs_as_is_on_two_workers(
    sim: BailianSimulator, redis_url: str, tmp_path: Path
) -> None:
    """The docs' many-workers bot, run twice over one Redis: a user's second message, sent
    to the other worker, continues the first; both workers stop cleanly."""
    bot = tmp_path / "bot.py"
    bot.write_text(readme_bot(), encoding="utf-8")
    env = clean_env(
        tmp_path,
        DASHSCOPE_API_KEY=sim.api_key,
        DASHSCOPE_BASE_URL=sim.base_url,
        DASHSCOPE_APP_ID=sim.app_id,
        REDIS_URL=redis_url,
        PYTHONUNBUFFERED="1",
    )
    ports = [free_port(), free_port()]
    bots = [
        await asyncio.create_subprocess_exec(
            sys.executable,
            "-W",
            "error",
            str(bot),
            env={**env, "PORT": str(port)},
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        for port in ports
    ]
    try:
        for process in bots:
            assert process.stdout is not None
            line = await asyncio.wait_for(process.stdout.readline(), BOUND)
            assert b"Running on http://127.0.0.1:" in line, line
        async with aiohttp.ClientSession() as http:

            async def chat(port: int, user: str, text: str) -> str:
                url = f"http://127.0.0.1:{port}/chat"
                async with http.post(url, json={"user": user, "text": text}) as response:
                    assert response.status == 200, await response.text()
                    reply: str = (await response.json())["reply"]
                    return reply

            await asyncio.gather(
                chat(ports[0], "alice", "你好，我叫小明"), chat(ports[1], "bob", "my name is Bob")
            )
            answers = await asyncio.gather(
                chat(ports[1], "alice", "我叫什么名字？"), chat(ports[0], "bob", "what's my name?")
            )
        assert answers[0].startswith("你叫小明")
        assert answers[1].startswith("Your name is Bob")
    finally:
        for process in bots:
            if process.returncode is None:
                process.send_signal(signal.SIGINT)  # Ctrl-C: aiohttp runs the cleanup
    for process in bots:
        _, stderr = await asyncio.wait_for(process.communicate(), BOUND)
        assert (process.returncode, stderr.decode()) == (0, "")
