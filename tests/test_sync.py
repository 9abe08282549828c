"""SyncSession: the docs' examples written without asyncio, threads, Ctrl-C, lifetimes.

The simulator runs on its own thread and event loop (``SimThread``), so that the tests
call SyncSession from plain blocking code, as a script would.
"""

from __future__ import annotations

import asyncio
import gc
import inspect
import json
import os
import selectors
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Coroutine, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar

import pytest

import tyqw
from tyqw import (
    HandlerError,
    IncompleteStreamError,
    InternalServerError,
    Message,
    RateLimitError,
    Session,
    SessionClosedError,
    SyncSession,
    TyqwError,
)
from tyqw.testing import BailianSimulator, Fault, SimRequest

from .helpers import stored_file

BOUND = 30.0
SCRIPTS = Path(__file__).resolve().parent / "scripts"
EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
LONG = "西湖的水，雷峰塔的影，龙井的茶。" * 40  # 640 characters: 160 events of 4
POSIX_ONLY = pytest.mark.skipif(sys.platform == "win32", reason="POSIX signals")

_T = TypeVar("_T")


class SimThread:
    """A BailianSimulator served from its own thread and event loop."""

    def __init__(self, **options: Any) -> None:
        self._ready = threading.Event()
        self._thread = threading.Thread(
            target=asyncio.run, args=(self._serve(options),), name="test-simulator"
        )
        self._thread.start()
        assert self._ready.wait(BOUND), "the simulator did not start"

    async def _serve(self, options: dict[str, Any]) -> None:
        async with BailianSimulator(**options) as sim:
            self.sim = sim
            self.loop = asyncio.get_running_loop()
            self._stop = asyncio.Event()
            self._ready.set()
            await self._stop.wait()

    def run(self, coro: Coroutine[Any, Any, _T]) -> _T:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(BOUND)

    def finished(self, request: SimRequest) -> SimRequest:
        """``request`` once the server is done with it, however that happened."""
        self.run(asyncio.wait_for(request.done.wait(), BOUND))
        return request

    def close(self) -> None:
        self.loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(BOUND)


@pytest.fixture
def server() -> Iterator[SimThread]:
    sim_thread = SimThread()
    yield sim_thread
    sim_thread.close()


@pytest.fixture
def sim(server: SimThread) -> BailianSimulator:
    return server.sim


@pytest.fixture
def make(sim: BailianSimulator, state_dir: Path) -> Iterator[Callable[..., SyncSession]]:
    """SyncSessions bound to the simulator; all closed at the end of the test."""
    made: list[SyncSession] = []

    def factory(**kwargs: Any) -> SyncSession:
        kwargs.setdefault("api_key", sim.api_key)
        kwargs.setdefault("base_url", sim.base_url)
        kwargs.setdefault("state_dir", state_dir)
        session = SyncSession(kwargs.pop("app_id", sim.app_id), **kwargs)
        made.append(session)
        return session

    yield factory
    for session in made:
        session.close()


def child_env(sim: BailianSimulator, tmp_path: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("DASHSCOPE_")}
    env.update(
        DASHSCOPE_API_KEY=sim.api_key,
        DASHSCOPE_BASE_URL=sim.base_url,
        DASHSCOPE_APP_ID=sim.app_id,
        XDG_STATE_HOME=str(tmp_path / "xdg-state"),
    )
    return env


# -- Quickstart ------------------------------------------------------------------------


def test_quickstart(make: Callable[..., SyncSession]) -> None:
    """The Quickstart, sync: two turns of one conversation streamed to a handler, then clear."""
    pieces: list[str] = []
    with make() as session:
        session.on("message", lambda m: pieces.append(m.delta))
        session.on("error", lambda e: pieces.append(f"error: {e}"))
        first = session.send("你好，我叫小明")
        second = session.send("我叫什么名字？")
        session.clear()
        third = session.send("我叫什么名字？")
    assert first.text == "很高兴认识你，小明！我记住你的名字了，之后可以问我「我叫什么名字」。"
    assert second.text == "你叫小明。你在前面的对话里告诉过我，我一直记着呢。"
    assert second.session_id == first.session_id != third.session_id
    assert third.text.startswith("你还没告诉我你的名字呢")
    assert "".join(pieces) == first.text + second.text + third.text


