"""A conversation's transcript: ``Session.history()``, ``history=``, ``clear()``,
``forget()``, the ``Exchange`` JSON form, and a FileStore transcript surviving SIGKILL.
``SyncSession.history()`` / ``forget()`` are in ``test_sync.py`` (its simulator thread).

The store-level contract (append, read, cap, delete over every store) is in
``test_stores.py``; many workers writing one transcript per user in
``test_many_workers.py``.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import os
import signal
import stat
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest

import tyqw
from tyqw import Exchange, RecordedError, Reply, Session, StoreError, SyncSession
from tyqw.stores import FileStore, Store
from tyqw.testing import BailianSimulator, Fault

from .helpers import DictStore, SessionFactory, sim_session

BOUND = 30.0
UTC = dt.timezone.utc


@pytest.fixture
def store(transcript_store: Store) -> Store:
    """Each store that keeps transcripts: the shipped ones and a user's."""
    return transcript_store


def files_in(folder: Path) -> dict[Path, bytes]:
    """Every file under ``folder`` and what it holds."""
    return {path: path.read_bytes() for path in folder.rglob("*") if path.is_file()}


def top_files(state_dir: Path) -> list[Path]:
    """The files directly in ``state_dir`` (records and transcripts, not ``.tmp``)."""
    return [path for path in files_in(state_dir) if path.parent == state_dir]


def on(sim: BailianSimulator, store: Store, **kwargs: Any) -> Session:
    return sim_session(sim, None, store=store, **kwargs)  # type: ignore[arg-type]


# -- reading it ---------------------------------------------------------------------------


async def test_history_holds_each_turn_oldest_first(sim: BailianSimulator, store: Store) -> None:
    """history() returns one Exchange per turn, oldest first, with its reply and times."""
    before = dt.datetime.now(UTC)
    async with on(sim, store, name="alice") as session:
        assert await session.history() == []
        replies = [await session.send(p) for p in ("你好，我叫小明", "我叫什么名字？", "再见")]
        history = await session.history()
    after = dt.datetime.now(UTC)
    assert [e.prompt for e in history] == ["你好，我叫小明", "我叫什么名字？", "再见"]
    assert [e.reply for e in history] == replies
    assert history[1].reply.text.startswith("你叫小明")
    for exchange in history:
        assert (
            exchange.started_at.tzinfo is not None
            and exchange.ended_at.utcoffset() == dt.timedelta(0)
        )
        assert before <= exchange.started_at <= exchange.ended_at <= after
    assert [e.started_at for e in history] == sorted(e.started_at for e in history)
    # Another Session of the same conversation (another worker) reads the same transcript.
    async with on(sim, store, name="alice") as other:
        assert await other.history() == history
    async with on(sim, store, name="bob") as bob:
        assert await bob.history() == []


async def test_a_failed_turn_is_kept_with_its_partial_reply_and_error(
    sim: BailianSimulator, store: Store
) -> None:
    """A turn that fails mid-reply is in the transcript: its partial text, and its
    error read back as a RecordedError with the class name, message and code."""
    async with on(sim, store, name="alice") as session:
        await session.send("你好")
        sim.inject(Fault.stream_error(after=2, status=429, code="Throttling"))
        with pytest.raises(tyqw.RateLimitError) as raised:
            await session.send("讲个长故事")
        history = await session.history()
    assert [e.prompt for e in history] == ["你好", "讲个长故事"]
    failed = history[1].reply
    assert raised.value.reply is not None
    assert failed.text == raised.value.reply.text != ""
    assert isinstance(failed.error, RecordedError)
    assert failed.error.kind == "RateLimitError"
    assert failed.error.code == "Throttling"
    assert failed.error.status_code == 429
    assert str(failed.error) == str(raised.value)
    assert history[0].reply.error is None


async def test_an_aborted_turn_is_kept_with_what_arrived(
    sim: BailianSimulator, make_session: SessionFactory
) -> None:
    """A turn stopped by abort() is in the transcript with the text received until then."""
    session = make_session()
    session.on("message", lambda m: session.abort())
    reply = await session.send("讲个长故事")
    [exchange] = await session.history()
    assert exchange.reply.text == reply.text != ""
    assert exchange.reply.finish_reason is None and exchange.reply.error is None


