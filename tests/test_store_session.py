"""Sessions over a shared store: what each worker sees of the others' turns and changes.

Each "worker" is a Session with a store object of its own (for Redis, its own client
and connection pool), as two processes would have; the turns go to the simulator over
real sockets. Many worker processes at once are in ``test_many_workers.py``; the store
contract itself is in ``test_stores.py``.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tyqw import APITimeoutError, Reply, Session, StoreError, SyncSession, TokenUsage
from tyqw.stores import FileStore, MemoryStore, Store
from tyqw.testing import BailianSimulator, Fault

from .helpers import DictStore, RedisProcess, TcpProxy

try:
    import redis.asyncio as aioredis
except ImportError:  # pragma: no cover - the dev extra installs it
    if os.environ.get("CI"):
        raise
    pytest.skip("RedisStore needs redis-py: pip install 'tyqw[redis]'", allow_module_level=True)

from tyqw.stores import RedisStore

BOUND = 10.0

StoreFactory = Callable[[], Store]
Worker = Callable[..., Session]


@pytest.fixture
def own_redis() -> Iterator[RedisProcess]:
    """A redis-server of this test's own, to stop, start or lock down without touching
    the one other tests share."""
    redis = RedisProcess()
    redis.start()
    yield redis
    redis.stop()


def store_factory(kind: str, request: pytest.FixtureRequest, tmp_path: Path) -> StoreFactory:
    """A new store object over one shared place each call, as each worker has its own."""
    if kind == "redis":
        url: str = request.getfixturevalue("redis_url")
        return lambda: RedisStore.from_url(url)
    if kind == "file":
        return lambda: FileStore(tmp_path / "state")
    shared = MemoryStore()  # one process: the store object itself is what is shared
    return lambda: shared


@pytest.fixture
async def workers(sim: BailianSimulator) -> AsyncIterator[Callable[[Store], Worker]]:
    """``workers(store)(name="alice")``: a Session of one worker; all closed at the end."""
    sessions: list[Session] = []
    stores: list[Store] = []

    def on(store: Store) -> Worker:
        stores.append(store)

        def session(**kwargs: Any) -> Session:
            made = Session(
                sim.app_id,
                api_key=sim.api_key,
                base_url=sim.base_url,
                name=kwargs.pop("name", "alice"),
                store=store,
                **kwargs,
            )
            sessions.append(made)
            return made

        return session

    yield on
    for session in sessions:
        with contextlib.suppress(StoreError):  # a test that broke the store on purpose
            await session.aclose()
    for store in stores:
        await store.aclose()


def prompts(sim: BailianSimulator, session_id: str) -> list[str]:
    """The user's side of a conversation the simulator keeps."""
    history = sim.history(session_id)
    assert history is not None, f"the simulator has no conversation {session_id}"
    return [user for user, _ in history]


def sent_id(sim: BailianSimulator, index: int = -1) -> str | None:
    """The session_id a request carried (None: it asked for a new conversation)."""
    session_id: str | None = sim.requests[index].body["input"].get("session_id")
    return session_id


def tokens(reply: Reply) -> dict[str, TokenUsage]:
    """The tokens a turn used, per model, as the service reported them."""
    assert reply.usage is not None
    return {
        m["model_id"]: TokenUsage(m["input_tokens"], m["output_tokens"])
        for m in reply.usage["models"]
    }


def total(replies: list[Reply]) -> dict[str, TokenUsage]:
    summed: dict[str, TokenUsage] = {}
    for reply in replies:
        for model, used in tokens(reply).items():
            summed[model] = summed.get(model, TokenUsage()) + used
    return summed


def arrival(sim: BailianSimulator, prompt: str) -> asyncio.Event:
    """Set when the simulator receives the request of ``prompt`` (its reply hook runs)."""
    arrived = asyncio.Event()
    reply = sim.reply

    def noting(said: str, history: list[tuple[str, str]]) -> str:
        if said == prompt:
            arrived.set()
        return reply(said, history)

    sim.reply = noting
    return arrived


def redis_workers(url: str, workers: Callable[[Store], Worker]) -> tuple[Worker, Worker]:
    return workers(RedisStore.from_url(url)), workers(RedisStore.from_url(url))


