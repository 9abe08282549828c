"""Promises that hold whatever the server sends, the caller passes or another thread does.

Each test names the class of failure it guards against: a turn left holding its Session,
a key reachable from an error, a handler's child task deadlocking, a turn that waits
after its final event, an abort from another thread that waits for the loop, phases
without a time limit, a finish_reason that is not one, wrong-typed values.
"""

from __future__ import annotations

import asyncio
import json
import math
import socket
import threading
import time
from pathlib import Path
from typing import Any

import aiohttp
import pytest

import tyqw
from tyqw import Message, Session
from tyqw.testing import BailianSimulator

from .helpers import (
    SessionFactory,
    TcpServerFactory,
    bailian_event,
    bailian_stream,
    free_port,
    raw_session,
    reachable_strings,
    read_request,
)

BOUND = 5.0
KEY = "sk-hardening-4d2c9e7f1a3b5c6d"
LONG = "一二三四五六七八九十" * 20


def event_stream_head(extra: str = "") -> bytes:
    return (
        "HTTP/1.1 200 OK\r\ncontent-type: text/event-stream;charset=UTF-8\r\n"
        f"transfer-encoding: chunked\r\n{extra}\r\n"
    ).encode()


def chunk(data: bytes) -> bytes:
    return f"{len(data):x}\r\n".encode() + data + b"\r\n"


# -- leaving a stream early frees the turn at once ----------------------------------------


@pytest.mark.parametrize("how", ["break", "return", "raise"])
async def test_leaving_a_stream_loop_frees_the_session_at_once(
    make_session: SessionFactory, sim: BailianSimulator, how: str
) -> None:
    """After break, return or an exception out of the loop, the next turn runs at once,
    with no await in between, and the server sees the response closed."""
    sim.reply = lambda prompt, history: LONG
    sim.chunk_size = 1
    sim.delay = 0.01  # still streaming when the loop is left
    session = make_session()

    async def leave() -> None:
        async for message in session.stream("hi"):
            assert message.delta
            if how == "return":
                return
            if how == "raise":
                raise KeyError("out")
            break

    if how == "raise":
        with pytest.raises(KeyError):
            await leave()
    else:
        await leave()
    reply = await session.send("again")  # no await between the loop and this turn
    assert reply.finish_reason == "stop"
    first = sim.requests[0]
    await asyncio.wait_for(first.done.wait(), BOUND)
    assert first.disconnected


# -- a handler's child task is refused, not deadlocked -------------------------------------


@pytest.mark.parametrize("spawn", ["gather", "wait_for", "create_task"])
async def test_send_from_a_task_a_handler_started_is_refused(
    make_session: SessionFactory, spawn: str
) -> None:
    """A handler that sends through a child task gets the same RuntimeError as a direct
    call, instead of waiting for its own turn forever."""
    session = make_session()
    failures: list[BaseException] = []

    async def handler(message: Message) -> None:
        if message.finish_reason is not None:
            return
        try:
            if spawn == "gather":
                await asyncio.gather(session.send("nested"))
            elif spawn == "wait_for":
                await asyncio.wait_for(session.send("nested"), BOUND)
            else:
                await asyncio.create_task(session.send("nested"))
        except RuntimeError as exc:
            failures.append(exc)

    session.once("message", handler)
    reply = await asyncio.wait_for(session.send("hi"), BOUND)
    assert reply.finish_reason == "stop"
    assert len(failures) == 1 and "would wait for itself" in str(failures[0])


async def test_a_task_that_outlives_the_turn_may_send_later(make_session: SessionFactory) -> None:
    """The refusal is about the running turn: a task started in a handler that sends
    after the turn ended is an ordinary later turn."""
    session = make_session()
    turn_over = asyncio.Event()
    later: list[asyncio.Task[tyqw.Reply]] = []

    async def later_turn() -> tyqw.Reply:
        await turn_over.wait()
        return await session.send("later")

    session.once("message", lambda m: later.append(asyncio.create_task(later_turn())))
    await session.send("hi")
    turn_over.set()
    assert (await asyncio.wait_for(later[0], BOUND)).finish_reason == "stop"


# -- the turn ends at its final event -------------------------------------------------------