async def test_a_turn_ended_by_a_raising_handler_is_kept_with_its_error(
    sim: BailianSimulator, store: Store
) -> None:
    """A message handler that raises, with no error handler, ends the turn with a
    HandlerError: the exchange keeps the text so far and that error, not just the text."""
    async with on(sim, store, name="alice") as session:

        def fail(message: tyqw.Message) -> None:
            if message.text:
                raise ValueError("the handler broke")

        session.on("message", fail)
        with pytest.raises(tyqw.HandlerError) as raised:
            await session.send("讲个长故事")
        [exchange] = await session.history()
    assert raised.value.reply is not None
    assert exchange.reply.text == raised.value.reply.text != ""
    assert isinstance(exchange.reply.error, RecordedError)
    assert exchange.reply.error.kind == "HandlerError"
    assert "the handler broke" in str(exchange.reply.error)


# -- the cap, and keeping none ------------------------------------------------------------


async def test_history_int_keeps_that_many_recent_exchanges(
    sim: BailianSimulator, store: Store
) -> None:
    """Session(history=3) keeps the three most recent exchanges."""
    async with on(sim, store, name="alice", history=3) as session:
        for n in range(7):
            await session.send(f"turn {n}")
        assert [e.prompt for e in await session.history()] == ["turn 4", "turn 5", "turn 6"]


def test_the_default_cap_is_documented_and_settings_are_checked() -> None:
    """history=True keeps 200; a negative or non-int history= is refused clearly."""
    from tyqw._history import DEFAULT_HISTORY, check_history

    assert check_history(True) == DEFAULT_HISTORY == 200
    assert check_history(False) == check_history(0) == 0
    assert check_history(5) == 5
    with pytest.raises(ValueError, match="history"):
        Session("app", api_key="sk-test", history=-1)
    with pytest.raises(TypeError, match="history"):
        Session("app", api_key="sk-test", history="3")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="history"):
        SyncSession("app", api_key="sk-test", history=2.5)  # type: ignore[arg-type]


async def test_history_false_leaves_no_user_text_in_the_files(
    sim: BailianSimulator, make_session: SessionFactory, state_dir: Path
) -> None:
    """history=False: no file under the state folder holds a prompt or a reply."""
    session = make_session(name="alice", history=False)
    reply = await session.send("我的密码是 hunter2-秘密")
    await session.send("我叫小明")
    await session.aclose()
    assert await session.history() == []
    files = files_in(state_dir)
    assert files  # the record is there
    for path, data in files.items():
        for text in ("hunter2", "秘密", "小明", reply.text[:10]):
            assert text.encode() not in data, path
            assert json.dumps(text).encode() not in data, path
    # ...whereas the default keeps the text: the check above can see it.
    kept = make_session(name="bob")
    await kept.send("hunter2 is mine")
    assert any(b"hunter2" in data for data in files_in(state_dir).values())


async def test_history_false_leaves_no_user_text_in_redis(
    sim: BailianSimulator, redis_url: str
) -> None:
    """history=False over Redis: no key of the store holds a prompt or a reply."""
    import redis.asyncio as aioredis

    from tyqw.stores import RedisStore

    prefix = f"nohistory-{os.getpid()}:"
    store = RedisStore.from_url(redis_url, key_prefix=prefix)
    client = aioredis.Redis.from_url(redis_url)
    try:
        async with on(sim, store, name="alice", history=False) as session:
            await session.send("我的密码是 hunter2-秘密")
        keys = [key async for key in client.scan_iter(match=f"{prefix}*")]
        assert keys  # the record is there
        for key in keys:
            kind = await client.type(key)
            values = (
                [await client.get(key)] if kind == b"string" else await client.lrange(key, 0, -1)
            )
            for value in values:
                assert isinstance(value, bytes)
                assert b"hunter2" not in value and "秘密".encode() not in value
                assert json.dumps("秘密").encode() not in value
        async with on(sim, store, name="bob") as kept:
            await kept.send("hunter2 is mine")
        lists = [key async for key in client.scan_iter(match=f"{prefix}*:transcript")]
        assert len(lists) == 1 and b"hunter2" in (await client.lrange(lists[0], 0, -1))[0]
        ttl = await client.pttl(lists[0])
        assert 0 < ttl <= 7 * 24 * 3600 * 1000  # the record's TTL
    finally:
        await store.aclose()
        await client.aclose()


# -- clear and forget ---------------------------------------------------------------------