# -- the store is the source of truth ------------------------------------------------------


async def test_a_session_continues_what_the_store_holds(
    sim: BailianSimulator, redis_url: str, workers: Callable[[Store], Worker]
) -> None:
    """A worker's turn continues the conversation another worker left in the store,
    not the one it remembers from its own last turn."""
    one, two = redis_workers(redis_url, workers)
    a, b = one(), two()
    first = await a.send("one")
    assert (await b.send("two")).session_id == first.session_id
    b.clear()
    fresh = await b.send("three")
    assert fresh.session_id != first.session_id
    assert a.session_id == first.session_id  # what a remembers, until its next turn
    assert (await a.send("four")).session_id == fresh.session_id
    assert prompts(sim, first.session_id or "") == ["one", "two"]
    assert prompts(sim, fresh.session_id or "") == ["three", "four"]


# -- changes a caller makes: clear() and session_id = ... ----------------------------------


async def reach_store(session: Session, how: str) -> Reply | None:
    """Let a change of ``session`` reach a shared store the way ``how`` names."""
    if how == "turn":
        return await session.send("the same worker's next turn")
    if how == "flush":
        await session.flush()
    else:
        await session.aclose()
    return None


@pytest.mark.parametrize("how", ["turn", "flush", "aclose"])
async def test_clear_reaches_the_other_workers(
    how: str, sim: BailianSimulator, redis_url: str, workers: Callable[[Store], Worker]
) -> None:
    """clear() on one worker: once it reached the store (that Session's next turn,
    flush() or aclose()), the next turn on another worker starts a new conversation."""
    one, two = redis_workers(redis_url, workers)
    a, b = one(), two()
    old = (await a.send("remember me")).session_id
    a.clear()
    if how == "flush":
        # Not yet in the store: another worker still continues the old conversation.
        assert (await b.send("before the flush")).session_id == old
    own = await reach_store(a, how)
    later = await b.send("after the clear")
    assert later.session_id != old
    if own is None:
        assert sent_id(sim) is None  # b asked for a new conversation
        assert prompts(sim, later.session_id or "") == ["after the clear"]
    else:  # a's own next turn started the new conversation; b continues it
        assert prompts(sim, later.session_id or "") == [
            "the same worker's next turn",
            "after the clear",
        ]


@pytest.mark.parametrize("how", ["turn", "flush", "aclose"])
async def test_assigning_session_id_reaches_the_other_workers(
    how: str, sim: BailianSimulator, redis_url: str, workers: Callable[[Store], Worker]
) -> None:
    """session_id = x on one worker: once it reached the store, another worker's next
    turn continues x."""
    elsewhere = workers(MemoryStore())(name="elsewhere")
    x = (await elsewhere.send("started elsewhere")).session_id
    assert x is not None
    one, two = redis_workers(redis_url, workers)
    a, b = one(), two()
    await a.send("the old conversation")
    a.session_id = x
    await reach_store(a, how)
    continued = await b.send("continue x")
    assert continued.session_id == x
    assert sent_id(sim) == x
    expected = ["started elsewhere", "continue x"]
    if how == "turn":
        expected.insert(1, "the same worker's next turn")
    assert prompts(sim, x) == expected


async def test_a_change_that_cannot_be_written_is_reported_and_kept(
    sim: BailianSimulator, own_redis: RedisProcess, workers: Callable[[Store], Worker]
) -> None:
    """flush() while Redis refuses raises StoreError and keeps the change: a later
    flush() writes it, and only then do the other workers start anew."""
    one, two = redis_workers(own_redis.url, workers)
    a, b = one(), two()
    old = (await a.send("remember me")).session_id
    a.clear()
    # Redis answers every script with an error (NOPERM) but keeps its data.
    assert own_redis.command("ACL", "SETUSER", "default", "-eval", "-evalsha").startswith(b"+OK")
    with pytest.raises(StoreError, match="NoPermission"):
        await asyncio.wait_for(a.flush(), BOUND)
    assert own_redis.command("ACL", "SETUSER", "default", "+@all").startswith(b"+OK")
    assert (await b.send("still the old one")).session_id == old
    await asyncio.wait_for(a.flush(), BOUND)
    assert (await b.send("after the flush")).session_id != old