@pytest.mark.parametrize("after_stop", ["silence", "keep-alive comments"])
async def test_send_returns_at_the_final_event(
    tcp_server: TcpServerFactory, state_dir: Path, after_stop: str
) -> None:
    """A server that stays open after the final event (quiet, or sending keep-alive
    comments forever) does not hold send(): it returns long before read_timeout."""
    done = asyncio.Event()

    async def script(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(event_stream_head() + chunk(bailian_stream(["你", "好"])))
        await writer.drain()
        while not done.is_set():
            if after_stop == "silence":
                await done.wait()
            else:
                writer.write(chunk(b":\n\n"))
                await writer.drain()
                await asyncio.sleep(0.001)  # the server's pace, not a wait for an event

    base_url = await tcp_server(script)
    try:
        async with raw_session(base_url, state_dir, read_timeout=60) as session:
            reply = await asyncio.wait_for(session.send("hi"), BOUND)
        assert (reply.text, reply.finish_reason, reply.error) == ("你好", "stop", None)
    finally:
        done.set()


async def test_connection_is_reused_when_the_response_ends_after_the_final_event(
    make_session: SessionFactory, sim: BailianSimulator
) -> None:
    """Ending the turn at the final event still reuses the kept-alive connection."""
    session = make_session()
    for _ in range(5):
        await session.send("hi")
    assert sim.connections == 1


# -- abort() from another thread ----------------------------------------------------------


@pytest.mark.parametrize("when", ["waiting for the answer", "mid-reply"])
async def test_abort_from_another_thread_is_immediate(
    tcp_server: TcpServerFactory, state_dir: Path, when: str
) -> None:
    """A stop button in a GUI thread ends a turn whose server has gone quiet at once,
    not when the loop next wakes on its own."""
    release = asyncio.Event()
    started = threading.Event()

    async def script(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        if when == "mid-reply":
            writer.write(event_stream_head() + chunk(bailian_event(1, {"text": "partial"})))
            await writer.drain()
        else:
            started.set()
        await release.wait()

    base_url = await tcp_server(script)
    session = raw_session(base_url, state_dir, read_timeout=60)
    session.on("message", lambda m: started.set())
    aborted_at: list[float] = []

    def stop_button() -> None:
        if started.wait(BOUND):
            aborted_at.append(time.monotonic())
            session.abort()

    thread = threading.Thread(target=stop_button)
    thread.start()
    try:
        # Nothing else wakes the loop for 30 s: only a thread-safe abort() ends it sooner.
        reply = await asyncio.wait_for(session.send("hi"), 30)
        returned_at = time.monotonic()
    finally:
        release.set()
        thread.join(BOUND)
        await session.aclose()
    assert reply.error is None
    assert reply.text == ("partial" if when == "mid-reply" else "")
    assert returned_at - aborted_at[0] < BOUND


# -- every phase has a time limit ---------------------------------------------------------


class _NeverResolves(aiohttp.abc.AbstractResolver):
    async def resolve(self, host: str, port: int = 0, family: int = socket.AF_INET) -> Any:
        await asyncio.Event().wait()

    async def close(self) -> None:
        pass


async def test_name_resolution_is_bounded_by_connect_timeout(state_dir: Path) -> None:
    """A resolver that never answers fails the turn with APITimeoutError."""
    connector = aiohttp.TCPConnector(resolver=_NeverResolves())
    async with aiohttp.ClientSession(connector=connector) as http:
        session = Session(
            "app",
            api_key="sk-x",
            base_url="https://unresolvable.invalid/api/v1",
            state_dir=state_dir,
            http_session=http,
            connect_timeout=0.2,
            max_retries=0,
        )
        with pytest.raises(tyqw.APITimeoutError) as info:
            await asyncio.wait_for(session.send("hi"), BOUND)
    assert isinstance(info.value, TimeoutError)


async def test_sending_to_a_peer_that_never_reads_is_bounded(
    tcp_server: TcpServerFactory, state_dir: Path
) -> None:
    """A large request to a server that accepts and never reads fails with
    APITimeoutError after connect_timeout + read_timeout."""
    stop = asyncio.Event()

    async def never_reads(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await stop.wait()

    base_url = await tcp_server(never_reads)
    try:
        async with raw_session(
            base_url, state_dir, connect_timeout=0.2, read_timeout=0.3, max_retries=0
        ) as session:
            with pytest.raises(tyqw.APITimeoutError, match="connect_timeout"):
                await asyncio.wait_for(session.send("长" * 20_000_000), BOUND * 2)
    finally:
        stop.set()


# -- only a real finish_reason ends a reply -------------------------------------------------


@pytest.mark.parametrize("finish_reason", ["", " ", "null", "NULL", None, "None"])
async def test_a_finish_reason_that_is_not_one_leaves_the_reply_incomplete(
    tcp_server: TcpServerFactory, state_dir: Path, finish_reason: object
) -> None:
    """A stream whose last event says "", "null" or nothing ends as an
    IncompleteStreamError with the text kept, never as a complete reply."""

    async def script(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        events = bailian_event(1, {"text": "半", "finish_reason": "null"})
        events += bailian_event(2, {"text": "句", "finish_reason": finish_reason})
        writer.write(event_stream_head() + chunk(events) + b"0\r\n\r\n")
        await writer.drain()

    base_url = await tcp_server(script)
    async with raw_session(base_url, state_dir) as session:
        with pytest.raises(tyqw.IncompleteStreamError) as info:
            await session.send("hi")
    assert info.value.reply is not None and info.value.reply.text == "半句"


@pytest.mark.parametrize("path", ["fast", "slow"])
@pytest.mark.parametrize(
    "finish_reason", [False, 0, [], {"stop": True}], ids=["false", "0", "list", "dict"]
)
async def test_a_wrong_typed_finish_reason_keeps_the_text_and_is_not_final(
    tcp_server: TcpServerFactory, state_dir: Path, finish_reason: object, path: str
) -> None:
    """finish_reason false (or any non-string) means "not finished": the event's text is
    kept and the reply goes on to its real end, on the fast and the slow decoding path."""

    async def script(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        events = bailian_event(1, {"text": "a", "finish_reason": "null"})
        events += bailian_event(2, {"text": "b", "finish_reason": finish_reason})
        events += bailian_event(3, {"text": "c", "finish_reason": "stop"})
        if path == "slow":  # an event type of another spelling is read by the slow path
            events = events.replace(b"event:result", b"event:message")
        writer.write(event_stream_head() + chunk(events) + b"0\r\n\r\n")
        await writer.drain()

    base_url = await tcp_server(script)
    errors: list[tyqw.TyqwError] = []
    messages: list[Message] = []
    async with raw_session(base_url, state_dir) as session:
        session.on("error", errors.append)
        session.on("message", messages.append)
        reply = await session.send("hi")
    assert errors == []
    assert [(m.delta, m.finish_reason) for m in messages] == [
        ("a", None),
        ("b", None),
        ("c", "stop"),
    ]
    assert (reply.text, reply.finish_reason) == ("abc", "stop")


# -- wrong-typed values -------------------------------------------------------------------


@pytest.mark.parametrize(
    "options",
    [
        {"incremental_output": None},
        {"incremental_output": 1},
        {"has_thoughts": "yes"},
        {"temperature": math.nan},
        {"top_k": 1.5},
        {"image_list": "http://x/1.png"},
        {"biz_params": ["a"]},
        {"rag_options": {"pipeline_ids": "kb"}},
        {"messages": [{"content": "no role"}]},
        {"dialog_round": True},
        {"parameters": "x"},
        {"headers": {"X-A": 1}},
        {"session_id": 12345},
        {"stream": "no"},
    ],
    ids=lambda options: next(iter(options)),
)
async def test_wrong_typed_options_are_refused_before_any_request(
    make_session: SessionFactory, sim: BailianSimulator, options: dict[str, Any]
) -> None:
    """Each option's type is checked: a clear TypeError, and nothing is sent."""
    with pytest.raises(TypeError, match=next(iter(options))):
        await make_session().send("hi", **options)
    assert sim.requests == []


@pytest.mark.parametrize("session_id", [12345, "\ud800", "has space", "x" * 300, "a\nb"])
async def test_an_unusable_session_id_from_the_server_never_reaches_the_store(
    tcp_server: TcpServerFactory, state_dir: Path, session_id: object
) -> None:
    """A numeric, surrogate or otherwise unusable session_id makes its event a
    StreamError; the stored conversation keeps the id it had."""
    good = "f" * 32

    bad = {"output": {"text": "x", "session_id": session_id, "finish_reason": "null"}}

    async def script(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        # ensure_ascii: a lone surrogate travels as the JSON escape \ud800
        events = f"id:1\nevent:result\ndata:{json.dumps(bad)}\n\n".encode()
        events += bailian_event(2, {"text": "", "session_id": good, "finish_reason": "stop"})
        writer.write(event_stream_head() + chunk(events) + b"0\r\n\r\n")
        await writer.drain()

    base_url = await tcp_server(script)
    errors: list[tyqw.TyqwError] = []
    async with raw_session(base_url, state_dir) as session:
        session.on("error", errors.append)
        reply = await session.send("hi")
    assert [type(e) for e in errors] == [tyqw.StreamError]
    assert reply.session_id == good
    async with raw_session(base_url, state_dir) as again:
        assert again.session_id == good


# -- caller input that used to fail late ---------------------------------------------------


async def test_a_key_read_from_a_file_with_its_newline_works(
    make_session: SessionFactory, sim: BailianSimulator
) -> None:
    """open(keyfile).read() keeps the newline: tyqw strips the whitespace around a key."""
    reply = await make_session(api_key=sim.api_key + "\n").send("hi")
    assert reply.finish_reason == "stop"
    assert sim.requests[0].headers["authorization"] == f"Bearer {sim.api_key}"


@pytest.mark.parametrize("key", ["sk-a\nb", "sk-a b", "sk-\x00", "sk-密钥"])
def test_a_key_a_header_cannot_carry_is_refused_early(tmp_path: Path, key: str) -> None:
    """A clear ValueError at construction, which does not show the key."""
    with pytest.raises(ValueError, match="API key") as info:
        Session("app", api_key=key, state_dir=tmp_path)
    assert key not in str(info.value)


@pytest.mark.parametrize("name", ["connect_timeout", "read_timeout", "deadline"])
@pytest.mark.parametrize("value", [math.inf, -math.inf, math.nan, 0, -1])
def test_timeouts_must_be_finite_and_positive(tmp_path: Path, name: str, value: float) -> None:
    """float("inf") is refused at construction, not with an OverflowError mid-turn."""
    options: dict[str, Any] = {name: value}
    with pytest.raises(ValueError, match=name):
        Session("app", api_key="sk-x", state_dir=tmp_path, **options)


@pytest.mark.parametrize(
    "content_type",
    ["Text/Event-Stream", "TEXT/EVENT-STREAM; charset=utf-8", "text/event-stream ;charset=UTF-8"],
)
async def test_media_types_are_case_insensitive(
    tcp_server: TcpServerFactory, state_dir: Path, content_type: str
) -> None:
    """Text/Event-Stream is an event stream, as the HTTP spec says."""

    async def script(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        head = f"HTTP/1.1 200 OK\r\ncontent-type: {content_type}\r\nconnection: close\r\n\r\n"
        writer.write(head.encode() + bailian_stream(["好"]))
        await writer.drain()

    base_url = await tcp_server(script)
    async with raw_session(base_url, state_dir) as session:
        assert (await session.send("hi")).text == "好"


# -- the key is reachable from no error ----------------------------------------------------

_BROKEN_ANSWERS = {
    "bad status line": b"HTTP/1.1 ABC\r\n\r\n",
    "oversized header": b"HTTP/1.1 200 OK\r\nx-big: " + b"a" * 200_000 + b"\r\n\r\n",
    "bad chunk size": event_stream_head() + b"zz\r\nhello\r\n",
    "unknown content-encoding": (
        b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ncontent-encoding: br-x\r\n"
        b"content-length: 5\r\n\r\nhello"
    ),
    "gzip that is not": (
        b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ncontent-encoding: gzip\r\n"
        b"content-length: 5\r\n\r\nhello"
    ),
    "reset after headers": event_stream_head(),
}


@pytest.mark.parametrize("answer", list(_BROKEN_ANSWERS), ids=list(_BROKEN_ANSWERS))
async def test_no_error_holds_the_key(
    tcp_server: TcpServerFactory, state_dir: Path, answer: str
) -> None:
    """A malformed HTTP answer is a TyqwError, and nothing reachable from it (its
    causes, their attributes, arguments and request info) holds the key."""

    async def script(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(_BROKEN_ANSWERS[answer])
        await writer.drain()

    base_url = await tcp_server(script)
    emitted: list[tyqw.TyqwError] = []
    session = Session("app", api_key=KEY, base_url=base_url, state_dir=state_dir, max_retries=0)
    async with session:
        with pytest.raises(tyqw.TyqwError) as info:
            await session.send("hi")
        session.on("error", emitted.append)
        await session.send("hi")
    for error in (info.value, *emitted):
        found = [text for text in reachable_strings(error) if KEY in text or KEY[8:20] in text]
        assert found == [], found[:3]


async def test_errors_are_json_serializable_without_the_key(
    tcp_server: TcpServerFactory, state_dir: Path
) -> None:
    """What an error reporter would serialize (str, repr, vars of the chain) is clean."""

    async def script(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(_BROKEN_ANSWERS["bad status line"])
        await writer.drain()

    base_url = await tcp_server(script)
    session = Session("app", api_key=KEY, base_url=base_url, state_dir=state_dir, max_retries=0)
    async with session:
        with pytest.raises(tyqw.APIConnectionError) as info:
            await session.send("hi")
    cause = info.value.__cause__
    assert isinstance(cause, aiohttp.ClientResponseError)  # still aiohttp's, for callers
    dumped = json.dumps({k: repr(v) for k, v in vars(cause).items()}) + repr(cause.args)
    assert KEY not in dumped


# -- an empty session_id ------------------------------------------------------------------


async def test_an_empty_session_id_is_no_conversation(
    sim: BailianSimulator, make_session: SessionFactory
) -> None:
    """session_id "" means "none", as None does: the per-turn option is as if not given, and
    assigning it starts anew, as code ported from the TypeScript class expects."""
    session = make_session()
    first = await session.send("你好，我叫小明")
    same = await session.send("我叫什么名字？", session_id="")
    assert same.session_id == first.session_id and same.text.startswith("你叫小明")
    assert sim.requests[-1].body["input"]["session_id"] == first.session_id

    session.session_id = ""
    assert session.session_id is None
    anew = await session.send("我叫什么名字？")
    assert anew.session_id != first.session_id and anew.text.startswith("你还没告诉我")


async def test_the_simulator_reads_an_empty_session_id_as_none(sim: BailianSimulator) -> None:
    """A body with input.session_id "" starts a conversation, as one without it does."""
    headers = {"Authorization": f"Bearer {sim.api_key}"}
    url = f"{sim.base_url}/apps/{sim.app_id}/completion"
    async with aiohttp.ClientSession() as http:
        for text in ("my name is Ada", "what is my name?"):
            body = {"input": {"prompt": text, "session_id": ""}, "parameters": {}}
            async with http.post(url, json=body, headers=headers) as response:
                assert response.status == 200
                answer = await response.json()
    assert "Ada" not in answer["output"]["text"]
    assert sim.requests[-1].session_id == answer["output"]["session_id"] != ""


# -- network failures in the user's words ---------------------------------------------------


class _NoSuchHost(aiohttp.abc.AbstractResolver):
    """What the system resolver says of a name that does not exist, at once."""

    async def resolve(self, host: str, port: int = 0, family: int = socket.AF_INET) -> Any:
        raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")

    async def close(self) -> None:
        pass


async def _garbage(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    await reader.read(1)  # the TLS client hello
    writer.write(b"HTTP/1.1 400 Bad Request\r\n\r\n")  # plain HTTP where TLS was expected
    await writer.drain()


@pytest.mark.parametrize("failure", ["refused", "no-such-host", "not-tls"])
async def test_a_failed_connection_is_told_in_the_users_words(
    tcp_server: TcpServerFactory, state_dir: Path, failure: str
) -> None:
    """A connection that fails says what happened, without aiohttp's jargon ("ssl:default",
    class names); aiohttp's own error stays in __cause__."""
    resolver = _NoSuchHost() if failure == "no-such-host" else None
    if failure == "refused":
        base_url = f"http://127.0.0.1:{free_port()}/api/v1"
        host = base_url.split("/")[2]
        expected = f"could not connect to {host}: the connection was refused"
    elif failure == "no-such-host":
        base_url = "https://chat.example.invalid/api/v1"
        expected = "could not connect to chat.example.invalid:443: no such host (its name"
    else:
        base_url = (await tcp_server(_garbage)).replace("http://", "https://")
        host = base_url.split("/")[2]
        expected = f"could not make a secure (TLS) connection to {host}"
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(resolver=resolver)) as http:
        session = raw_session(base_url, state_dir, http_session=http, max_retries=0)
        with pytest.raises(tyqw.APIConnectionError) as info:
            await asyncio.wait_for(session.send("hi"), BOUND)
        await session.aclose()
    message = str(info.value)
    assert message.startswith(expected), message
    for jargon in ("ssl:", "Cannot connect", "Client", "Error", "[", "_ssl.c"):
        assert jargon not in message
    assert isinstance(info.value.__cause__, aiohttp.ClientError)


async def test_a_cut_reply_is_told_in_the_users_words(
    tcp_server: TcpServerFactory, state_dir: Path
) -> None:
    """A reply cut mid-stream says so and how much arrived, without aiohttp's class name."""

    async def script(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        events = bailian_event(1, {"text": "半", "finish_reason": "null"})
        writer.write(event_stream_head() + chunk(events) + b"ff\r\npartial")
        await writer.drain()

    base_url = await tcp_server(script)
    async with raw_session(base_url, state_dir, max_retries=0) as session:
        with pytest.raises(tyqw.ConnectionLostError) as info:
            await session.send("hi")
    assert str(info.value) == (
        "the connection closed before the reply finished; 1 characters received"
    )
    assert info.value.reply is not None and info.value.reply.text == "半"
    assert isinstance(info.value.__cause__, aiohttp.ClientError)
