"""The store contract: one suite over every shipped store and a store a user writes.

Each test takes the ``store`` fixture, so it runs against ``FileStore``,
``MemoryStore``, ``RedisStore`` (a real redis-server) and ``DictStore`` (``helpers.py``), which is
what a user writes in ten lines. Store-specific behaviour is in ``test_store_faults.py``
and ``test_redis_store.py``; the processes sharing one store are here.
"""

from __future__ import annotations

import asyncio
import json
import logging
import subprocess
import sys
import textwrap
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tyqw import StoreError
from tyqw.stores import FileStore, LocalStore, MemoryStore, Store, TranscriptStore, forget
from tyqw.stores._base import TurnLock, begin_turn, end_turn

from .helpers import DictStore, TranscriptDictStore

BOUND = 5.0
APP = "app-1"


def make_store(kind: str, request: pytest.FixtureRequest, tmp_path: Path) -> Store:
    if kind == "file":
        return FileStore(tmp_path / "state")
    if kind == "memory":
        return MemoryStore()
    if kind == "redis":
        from tyqw.stores import RedisStore

        return RedisStore.from_url(request.getfixturevalue("redis_url"))
    return DictStore()


@pytest.fixture(params=["file", "memory", "redis", "user"])
async def store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Store]:
    """Each kind of store, empty: the shipped ones and a user's."""
    made = make_store(request.param, request, tmp_path)
    yield made
    await made.aclose()


@pytest.fixture(params=["file", "memory", "redis"])
async def shipped(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Store]:
    """Each store tyqw ships, empty."""
    made = make_store(request.param, request, tmp_path)
    yield made
    await made.aclose()


@pytest.fixture(params=["file", "memory", "redis", "user"])
async def transcribing(
    request: pytest.FixtureRequest, tmp_path: Path
) -> AsyncIterator[TranscriptStore]:
    """Each store that keeps transcripts, empty: the shipped ones and a user's."""
    made = (
        TranscriptDictStore()
        if request.param == "user"
        else make_store(request.param, request, tmp_path)
    )
    assert isinstance(made, TranscriptStore)
    yield made
    await made.aclose()


def record(session_id: str = "s" * 32, **more: Any) -> dict[str, Any]:
    return {"session_id": session_id, **more}


async def listed(store: Store, app_id: str | None = None) -> dict[tuple[str, str], str]:
    return {(a, n): r["session_id"] async for a, n, r in store.conversations(app_id)}


# -- records ------------------------------------------------------------------------------


def test_every_store_satisfies_the_protocol(store: Store) -> None:
    """Each store is a Store; the local ones are LocalStores, the user's is not."""
    assert isinstance(store, Store)
    assert isinstance(store, LocalStore) == isinstance(store, (FileStore, MemoryStore))


async def test_round_trip(store: Store) -> None:
    """get finds nothing, then what set stored, then nothing after delete."""
    assert await store.get(APP, "alice") is None
    full = record(
        "5b1f8d2a" * 4,
        usage={"qwen-plus": {"input_tokens": 12, "output_tokens": 34}},
        updated_at=1_700_000_000.5,
    )
    await store.set(APP, "alice", full)
    assert await store.get(APP, "alice") == full
    await store.set(APP, "alice", record("second"))
    assert await store.get(APP, "alice") == record("second")
    await store.delete(APP, "alice")
    assert await store.get(APP, "alice") is None
    await store.delete(APP, "alice")  # deleting nothing is fine


async def test_a_record_read_or_written_is_the_callers_to_change(shipped: Store) -> None:
    """Changing the dict given to set(), or one get() or the listing returned, down to
    its token counts, leaves the stored record as it was."""
    usage = {"qwen-plus": {"input_tokens": 12, "output_tokens": 34}}
    given = record("5b1f8d2a" * 4, usage=usage, tags=["a"])
    await shipped.set(APP, "alice", given)
    kept = record("5b1f8d2a" * 4, usage={"qwen-plus": dict(usage["qwen-plus"])}, tags=["a"])
    usage["qwen-plus"]["input_tokens"] = 999
    for _ in range(2):
        read = await shipped.get(APP, "alice")
        assert read == kept
        read["usage"]["qwen-plus"]["output_tokens"] = 0
        read["session_id"] = "changed"
        [(_, _, listed_record)] = [c async for c in shipped.conversations(APP)]
        listed_record.pop("updated_at", None)  # a FileStore lists the file's time
        assert listed_record == kept
        listed_record["usage"]["qwen-plus"].clear()
        listed_record["tags"].append("b")
    assert await shipped.get(APP, "alice") == kept