def test_the_session_is_the_same_constructor(tmp_path: Path) -> None:
    """SyncSession takes Session's arguments, same names, defaults and types (no http_session)."""
    sync = inspect.signature(SyncSession.__init__).parameters
    async_ = inspect.signature(Session.__init__).parameters
    assert list(sync.values()) == [p for name, p in async_.items() if name != "http_session"]
    with pytest.raises(ValueError, match="invalid app_id"):
        SyncSession("../x", api_key="sk-x", state_dir=tmp_path)
    with pytest.raises(tyqw.MissingAPIKeyError):
        SyncSession("app", state_dir=tmp_path)


def test_a_keyword_that_is_no_setting_is_a_type_error(tmp_path: Path) -> None:
    """Session and SyncSession refuse an unknown keyword, and SyncSession http_session,
    with the TypeError a signature gives, before anything is made."""
    with pytest.raises(TypeError, match="unexpected keyword argument 'read_timout'"):
        Session("app", api_key="sk-x", state_dir=tmp_path, read_timout=5)  # type: ignore[call-arg]
    with pytest.raises(TypeError, match="unexpected keyword argument 'read_timout'"):
        SyncSession("app", api_key="sk-x", state_dir=tmp_path, read_timout=5)  # type: ignore[call-arg]
    with pytest.raises(TypeError, match="unexpected keyword argument 'http_session'"):
        SyncSession("app", api_key="sk-x", http_session=None)  # type: ignore[call-arg]
    assert not list(tmp_path.iterdir())


# -- Events ----------------------------------------------------------------------------


def test_history_and_forget(make: Callable[..., SyncSession]) -> None:
    """SyncSession.history() returns the kept exchanges; forget() deletes them all."""
    session = make(history=2)
    for prompt in ("一", "二", "三"):
        session.send(prompt)
    assert [e.prompt for e in session.history()] == ["二", "三"]
    session.forget()
    assert session.history() == []
    assert session.session_id is None


