"""RedisStore against a real redis-server: keys, TTL, leases, outages and secrets.

The contract every store keeps is in ``test_stores.py``; this file is what only a
shared store has to get right.
"""

from __future__ import annotations

import asyncio
import logging
import os
import subprocess
import sys
import traceback
from collections.abc import AsyncIterator
from typing import Any

import pytest

from tyqw import Session, StoreError
from tyqw.stores._base import begin_turn, end_turn, end_turn_appending
from tyqw.testing import BailianSimulator

from .helpers import RedisProcess, TcpProxy

try:
    import redis.asyncio as aioredis
except ImportError:  # pragma: no cover - the dev extra installs it
    if os.environ.get("CI"):
        raise
    pytest.skip("RedisStore needs redis-py: pip install 'tyqw[redis]'", allow_module_level=True)

from tyqw.stores import RedisStore

BOUND = 10.0
APP = "app-1"


@pytest.fixture
async def client(redis_url: str) -> AsyncIterator[aioredis.Redis]:
    """A redis-py client of the test's own, to look at what the store wrote."""
    made = aioredis.from_url(redis_url)
    yield made
    await made.aclose()


@pytest.fixture
async def store(redis_url: str) -> AsyncIterator[RedisStore]:
    made = RedisStore.from_url(redis_url)
    yield made
    await made.aclose()


def record(session_id: str = "s" * 32, **more: Any) -> dict[str, Any]:
    return {"session_id": session_id, **more}


async def all_keys(client: aioredis.Redis) -> list[str]:
    return sorted([k.decode() async for k in client.scan_iter()])


# -- keys and TTL -------------------------------------------------------------------------


async def test_a_conversations_keys_share_one_hash_tag(client: aioredis.Redis) -> None:
    """The record and the lock of one conversation live in one Cluster slot."""
    store = RedisStore(client, key_prefix="bot7:")
    held, _ = await begin_turn(store, APP, "alice")
    await store.set(APP, "alice", record())
    await store.set(APP, "bob", record())
    keys = await all_keys(client)
    assert len(keys) == 3 and all(k.startswith("bot7:{") for k in keys)
    tags = {k[k.index("{") : k.index("}") + 1] for k in keys}
    assert len(tags) == 2  # alice's record and lock share one; bob's record another
    await end_turn(store, held, APP, "alice", None)
    assert len(await all_keys(client)) == 1  # lock released, alice's record deleted


def test_key_prefix_cannot_break_the_hash_tag(client: aioredis.Redis) -> None:
    """A key_prefix with braces is refused: it would move the hash tag."""
    with pytest.raises(ValueError, match="key_prefix"):
        RedisStore(client, key_prefix="tyqw:{shard}:")


async def test_ttl_is_set_and_refreshed_on_every_write(client: aioredis.Redis) -> None:
    """A record expires ttl after its last write; each turn's write restarts the clock."""
    store = RedisStore(client, ttl=100.0)
    await store.set(APP, "alice", record())
    [key] = await all_keys(client)
    assert 95_000 < await client.pttl(key) <= 100_000
    await client.pexpire(key, 5_000)  # as if 95 s had passed
    held, _ = await begin_turn(store, APP, "alice")
    await end_turn(store, held, APP, "alice", record("next"))
    assert await client.pttl(key) > 95_000
    forever = RedisStore(client, ttl=None)
    await forever.set(APP, "alice", record())
    assert await client.pttl(key) == -1


async def test_an_expired_conversation_is_gone(client: aioredis.Redis) -> None:
    """After the TTL, get finds nothing: the next turn starts a new conversation."""
    await client.config_set("notify-keyspace-events", "Ex")
    pubsub = client.pubsub()
    await pubsub.subscribe("__keyevent@0__:expired")
    try:
        store = RedisStore(client, ttl=0.2)
        await store.set(APP, "alice", record())
        [key] = await all_keys(client)

        async def expired() -> None:
            async for message in pubsub.listen():
                if message["type"] == "message" and message["data"].decode() == key:
                    return

        await asyncio.wait_for(expired(), BOUND)
        held, found = await begin_turn(store, APP, "alice")
        assert found is None
        await end_turn(store, held, APP, "alice", None)
    finally:
        await pubsub.aclose() if hasattr(pubsub, "aclose") else await pubsub.close()
        await client.config_set("notify-keyspace-events", "")


