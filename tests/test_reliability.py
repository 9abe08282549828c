"""Reliability: idle and connect timeouts, deadlines, retries, truncated streams,
cancellation and abort, and recovery after every kind of failure.

Everything runs against real servers on 127.0.0.1: the simulator with its faults, or a
few lines of asyncio for what the simulator cannot do (a connection that is dropped
before any answer, an error body that never ends, a port nobody listens on).
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import os
import socket
import sys
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import pytest

import tyqw
from tyqw import Message, Reply, Session, _retry
from tyqw.testing import BailianSimulator, Fault

from .helpers import (
    RawServerFactory,
    Script,
    SessionFactory,
    TcpServerFactory,
    raw_session,
    read_request,
    sim_session,
)

BOUND = 5.0
"""A generous upper bound for anything that should take milliseconds."""

SOON = 1.0
"""The bound for "at once" promises: the server sees the disconnect within a second."""

PROMPT = "hello there, tell me something"
REPLY = "one two three four five six"


# -- helpers -------------------------------------------------------------------------


def open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


def running_tasks() -> set[asyncio.Task[Any]]:
    current = asyncio.current_task()
    return {t for t in asyncio.all_tasks() if not t.done() and t is not current}


async def assert_no_new_tasks(before: set[asyncio.Task[Any]]) -> None:
    """Tasks started since ``before`` all finish (within a bound)."""
    extra = running_tasks() - before
    if extra:
        await asyncio.wait(extra, timeout=BOUND)
    leaked = running_tasks() - before
    assert not leaked, f"leaked tasks: {leaked}"


async def disconnected(sim: BailianSimulator, index: int = -1) -> bool:
    """Wait (at most a second) until the simulator is done with a request."""
    request = sim.requests[index]
    await asyncio.wait_for(request.done.wait(), SOON)
    return request.disconnected


def retry_records(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [
        r
        for r in caplog.records
        if r.name == "tyqw" and r.levelno == logging.INFO and "retrying" in r.getMessage()
    ]


def retry_messages(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in retry_records(caplog)]


@contextlib.contextmanager
def log_signal(message_part: str) -> Iterator[asyncio.Event]:
    """An event set when the ``tyqw`` logger emits a record containing ``message_part``."""
    event = asyncio.Event()

    class Signal(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            if message_part in record.getMessage():
                event.set()

    logger = logging.getLogger("tyqw")
    handler = Signal(logging.DEBUG)
    old_level = logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.DEBUG)
    try:
        yield event
    finally:
        logger.removeHandler(handler)
        logger.setLevel(old_level)


def traced_http(**events: asyncio.Event) -> aiohttp.ClientSession:
    """A ClientSession that sets ``events[name]`` on the aiohttp trace signal ``name``
    (``request_headers_sent``, ``request_end``...): a precise "the request got this far".
    """
    trace = aiohttp.TraceConfig()
    for name, event in events.items():

        async def on_signal(*_: object, event: asyncio.Event = event) -> None:
            event.set()

        getattr(trace, f"on_{name}").append(on_signal)
    return aiohttp.ClientSession(trace_configs=[trace])


@contextlib.asynccontextmanager
async def waiting_for_the_answer(
    sim: BailianSimulator, state_dir: Path
) -> AsyncIterator[tuple[Session, asyncio.Task[Reply]]]:
    """A Session and its ``send(PROMPT)`` task, yielded once the request has gone out and
    the task waits for an answer that does not come (the simulator stalls the headers).
    """
    sent = asyncio.Event()
    async with (
        traced_http(request_headers_sent=sent) as http,
        sim_session(sim, state_dir, http_session=http) as session,
    ):
        sim.inject(Fault.headers_stall(30))
        task = asyncio.create_task(session.send(PROMPT))
        await asyncio.wait_for(sent.wait(), BOUND)
        yield session, task


@dataclass
class ScriptedServer:
    base_url: str = ""
    connections: int = 0


@pytest.fixture
def scripted(tcp_server: TcpServerFactory) -> Callable[[Script], Awaitable[ScriptedServer]]:
    """``await scripted(script)``: a server that runs ``script`` for each connection.

    Scripts end when the client goes away (``await reader.read()`` returns at EOF).
    """

    async def start(script: Script) -> ScriptedServer:
        state = ScriptedServer()

        async def counted(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            state.connections += 1
            await script(reader, writer)

        state.base_url = await tcp_server(counted)
        return state

    return start


@pytest.fixture
def fast_backoff(monkeypatch: pytest.MonkeyPatch) -> None:
    """Exponential backoff in milliseconds instead of half-seconds."""
    monkeypatch.setattr(_retry, "BACKOFF_BASE", 0.001)


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
    return port


# -- 1. timeouts ---------------------------------------------------------------------


async def test_stall_mid_stream_is_a_timeout_with_partial_text(
    make_session: SessionFactory, sim: BailianSimulator
) -> None:
    """No bytes for read_timeout while streaming: APITimeoutError, partial text kept."""
    sim.inject(Fault.stall(30, after=2))
    session = make_session(read_timeout=0.2)
    deltas: list[str] = []
    session.on("message", lambda m: deltas.append(m.delta))
    with pytest.raises(tyqw.APITimeoutError, match="read_timeout") as info:
        await asyncio.wait_for(session.send(PROMPT), BOUND)
    assert len(deltas) == 2
    reply = info.value.reply
    assert reply is not None and reply.text == "".join(deltas) and reply.text
    assert reply.session_id == sim.requests[-1].session_id == session.session_id
    assert reply.finish_reason is None
    assert await disconnected(sim)


async def test_stall_in_stream_iteration_raises_timeout(
    make_session: SessionFactory, sim: BailianSimulator
) -> None:
    """stream() raises APITimeoutError during iteration, not only while connecting."""
    sim.inject(Fault.stall(30, after=3))
    session = make_session(read_timeout=0.2)
    received: list[Message] = []

    async def consume() -> None:
        async with session.stream(PROMPT) as stream:
            async for message in stream:
                received.append(message)

    with pytest.raises(tyqw.APITimeoutError) as info:
        await asyncio.wait_for(consume(), BOUND)
    assert len(received) == 3
    assert info.value.reply is not None and info.value.reply.text == received[-1].text


async def test_stall_with_error_listener_returns_partial_reply(
    make_session: SessionFactory, sim: BailianSimulator
) -> None:
    """With an error listener the timeout is emitted and send() returns the partial Reply."""
    sim.inject(Fault.stall(30, after=1))
    session = make_session(read_timeout=0.2)
    errors: list[tyqw.TyqwError] = []
    session.on("error", errors.append)
    reply = await asyncio.wait_for(session.send(PROMPT), BOUND)
    assert len(errors) == 1 and isinstance(errors[0], tyqw.APITimeoutError)
    assert reply.error is errors[0] and reply.text


async def test_keepalive_comments_reset_the_idle_timeout(
    make_session: SessionFactory, sim: BailianSimulator
) -> None:
    """read_timeout is an idle limit: a quiet stream with keep-alives is not cut off."""
    sim.reply = lambda prompt, history: "one two three four five"
    plain = [m.delta for m in await collect(make_session(name="plain"), PROMPT)]
    sim.inject(Fault.stall(0.6, after=2, keepalive=0.05))
    session = make_session(name="kept-alive", read_timeout=0.3)
    messages = await collect(session, PROMPT)
    assert [m.delta for m in messages] == plain  # and the comments made no messages
    assert messages[-1].finish_reason == "stop"


async def collect(session: Session, prompt: str) -> list[Message]:
    return [m async for m in session.stream(prompt)]


async def test_no_headers_within_read_timeout_is_a_timeout_and_not_retried(
    make_session: SessionFactory, sim: BailianSimulator, caplog: pytest.LogCaptureFixture
) -> None:
    """The request was sent, the answer never started: a timeout, never sent twice."""
    sim.inject(Fault.headers_stall(30))
    session = make_session(read_timeout=0.2)
    caplog.set_level(logging.INFO, logger="tyqw")
    with pytest.raises(tyqw.APITimeoutError) as info:
        await asyncio.wait_for(session.send(PROMPT), BOUND)
    assert len(sim.requests) == 1 and not retry_records(caplog)
    message = str(info.value)
    assert "read_timeout" in message and "connecting" not in message
    assert info.value.reply is not None and info.value.reply.text == ""
    assert await disconnected(sim)


async def test_connect_timeout(
    state_dir: Path, fast_backoff: None, caplog: pytest.LogCaptureFixture
) -> None:
    """A connect that never completes: APITimeoutError after connect_timeout, retried."""
    # A listener that never accepts, with its backlog full: further SYNs are dropped, so
    # a connect hangs as it would against a black-holed host, yet all on loopback.
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(0)
        port = listener.getsockname()[1]
        fillers = []
        for _ in range(3):
            filler = socket.socket()
            filler.setblocking(False)
            with contextlib.suppress(BlockingIOError):
                filler.connect(("127.0.0.1", port))
            fillers.append(filler)
        try:
            session = raw_session(
                f"http://127.0.0.1:{port}/api/v1", state_dir, connect_timeout=0.2
            )
            caplog.set_level(logging.INFO, logger="tyqw")
            async with session:
                with pytest.raises(tyqw.APITimeoutError, match="connect_timeout") as info:
                    await asyncio.wait_for(session.send("hi"), BOUND)
        finally:
            for filler in fillers:
                filler.close()
    assert "read_timeout" not in str(info.value)
    assert len(retry_records(caplog)) == 2  # a connect timeout is safe to retry


def test_timeout_defaults() -> None:
    """Defaults: connect 10 s, idle read 120 s, no overall deadline, no total limit."""
    session = Session("app", api_key="sk-x")
    assert (session.connect_timeout, session.read_timeout, session.deadline) == (10, 120, None)
    timeout = session._config.timeout
    # connect bounds name resolution and the handshakes too; sock_read is the idle limit.
    assert timeout.total is None and timeout.connect == 10
    assert (timeout.sock_connect, timeout.sock_read) == (10, 120)


async def test_a_callers_total_timeout_does_not_cut_streams(
    sim: BailianSimulator, state_dir: Path
) -> None:
    """tyqw's own limits apply per request, even on a ClientSession with total=0.3 s."""
    sim.delay = 0.02
    sim.chunk_size = 2
    sim.reply = lambda prompt, history: "x" * 60  # 30 events: about 0.6 s
    async with (
        aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=0.3)) as http,
        sim_session(sim, state_dir, http_session=http) as session,
    ):
        reply = await asyncio.wait_for(session.send(PROMPT), BOUND)
    assert reply.text == "x" * 60 and reply.finish_reason == "stop"