async def test_clear_ends_the_transcript_with_the_conversation(
    sim: BailianSimulator, store: Store
) -> None:
    """After clear() the transcript is empty, and the next turn starts it anew; another
    worker sees the same."""
    async with on(sim, store, name="alice") as session:
        await session.send("你好，我叫小明")
        await session.send("我叫什么名字？")
        session.clear()
        assert await session.history() == []
        await session.flush()
        async with on(sim, store, name="alice") as other:
            assert await other.history() == []
        await session.send("我叫什么名字？")
        [exchange] = await session.history()
    assert exchange.prompt == "我叫什么名字？"
    assert not exchange.reply.text.startswith("你叫小明")  # a new conversation


async def test_forget_deletes_the_conversation_and_its_transcript(
    sim: BailianSimulator, store: Store
) -> None:
    """forget(): the store holds neither the record nor the transcript; the next turn
    starts a new conversation."""
    async with on(sim, store, name="alice") as session:
        first = await session.send("你好，我叫小明")
        await session.forget()
        assert session.session_id is None
        assert await store.get(sim.app_id, "alice") is None
        assert await store.read_transcript(sim.app_id, "alice") == []  # type: ignore[attr-defined]
        again = await session.send("我叫什么名字？")
        assert again.session_id != first.session_id
        assert [e.prompt for e in await session.history()] == ["我叫什么名字？"]


async def test_forget_removes_the_files(
    sim: BailianSimulator, make_session: SessionFactory, state_dir: Path
) -> None:
    """With a FileStore, forget() leaves no file of the conversation behind."""
    session = make_session(name="alice")
    await session.send("我叫小明")
    kept = top_files(state_dir)
    assert {p.name.split(".", 1)[1] for p in kept} == {"json", "transcript.jsonl"}
    assert all(stat.S_IMODE(p.stat().st_mode) == 0o600 for p in kept)
    await session.forget()
    assert top_files(state_dir) == []


async def test_forget_from_a_handler_is_refused_not_a_deadlock(
    sim: BailianSimulator, make_session: SessionFactory
) -> None:
    """forget() awaited in a handler of the same Session raises RuntimeError at once
    (it would wait for the turn that runs the handler); the turn is kept."""
    session = make_session()
    refused: asyncio.Future[BaseException] = asyncio.get_running_loop().create_future()

    async def on_message(message: tyqw.Message) -> None:
        try:
            await session.forget()
        except RuntimeError as exc:
            refused.set_result(exc)

    session.once("message", on_message)
    await asyncio.wait_for(session.send("你好"), BOUND)
    assert "forget() called while a turn of the same Session runs" in str(refused.result())
    assert [e.prompt for e in await session.history()] == ["你好"]


async def test_deleting_a_listed_conversation_removes_its_transcript(
    sim: BailianSimulator, make_session: SessionFactory, state_dir: Path
) -> None:
    """StoredConversation.delete() (what the CLI's delete uses) leaves no transcript."""
    session = make_session(name="alice")
    await session.send("我叫小明")
    [listed] = tyqw.stored_conversations(state_dir)
    listed.delete()
    assert await session.history() == []
    assert top_files(state_dir) == []


# -- a store without transcripts ----------------------------------------------------------


async def test_a_store_without_transcript_methods_serves_turns(sim: BailianSimulator) -> None:
    """A user's store with only the five Store methods: turns, clear() and forget() work;
    history() says that store keeps no transcripts."""
    store = DictStore()
    async with on(sim, store, name="alice") as session:
        await session.send("你好，我叫小明")
        reply = await session.send("我叫什么名字？")
        assert reply.text.startswith("你叫小明")
        with pytest.raises(StoreError, match="DictStore keeps no transcripts"):
            await session.history()
        session.clear()
        await session.send("你好")
        await session.forget()
    assert store.records == {}


# -- the JSON form ------------------------------------------------------------------------