async def test_conversations_are_kept_apart(store: Store) -> None:
    """Every (app_id, name) pair has its own record, even pairs that join alike."""
    pairs = [("a", "b"), ("b", "a"), ("a", "b\0c"), ("a\0b", "c"), ("other", "b"), ("a", "B")]
    for i, (app_id, name) in enumerate(pairs):
        await store.set(app_id, name, record(f"id-{i}"))
    for i, (app_id, name) in enumerate(pairs):
        assert await store.get(app_id, name) == record(f"id-{i}")


async def test_unpaired_surrogates_round_trip(store: Store) -> None:
    """A lone surrogate in the id, the name or the app id is stored and read back."""
    odd = "\ud800"
    await store.set(odd, odd, record(odd, note="\udfff" + "名字"))
    assert await store.get(odd, odd) == record(odd, note="\udfff" + "名字")
    assert await listed(store, odd) == {(odd, odd): odd}


@settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(app_id=st.text(), name=st.text(), session_id=st.text(min_size=1))
async def test_any_text_round_trips(store: Store, app_id: str, name: str, session_id: str) -> None:
    """Any str for app_id, name and session_id is stored exactly, never an odd error."""
    await store.set(app_id, name, record(session_id))
    assert await store.get(app_id, name) == record(session_id)
    held, found = await begin_turn(store, app_id, name)
    assert found == record(session_id)
    await end_turn(store, held, app_id, name, None)
    assert await store.get(app_id, name) is None


async def test_concurrent_writers_never_mix_records(store: Store) -> None:
    """While tasks write records of many sizes, every read is one whole record."""
    written = [record(f"w{w}-{n}-" + "x" * (n * 37 % 500)) for w in range(5) for n in range(20)]
    reads: list[dict[str, Any] | None] = []

    async def writer(w: int) -> None:
        for n in range(20):
            await store.set(APP, "shared", written[w * 20 + n])
            await asyncio.sleep(0)

    async def reader() -> None:
        for _ in range(60):
            reads.append(await store.get(APP, "shared"))
            await asyncio.sleep(0)

    await asyncio.gather(*(writer(w) for w in range(5)), reader(), reader())
    assert all(r is None or r in written for r in reads)
    assert await store.get(APP, "shared") in [written[w * 20 + 19] for w in range(5)]


async def test_listing(store: Store) -> None:
    """conversations() yields every conversation, or those of one app."""
    await store.set("app-a", "alice", record("id-1", updated_at=1.0))
    await store.set("app-a", "bob", record("id-2"))
    await store.set("app-b", "alice", record("id-3"))
    assert await listed(store) == {
        ("app-a", "alice"): "id-1",
        ("app-a", "bob"): "id-2",
        ("app-b", "alice"): "id-3",
    }
    assert await listed(store, "app-b") == {("app-b", "alice"): "id-3"}
    await store.delete("app-a", "bob")
    assert set(await listed(store, "app-a")) == {("app-a", "alice")}


@pytest.mark.parametrize(
    "bad",
    [
        {"session_id": "ok", "extra": {1, 2}},
        {"session_id": "ok", "updated_at": float("nan")},
        {"session_id": ""},
        {"usage": {}},
    ],
    ids=["not-json", "nan", "empty-id", "no-id"],
)
async def test_a_record_that_cannot_be_stored(
    shipped: Store, bad: dict[str, Any], caplog: pytest.LogCaptureFixture
) -> None:
    """A file store warns and keeps it in memory; other stores raise StoreError."""
    store = shipped
    caplog.set_level(logging.WARNING, logger="tyqw")
    if isinstance(store, FileStore):
        await store.set(APP, "alice", bad)
        assert await store.get(APP, "alice") == bad
        assert len(caplog.records) == 1 and "memory" in caplog.records[0].getMessage()
    else:
        with pytest.raises(StoreError):
            await store.set(APP, "alice", bad)
        held, _ = await begin_turn(store, APP, "alice")
        with pytest.raises(StoreError):
            await end_turn(store, held, APP, "alice", bad)
        # The failed turn released its lock.
        held, _ = await asyncio.wait_for(begin_turn(store, APP, "alice"), BOUND)
        await end_turn(store, held, APP, "alice", None)