# -- deadlines, tokens, TTL, outages --------------------------------------------------------


@pytest.mark.parametrize("kind", ["memory", "file", "redis"])
async def test_waiting_for_the_conversation_counts_against_the_deadline(
    kind: str,
    sim: BailianSimulator,
    workers: Callable[[Store], Worker],
    request: pytest.FixtureRequest,
    tmp_path: Path,
) -> None:
    """A turn with a deadline, waiting behind another worker's long turn of the same
    conversation, fails with APITimeoutError in time and sends nothing; the lock is
    free once the long turn ends."""
    new_store = store_factory(kind, request, tmp_path)
    a, b = workers(new_store())(), workers(new_store())()
    await a.send("first")
    sim.inject(Fault.stall(60, after=1))
    started = arrival(sim, "a long turn")
    long_turn = asyncio.create_task(a.send("a long turn"))
    await asyncio.wait_for(started.wait(), BOUND)
    arrived = len(sim.requests)
    with pytest.raises(APITimeoutError, match=r"deadline of 0\.3s"):
        await asyncio.wait_for(b.send("in a hurry", deadline=0.3), BOUND)
    assert not long_turn.done()
    assert len(sim.requests) == arrived  # the hurried turn sent nothing
    a.abort()
    await asyncio.wait_for(long_turn, BOUND)
    after = await asyncio.wait_for(b.send("no hurry", deadline=BOUND), BOUND)
    assert after.session_id == a.session_id
    # The aborted turn never joined the conversation; the hurried one never reached it.
    assert prompts(sim, after.session_id or "") == ["first", "no hurry"]


@pytest.mark.parametrize("kind", ["file", "redis"])
async def test_usage_totals_across_workers_and_restarts(
    kind: str,
    workers: Callable[[Store], Worker],
    request: pytest.FixtureRequest,
    tmp_path: Path,
) -> None:
    """session.usage counts every turn of the conversation, whichever worker ran it,
    and a restarted worker goes on from that total."""
    new_store = store_factory(kind, request, tmp_path)
    one, two = workers(new_store()), workers(new_store())
    a, b = one(), two()
    replies = []
    for n in range(4):
        session = a if n % 2 == 0 else b
        replies.append(await session.send(f"turn {n}"))
        if kind == "redis":  # a shared store has every turn's tokens at once
            assert session.usage == total(replies)
    await a.aclose()
    await b.aclose()
    restarted = workers(new_store())()
    replies.append(await restarted.send("after the restart"))
    assert restarted.usage == total(replies)
    assert sum(used.output_tokens for used in restarted.usage.values()) > 0


async def test_an_expired_conversation_starts_anew_on_any_worker(
    sim: BailianSimulator, redis_url: str, workers: Callable[[Store], Worker]
) -> None:
    """Once a conversation's TTL passes without a turn, the next turn, on another
    worker, starts a new conversation."""
    client = aioredis.from_url(redis_url)
    await client.config_set("notify-keyspace-events", "Ex")
    pubsub = client.pubsub()
    await pubsub.subscribe("__keyevent@0__:expired")
    try:
        a = workers(RedisStore.from_url(redis_url, ttl=0.3))()
        b = workers(RedisStore.from_url(redis_url, ttl=0.3))()
        old = (await a.send("soon forgotten")).session_id

        async def expired() -> None:
            async for message in pubsub.listen():
                if message["type"] == "message" and message["data"].endswith(b":record"):
                    return

        await asyncio.wait_for(expired(), BOUND)
        fresh = await b.send("after the TTL")
        assert fresh.session_id != old
        assert sent_id(sim) is None
    finally:
        await pubsub.aclose() if hasattr(pubsub, "aclose") else await pubsub.close()
        await client.config_set("notify-keyspace-events", "")
        await client.aclose()