def test_an_exchange_round_trips_through_json() -> None:
    """to_dict() -> json -> from_dict() gives back the exchange: text, citations,
    thoughts, usage, ids, finish reason, times; the error as a RecordedError."""
    error = tyqw.RateLimitError(
        "Requests rate limit exceeded", status_code=429, code="Throttling", request_id="r-1"
    )
    reply = Reply(
        text="见<ref>[1]</ref>。",
        session_id="s" * 32,
        request_id="r-1",
        finish_reason="stop",
        usage={"models": [{"model_id": "qwen-plus", "input_tokens": 3, "output_tokens": 5}]},
        thoughts=[{"action_type": "response", "thought": "想一想"}],
        doc_references=[{"index_id": 1, "title": "手册", "doc_id": "d1", "text": "摘录"}],
        error=error,
    )
    started = dt.datetime(2026, 12, 7, 8, 0, 0, 123456, tzinfo=dt.timezone(dt.timedelta(hours=8)))
    exchange = Exchange("问题", reply, started, started + dt.timedelta(seconds=2))
    back = Exchange.from_dict(json.loads(json.dumps(exchange.to_dict())))
    assert back == exchange
    assert back.reply.citations == reply.citations and back.reply.citations[0].title == "手册"
    assert back.reply.display_text == "见[1]。"
    assert back.started_at == started and back.started_at.utcoffset() == dt.timedelta(0)
    assert isinstance(back.reply.error, RecordedError)
    assert (back.reply.error.kind, back.reply.error.code, back.reply.error.status_code) == (
        "RateLimitError",
        "Throttling",
        429,
    )
    assert str(back.reply.error) == str(error)
    # Read back and written again, the error record is the same.
    assert back.to_dict() == exchange.to_dict()


def test_an_exchange_ignores_keys_it_does_not_know_and_refuses_garbage() -> None:
    """A later version's extra keys are ignored; data that is no exchange is a ValueError."""
    now = dt.datetime.now(UTC)
    data = Exchange("hi", Reply("hello", None, None, "stop"), now, now).to_dict()
    data["v"] = 2
    data["tool_calls"] = [{"name": "search"}]
    data["reply"]["reasoning"] = "..."
    assert Exchange.from_dict(data).reply.text == "hello"
    for bad in ({}, {"prompt": 1}, {**data, "started_at": "yesterday"}, {**data, "reply": []}):
        with pytest.raises(ValueError, match="not an exchange"):
            Exchange.from_dict(bad)
    naive = {**data, "ended_at": "2026-12-07T08:00:00"}
    with pytest.raises(ValueError, match="not an exchange"):
        Exchange.from_dict(naive)


# -- FileStore: a crash while appending ---------------------------------------------------

APPENDER = textwrap.dedent(
    """
    import sys
    from tyqw.stores import FileStore

    store = FileStore(sys.argv[1])
    big = "长" * 300_000  # about 1 MB a line: the kill lands in the middle of a write
    n = 0
    while True:
        store.append_transcript_now(sys.argv[2], sys.argv[3], {"n": n, "text": big}, 1000)
        print(n, flush=True)
        n += 1
    """
)


async def test_sigkill_while_appending_keeps_every_whole_exchange(
    sim: BailianSimulator, make_session: SessionFactory, state_dir: Path
) -> None:
    """A process SIGKILLed while appending: every entry it finished reads back, in
    order; the next turn appends normally after them."""
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        APPENDER,
        str(state_dir),
        sim.app_id,
        "alice",
        stdout=subprocess.PIPE,
    )
    assert process.stdout is not None
    done = -1
    try:
        while done < 12:
            line = await asyncio.wait_for(process.stdout.readline(), BOUND)
            assert line, "the appender died"
            done = int(line)
    finally:
        process.send_signal(signal.SIGKILL)
        await asyncio.wait_for(process.wait(), BOUND)
    # What it printed before the kill and this test had not read yet: the appender runs
    # on meanwhile, and each number it printed is an entry it had finished.
    for line in (await asyncio.wait_for(process.stdout.read(), BOUND)).split():
        done = int(line)
    store = FileStore(state_dir)
    entries = store.read_transcript_now(sim.app_id, "alice")
    numbers = [e["n"] for e in entries]
    assert numbers == list(range(len(numbers)))
    assert done + 1 <= len(numbers) <= done + 2  # whole ones only; maybe the one in flight
    assert all(len(e["text"]) == 300_000 for e in entries)

    session = make_session(name="alice")
    await session.send("你好")
    after = store.read_transcript_now(sim.app_id, "alice")
    assert [e.get("n") for e in after[:-1]] == numbers
    assert after[-1]["prompt"] == "你好"