@pytest.mark.parametrize(
    ("fault", "partial"),
    [
        (Fault.headers_stall(30), False),
        (Fault.http(503, retry_after=30), False),
        (Fault.stall(30, after=2), True),
    ],
    ids=["connecting", "backing-off", "streaming"],
)
async def test_deadline_in_each_phase(
    make_session: SessionFactory, sim: BailianSimulator, fault: Fault, partial: bool
) -> None:
    """The overall deadline ends the turn in any phase with APITimeoutError."""
    sim.inject(fault)
    session = make_session(deadline=0.3)
    with pytest.raises(tyqw.APITimeoutError, match="deadline") as info:
        await asyncio.wait_for(session.send(PROMPT), BOUND)
    assert info.value.reply is not None and bool(info.value.reply.text) is partial
    assert len(sim.requests) == 1
    assert await disconnected(sim) or fault.kind == "http"
    assert (await asyncio.wait_for(session.send("again"), BOUND)).finish_reason == "stop"


async def test_deadline_while_a_handler_runs(
    make_session: SessionFactory, sim: BailianSimulator
) -> None:
    """A deadline that passes inside a slow handler ends the turn when it returns."""
    sim.delay = 0.05
    session = make_session(deadline=0.2)
    seen: list[Message] = []
    never = asyncio.Event()

    async def slow(message: Message) -> None:
        seen.append(message)
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(never.wait(), 0.5)

    session.on("message", slow)
    with pytest.raises(tyqw.APITimeoutError, match="deadline") as info:
        await asyncio.wait_for(session.send(PROMPT), BOUND)
    assert len(seen) == 1
    assert info.value.reply is not None and info.value.reply.text == seen[0].text
    assert await disconnected(sim)