# -- locks --------------------------------------------------------------------------------


async def test_lock_excludes_other_tasks(store: Store) -> None:
    """20 tasks read-modify-write one record under the lock: no update is lost."""
    inside = 0
    most_inside = 0

    async def increment() -> None:
        nonlocal inside, most_inside
        for _ in range(5):
            async with store.lock(APP, "counter"):
                inside += 1
                most_inside = max(most_inside, inside)
                current = await store.get(APP, "counter")
                await asyncio.sleep(0)  # let every other task try to get in
                count = int(current["session_id"]) if current else 0
                await store.set(APP, "counter", record(str(count + 1)))
                inside -= 1

    await asyncio.wait_for(asyncio.gather(*(increment() for _ in range(20))), 30)
    assert await store.get(APP, "counter") == record("100")
    assert most_inside == 1


async def test_turns_exclude_each_other_and_lock(store: Store) -> None:
    """begin_turn waits for lock() and for another turn of the same conversation."""
    held, _ = await begin_turn(store, APP, "alice")
    second = asyncio.create_task(begin_turn(store, APP, "alice"))
    locker = asyncio.create_task(store.lock(APP, "alice").__aenter__())
    other, _ = await asyncio.wait_for(begin_turn(store, APP, "bob"), BOUND)  # not blocked
    await end_turn(store, other, APP, "bob", None)
    done, _ = await asyncio.wait({second, locker}, timeout=0.1)
    assert not done  # neither got in while the first turn held the lock
    locker.cancel()
    await end_turn(store, held, APP, "alice", record("from-first"))
    held2, seen = await asyncio.wait_for(second, BOUND)
    assert seen == record("from-first")
    await end_turn(store, held2, APP, "alice", None)
    with pytest.raises(asyncio.CancelledError):
        await locker


async def test_cancelled_wait_leaves_nothing_held(store: Store) -> None:
    """Cancelling a turn that waits for the lock holds nothing afterwards."""
    held, _ = await begin_turn(store, APP, "alice")
    with pytest.raises(asyncio.TimeoutError):
        await asyncio.wait_for(begin_turn(store, APP, "alice"), 0.1)
    await end_turn(store, held, APP, "alice", record("kept"))
    held, seen = await asyncio.wait_for(begin_turn(store, APP, "alice"), BOUND)
    assert seen == record("kept")
    await end_turn(store, held, APP, "alice", record("kept"))


async def test_end_turn_writes_deletes_and_releases_once(store: Store) -> None:
    """end_turn writes, None deletes, the lock is free after, and twice is an error."""
    held, seen = await begin_turn(store, APP, "alice")
    assert seen is None and isinstance(held, TurnLock) and not held.ended
    await end_turn(store, held, APP, "alice", record("one"))
    assert held.ended and await store.get(APP, "alice") == record("one")
    with pytest.raises(RuntimeError):
        await end_turn(store, held, APP, "alice", None)
    held, seen = await asyncio.wait_for(begin_turn(store, APP, "alice"), BOUND)
    assert seen == record("one")
    await end_turn(store, held, APP, "alice", None)
    assert await store.get(APP, "alice") is None


class FailingStore(DictStore):
    """A user's store whose writes fail, as a database that went away."""

    async def set(self, app_id: str, name: str, record: dict[str, Any]) -> None:
        raise ConnectionResetError("the database went away")


async def test_a_users_failing_store_gives_store_error_and_releases() -> None:
    """A user's store that raises: StoreError with the cause, and the lock is free."""
    store = FailingStore()
    held, _ = await begin_turn(store, APP, "alice")
    with pytest.raises(StoreError) as info:
        await end_turn(store, held, APP, "alice", record())
    assert isinstance(info.value.__cause__, ConnectionResetError)
    assert not store.locks[APP, "alice"].locked()


# -- processes sharing one store ---------------------------------------------------------