async def test_a_torn_last_line_is_skipped_and_the_next_turn_appends(
    sim: BailianSimulator, make_session: SessionFactory
) -> None:
    """A transcript whose last line was cut short reads back without it; the next turn's
    exchange is appended on a line of its own and reads back."""
    session = make_session(name="alice")
    for prompt in ("一", "二", "三"):
        await session.send(prompt)
    store = session.store
    assert isinstance(store, FileStore)
    path = store.transcript_path(sim.app_id, "alice")
    data = path.read_bytes()
    last_line_start = data.rstrip(b"\n").rfind(b"\n") + 1
    path.write_bytes(data[: last_line_start + (len(data) - last_line_start) // 2])
    assert [e.prompt for e in await session.history()] == ["一", "二"]
    await session.send("四")
    assert [e.prompt for e in await session.history()] == ["一", "二", "四"]


async def test_an_exchange_another_process_appended_between_turns_keeps_its_place(
    sim: BailianSimulator, make_session: SessionFactory
) -> None:
    """An exchange another process appends between two of this Session's turns keeps
    its place: this process's next exchange is numbered after it, and all read back."""
    session = make_session(name="alice")
    await session.send("一")
    store = session.store
    assert isinstance(store, FileStore)
    other = textwrap.dedent(
        f"""
        from tyqw.stores import FileStore
        entry = {{"v": 1, "prompt": "二", "started_at": "2026-01-01T00:00:00+00:00",
                  "ended_at": "2026-01-01T00:00:01+00:00",
                  "reply": {{"text": "另一个进程", "finish_reason": "stop"}}}}
        FileStore({str(store.directory)!r}).append_transcript_now(
            {sim.app_id!r}, "alice", entry, 200
        )
        """
    )
    process = await asyncio.create_subprocess_exec(sys.executable, "-c", other)
    assert await asyncio.wait_for(process.wait(), BOUND) == 0
    await session.send("三")
    assert [e.prompt for e in await session.history()] == ["一", "二", "三"]
    lines = store.transcript_path(sim.app_id, "alice").read_bytes().splitlines()
    assert [json.loads(line)["n"] for line in lines] == [1, 2, 3]


async def test_a_transcript_rewritten_past_its_cap_keeps_the_most_recent_whole_exchanges(
    sim: BailianSimulator, make_session: SessionFactory
) -> None:
    """A FileStore transcript rewritten past its cap keeps its most recent exchanges, a
    line torn by a killed writer dropped, and each rewrite leaves only whole lines."""
    session = make_session(name="alice", history=4)
    for prompt in ("一", "二"):
        await session.send(prompt)
    store = session.store
    assert isinstance(store, FileStore)
    path = store.transcript_path(sim.app_id, "alice")
    data = path.read_bytes()
    last_line_start = data.rstrip(b"\n").rfind(b"\n") + 1
    path.write_bytes(data[: last_line_start + (len(data) - last_line_start) // 2])
    # Numbered 2 to 9 after the torn line: the file reaches twice the cap at 8.
    for prompt in ("三", "四", "五", "六", "七", "八", "九", "十"):
        await session.send(prompt)
    assert [e.prompt for e in await session.history()] == ["七", "八", "九", "十"]
    lines = path.read_bytes().splitlines()
    assert len(lines) == 4 + 1  # the cap, and one append since the last rewrite
    assert all(json.loads(line)["entry"]["prompt"] for line in lines)


def test_a_transcript_line_head_means_what_the_parser_reads(tmp_path: Path) -> None:
    """FileStore's fast reading of a line's head agrees with parsing it whole, and a
    line cut anywhere is never an entry to a reader (at most a kept head)."""
    from tyqw.stores._file import _line_head, _parse_line

    store = FileStore(tmp_path)
    entry = Exchange(
        "你好",
        Reply("天气很好", "s" * 32, "r", "stop", usage={"models": [{"m": {}}]}),
        *[dt.datetime(2026, 12, 7, tzinfo=UTC)] * 2,
    ).to_dict()
    for _ in range(3):
        store.append_transcript_now("app", "alice", entry, 10)
    lines = store.transcript_path("app", "alice").read_bytes().splitlines()
    for line in lines:
        parsed = _parse_line(line)
        assert parsed is not None and _line_head(line) == parsed[:2]
        for cut in range(len(line)):
            assert _parse_line(line[:cut]) is None
            assert _line_head(line[:cut]) in (None, parsed[:2])


def test_two_writers_of_one_folder_keep_one_ordered_transcript(tmp_path: Path) -> None:
    """Two FileStores on one folder (two processes) appending in turn, through
    compactions: every append lands, in order, and the cap holds."""
    first, second = FileStore(tmp_path), FileStore(tmp_path)
    now = dt.datetime(2026, 12, 7, tzinfo=UTC)
    for i in range(23):
        writer = (first, second)[i % 3 == 0]
        entry = Exchange(f"p{i}", Reply(f"r{i}", "s" * 32, "r", "stop"), now, now).to_dict()
        writer.append_transcript_now("app", "alice", entry, 8)
        kept = [e["prompt"] for e in first.read_transcript_now("app", "alice")]
        assert kept == [f"p{j}" for j in range(max(0, i - 7), i + 1)]


def simple_entry(i: int) -> dict[str, Any]:
    """The JSON form of an exchange numbered ``i``, at a fixed time."""
    now = dt.datetime(2026, 12, 7, tzinfo=UTC)
    return Exchange(f"p{i}", Reply(f"r{i}", "s" * 32, "r", "stop"), now, now).to_dict()


@pytest.mark.parametrize(
    "text",
    ["西湖边的龙井茶，清香回甘。" * 50, "a reply with a lone surrogate \ud800 in it"],
)
async def test_any_text_a_reply_can_hold_is_kept_as_it_was(store: Store, text: str) -> None:
    """Chinese text and a lone surrogate (JSON can carry one, escaped) read back as they
    were appended."""
    entry = {**simple_entry(1), "prompt": text, "reply": {"text": text}}
    await store.append_transcript("app", "alice", entry, 10)  # type: ignore[attr-defined]
    (kept,) = await store.read_transcript("app", "alice")  # type: ignore[attr-defined]
    assert (kept["prompt"], kept["reply"]["text"]) == (text, text)


def test_a_transcript_file_holds_chinese_text_as_utf8(tmp_path: Path) -> None:
    """The transcript file is UTF-8 text a user can grep, not \\u escapes."""
    store = FileStore(tmp_path)
    store.append_transcript_now("app", "alice", {**simple_entry(1), "prompt": "西湖在哪里？"}, 10)
    assert "西湖在哪里？" in store.transcript_path("app", "alice").read_text(encoding="utf-8")


def test_a_transcript_file_never_holds_more_than_twice_its_cap(tmp_path: Path) -> None:
    """A FileStore transcript holds at most 2 x keep lines on disk, is rewritten to the
    keep most recent when it reaches that, and always reads back the keep most recent."""
    store, keep = FileStore(tmp_path), 5
    path = store.transcript_path("app", "alice")
    for i in range(37):
        store.append_transcript_now("app", "alice", simple_entry(i), keep)
        lines = path.read_bytes().splitlines()
        assert len(lines) <= 2 * keep
        if i + 1 >= 2 * keep and (i + 1) % keep == 0:
            assert len(lines) == keep  # just rewritten
        kept = [e["prompt"] for e in store.read_transcript_now("app", "alice")]
        assert kept == [f"p{j}" for j in range(max(0, i + 1 - keep), i + 1)]


def test_a_rewrite_of_this_process_s_own_lines_matches_one_that_reads_them_all(
    tmp_path: Path,
) -> None:
    """A FileStore rewriting lines it wrote itself (copied without being read one by
    one) leaves the same bytes as one that knows nothing and reads every line."""
    own = FileStore(tmp_path / "own")
    for i in range(29):
        own.append_transcript_now("app", "alice", simple_entry(i), 4)
        # A new FileStore remembers nothing of the file: it reads the tail, and every
        # line when it rewrites.
        FileStore(tmp_path / "fresh").append_transcript_now("app", "alice", simple_entry(i), 4)
        mine = own.transcript_path("app", "alice").read_bytes()
        assert mine == FileStore(tmp_path / "fresh").transcript_path("app", "alice").read_bytes()


def test_a_rewrite_after_another_writer_reads_every_line(tmp_path: Path) -> None:
    """A FileStore whose transcript another process changed since its own last append
    rewrites it from what the file holds, not from where it remembers its lines start."""
    first, second = FileStore(tmp_path), FileStore(tmp_path)
    path = first.transcript_path("app", "alice")
    for i in range(7):
        first.append_transcript_now("app", "alice", simple_entry(i), 4)
    # Another process drops the two oldest lines: every line moves.
    path.write_bytes(b"".join(path.read_bytes().splitlines(keepends=True)[2:]))
    first.append_transcript_now("app", "alice", simple_entry(7), 4)  # the 8th: rewritten
    assert [json.loads(line)["n"] for line in path.read_bytes().splitlines()] == [5, 6, 7, 8]
    for i in range(8, 12):
        writer = second if i == 9 else first
        writer.append_transcript_now("app", "alice", simple_entry(i), 4)
    assert [json.loads(line)["n"] for line in path.read_bytes().splitlines()] == [9, 10, 11, 12]
    prompts = [e["prompt"] for e in first.read_transcript_now("app", "alice")]
    assert prompts == ["p8", "p9", "p10", "p11"]