async def test_a_damaged_record_means_no_conversation(
    client: aioredis.Redis, caplog: pytest.LogCaptureFixture
) -> None:
    """A record someone overwrote with garbage is ignored with one warning."""
    store = RedisStore(client)
    await store.set(APP, "alice", record())
    [key] = await all_keys(client)
    caplog.set_level(logging.WARNING, logger="tyqw")
    for garbage in [b"[" * 60_000, b"\xff\xfe", b'{"app_id":"app-1","name":"alice"}', b"7"]:
        await client.set(key, garbage)
        caplog.clear()
        assert await store.get(APP, "alice") is None
        assert len(caplog.records) == 1, garbage[:20]


# -- the lease ----------------------------------------------------------------------------


async def test_a_long_turn_keeps_its_lease(client: aioredis.Redis) -> None:
    """A turn that lasts many leases is renewed: nobody else gets in, its write lands."""
    store = RedisStore(client, lease=0.3)
    held, _ = await begin_turn(store, APP, "alice")
    with pytest.raises(asyncio.TimeoutError):  # four leases long
        await asyncio.wait_for(begin_turn(store, APP, "alice"), 1.2)
    await end_turn(store, held, APP, "alice", record("long"))
    assert await store.get(APP, "alice") == record("long")


async def test_a_lost_lease_writes_nothing(client: aioredis.Redis) -> None:
    """When the lease ran out and another turn took it, the late write is refused."""
    store = RedisStore(client, lease=5.0)
    late, _ = await begin_turn(store, APP, "alice")
    lock_key = next(k for k in await all_keys(client) if k.endswith(":lock"))
    await client.delete(lock_key)  # as if the lease had expired
    other, _ = await asyncio.wait_for(begin_turn(store, APP, "alice"), BOUND)
    with pytest.raises(StoreError, match="expired"):
        await end_turn(store, late, APP, "alice", record("late"))
    await end_turn(store, other, APP, "alice", record("other"))
    assert await store.get(APP, "alice") == record("other")


async def test_a_lease_that_cannot_be_renewed_is_given_up_while_still_held(
    redis_process: RedisProcess, redis_url: str, client: aioredis.Redis
) -> None:
    """Redis out of reach mid-turn: the holder is told the lock is lost while Redis still
    holds its lease (so nobody else can have it yet), and its write is refused."""
    async with TcpProxy(redis_process.port) as proxy:
        store = RedisStore.from_url(proxy.url, lease=0.6)
        try:
            held, _ = await begin_turn(store, APP, "alice")
            lock_key = store._keys(APP, "alice")[1]
            told: asyncio.Future[tuple[StoreError, bytes]] = (
                asyncio.get_running_loop().create_future()
            )
            # Asked of Redis directly at the moment of the loss: is the lease still there?
            held.on_lost(
                lambda error: told.set_result((error, redis_process.command("PTTL", lock_key)))
            )
            proxy.stall()
            error, pttl = await asyncio.wait_for(told, BOUND)
            assert "lost" in str(error)
            assert int(pttl.strip().lstrip(b":")) > 0  # still held: no overlap possible
            with pytest.raises(StoreError, match="not written"):
                await asyncio.wait_for(end_turn(store, held, APP, "alice", record("late")), BOUND)
            proxy.cut()
        finally:
            await store.aclose()
    assert await client.get(store._keys(APP, "alice")[0]) is None


async def test_a_lock_taking_call_that_fails_on_a_damaged_record_leaves_it_unlocked(
    store: RedisStore, client: aioredis.Redis
) -> None:
    """A record key of the wrong type: StoreError, and once it is fixed the next turn gets
    the lock at once, not after the lease."""
    record_key = store._keys(APP, "alice")[0]
    await client.execute_command("RPUSH", record_key, "not a record")
    with pytest.raises(StoreError, match="lock a conversation"):
        await asyncio.wait_for(begin_turn(store, APP, "alice"), BOUND)
    await client.delete(record_key)
    held, found = await asyncio.wait_for(begin_turn(store, APP, "alice"), BOUND / 2)
    assert found is None
    await end_turn(store, held, APP, "alice", record())


async def test_a_lock_taking_call_that_times_out_leaves_it_unlocked(
    redis_process: RedisProcess, client: aioredis.Redis
) -> None:
    """Redis answers the lock-taking call slower than the socket timeout: StoreError, and
    the lease the server granted meanwhile is given back, not held for the whole lease."""
    async with TcpProxy(redis_process.port) as proxy:
        slow = RedisStore.from_url(proxy.url, socket_timeout=0.3)
        direct = RedisStore(client)
        try:
            proxy.stall(answers_only=True)  # the call reaches Redis and runs; its answer waits
            with pytest.raises(StoreError, match="Timeout"):
                await asyncio.wait_for(begin_turn(slow, APP, "alice"), BOUND)
            held, _ = await asyncio.wait_for(begin_turn(direct, APP, "alice"), BOUND / 2)
            await end_turn(direct, held, APP, "alice", record())
            proxy.resume()
        finally:
            await slow.aclose()