WORKER = """
    import asyncio, json, sys
    from tyqw.stores import FileStore
    from tyqw.stores._base import begin_turn, end_turn

    kind, where, rounds = sys.argv[1], sys.argv[2], int(sys.argv[3])

    async def main():
        if kind == "file":
            store = FileStore(where)
        else:
            from tyqw.stores import RedisStore
            store = RedisStore.from_url(where)
        for n in range(rounds):
            if n % 2:  # half through lock(), half through a turn: both exclude
                async with store.lock("app", "counter"):
                    current = await store.get("app", "counter")
                    await asyncio.sleep(0)
                    count = int(current["session_id"]) if current else 0
                    await store.set("app", "counter", {"session_id": str(count + 1)})
            else:
                held, current = await begin_turn(store, "app", "counter")
                await asyncio.sleep(0)
                count = int(current["session_id"]) if current else 0
                await end_turn(store, held, "app", "counter", {"session_id": str(count + 1)})
        await store.aclose()

    asyncio.run(main())
"""


def shared_location(kind: str, request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if kind == "redis":
        url: str = request.getfixturevalue("redis_url")
        return url
    return str(tmp_path / "state")


@pytest.mark.parametrize("kind", ["file", "redis"])
async def test_lock_excludes_other_processes(
    kind: str, request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    """3 processes increment one record 100 times each under the lock: 300 at the end."""
    where = shared_location(kind, request, tmp_path)
    script = textwrap.dedent(WORKER)
    workers = [
        await asyncio.create_subprocess_exec(
            sys.executable, "-c", script, kind, where, "100", stderr=subprocess.PIPE
        )
        for _ in range(3)
    ]
    for worker in workers:
        _, stderr = await asyncio.wait_for(worker.communicate(), 120)
        assert worker.returncode == 0, stderr.decode()
    store: Store = FileStore(where) if kind == "file" else _redis_store(where)
    try:
        assert await store.get("app", "counter") == {"session_id": "300"}
    finally:
        await store.aclose()


def _redis_store(url: str) -> Store:
    from tyqw.stores import RedisStore

    return RedisStore.from_url(url)


HOLDER = """
    import asyncio, sys
    from tyqw.stores import FileStore
    from tyqw.stores._base import begin_turn

    kind, where = sys.argv[1], sys.argv[2]

    async def main():
        if kind == "file":
            store = FileStore(where)
        else:
            from tyqw.stores import RedisStore
            store = RedisStore.from_url(where, lease=1.0)
        held = await begin_turn(store, "app", "alice")  # kept: dropping it would release
        print("held", flush=True)
        await asyncio.Event().wait()  # until killed

    asyncio.run(main())
"""


@pytest.mark.parametrize("kind", ["file", "redis"])
async def test_a_killed_holder_blocks_only_until_its_lease_ends(
    kind: str, request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    """SIGKILL a process holding a lock: another gets it within lease + 1 s (the OS
    frees a file lock at once; a Redis lease of 1 s expires)."""
    where = shared_location(kind, request, tmp_path)
    holder = await asyncio.create_subprocess_exec(
        sys.executable, "-c", textwrap.dedent(HOLDER), kind, where, stdout=subprocess.PIPE
    )
    assert holder.stdout is not None
    store = FileStore(where) if kind == "file" else _redis_store(where)
    try:
        try:
            assert await asyncio.wait_for(holder.stdout.readline(), 30) == b"held\n"
            with pytest.raises(asyncio.TimeoutError):  # held while the holder lives
                await asyncio.wait_for(begin_turn(store, "app", "alice"), 0.3)
        finally:
            holder.kill()
            await holder.wait()
        held, _ = await asyncio.wait_for(begin_turn(store, "app", "alice"), 1.0 + 1.0)
        await end_turn(store, held, "app", "alice", None)
    finally:
        await store.aclose()


# -- transcripts ----------------------------------------------------------------------------


def entry(n: int, **more: Any) -> dict[str, Any]:
    return {"prompt": f"prompt {n}", "reply": {"text": f"reply {n}"}, **more}


async def test_a_transcript_reads_back_in_the_order_appended(
    transcribing: TranscriptStore,
) -> None:
    """Entries read back oldest first, exactly as appended, per conversation."""
    assert await transcribing.read_transcript(APP, "alice") == []
    for n in range(5):
        await transcribing.append_transcript(APP, "alice", entry(n), 200)
        await transcribing.append_transcript(APP, "bob", entry(100 + n), 200)
    odd = entry(9, text='名字 \ud800 \n"', nested={"list": [1, 2.5, None, True]})
    await transcribing.append_transcript(APP, "alice", odd, 200)
    assert await transcribing.read_transcript(APP, "alice") == [*map(entry, range(5)), odd]
    assert await transcribing.read_transcript(APP, "bob") == [entry(100 + n) for n in range(5)]
    assert await transcribing.read_transcript("app-2", "alice") == []


@pytest.mark.parametrize("keep", [1, 3, 8])
async def test_a_transcript_keeps_the_most_recent_entries(
    transcribing: TranscriptStore, keep: int
) -> None:
    """With ``keep``, reading gives the ``keep`` most recent entries after every append."""
    for n in range(3 * keep + 5):
        await transcribing.append_transcript(APP, "alice", entry(n), keep)
        expected = [entry(i) for i in range(max(0, n + 1 - keep), n + 1)]
        assert await transcribing.read_transcript(APP, "alice") == expected


async def test_deleting_a_transcript_leaves_the_record_and_others(
    transcribing: TranscriptStore,
) -> None:
    """delete_transcript() empties one transcript only; a later append starts afresh."""
    store: Any = transcribing
    await store.set(APP, "alice", record())
    await transcribing.delete_transcript(APP, "nobody")  # nothing to delete: no error
    for n in range(3):
        await transcribing.append_transcript(APP, "alice", entry(n), 200)
        await transcribing.append_transcript(APP, "bob", entry(n), 200)
    await transcribing.delete_transcript(APP, "alice")
    assert await transcribing.read_transcript(APP, "alice") == []
    assert await transcribing.read_transcript(APP, "bob") == [entry(n) for n in range(3)]
    assert await store.get(APP, "alice") == record()
    await transcribing.append_transcript(APP, "alice", entry(7), 200)
    assert await transcribing.read_transcript(APP, "alice") == [entry(7)]


async def test_forget_deletes_the_record_and_the_transcript(
    transcribing: TranscriptStore,
) -> None:
    """tyqw.stores.forget() removes a conversation entirely, and nothing of another."""
    store: Any = transcribing
    for name in ("alice", "bob"):
        await store.set(APP, name, record())
        await transcribing.append_transcript(APP, name, entry(1), 200)
    await asyncio.wait_for(forget(store, APP, "alice"), BOUND)
    assert await store.get(APP, "alice") is None
    assert await transcribing.read_transcript(APP, "alice") == []
    assert await store.get(APP, "bob") == record()
    assert await transcribing.read_transcript(APP, "bob") == [entry(1)]
    # The lock was given back.
    held, _ = await asyncio.wait_for(begin_turn(store, APP, "alice"), BOUND)
    await end_turn(store, held, APP, "alice", None)


async def test_forget_works_on_a_store_without_transcripts() -> None:
    """forget() on a store with no transcript methods deletes its record."""
    store = DictStore()
    await store.set(APP, "alice", record())
    assert not isinstance(store, TranscriptStore)
    await forget(store, APP, "alice")
    assert await store.get(APP, "alice") is None


def test_records_are_plain_json() -> None:
    """A record's stored form is JSON any tool can read (and ASCII, for any str)."""
    from tyqw.stores._record import encode

    data = encode("app", "名字", record("\ud800"))
    assert data.isascii()
    assert json.loads(data) == {"app_id": "app", "name": "名字", "session_id": "\ud800"}


def test_the_stores_module_exports_exactly_its_documented_names() -> None:
    """tyqw.stores.__all__ is its public surface; each name has a docstring."""
    import inspect

    import tyqw.stores

    public = {
        name
        for name, value in vars(tyqw.stores).items()
        if not name.startswith("_") and not inspect.ismodule(value)
    }
    assert public | {"RedisStore"} == set(tyqw.stores.__all__)
    for name in tyqw.stores.__all__:
        assert inspect.getdoc(getattr(tyqw.stores, name)), name
    for cls in (Store, LocalStore, FileStore, MemoryStore, tyqw.stores.RedisStore):
        assert "Example" in (inspect.getdoc(cls) or ""), cls