def test_handlers_run_in_order_on_the_loop_thread(make: Callable[..., SyncSession]) -> None:
    """Handlers (async too) run one message at a time on tyqw's thread, done when send returns."""
    log: list[tuple[str, str, str]] = []

    def plain(message: Message) -> None:
        log.append(("plain", message.delta, threading.current_thread().name))

    async def awaited(message: Message) -> None:
        await asyncio.sleep(0)  # gives way to the loop: the next message must still wait
        log.append(("async", message.delta, threading.current_thread().name))

    with make() as session:
        session.on("message", plain)
        session.on("message", awaited)
        reply = session.send("你好，我叫小明")
        count = len(log)
    deltas = [delta for _, delta, _ in log[::2]]
    assert "".join(deltas) == reply.text and count == len(log)
    assert [kind for kind, _, _ in log] == ["plain", "async"] * (len(log) // 2)
    assert [delta for _, delta, _ in log[1::2]] == deltas
    assert {thread for _, _, thread in log} == {"tyqw-sync"}


def test_once_and_off(make: Callable[..., SyncSession]) -> None:
    """once() hears the next message only; off() stops a handler."""
    first: list[str] = []
    every: list[Message] = []
    with make() as session:
        session.once("message", lambda m: first.append(m.delta))
        session.on("message", every.append)
        session.send("你好")
        heard = len(every)
        session.off("message", every.append)
        session.send("你好")
    assert first == [every[0].delta]
    assert len(every) == heard > 1


def test_unknown_event_names_are_refused_as_session_refuses_them(
    make: Callable[..., SyncSession],
) -> None:
    """An event name Session does not know raises Session's ValueError."""
    with make() as session, pytest.raises(ValueError, match="unknown event 'mesage'"):
        session.on("mesage", print)  # type: ignore[call-overload]


def test_an_error_goes_to_error_handlers_and_send_returns(
    sim: BailianSimulator, make: Callable[..., SyncSession]
) -> None:
    """A failed turn is emitted as "error" and send() returns the partial Reply."""
    errors: list[TyqwError] = []
    sim.inject(Fault.stream_error(after=2, status=500, code="InternalError"))
    with make() as session:
        session.on("error", errors.append)
        reply = session.send("你好，我叫小明")
    assert isinstance(reply.error, InternalServerError) and errors == [reply.error]
    assert reply.text == "很高兴认识你，小"  # two events of four characters
    assert session.last_reply is reply


def test_without_error_handlers_send_raises(
    sim: BailianSimulator, make: Callable[..., SyncSession]
) -> None:
    """With no error handler the error is raised, with the partial reply on it."""
    sim.inject(Fault.cut(after=2))
    with make() as session, pytest.raises(IncompleteStreamError) as caught:
        session.send("你好，我叫小明")
    assert caught.value.reply is not None and caught.value.reply.text
    assert session.last_reply is caught.value.reply


def test_a_raising_handler_does_not_break_the_turn(make: Callable[..., SyncSession]) -> None:
    """A handler that raises becomes a HandlerError for the error handlers; the turn goes on."""
    errors: list[TyqwError] = []

    def bad(message: Message) -> None:
        raise KeyError(message.delta)

    with make() as session:
        session.on("message", bad)
        session.on("error", errors.append)
        reply = session.send("你好")
    assert reply.finish_reason == "stop" and reply.error is None
    assert errors and all(isinstance(e, HandlerError) for e in errors)
    assert isinstance(errors[0].__cause__, KeyError)


def test_blocking_calls_from_a_handler_raise(make: Callable[..., SyncSession]) -> None:
    """send() or a stream from a handler raises RuntimeError instead of waiting for itself."""
    errors: list[TyqwError] = []
    with make() as session:
        other = make(name="other")
        session.once("message", lambda m: session.send("again"))
        session.once("message", lambda m: next(iter(other.stream("again"))))
        session.on("error", errors.append)
        reply = session.send("你好")
        assert session.send("你好").finish_reason == "stop"
    assert reply.finish_reason == "stop"
    causes = [e.__cause__ for e in errors]
    assert len(causes) == 2
    assert all(isinstance(c, RuntimeError) and "event loop thread" in str(c) for c in causes)


def test_bad_prompts_are_refused(make: Callable[..., SyncSession], sim: BailianSimulator) -> None:
    """An empty prompt is a ValueError and a non-str one a TypeError, with no request."""
    with make() as session:
        with pytest.raises(ValueError, match="empty"):
            session.send("  ")
        with pytest.raises(TypeError):
            session.stream(42)  # type: ignore[arg-type]
        with pytest.raises(TypeError, match="unknown option"):
            session.send("hi", temprature=0.5)  # type: ignore[call-arg]
    assert sim.requests == []


# -- Streaming -------------------------------------------------------------------------


def test_stream_is_a_plain_iterator_of_messages(make: Callable[..., SyncSession]) -> None:
    """for m in stream(): the same messages send() gives its handlers, then the Reply."""
    with make() as session:
        messages = list(session.stream("你好，我叫小明"))
        with session.stream("我叫什么名字？") as stream:
            texts = [m.text for m in stream]
    assert all(isinstance(m, Message) for m in messages)
    assert messages[-1].finish_reason == "stop"
    assert "".join(m.delta for m in messages) == messages[-1].text
    assert stream.reply.text == texts[-1] == "你叫小明。你在前面的对话里告诉过我，我一直记着呢。"
    assert stream.reply.usage and stream.reply.finish_reason == "stop"
    assert session.last_reply == stream.reply


def test_text_read_in_the_callers_thread_while_the_loop_reads_on(
    server: SimThread, make: Callable[..., SyncSession]
) -> None:
    """message.text is right in the caller's thread across the text's merges of pieces."""
    sim = server.sim
    long = "".join(f"{i:05d}" for i in range(3_000))  # 15,000 characters: 3,000 events
    sim.reply = lambda prompt, history: long
    sim.chunk_size = 5
    with make() as session:
        seen = [(m.text, m.delta) for m in session.stream("long")]
    assert len(seen) > 2 * 256
    so_far = ""
    for text, delta in seen:
        so_far += delta
        assert text == so_far
    assert so_far == long


def test_breaking_out_releases_the_turn_at_once(
    server: SimThread, make: Callable[..., SyncSession]
) -> None:
    """break closes the HTTP response at once and the next send() runs right away."""
    sim = server.sim
    sim.reply = lambda prompt, history: LONG if prompt == "long" else "short"
    sim.delay = 0.1  # 16 s for the whole long reply
    with make() as session:
        for message in session.stream("long"):
            first = message
            break
        assert server.finished(sim.requests[0]).disconnected
        assert session.send("next").text == "short"
    assert first.text == LONG[:4]
    assert session.last_reply is not None and session.last_reply.text == "short"


def test_close_stops_a_stream_and_keeps_its_reply(
    server: SimThread, make: Callable[..., SyncSession]
) -> None:
    """stream.close() mid-reply returns once the response is closed; reply keeps the text."""
    sim = server.sim
    sim.reply = lambda prompt, history: LONG
    sim.delay = 0.1
    with make() as session:
        stream = session.stream("long")
        seen = next(stream).text
        stream.close()
        assert server.finished(sim.requests[0]).disconnected
        assert list(stream) == []
        assert stream.reply.text.startswith(seen) and LONG.startswith(stream.reply.text)
        assert stream.reply.finish_reason is None
        assert session.send("next").finish_reason == "stop"


def test_stream_errors_are_raised_with_the_partial_reply(
    sim: BailianSimulator, make: Callable[..., SyncSession]
) -> None:
    """An error mid-stream is raised from the loop, after the messages before it."""
    sim.inject(Fault.stream_error(after=2, status=503, code="ModelUnavailable"))
    seen: list[str] = []
    with make() as session, pytest.raises(InternalServerError) as caught:  # noqa: PT012
        for message in session.stream("你好，我叫小明"):
            seen.append(message.delta)
    assert caught.value.code == "ModelUnavailable" and caught.value.status_code == 503
    assert caught.value.reply is not None and caught.value.reply.text == "".join(seen)
    assert session.last_reply is caught.value.reply


def test_a_stream_left_open_makes_the_same_thread_raise(
    make: Callable[..., SyncSession],
) -> None:
    """A started stream kept unfinished holds the turn: send() in that thread raises."""
    with make() as session:
        stream = session.stream("你好，我叫小明")
        next(stream)
        with pytest.raises(RuntimeError, match="unfinished"):
            session.send("again")
        stream.close()
        assert session.send("again").finish_reason == "stop"


def test_a_slow_reader_gets_every_message_in_order(
    sim: BailianSimulator, make: Callable[..., SyncSession], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Backpressure (tiny water marks here) pauses the turn for a reader, losing nothing."""
    from tyqw import _sync

    monkeypatch.setattr(_sync, "HIGH_WATER", 4)
    monkeypatch.setattr(_sync, "LOW_WATER", 1)
    sim.reply = lambda prompt, history: LONG
    sim.chunk_size = 1
    with make() as session:
        texts = [m.text for m in session.stream("long")]
        for message in session.stream("long"):  # left while paused: released all the same
            if len(message.text) == 100:
                break
        reply = session.send("again")
    assert texts == [LONG[: i + 1] for i in range(len(LONG))] + [LONG]
    assert reply.text == LONG


# -- Abort -----------------------------------------------------------------------------


def test_abort_from_another_thread_returns_the_partial_reply(
    server: SimThread, make: Callable[..., SyncSession]
) -> None:
    """abort() from a "stop button" thread ends send() with the partial Reply, no error."""
    sim = server.sim
    sim.reply = lambda prompt, history: LONG
    sim.delay = 0.1
    first = threading.Event()
    with make() as session:
        session.on("message", lambda m: first.set())

        def stop() -> None:
            if first.wait(BOUND):
                session.abort()

        stopper = threading.Thread(target=stop)
        stopper.start()
        reply = session.send("long")
        stopper.join(BOUND)
    assert reply.error is None and reply.finish_reason is None
    assert reply.text and LONG.startswith(reply.text) and reply.text != LONG
    assert server.finished(sim.requests[0]).disconnected


def test_abort_ends_a_stream_loop_and_a_handler_may_abort(
    server: SimThread, make: Callable[..., SyncSession]
) -> None:
    """After abort() a stream loop simply ends; abort() in a handler stops send()."""
    sim = server.sim
    sim.reply = lambda prompt, history: LONG
    sim.delay = 0.05  # 8 s for the whole reply
    with make() as session:
        seen = []
        for message in session.stream("long"):
            seen.append(message.delta)
            session.abort()
        session.once("message", lambda m: session.abort())
        reply = session.send("long")
    assert 0 < len(seen) < len(LONG) // 4
    assert reply.text == LONG[:4] and reply.error is None
    assert all(server.finished(r).disconnected for r in sim.requests)


def test_abort_drops_what_the_loop_has_not_read_yet(
    sim: BailianSimulator, make: Callable[..., SyncSession]
) -> None:
    """A stream loop ends at abort() even when the rest of the reply has already arrived."""
    sim.reply = lambda prompt, history: LONG
    with make() as session:
        stream = session.stream("long")
        first = next(stream)
        session.abort()
        session.on("message", lambda m: None)  # runs on the loop thread, after abort()
        rest = list(stream)
        assert session.send("again").text == LONG
    assert first.text == LONG[:4] and rest == []


def test_abort_stops_the_running_turn_not_the_next(
    server: SimThread, make: Callable[..., SyncSession]
) -> None:
    """Turns from several threads run in order; abort() stops the one running."""
    sim = server.sim
    sim.reply = lambda prompt, history: LONG if prompt == "long" else "short"
    sim.delay = 0.1
    started = threading.Event()
    with make() as session, ThreadPoolExecutor(2) as pool:
        session.once("message", lambda m: started.set())
        running = pool.submit(session.send, "long")
        assert started.wait(BOUND)
        queued = pool.submit(session.send, "short")
        session.abort()
        partial, after = running.result(BOUND), queued.result(BOUND)
    assert partial.finish_reason is None and LONG.startswith(partial.text)
    assert after.text == "short" and after.finish_reason == "stop"


# -- Conversations ---------------------------------------------------------------------


def test_conversations_are_named_and_stored(
    make: Callable[..., SyncSession], sim: BailianSimulator
) -> None:
    """One conversation per name, on disk: a new SyncSession continues it; set and clear."""
    alice, bob = make(name="alice"), make(name="bob")
    assert alice.session_id is None
    alice.send("我叫爱丽丝")
    bob.send("我叫鲍勃")
    alice.close()
    again = make(name="alice")
    assert again.session_id == alice.session_id != bob.session_id
    assert again.send("我叫什么名字？").text.startswith("你叫爱丽丝")
    assert stored_file(again).exists()
    again.session_id = bob.session_id
    assert again.send("我叫什么名字？").text.startswith("你叫鲍勃")
    assert make(name="alice").session_id == bob.session_id  # stored at once
    again.clear()
    assert again.session_id is None and not again.store_path.exists()


# -- Errors ----------------------------------------------------------------------------


def test_errors_are_typed_with_code_and_request_id(
    sim: BailianSimulator, make: Callable[..., SyncSession]
) -> None:
    """The Errors example, sync: a 429 is a RateLimitError with code and request id."""
    sim.inject(Fault.http(429, code="Throttling"))
    with make(max_retries=0) as session:
        try:
            session.send("你好")
        except RateLimitError as exc:
            caught: TyqwError = exc
        assert isinstance(caught, RateLimitError)
        assert caught.code == "Throttling" and caught.request_id
        assert session.send("你好").finish_reason == "stop"


# -- Lifetimes -------------------------------------------------------------------------


def test_one_loop_thread_shared_and_gone_after_the_last_close(
    make: Callable[..., SyncSession],
) -> None:
    """Several SyncSessions share one thread; it ends with the last close; close twice is fine."""
    before = set(threading.enumerate())
    first, second = make(name="a"), make(name="b")
    first.send("你好")
    second.send("你好")
    added = set(threading.enumerate()) - before
    assert [t.name for t in added] == ["tyqw-sync"] and all(t.daemon for t in added)
    first.close()
    assert second.send("你好").finish_reason == "stop"
    second.close()
    second.close()
    assert set(threading.enumerate()) == before
    with pytest.raises(SessionClosedError):
        second.send("你好")
    with pytest.raises(SessionClosedError):
        second.stream("你好")
    with pytest.raises(SessionClosedError), second:
        pass
    second.abort()  # nothing to do, and no error
    second.clear()
    assert "closed" in repr(second)


def test_a_session_dropped_without_close_is_closed(sim: BailianSimulator, state_dir: Path) -> None:
    """A SyncSession that is garbage closes itself and its thread ends."""
    before = set(threading.enumerate())
    session = SyncSession(
        sim.app_id, api_key=sim.api_key, base_url=sim.base_url, state_dir=state_dir
    )
    session.send("你好")
    del session
    gc.collect()
    assert set(threading.enumerate()) == before


def test_a_thread_pool_of_20_sync_sessions(make: Callable[..., SyncSession]) -> None:
    """20 threads, each with its own SyncSession, keep 20 separate conversations."""
    before = set(threading.enumerate())

    def user(i: int) -> str:
        with make(name=f"user{i}") as session:
            session.send(f"我叫用户{i}")
            return session.send("我叫什么名字？").text

    with ThreadPoolExecutor(20) as pool:
        answers = list(pool.map(user, range(20)))
    assert answers == [f"你叫用户{i}。你在前面的对话里告诉过我，我一直记着呢。" for i in range(20)]
    assert set(threading.enumerate()) == before


def test_one_sync_session_shared_by_20_threads(make: Callable[..., SyncSession]) -> None:
    """20 threads on one SyncSession: turns run one at a time, each reply whole."""
    with make() as session, ThreadPoolExecutor(20) as pool:
        replies = list(pool.map(lambda i: session.send(f"hello {i}"), range(20)))
        streamed = list(
            pool.map(lambda i: "".join(m.delta for m in session.stream("x")), range(5))
        )
    assert all(r.finish_reason == "stop" for r in replies)
    assert len({r.session_id for r in replies}) == 1
    assert all(text.startswith("Turn ") for text in streamed)


async def test_usable_inside_a_running_event_loop(sim: BailianSimulator, state_dir: Path) -> None:
    """Called from a coroutine on a running loop (a Jupyter cell), SyncSession works."""
    asyncio.get_running_loop()  # the test itself runs on an event loop
    with SyncSession(
        sim.app_id, api_key=sim.api_key, base_url=sim.base_url, state_dir=state_dir
    ) as session:
        reply = session.send("你好，我叫小明")
        streamed = "".join(m.delta for m in session.stream("我叫什么名字？"))
    assert reply.text.startswith("很高兴认识你")
    assert streamed.startswith("你叫小明")


def test_repr_names_the_conversation_never_the_key(make: Callable[..., SyncSession]) -> None:
    """repr() shows app id, name and session id, never the API key."""
    with make(api_key="sk-secret-123", name="alice") as session:
        shown = repr(session)
    assert "alice" in shown and "sk-secret-123" not in shown


# -- Processes: a plain script, Ctrl-C ---------------------------------------------------


def test_a_plain_script_leaves_no_thread_behind(sim: BailianSimulator, tmp_path: Path) -> None:
    """A script run with -W error: two turns, a session left open, no thread at exit."""
    result = subprocess.run(
        [sys.executable, "-W", "error", str(SCRIPTS / "sync_script.py"), "plain"],
        capture_output=True,
        text=True,
        encoding="utf-8",
        env=child_env(sim, tmp_path),
        timeout=BOUND,
        check=False,
    )
    assert (result.returncode, result.stderr) == (0, "")
    assert result.stdout.splitlines() == [
        "很高兴认识你，小明！我记住你的名字了，之后可以问我「我叫什么名字」。",
        "你叫小明。你在前面的对话里告诉过我，我一直记着呢。",
        "stop",
        "threads at exit: ['MainThread']",
    ]


def read_line(proc: subprocess.Popen[bytes], deadline: float) -> str:
    """The child's next stdout line, waiting at most until ``deadline``."""
    assert proc.stdout is not None
    with selectors.DefaultSelector() as selector:
        selector.register(proc.stdout, selectors.EVENT_READ)
        line = b""
        while not line.endswith(b"\n"):
            if not selector.select(max(0.0, deadline - time.monotonic())):
                raise AssertionError(f"no line from the child in time; so far {line!r}")
            byte = os.read(proc.stdout.fileno(), 1)
            if not byte:
                raise AssertionError(f"the child closed stdout; so far {line!r}")
            line += byte
    return line.decode()


@POSIX_ONLY
@pytest.mark.parametrize("mode", ["send", "stream"])
def test_ctrl_c_stops_the_turn_and_keeps_the_partial_reply(
    server: SimThread, tmp_path: Path, mode: str
) -> None:
    """SIGINT mid-reply: KeyboardInterrupt at once, last_reply keeps the text, the turn is over."""
    sim = server.sim
    sim.reply = lambda prompt, history: LONG
    sim.delay = 0.1
    proc = subprocess.Popen(
        [sys.executable, "-W", "error", str(SCRIPTS / "sync_script.py"), mode],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=child_env(sim, tmp_path),
    )
    try:
        assert read_line(proc, time.monotonic() + BOUND) == "started\n"
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=BOUND)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(BOUND)
    assert (proc.returncode, err.decode()) == (0, "")
    lines = out.decode().splitlines()
    kept = json.loads(lines[0])
    assert kept["text"] and LONG.startswith(kept["text"]) and kept["text"] != LONG
    assert kept["finish_reason"] is None
    assert kept["threads"] == ["MainThread", "tyqw-sync"]  # closed just after this line
    assert lines[1:] == ["threads at exit: ['MainThread']"]
    assert server.finished(sim.requests[0]).disconnected


def test_the_sync_chat_example(tmp_path: Path) -> None:
    """examples/sync_chat.py without a key: lines in, streamed replies out, /new forgets."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("DASHSCOPE_")}
    env["XDG_STATE_HOME"] = str(tmp_path / "xdg-state")
    result = subprocess.run(
        [sys.executable, "-W", "error", str(EXAMPLES / "sync_chat.py")],
        input="你好，我叫小明\n我叫什么名字？\n/new\n我叫什么名字？\n",
        capture_output=True,
        text=True,
        encoding="utf-8",
        env=env,
        timeout=BOUND,
        check=False,
    )
    assert (result.returncode, result.stderr) == (0, "")
    assert result.stdout.split("you> ") == [
        "",
        "bot> 很高兴认识你，小明！我记住你的名字了，之后可以问我「我叫什么名字」。\n",
        "bot> 你叫小明。你在前面的对话里告诉过我，我一直记着呢。\n",
        "(a new conversation)\n",
        "bot> 你还没告诉我你的名字呢。说一句「我叫……」，我就会记住。\n",
        "\n",
    ]


def test_sync_session_is_exported() -> None:
    """SyncSession is a public name of tyqw."""
    assert tyqw.SyncSession is SyncSession and "SyncSession" in tyqw.__all__