class CountingConnection(aioredis.Connection):
    """A connection that counts the requests it sends (a pipeline is one)."""

    sent = 0

    async def send_packed_command(self, command: Any, check_health: bool = True) -> None:
        CountingConnection.sent += 1
        await super().send_packed_command(command, check_health)


async def test_a_turn_is_two_round_trips(redis_url: str) -> None:
    """begin_turn is one request to Redis (lock + read), end_turn one (write + release)."""
    pool = aioredis.ConnectionPool.from_url(redis_url, connection_class=CountingConnection)
    client = aioredis.Redis(connection_pool=pool)
    try:
        store = RedisStore(client)
        held, _ = await begin_turn(store, APP, "warm-up")  # loads the scripts once
        await end_turn(store, held, APP, "warm-up", record())
        CountingConnection.sent = 0
        for _ in range(10):
            held, _ = await begin_turn(store, APP, "alice")
            await end_turn(store, held, APP, "alice", record())
        assert CountingConnection.sent == 20
    finally:
        await client.aclose()
        await pool.disconnect()


# -- a turn's exchange, appended as the turn ends -----------------------------------------

ENTRY = {"v": 1, "prompt": "你好", "reply": {"text": "你好！"}}


async def test_a_turn_that_keeps_its_exchange_is_still_two_round_trips(
    redis_url: str, sim: BailianSimulator, client: aioredis.Redis
) -> None:
    """A Session keeping its transcript in Redis makes two requests a turn: the exchange
    goes with the record's write, to a list that shares the record's hash tag and TTL."""
    pool = aioredis.ConnectionPool.from_url(redis_url, connection_class=CountingConnection)
    counted = aioredis.Redis(connection_pool=pool)
    store = RedisStore(counted, ttl=600)
    try:
        async with Session(
            sim.app_id, api_key=sim.api_key, base_url=sim.base_url, store=store, name="alice"
        ) as session:
            await session.send("第一")  # loads the scripts once
            CountingConnection.sent = 0
            for prompt in ("二", "三", "四", "五", "六"):
                await session.send(prompt)
            assert CountingConnection.sent == 2 * 5
            prompts = [exchange.prompt for exchange in await session.history()]
        assert prompts == ["第一", "二", "三", "四", "五", "六"]
        keys = await all_keys(client)
        assert [key.split("}")[1] for key in keys] == [":record", ":transcript"]
        assert len({key.split("}")[0] for key in keys}) == 1  # one hash tag, one slot
        assert 0 < await client.pttl(keys[1]) <= 600_000
    finally:
        await counted.aclose()
        await pool.disconnect()


async def test_a_turn_whose_lease_expired_appends_nothing(
    store: RedisStore, client: aioredis.Redis
) -> None:
    """A turn ending after its lease ran out and another turn took it: neither its
    record nor its exchange is written, and the other turn's are."""
    late, _ = await begin_turn(store, APP, "alice")
    await client.delete(store._keys(APP, "alice")[1])  # as if the lease had expired
    other, _ = await asyncio.wait_for(begin_turn(store, APP, "alice"), BOUND)
    with pytest.raises(StoreError, match="expired"):
        await end_turn_appending(store, late, APP, "alice", record("late"), ENTRY, 200)
    assert await store.read_transcript(APP, "alice") == []
    mine = {**ENTRY, "prompt": "other"}
    assert await end_turn_appending(store, other, APP, "alice", record("o"), mine, 200) is None
    assert await store.read_transcript(APP, "alice") == [mine]
    assert await store.get(APP, "alice") == record("o")