async def test_a_store_that_fails_after_the_reply_keeps_the_reply(
    sim: BailianSimulator, own_redis: RedisProcess, workers: Callable[[Store], Worker]
) -> None:
    """Redis gone while a reply streams: the turn fails with StoreError, and the error
    carries the whole reply the service sent."""
    session = workers(RedisStore.from_url(own_redis.url))()
    await session.send("first")
    session.once("message", lambda message: own_redis.stop())
    with pytest.raises(StoreError) as info:
        await asyncio.wait_for(session.send("the reply survives"), BOUND)
    reply = info.value.reply
    assert reply is not None
    assert reply.finish_reason == "stop"
    assert reply.text == sim.history(reply.session_id or "")[-1][1]  # type: ignore[index]


# -- a lease lost mid-turn, a store failing at the end of a turn ---------------------------


@pytest.mark.parametrize("how", ["network-cut", "redis-paused"])
async def test_a_worker_that_loses_its_lease_stops_before_another_turn_starts(
    sim: BailianSimulator, own_redis: RedisProcess, how: str
) -> None:
    """Worker A is cut off from Redis mid-reply (its connection stalls, or Redis is
    paused for longer than the lease): its turn stops with StoreError and its partial
    reply before worker B's turn of the same user reaches the service."""
    order: list[str] = []

    def reply(prompt: str, history: list[tuple[str, str]]) -> str:
        order.append(f"{prompt} arrived")
        return "x" * 100 if prompt == "long" else "ok"

    sim.reply, sim.chunk_size, sim.delay = reply, 1, 0.05
    async with TcpProxy(own_redis.port) as proxy:
        stores = [RedisStore.from_url(url, lease=1.2) for url in (proxy.url, own_redis.url)]
        a, b = (
            Session(sim.app_id, api_key=sim.api_key, base_url=sim.base_url, store=store)
            for store in stores
        )
        streaming = asyncio.Event()

        def cut_off(message: object) -> None:
            if how == "network-cut":
                proxy.stall()  # A's renewals no longer reach Redis
            else:  # every client waits, both workers' included
                own_redis.command("CLIENT", "PAUSE", "3000")
            streaming.set()

        async def a_turn() -> Reply:
            try:
                return await a.send("long")
            finally:
                order.append("a stopped")

        a.once("message", cut_off)
        try:
            a_task = asyncio.create_task(a_turn())
            await asyncio.wait_for(streaming.wait(), BOUND)
            b_task = asyncio.create_task(b.send("next"))
            with pytest.raises(StoreError, match="lost") as info:
                await asyncio.wait_for(a_task, 3 * BOUND)
            assert (await asyncio.wait_for(b_task, BOUND)).text == "ok"
            assert order == ["long arrived", "a stopped", "next arrived"]
            partial = info.value.reply
            assert partial is not None and partial.finish_reason is None
            assert 0 < len(partial.text) < 100
            # The stopped turn wrote nothing: the transcript is B's turn alone.
            assert [exchange.prompt for exchange in await b.history()] == ["next"]
        finally:
            proxy.cut()
            for session in (a, b):
                with contextlib.suppress(StoreError):
                    await session.aclose()
            for store in stores:
                await store.aclose()


async def test_a_turn_that_ran_keeps_its_error_and_reply_through_async_with(
    sim: BailianSimulator, redis_process: RedisProcess
) -> None:
    """Redis cut off while a reply streams, inside ``async with Session``: the error that
    leaves the block says the turn ran and holds the whole reply, though closing the
    Session fails too."""
    async with TcpProxy(redis_process.port) as proxy:
        store = RedisStore.from_url(proxy.url)

        async def chat() -> None:
            async with Session(
                sim.app_id, api_key=sim.api_key, base_url=sim.base_url, store=store
            ) as session:
                await session.send("first")
                session.once("message", lambda message: proxy.cut())
                await asyncio.wait_for(session.send("the reply survives"), BOUND)

        try:
            with pytest.raises(StoreError) as info:
                await chat()
        finally:
            await store.aclose()
    assert "the turn ran" in str(info.value)
    reply = info.value.reply
    assert reply is not None and reply.finish_reason == "stop"
    assert reply.text == sim.history(reply.session_id or "")[-1][1]  # type: ignore[index]


class WritesFailStore(DictStore):
    """A user's store whose writes fail once ``broken`` is set."""

    broken = False

    async def set(self, app_id: str, name: str, record: dict[str, Any]) -> None:
        if self.broken:
            raise ConnectionResetError("the database went away")
        await super().set(app_id, name, record)