@pytest.mark.parametrize("status", [400, 503], ids=["400", "503"])
async def test_deadline_while_reading_an_error_body(
    scripted: Callable[[Script], Awaitable[ScriptedServer]], state_dir: Path, status: int
) -> None:
    """A deadline that passes while an error body trickles in ends the turn at once:
    no backoff (Retry-After: 30) afterwards, no error made from a half-read body.
    """

    async def script(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(
            f"HTTP/1.1 {status} X\r\nContent-Type: application/json\r\n"
            'Retry-After: 30\r\nContent-Length: 100\r\n\r\n{"code":'.encode()
        )
        await reader.read()  # the rest never comes

    server = await scripted(script)
    async with raw_session(server.base_url, state_dir, deadline=0.3) as session:
        with pytest.raises(tyqw.APITimeoutError, match="deadline"):
            await asyncio.wait_for(session.send("hi"), BOUND)
    assert server.connections == 1


# -- 2. retries ----------------------------------------------------------------------


@pytest.mark.parametrize("status", [429, 500, 502, 503, 504])
async def test_retryable_status_then_success(
    make_session: SessionFactory,
    sim: BailianSimulator,
    caplog: pytest.LogCaptureFixture,
    status: int,
) -> None:
    """429 and 5xx before the body are retried, honouring retry-after-ms, logged at INFO."""
    sim.inject(Fault.http(status, retry_after_ms=10))
    session = make_session()
    with caplog.at_level(logging.INFO, logger="tyqw"):
        reply = await asyncio.wait_for(session.send(PROMPT), BOUND)
    assert reply.finish_reason == "stop" and reply.error is None
    assert len(sim.requests) == 2
    assert sim.requests[1].raw_body == sim.requests[0].raw_body
    [record] = retry_records(caplog)
    message = record.getMessage()
    assert f"HTTP {status}" in message and "retry 1 of 2" in message
    assert "in 0.01s" in message  # the server's retry-after-ms, not a guess


@pytest.mark.parametrize(
    ("status", "cls"),
    [
        (400, tyqw.BadRequestError),
        (401, tyqw.AuthenticationError),
        (403, tyqw.PermissionDeniedError),
        (404, tyqw.NotFoundError),
    ],
    ids=["400", "401", "403", "404"],
)
async def test_client_errors_are_never_retried(
    make_session: SessionFactory,
    sim: BailianSimulator,
    caplog: pytest.LogCaptureFixture,
    status: int,
    cls: type[tyqw.APIStatusError],
) -> None:
    """400/401/403/404 on an SSE request: raised at once, one request, no retry log."""
    sim.inject(Fault.http(status, retry_after_ms=10), times=3)
    session = make_session()
    with caplog.at_level(logging.INFO, logger="tyqw"), pytest.raises(cls):
        await session.send(PROMPT)
    assert len(sim.requests) == 1 and sim.requests[0].sse
    assert not retry_records(caplog)


async def test_retries_exhausted_raise_the_last_error(
    make_session: SessionFactory, sim: BailianSimulator, caplog: pytest.LogCaptureFixture
) -> None:
    """503 every time: 1 + max_retries requests, then InternalServerError."""
    sim.inject(Fault.http(503, retry_after_ms=10), times=5)
    session = make_session()
    caplog.set_level(logging.INFO, logger="tyqw")
    with pytest.raises(tyqw.InternalServerError) as info:
        await session.send(PROMPT)
    assert info.value.status_code == 503
    assert len(sim.requests) == 3
    assert [("retry 1 of 2" in m, "retry 2 of 2" in m) for m in retry_messages(caplog)] == [
        (True, False),
        (False, True),
    ]


@pytest.mark.parametrize("max_retries", [0, 1, 4])
async def test_max_retries_is_the_bound(
    make_session: SessionFactory, sim: BailianSimulator, max_retries: int
) -> None:
    """max_retries=N means at most N + 1 requests; 0 disables retrying."""
    sim.inject(Fault.http(429, retry_after_ms=1), times=10)
    session = make_session(max_retries=max_retries)
    with pytest.raises(tyqw.RateLimitError):
        await session.send(PROMPT)
    assert len(sim.requests) == max_retries + 1


@pytest.mark.parametrize(
    "fault",
    [
        Fault.stream_error(after=0, status=503),
        Fault.stream_error(after=2, status=500),
        Fault.cut(after=2),
        Fault.truncate(after=1),
        Fault.content_type(),
    ],
    ids=["error-frame-first", "error-frame-later", "cut", "truncate", "html-200"],
)
async def test_nothing_is_resent_once_the_answer_started(
    make_session: SessionFactory, sim: BailianSimulator, fault: Fault
) -> None:
    """In-stream errors and broken bodies are never retried: it would duplicate output."""
    sim.inject(fault)
    session = make_session()
    with pytest.raises(tyqw.TyqwError):
        await session.send(PROMPT)
    assert len(sim.requests) == 1


async def test_connection_refused_is_retried_then_fails(
    state_dir: Path, fast_backoff: None, caplog: pytest.LogCaptureFixture
) -> None:
    """Nobody listening: max_retries retries, then APIConnectionError (not a timeout)."""
    port = closed_port()
    caplog.set_level(logging.INFO, logger="tyqw")
    async with raw_session(f"http://127.0.0.1:{port}/api/v1", state_dir) as session:
        with pytest.raises(tyqw.APIConnectionError) as info:
            await asyncio.wait_for(session.send("hi"), BOUND)
    assert type(info.value) is tyqw.APIConnectionError
    assert info.value.__cause__ is not None
    assert info.value.reply is not None and info.value.reply.text == ""
    messages = retry_messages(caplog)
    assert len(messages) == 2 and all("connection failed" in m for m in messages)


@pytest.mark.parametrize("max_retries", [0, 2])
async def test_dropped_connections_are_retried(
    scripted: Callable[[Script], Awaitable[ScriptedServer]],
    state_dir: Path,
    fast_backoff: None,
    max_retries: int,
) -> None:
    """A connection closed before any answer is retried: 1 + max_retries connections."""

    async def script(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)  # then hang up without a word

    server = await scripted(script)
    async with raw_session(server.base_url, state_dir, max_retries=max_retries) as session:
        with pytest.raises(tyqw.APIConnectionError):
            await asyncio.wait_for(session.send("hi"), BOUND)
    assert server.connections == max_retries + 1


async def test_retry_after_http_date_with_numeric_zone(
    raw_server: RawServerFactory, state_dir: Path
) -> None:
    """A Retry-After date written with "-0000" is honoured, not a crash."""
    server = await raw_server(
        [b'{"code":"Throttling","message":"slow down"}'],
        status=429,
        content_type="application/json",
        headers={"Retry-After": "Wed, 21 Oct 2015 07:28:00 -0000"},
    )
    async with raw_session(server.base_url, state_dir, max_retries=1) as session:
        with pytest.raises(tyqw.RateLimitError):
            await asyncio.wait_for(session.send("hi"), BOUND)
    assert len(server.requests) == 2


@pytest.mark.parametrize(
    ("headers", "expected"),
    [
        ({"retry-after-ms": "10"}, 0.01),
        ({"retry-after-ms": "1500", "Retry-After": "9"}, 1.5),
        ({"Retry-After": "2"}, 2.0),
        ({"Retry-After": "0.25"}, 0.25),
        ({"Retry-After": "3600"}, 60.0),
        ({"retry-after-ms": "9999999"}, 60.0),
        ({"Retry-After": "inf"}, 60.0),
        ({"Retry-After": "-5"}, 0.0),
        ({"Retry-After": "Wed, 21 Oct 2015 07:28:00 GMT"}, 0.0),
        ({"Retry-After": "Wed, 21 Oct 2015 07:28:00 -0000"}, 0.0),
        ({"Retry-After": "Fri, 31 Dec 9999 23:59:59 GMT"}, 60.0),
        ({"Retry-After": "soon"}, None),
        ({"Retry-After": "nan"}, None),
        ({"retry-after-ms": "nan"}, None),
        ({"retry-after-ms": "x", "Retry-After": "3"}, 3.0),
        ({}, None),
    ],
    ids=[
        "ms",
        "ms-wins",
        "seconds",
        "fraction",
        "capped",
        "ms-capped",
        "infinite-capped",
        "negative",
        "date-past",
        "date-numeric-zone",
        "date-future-capped",
        "garbage",
        "nan",
        "ms-nan",
        "bad-ms-falls-back",
        "absent",
    ],
)
def test_retry_after_parsing(headers: dict[str, str], expected: float | None) -> None:
    """Retry-After (seconds or HTTP date) and retry-after-ms, capped at 60 s."""
    assert _retry.retry_after(headers) == expected


def test_backoff_is_exponential_with_full_jitter() -> None:
    """Without Retry-After the delay is uniform in [0, min(8, 0.5 * 2**attempt)]."""
    ceilings = [(0, 0.5), (1, 1.0), (2, 2.0), (3, 4.0), (4, 8.0), (30, 8.0), (5000, 8.0)]
    for attempt, ceiling in ceilings:
        delays = [_retry.backoff(attempt) for _ in range(300)]
        assert all(0 <= d <= ceiling for d in delays)
        # Full jitter: anywhere in the range, not bunched at the top (2**-300 odds).
        assert min(delays) < ceiling / 4 and max(delays) > ceiling * 3 / 4


# -- 3. truncated streams ------------------------------------------------------------


@pytest.mark.parametrize(
    "fault",
    [Fault.cut(after=2), Fault.truncate(after=2)],
    ids=["connection-closed", "body-ended"],
)
async def test_truncated_stream_is_incomplete_with_partial_reply(
    make_session: SessionFactory, sim: BailianSimulator, state_dir: Path, fault: Fault
) -> None:
    """A stream that ends before "stop": IncompleteStreamError, partial Reply, id stored."""
    sim.inject(fault)
    session = make_session()
    deltas: list[str] = []
    session.on("message", lambda m: deltas.append(m.delta))
    with pytest.raises(tyqw.IncompleteStreamError) as info:
        await session.send(PROMPT)
    assert isinstance(info.value, tyqw.StreamError)
    reply = info.value.reply
    assert reply is not None and len(deltas) == 2 and reply.text == "".join(deltas)
    assert reply.finish_reason is None and reply.error is info.value
    minted = sim.requests[-1].session_id
    assert minted and reply.session_id == minted == session.session_id
    fresh = make_session()  # what a restarted process would read
    assert fresh.session_id == minted
    second = await session.send("again")
    assert sim.requests[-1].body["input"]["session_id"] == minted
    assert second.finish_reason == "stop"


@pytest.mark.parametrize(
    "fault", [Fault.cut(after=3), Fault.truncate(after=3)], ids=["connection-closed", "body-ended"]
)
async def test_truncated_stream_in_iteration(
    make_session: SessionFactory, sim: BailianSimulator, fault: Fault
) -> None:
    """stream() yields what arrived, then raises IncompleteStreamError."""
    sim.inject(fault)
    session = make_session()
    received: list[Message] = []

    async def consume() -> None:
        async for message in session.stream(PROMPT):
            received.append(message)

    with pytest.raises(tyqw.IncompleteStreamError) as info:
        await consume()
    assert len(received) == 3
    assert info.value.reply is not None and info.value.reply.text == received[-1].text


async def test_truncated_stream_with_error_listener(
    make_session: SessionFactory, sim: BailianSimulator
) -> None:
    """With an error listener: emitted once, send() returns the partial Reply."""
    sim.inject(Fault.truncate(after=1))
    session = make_session()
    errors: list[tyqw.TyqwError] = []
    session.on("error", errors.append)
    reply = await session.send(PROMPT)
    assert [type(e) for e in errors] == [tyqw.IncompleteStreamError]
    assert reply.error is errors[0] and reply.text and reply.finish_reason is None


@pytest.mark.parametrize(
    ("fault", "options"),
    [
        (Fault.cut(after=99), {}),
        (Fault.stall(30, after=99), {"read_timeout": 0.2}),
        (Fault.stall(30, after=99), {"deadline": 0.3}),
    ],
    ids=["closed-after-stop", "stalled-after-stop", "deadline-after-stop"],
)
async def test_a_broken_connection_after_stop_is_not_an_error(
    make_session: SessionFactory, sim: BailianSimulator, fault: Fault, options: dict[str, Any]
) -> None:
    """Once the "stop" event is in, the reply is whole: a connection that then breaks or
    goes quiet costs the connection, not the reply.
    """
    sim.reply = lambda prompt, history: REPLY
    session = make_session(**options)
    errors: list[tyqw.TyqwError] = []
    session.on("error", errors.append)
    sim.inject(fault)
    reply = await asyncio.wait_for(session.send(PROMPT), BOUND)
    assert errors == [] and reply.error is None
    assert reply.text == REPLY and reply.finish_reason == "stop"
    sim.inject(fault)
    assert [m.delta async for m in session.stream(PROMPT)][-1] == ""
    assert (await session.send("again")).finish_reason == "stop"


async def test_empty_stream_is_incomplete(raw_server: RawServerFactory, state_dir: Path) -> None:
    """A 200 event stream with no events at all is incomplete, not an empty success."""
    server = await raw_server([b":\n\n"])
    async with raw_session(server.base_url, state_dir) as session:
        with pytest.raises(tyqw.IncompleteStreamError) as info:
            await session.send("hi")
    assert info.value.reply is not None and info.value.reply.text == ""


# -- 4. cancellation and abort -------------------------------------------------------


async def warm(session: Session) -> tuple[int, set[asyncio.Task[Any]]]:
    """One turn so the pooled connection exists; then the fd count and running tasks."""
    assert (await session.send("warm up")).finish_reason == "stop"
    return open_fds(), running_tasks()


async def test_cancelling_send_closes_the_response(
    make_session: SessionFactory, sim: BailianSimulator
) -> None:
    """Cancel the task awaiting send(): the server sees the disconnect within a second,
    no task or descriptor leaks, and the Session works again.
    """
    session = make_session()
    fds, tasks = await warm(session)
    sim.delay = 0.05
    first = asyncio.Event()
    session.on("message", lambda m: first.set())
    task = asyncio.create_task(session.send(PROMPT))
    await asyncio.wait_for(first.wait(), BOUND)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert await disconnected(sim)
    await assert_no_new_tasks(tasks)
    assert open_fds() <= fds - 1  # the pooled connection is gone on both ends
    sim.delay = 0.0
    assert (await session.send("again")).finish_reason == "stop"
    assert open_fds() == fds and sim.connections == 2
    gc.collect()  # an unclosed response or session would warn here, failing the test


async def test_cancelling_a_stream_loop_closes_the_response(
    make_session: SessionFactory, sim: BailianSimulator
) -> None:
    """Cancel the task iterating stream(): same promises as for send()."""
    session = make_session()
    fds, tasks = await warm(session)
    sim.delay = 0.05
    first = asyncio.Event()

    async def consume() -> None:
        async for _ in session.stream(PROMPT):
            first.set()

    task = asyncio.create_task(consume())
    await asyncio.wait_for(first.wait(), BOUND)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert await disconnected(sim)
    await assert_no_new_tasks(tasks)
    sim.delay = 0.0
    assert (await session.send("again")).finish_reason == "stop"
    assert open_fds() == fds
    gc.collect()


async def test_breaking_out_of_stream_leaks_nothing(
    make_session: SessionFactory, sim: BailianSimulator
) -> None:
    """break: disconnect within a second, the lock is free, no task or fd left over."""
    session = make_session()
    fds, tasks = await warm(session)
    sim.delay = 0.05
    async for _ in session.stream(PROMPT):
        break
    assert await disconnected(sim)
    await assert_no_new_tasks(tasks)
    sim.delay = 0.0
    assert (await asyncio.wait_for(session.send("again"), BOUND)).finish_reason == "stop"
    assert open_fds() == fds
    gc.collect()


async def test_abort_from_a_handler_returns_the_partial_reply(
    make_session: SessionFactory, sim: BailianSimulator
) -> None:
    """abort() in a message handler: send() returns the partial Reply, no error."""
    sim.delay = 0.02
    session = make_session()
    seen: list[Message] = []
    errors: list[tyqw.TyqwError] = []
    session.on("error", errors.append)

    def handler(message: Message) -> None:
        seen.append(message)
        if len(seen) == 2:
            session.abort()

    session.on("message", handler)
    reply = await asyncio.wait_for(session.send(PROMPT), BOUND)
    assert len(seen) == 2 and errors == []
    assert reply.error is None and reply.finish_reason is None
    assert reply.text == seen[-1].text and reply.session_id == session.session_id
    assert await disconnected(sim)
    sim.delay = 0.0
    assert (await session.send("again")).finish_reason == "stop"


async def test_abort_without_error_listener_does_not_raise(
    make_session: SessionFactory, sim: BailianSimulator
) -> None:
    """An aborted turn is not an error even with nobody listening for errors."""
    sim.delay = 0.02
    session = make_session()
    session.once("message", lambda m: session.abort())
    reply = await asyncio.wait_for(session.send(PROMPT), BOUND)
    assert reply.error is None and reply.text


async def test_abort_from_another_task_stops_a_stream(
    make_session: SessionFactory, sim: BailianSimulator
) -> None:
    """A "stop button" task calls abort(): the stream loop simply ends, no exception."""
    session = make_session()
    fds, tasks = await warm(session)
    sim.delay = 0.05
    first = asyncio.Event()
    received: list[Message] = []

    async def consume() -> None:
        async for message in session.stream(PROMPT):
            received.append(message)
            first.set()

    task = asyncio.create_task(consume())
    await asyncio.wait_for(first.wait(), BOUND)
    session.abort()
    await asyncio.wait_for(task, SOON)
    assert 1 <= len(received) < 5 and received[-1].finish_reason is None
    assert await disconnected(sim)
    await assert_no_new_tasks(tasks)
    sim.delay = 0.0
    assert (await session.send("again")).finish_reason == "stop"
    assert open_fds() == fds


async def test_abort_while_waiting_for_the_answer(sim: BailianSimulator, state_dir: Path) -> None:
    """abort() after the request went out but before any answer: an empty Reply, at once."""
    async with waiting_for_the_answer(sim, state_dir) as (session, task):
        session.abort()
        reply = await asyncio.wait_for(task, SOON)
        assert reply == Reply(text="", session_id=None, request_id=None, finish_reason=None)
        assert reply.error is None
        assert await disconnected(sim)
        assert (await session.send("again")).finish_reason == "stop"
    assert len(sim.requests) == 2


async def test_abort_during_backoff(make_session: SessionFactory, sim: BailianSimulator) -> None:
    """abort() while waiting to retry: returns at once, the retry is never sent."""
    sim.inject(Fault.http(503, retry_after=30))
    session = make_session()
    with log_signal("retrying") as backing_off:
        task = asyncio.create_task(session.send(PROMPT))
        await asyncio.wait_for(backing_off.wait(), BOUND)
    session.abort()
    reply = await asyncio.wait_for(task, SOON)
    assert reply.error is None and reply.text == ""
    assert len(sim.requests) == 1
    assert (await session.send("again")).finish_reason == "stop"


async def test_abort_while_reading_an_error_body(
    scripted: Callable[[Script], Awaitable[ScriptedServer]], state_dir: Path
) -> None:
    """abort() while an error body trickles in: no retry, no error, an empty Reply."""

    async def script(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(
            b"HTTP/1.1 503 X\r\nContent-Type: application/json\r\n"
            b'Retry-After: 30\r\nContent-Length: 100\r\n\r\n{"code":'
        )
        await reader.read()

    server = await scripted(script)
    answered = asyncio.Event()
    async with (
        traced_http(request_end=answered) as http,
        raw_session(server.base_url, state_dir, http_session=http) as session,
    ):
        task = asyncio.create_task(session.send("hi"))
        await asyncio.wait_for(answered.wait(), BOUND)
        session.abort()
        reply = await asyncio.wait_for(task, SOON)
    assert reply.error is None and reply.text == ""
    assert server.connections == 1


@pytest.mark.skipif(
    sys.version_info < (3, 11), reason="telling two cancellations apart needs Task.cancelling()"
)
@pytest.mark.parametrize(
    "abort_first", [True, False], ids=["abort-then-cancel", "cancel-then-abort"]
)
async def test_cancel_is_not_swallowed_by_a_simultaneous_abort(
    sim: BailianSimulator, state_dir: Path, abort_first: bool
) -> None:
    """abort() uses cancellation internally; a caller's own cancel() still wins."""
    async with waiting_for_the_answer(sim, state_dir) as (session, task):
        if abort_first:
            session.abort()
            task.cancel()
        else:
            task.cancel()
            session.abort()
        with pytest.raises(asyncio.CancelledError):
            await asyncio.wait_for(task, SOON)
        assert (await session.send("again")).finish_reason == "stop"


async def test_cancelling_while_waiting_or_backing_off(
    sim: BailianSimulator, state_dir: Path
) -> None:
    """A caller's cancel() before any answer, or between retries, just cancels."""
    async with waiting_for_the_answer(sim, state_dir) as (session, task):
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await asyncio.wait_for(task, SOON)
        assert await disconnected(sim)

        sim.inject(Fault.http(503, retry_after=30))
        with log_signal("retrying") as backing_off:
            task = asyncio.create_task(session.send(PROMPT))
            await asyncio.wait_for(backing_off.wait(), BOUND)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await asyncio.wait_for(task, SOON)
        assert len(sim.requests) == 2  # the retry was never sent
        assert (await session.send("again")).finish_reason == "stop"


async def test_abort_with_no_turn_is_a_no_op(make_session: SessionFactory) -> None:
    """abort() before or between turns changes nothing."""
    session = make_session()
    session.abort()
    assert (await session.send("hi")).finish_reason == "stop"
    session.abort()
    assert (await session.send("hi")).finish_reason == "stop"


async def test_aclose_during_a_turn_ends_it(
    make_session: SessionFactory, sim: BailianSimulator
) -> None:
    """aclose() while a turn streams: the turn ends with its partial Reply (dispose())."""
    sim.delay = 0.05
    session = make_session()
    first = asyncio.Event()
    session.on("message", lambda m: first.set())
    task = asyncio.create_task(session.send(PROMPT))
    await asyncio.wait_for(first.wait(), BOUND)
    await session.aclose()
    reply = await asyncio.wait_for(task, SOON)
    assert reply.error is None and reply.text and reply.finish_reason is None
    assert await disconnected(sim)


# -- recovery: after every kind of failure the next send works -------------------------


RECOVERABLE = [
    pytest.param(Fault.http(400), {}, id="http-400"),
    pytest.param(Fault.http(401), {}, id="http-401"),
    pytest.param(Fault.http(503), {"max_retries": 0}, id="http-503-no-retry"),
    pytest.param(Fault.stream_error(after=2), {}, id="error-frame"),
    pytest.param(Fault.cut(after=2), {}, id="cut"),
    pytest.param(Fault.truncate(after=2), {}, id="truncate"),
    pytest.param(Fault.stall(30, after=2), {"read_timeout": 0.2}, id="idle-timeout"),
    pytest.param(Fault.headers_stall(30), {"read_timeout": 0.2}, id="headers-timeout"),
    pytest.param(Fault.stall(30, after=1), {"deadline": 0.2}, id="deadline"),
    pytest.param(Fault.malformed(after=1), {}, id="malformed"),
    pytest.param(Fault.content_type(), {}, id="html-page"),
    pytest.param(Fault.oversized(8192), {"max_event_size": 1024}, id="oversized"),
]


@pytest.mark.parametrize(("fault", "options"), RECOVERABLE)
async def test_next_send_works_after_failure(
    make_session: SessionFactory, sim: BailianSimulator, fault: Fault, options: dict[str, Any]
) -> None:
    """Every failure releases the lock and the connection: the next turn just works."""
    session = make_session(**options)
    fds, tasks = await warm(session)
    sim.inject(fault)
    with pytest.raises(tyqw.TyqwError) as info:
        await asyncio.wait_for(session.send(PROMPT), BOUND)
    assert info.value.reply is not None
    await asyncio.wait_for(sim.requests[-1].done.wait(), SOON)
    await assert_no_new_tasks(tasks)
    assert open_fds() <= fds
    reply = await asyncio.wait_for(session.send("again"), BOUND)
    assert reply.finish_reason == "stop" and reply.error is None
    assert open_fds() == fds