async def test_a_lost_answer_to_a_turn_s_end_appends_its_exchange_once(redis_url: str) -> None:
    """When the connection drops after Redis ran the script that ends a turn and appends
    its exchange, the repeated call appends nothing more and frees the lock."""
    pool = aioredis.ConnectionPool.from_url(redis_url, connection_class=LosingConnection)
    client = aioredis.Redis(connection_pool=pool)
    try:
        store = RedisStore(client, lease=30.0)
        held, _ = await begin_turn(store, APP, "warm-up")  # loads the scripts once
        assert await end_turn_appending(store, held, APP, "warm-up", None, ENTRY, 5) is None
        for n, final in enumerate((record("kept"), None)):
            entry = {**ENTRY, "prompt": f"p{n}"}
            held, _ = await asyncio.wait_for(begin_turn(store, APP, "alice"), BOUND)
            LosingConnection.lose_next = True
            ended = end_turn_appending(store, held, APP, "alice", final, entry, 5)
            assert await asyncio.wait_for(ended, BOUND) is None
            assert await store.get(APP, "alice") == final
        prompts = [e["prompt"] for e in await store.read_transcript(APP, "alice")]
        assert prompts == ["p0", "p1"]
        held, _ = await asyncio.wait_for(begin_turn(store, APP, "alice"), 1.0)
        await end_turn(store, held, APP, "alice", None)
    finally:
        await client.aclose()
        await pool.disconnect()


async def test_an_exchange_that_cannot_be_appended_leaves_the_record_written(
    store: RedisStore, client: aioredis.Redis
) -> None:
    """A transcript key of another type, or an entry that is not JSON: the record is
    written and the lock freed, and the failure is handed back as a StoreError."""
    await client.set(store._transcript_key(APP, "alice"), "not a list")
    held, _ = await begin_turn(store, APP, "alice")
    unkept = await end_turn_appending(store, held, APP, "alice", record("a"), ENTRY, 200)
    assert isinstance(unkept, StoreError) and "another type" in str(unkept)
    assert await store.get(APP, "alice") == record("a")
    held, _ = await asyncio.wait_for(begin_turn(store, APP, "alice"), 1.0)  # free at once
    unkept = await end_turn_appending(
        store, held, APP, "alice", record("b"), {"x": float("nan")}, 200
    )
    assert isinstance(unkept, StoreError) and "not JSON" in str(unkept)
    assert await store.get(APP, "alice") == record("b")
    held, _ = await asyncio.wait_for(begin_turn(store, APP, "alice"), 1.0)
    await end_turn(store, held, APP, "alice", None)


async def test_a_session_whose_exchange_cannot_be_appended_keeps_its_conversation(
    store: RedisStore, client: aioredis.Redis, sim: BailianSimulator
) -> None:
    """A turn whose exchange Redis refuses raises StoreError after its reply; the record
    was written all the same, so the next turn continues the conversation."""
    async with Session(
        sim.app_id, api_key=sim.api_key, base_url=sim.base_url, store=store, name="alice"
    ) as session:
        await session.send("我叫小明")
        transcript_key = store._transcript_key(sim.app_id, "alice")
        await client.delete(transcript_key)
        await client.set(transcript_key, "not a list")
        with pytest.raises(StoreError, match="cannot append to the transcript"):
            await session.send("二")
        stored = await store.get(sim.app_id, "alice")
        assert stored is not None and stored["session_id"] == session.session_id
        assert stored["rounds"] == 2
        await client.delete(transcript_key)
        reply = await asyncio.wait_for(session.send("我叫什么？"), BOUND)
    assert "小明" in reply.text


# -- outages ------------------------------------------------------------------------------


async def test_redis_down_is_a_store_error_and_back_is_fine(
    redis_process: RedisProcess, redis_url: str
) -> None:
    """Every operation fails with StoreError while Redis is stopped, and works after."""
    store = RedisStore.from_url(redis_url)
    try:
        await store.set(APP, "alice", record("before"))
        redis_process.stop()
        operations = [
            store.get(APP, "alice"),
            store.set(APP, "alice", record()),
            store.delete(APP, "alice"),
            begin_turn(store, APP, "alice"),
            anext(aiter(store.conversations())),
        ]
        for operation in operations:
            with pytest.raises(StoreError) as info:
                await asyncio.wait_for(operation, BOUND)
            assert info.value.__cause__ is not None
        redis_process.start()
        assert await store.get(APP, "alice") is None  # a fresh server: empty, but working
        held, _ = await begin_turn(store, APP, "alice")
        await end_turn(store, held, APP, "alice", record("after"))
        assert await store.get(APP, "alice") == record("after")
    finally:
        await store.aclose()