async def test_with_sync_session_a_turn_that_ran_keeps_its_error_and_reply(
    sim: BailianSimulator,
) -> None:
    """The same through ``with SyncSession`` and a user's store: closing's failure does
    not replace the turn's error."""
    store = WritesFailStore()

    def chat() -> None:
        with SyncSession(
            sim.app_id, api_key=sim.api_key, base_url=sim.base_url, store=store
        ) as session:
            session.send("first")
            session.once("message", lambda message: setattr(store, "broken", True))
            session.send("the reply survives")

    with pytest.raises(StoreError) as info:
        await asyncio.wait_for(asyncio.to_thread(chat), BOUND)
    assert info.value.reply is not None and info.value.reply.finish_reason == "stop"
    assert "the turn ran" in str(info.value)


class BrokenLocalStore(DictStore):
    """A user's LocalStore whose synchronous calls fail, as a database gone away."""

    def get_now(self, app_id: str, name: str) -> dict[str, Any] | None:
        raise ConnectionResetError("the database went away")

    def set_now(self, app_id: str, name: str, record: dict[str, Any]) -> None:
        raise ConnectionResetError("the database went away")

    def delete_now(self, app_id: str, name: str) -> None:
        raise ConnectionResetError("the database went away")


class FlakyLocalStore(BrokenLocalStore):
    """Reads work; writes fail until ``healed``."""

    healed = False

    def get_now(self, app_id: str, name: str) -> dict[str, Any] | None:
        return self.records.get((app_id, name))

    def set_now(self, app_id: str, name: str, record: dict[str, Any]) -> None:
        if not self.healed:
            super().set_now(app_id, name, record)
        self.records[app_id, name] = record

    def delete_now(self, app_id: str, name: str) -> None:
        if not self.healed:
            super().delete_now(app_id, name)
        self.records.pop((app_id, name), None)


@pytest.mark.parametrize(
    "record",
    [
        {"session_id": "an id with spaces"},  # cannot go on the wire as an id
        {"session_id": 12345},
        ["not", "a", "record"],
    ],
)
async def test_an_unusable_record_from_a_users_store_is_ignored_with_a_warning(
    sim: BailianSimulator, caplog: pytest.LogCaptureFixture, record: Any
) -> None:
    """A user's store handing out a record tyqw cannot use: one warning naming the
    conversation, and the turn starts a new conversation instead of failing."""
    store = DictStore()
    store.records[sim.app_id, "alice"] = record
    async with Session(
        sim.app_id, api_key=sim.api_key, base_url=sim.base_url, store=store, name="alice"
    ) as session:
        with caplog.at_level("WARNING", logger="tyqw"):
            reply = await session.send("hi")
    assert sent_id(sim) is None and reply.session_id is not None
    assert store.records[sim.app_id, "alice"]["session_id"] == reply.session_id
    (warning,) = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert warning.startswith("tyqw: ignoring the stored conversation 'alice': ")


async def test_a_users_local_store_failing_synchronously_is_a_store_error(
    sim: BailianSimulator,
) -> None:
    """A user's LocalStore raising in get_now / set_now / delete_now: StoreError with the
    store's exception as the cause, and a change it could not write is kept and written
    at the next turn."""
    with pytest.raises(StoreError) as reading:
        Session(sim.app_id, api_key=sim.api_key, base_url=sim.base_url, store=BrokenLocalStore())
    assert isinstance(reading.value.__cause__, ConnectionResetError)
    store = FlakyLocalStore()
    async with Session(
        sim.app_id, api_key=sim.api_key, base_url=sim.base_url, store=store
    ) as session:
        old = (await session.send("hi")).session_id
        store.records.clear()
        with pytest.raises(StoreError) as writing:
            session.session_id = "f" * 32
        assert isinstance(writing.value.__cause__, ConnectionResetError)
        with pytest.raises(StoreError):
            session.clear()
        store.healed = True
        reply = await session.send("after")
        assert sent_id(sim) is None and reply.session_id not in (None, old)
        assert store.records[sim.app_id, "default"]["session_id"] == reply.session_id