async def test_after_a_restart_every_pooled_connection_works(
    redis_process: RedisProcess, redis_url: str
) -> None:
    """Redis restarted between two bursts of turns: the second burst succeeds whole,
    though every connection in the pool was one the old server had closed."""
    store = RedisStore.from_url(redis_url)

    async def turns(tag: str) -> None:
        async def turn(u: int) -> None:
            held, _ = await begin_turn(store, APP, f"user-{u}")
            await asyncio.sleep(0.01)  # all ten at once: ten connections in the pool
            await end_turn(store, held, APP, f"user-{u}", record(f"{tag}-{u}"))

        await asyncio.wait_for(asyncio.gather(*(turn(u) for u in range(10))), BOUND)

    try:
        await turns("before")
        redis_process.stop()
        redis_process.start()
        await turns("after")
        assert await store.get(APP, "user-3") == record("after-3")
    finally:
        await store.aclose()


class LosingConnection(aioredis.Connection):
    """A connection that, when told, drops the answer to a command Redis has run."""

    lose_next = False

    async def read_response(self, *args: Any, **kwargs: Any) -> Any:
        response = await super().read_response(*args, **kwargs)
        if LosingConnection.lose_next:
            LosingConnection.lose_next = False
            await self.disconnect()
            raise aioredis.ConnectionError("the answer was lost")
        return response


async def test_a_lost_answer_is_asked_again_safely(redis_url: str) -> None:
    """When the connection drops after Redis ran a turn's script, the repeated call
    answers as the first run did: the lease is this turn's (no wait for it to expire),
    the write counts as written, and the lock is free afterwards."""
    pool = aioredis.ConnectionPool.from_url(redis_url, connection_class=LosingConnection)
    client = aioredis.Redis(connection_pool=pool)
    try:
        store = RedisStore(client, lease=30.0)
        held, _ = await begin_turn(store, APP, "warm-up")  # loads the scripts once
        await end_turn(store, held, APP, "warm-up", None)
        for final in (record("kept"), None):
            LosingConnection.lose_next = True
            held, _ = await asyncio.wait_for(begin_turn(store, APP, "alice"), BOUND)
            LosingConnection.lose_next = True
            await asyncio.wait_for(end_turn(store, held, APP, "alice", final), BOUND)
            assert await store.get(APP, "alice") == final
        held, _ = await asyncio.wait_for(begin_turn(store, APP, "alice"), 1.0)
        await end_turn(store, held, APP, "alice", None)
    finally:
        await client.aclose()
        await pool.disconnect()


# -- secrets and lifetime -----------------------------------------------------------------

PASSWORD = "pw-7f3a9c1e5b2d4680"


def reachable(value: object, depth: int = 0, seen: set[int] | None = None) -> list[str]:
    """The text of everything reachable from an exception through its attributes, args
    and causes (frames aside: they hold every local of the program)."""
    seen = set() if seen is None else seen
    if id(value) in seen or depth > 6:
        return []
    seen.add(id(value))
    if isinstance(value, (str, bytes)):
        return [str(value)]
    texts = [repr(value)]
    children: list[object] = []
    if isinstance(value, BaseException):
        texts += [str(value), "".join(traceback.format_exception(value))]
        children += [value.args, value.__cause__, value.__context__]
    if isinstance(value, dict):
        children += [*value.keys(), *value.values()]
    elif isinstance(value, (list, tuple, set)):
        children += list(value)
    children += list(getattr(value, "__dict__", {}).values())
    for child in children:
        if child is not None:
            texts += reachable(child, depth + 1, seen)
    return texts


def password_user(redis_process: RedisProcess) -> tuple[RedisStore, RedisStore]:
    """A Redis user with ``PASSWORD``, and two stores for it: one with that password, one
    with a wrong one."""
    port = redis_process.port
    redis_process.command("ACL", "SETUSER", "tyqw-test", "on", f">{PASSWORD}", "~*", "+@all")
    good = RedisStore.from_url(f"redis://tyqw-test:{PASSWORD}@127.0.0.1:{port}/0")
    wrong = RedisStore.from_url(f"redis://tyqw-test:{PASSWORD}x@127.0.0.1:{port}/0")
    return good, wrong


async def test_the_password_never_leaks(
    redis_process: RedisProcess, redis_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    """Wrong password, server down, bad URL: no error, repr or log holds the password."""
    caplog.set_level(logging.DEBUG)
    texts: list[str] = []
    good, wrong = password_user(redis_process)
    try:
        texts += [repr(good), str(good)]
        await good.set(APP, "alice", record())
        with pytest.raises(StoreError) as wrong_password:
            await wrong.get(APP, "alice")
        texts += reachable(wrong_password.value)
        redis_process.stop()
        with pytest.raises(StoreError) as down:
            await asyncio.wait_for(begin_turn(good, APP, "alice"), BOUND)
        texts += reachable(down.value)
        with pytest.raises(ValueError, match="invalid Redis URL") as bad_url:
            RedisStore.from_url(f"redis://tyqw-test:{PASSWORD}@127.0.0.1:port/0")
        texts += reachable(bad_url.value)
        await good.aclose()
        await wrong.aclose()
    finally:
        if redis_process.process is None:
            redis_process.start()
        redis_process.command("ACL", "DELUSER", "tyqw-test")
    texts += [r.getMessage() for r in caplog.records]
    assert len(texts) > 10
    assert [t for t in texts if PASSWORD in t] == []


def frame_locals(error: BaseException) -> list[str]:
    """What an error reporter such as Sentry records of an error: every frame's local
    variables in every chained exception, containers walked, other objects as repr()."""

    def shown(value: object, depth: int = 0) -> list[str]:
        if isinstance(value, (str, bytes)):
            return [value if isinstance(value, str) else value.decode("latin-1")]
        texts = [repr(value)]
        if depth < 4 and isinstance(value, dict):
            for key, item in value.items():
                texts += shown(key, depth + 1) + shown(item, depth + 1)
        elif depth < 4 and isinstance(value, (list, tuple, set, frozenset)):
            for item in value:
                texts += shown(item, depth + 1)
        return texts

    texts: list[str] = []
    seen: set[int] = set()
    pending: list[BaseException | None] = [error]
    while pending:
        exc = pending.pop()
        if exc is None or id(exc) in seen:
            continue
        seen.add(id(exc))
        for frame, _ in traceback.walk_tb(exc.__traceback__):
            for value in frame.f_locals.values():
                texts += shown(value)
        pending += [exc.__cause__, exc.__context__]
    return texts


async def test_the_password_is_in_no_frame_of_an_error(redis_process: RedisProcess) -> None:
    """A refused password or a server gone: no frame local of the error's chain (what
    Sentry records) holds the password."""
    errors: list[BaseException] = []
    good, wrong = password_user(redis_process)
    try:
        await good.set(APP, "alice", record())
        for call in (
            lambda: wrong.get(APP, "alice"),
            lambda: wrong.set(APP, "alice", record()),
            lambda: begin_turn(wrong, APP, "alice"),
        ):
            with pytest.raises(StoreError) as refused:
                await asyncio.wait_for(call(), BOUND)
            errors.append(refused.value)
        await good.aclose()
        await wrong.aclose()
    finally:
        redis_process.command("ACL", "DELUSER", "tyqw-test")
    texts = [text for error in errors for text in frame_locals(error)]
    assert len(texts) > 10
    assert [t for t in texts if PASSWORD in t] == []


async def test_closes_only_the_client_it_created(client: aioredis.Redis, redis_url: str) -> None:
    """aclose() leaves a client it was given open; a from_url store's own is closed."""
    given = RedisStore(client)
    await given.set(APP, "alice", record())
    await given.aclose()
    await given.aclose()  # idempotent
    assert await client.ping()
    with pytest.raises(StoreError, match="aclose"):
        await given.get(APP, "alice")
    own = RedisStore.from_url(redis_url)
    assert await own.get(APP, "alice") == record()
    await own.aclose()


def test_importing_tyqw_does_not_import_redis() -> None:
    """redis-py is imported only when RedisStore is first used (the tyqw[redis] extra)."""
    script = (
        "import sys, tyqw, tyqw.stores\n"
        "assert 'redis' not in sys.modules, 'redis imported early'\n"
        "tyqw.stores.RedisStore\n"
        "assert 'redis' in sys.modules\n"
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, timeout=60)
    assert done.returncode == 0, done.stderr.decode()


def test_bad_settings_are_refused(client: aioredis.Redis) -> None:
    """ttl and lease must be positive; the error says which."""
    with pytest.raises(ValueError, match="ttl"):
        RedisStore(client, ttl=0)
    with pytest.raises(ValueError, match="lease"):
        RedisStore(client, lease=0)


async def test_a_burst_of_turns_waits_for_connections(redis_url: str) -> None:
    """300 conversations taking a turn at once on one from_url store all succeed."""
    store = RedisStore.from_url(redis_url, max_connections=8)

    async def turn(u: int) -> None:
        held, _ = await begin_turn(store, APP, f"user-{u}")
        await end_turn(store, held, APP, f"user-{u}", record(f"id-{u}"))

    try:
        await asyncio.wait_for(asyncio.gather(*(turn(u) for u in range(300))), 60)
        assert len([c async for c in store.conversations(APP)]) == 300
    finally:
        await store.aclose()
