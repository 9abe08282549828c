"""``SyncSession``: the async ``Session`` driven from plain, blocking code.

Every ``SyncSession`` of the process shares one private event loop on a daemon thread
(``_loop_thread``), started by the first one and stopped when the last one is closed or
the interpreter exits. The turn itself is ``Session.send()`` / ``Session.stream()``
running there: ``send()`` waits for one future, ``stream()`` hands the messages over
through a queue (``SyncMessageStream``, below), so a turn costs one thread hop, not one
per event.

Calls (``send()`` or a started ``stream()``) of one SyncSession run one at a time, in
the order they were made (``_calls``, on the loop thread); ``abort()`` and Ctrl-C stop
the first of them, which is the one running or the one about to.

One module, over 450 lines, because the stream and the session are one mechanism: the
``Call`` record, the queue and its pause are shared by both sides and by no one else.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import queue
import sys
import threading
import weakref
from collections import deque
from collections.abc import Callable, Coroutine
from typing import TYPE_CHECKING, Any, TypeVar

from ._events import Subscriptions
from ._exceptions import SessionClosedError, TyqwError
from ._history import Exchange
from ._loop_thread import call_on_loop, loop_thread, on_loop
from ._models import Message, Reply, TokenUsage
from ._session import MessageStream, Options, Session
from ._settings import SessionSettings, check_keywords

if TYPE_CHECKING:
    from pathlib import Path
    from types import TracebackType

    from typing_extensions import Self, Unpack

__all__ = ["SyncMessageStream", "SyncSession"]

logger = logging.getLogger("tyqw")

_T = TypeVar("_T")
Handler = TypeVar("Handler", bound=Callable[..., Any])


def _close(session: Session, loop: asyncio.AbstractEventLoop, loop_ident: int) -> None:
    """Close ``session`` on the loop, then release the loop: ``close()``, GC or exit."""
    if threading.get_ident() == loop_ident:
        loop_thread.release(loop.create_task(session.aclose()))
        return
    try:
        asyncio.run_coroutine_threadsafe(session.aclose(), loop).result()
    finally:
        loop_thread.release()


class SyncSession(Subscriptions):
    """One conversation with a Bailian application, for code without asyncio.

    The same arguments as ``Session`` (except ``http_session``: an aiohttp session
    belongs to the event loop that made it, and a SyncSession runs on its own). Methods
    block until done; handlers run on tyqw's event loop thread (see ``on()``).

    Example::

        with SyncSession("YOUR_APP_ID") as session:        # key from DASHSCOPE_API_KEY
            session.on("message", lambda m: print(m.delta, end="", flush=True))
            session.send("你好，我叫小明")
            for message in session.stream("我叫什么名字？"):  # same conversation
                print(message.delta, end="", flush=True)
    """

    def __init__(self, app_id: str | None = None, **settings: Unpack[SessionSettings]) -> None:
        check_keywords(type(self).__name__, settings)  # http_session among them: no
        self._session = Session(app_id, **settings)
        self._loop, self._loop_ident = loop_thread.acquire()
        self._lock = threading.Lock()  # makes "closed?" and "submit" one step
        self._closed = False
        self._calls: deque[Call] = deque()  # in the order they run; the first runs now
        self._open_streams: dict[Call, int] = {}  # started, unfinished: starting thread
        self._last_reply: Reply | None = None
        # Runs on close(), when the SyncSession is garbage, or at interpreter exit.
        self._finalizer = weakref.finalize(
            self, _close, self._session, self._loop, self._loop_ident
        )

    # -- conversation ------------------------------------------------------------

    @property
    def app_id(self) -> str:
        """The Bailian application id; for a model session ``"model:<model>"``, the name
        its conversations are kept under in the store."""
        return self._session.app_id

    @property
    def model(self) -> str | None:
        """The model of a model session, such as ``"qwen-plus"`` (``None`` for an app)."""
        return self._session.model

    @property
    def name(self) -> str:
        """Which stored conversation of the app this is (``"default"`` unless given)."""
        return self._session.name

    @property
    def store_path(self) -> Path | None:
        """The file that holds this conversation (``None`` unless the store is a
        ``FileStore``)."""
        return self._session.store_path

    @property
    def usage(self) -> dict[str, TokenUsage]:
        """Tokens used per model since the conversation started (see ``Session.usage``).

        Example::

            for model, used in session.usage.items():
                print(model, used.input_tokens, used.output_tokens)
        """
        return self._session.usage

    def flush(self) -> None:
        """Write a ``session_id`` assignment or ``clear()`` to a shared store now; raises
        ``StoreError`` if it fails (see ``Session.flush()``).

        Example::

            session.clear()
            session.flush()
        """
        self._check_caller()
        asyncio.run_coroutine_threadsafe(self._session.flush(), self._loop).result()

    @property
    def session_id(self) -> str | None:
        """The id of the conversation, or ``None`` before the first turn.

        Assigning stores it before the assignment returns; ``None`` is ``clear()``.

        Example::

            session.session_id = "5b1f8d2a..."   # continue a conversation from elsewhere
        """
        return self._session.session_id

    @session_id.setter
    def session_id(self, value: str | None) -> None:
        self._on_loop(lambda: setattr(self._session, "session_id", value))

    def history(self) -> list[Exchange]:
        """The conversation's transcript, oldest first (see ``Session.history()``).

        Example::

            for exchange in session.history():
                print(exchange.prompt, "->", exchange.reply.text)
        """
        self._check_caller()
        return asyncio.run_coroutine_threadsafe(self._session.history(), self._loop).result()

    def forget(self) -> None:
        """Delete the conversation and its transcript from the store (see
        ``Session.forget()``).

        Example::

            session.forget()
        """
        self._check_caller()
        asyncio.run_coroutine_threadsafe(self._session.forget(), self._loop).result()

    def clear(self) -> None:
        """End the conversation and its transcript: the next turn starts a new one.

        Example::

            session.clear()
            session.send("你好")       # a fresh conversation, a new session_id
        """
        self._on_loop(self._session.clear)

    @property
    def last_reply(self) -> Reply | None:
        """The ``Reply`` of the last turn that ran: finished, failed, aborted, left early
        or stopped by Ctrl-C (then it holds the text received until then).

        Example::

            try:
                session.send("讲个长故事")
            except KeyboardInterrupt:
                print("stopped after:", session.last_reply and session.last_reply.text)
        """
        return self._last_reply

    # -- events ------------------------------------------------------------------

    def _subscribe(self, how: str, event: str, handler: Callable[..., object]) -> None:
        # Handlers run on tyqw's event loop thread, which every SyncSession of the
        # process shares: keep them short. In a handler, abort(), clear(), session_id,
        # on() / off() and close() (which then does not wait) work; send() and
        # iterating a stream() raise RuntimeError instead of waiting for themselves.
        self._on_loop(lambda: self._session._subscribe(how, event, handler))

    # -- turns -------------------------------------------------------------------

    def send(self, prompt: str, **options: Unpack[Options]) -> Reply:
        """Run one turn: stream the reply to the handlers, return the ``Reply``.

        ``Session.send()`` semantics: handlers have finished when it returns; an error
        goes to ``error`` handlers, or is raised if there are none. Ctrl-C stops the turn
        at once and raises ``KeyboardInterrupt``; the partial reply is ``last_reply``.

        Example::

            reply = session.send("你好", has_thoughts=True)
            print(reply.text, reply.session_id)
        """
        call = Call()
        future = self._submit(call, lambda: self._send(call, prompt, options))
        try:
            return future.result()
        except KeyboardInterrupt:
            self._stop_soon(call)
            concurrent.futures.wait([future])
            raise

    def stream(self, prompt: str, **options: Unpack[Options]) -> SyncMessageStream:
        """Run one turn as an iterator of ``Message``; errors are raised, not emitted.

        Leaving the loop early (``break``, an exception, Ctrl-C) closes the HTTP response
        at once. Keep the stream in a ``with`` block when you hold it in a variable.

        Example::

            for message in session.stream("讲个笑话"):
                print(message.delta, end="", flush=True)
        """
        self._check_caller()
        return SyncMessageStream(self, self._session.stream(prompt, **options))

    def abort(self) -> None:
        """End the turn in flight, from any thread or a handler; returns at once.

        ``send()`` then returns the partial ``Reply`` without an error and a ``stream()``
        loop simply ends. A turn asked for but not yet begun is dropped. Does nothing
        when no turn runs.

        Example::

            threading.Timer(5, session.abort).start()   # a five-second limit
            reply = session.send("讲个长故事")
        """
        if self._closed:
            return
        on_loop(self._loop, self._abort_first)

    def close(self) -> None:
        """Abort the turn in flight and close the connection; idempotent. The shared
        loop thread ends when the last SyncSession is closed.

        Example::

            session = SyncSession("YOUR_APP_ID")
            try:
                session.send("你好")
            finally:
                session.close()
        """
        with self._lock:
            self._closed = True
        self._finalizer()

    def __enter__(self) -> Self:
        if self._closed:
            raise SessionClosedError("this SyncSession is closed; create a new one")
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if exc is None:
            self.close()
            return
        try:
            self.close()
        except TyqwError as close_error:
            # As Session's: the error leaving the block must not be replaced.
            logger.warning("tyqw: could not close the Session after an error: %s", close_error)

    def __repr__(self) -> str:
        return (
            f"<tyqw.SyncSession app_id={self.app_id!r} name={self.name!r} "
            f"session_id={self.session_id!r} {'closed' if self._closed else 'open'}>"
        )

    # -- the caller's side -------------------------------------------------------

    def _check_caller(self) -> None:
        if self._closed:
            raise SessionClosedError("this SyncSession is closed; create a new one")
        if threading.get_ident() == self._loop_ident:
            raise RuntimeError(
                "a blocking SyncSession method was called on tyqw's event loop thread (from "
                "a handler): it would wait for itself. Use abort() there, or hand the work "
                "to another thread"
            )
        me = threading.get_ident()
        if me in self._open_streams.values():
            raise RuntimeError(
                "this thread left a stream of this SyncSession unfinished, and its turn "
                "holds the session; close it with 'with session.stream(...) as stream:' "
                "or stream.close()"
            )

    def _submit(
        self, call: Call, coro: Callable[[], Coroutine[Any, Any, _T]]
    ) -> concurrent.futures.Future[_T]:
        self._check_caller()
        with self._lock:
            if self._closed:
                raise SessionClosedError("this SyncSession is closed; create a new one")
            self._calls.append(call)
            return asyncio.run_coroutine_threadsafe(coro(), self._loop)

    def _on_loop(self, fn: Callable[[], _T]) -> _T:
        """Run ``fn`` on the loop thread and return its result (directly when closed)."""
        if threading.get_ident() == self._loop_ident:
            return fn()
        with self._lock:
            if self._closed:
                return fn()  # nothing runs on the loop for this session any more
            return call_on_loop(self._loop, fn)

    def _stop_soon(self, call: Call) -> None:
        on_loop(self._loop, self._stop, call)  # once the loop is gone, so is the turn

    # -- the loop's side ---------------------------------------------------------

    async def _begin(self, call: Call) -> bool:
        """Wait until ``call`` is first in line; False if it was stopped before."""
        if self._calls[0] is not call and not call.stopped:
            call.go = asyncio.get_running_loop().create_future()
            await call.go
        if call.stopped:
            return False
        call.running = True
        return True

    def _end(self, call: Call) -> None:
        calls = self._calls
        first = calls[0] is call
        calls.remove(call)
        call.running = False
        if first and calls:
            resolve(calls[0].go)

    def _stop(self, call: Call) -> None:
        if call.stopped:
            return
        call.stopped = call.attention = True
        if call.running:
            self._session.abort()
            resolve(call.paused)
        else:
            resolve(call.go)

    def _abort_first(self) -> None:
        # The turn in flight; or, once every turn is over, a stream still being read.
        first = self._calls[0] if self._calls else next(iter(list(self._open_streams)), None)
        if first is not None:
            self._stop(first)

    async def _send(self, call: Call, prompt: str, options: Options) -> Reply:
        try:
            if not await self._begin(call):
                return Reply("", self._session.session_id, None, None)
            try:
                reply = await self._session.send(prompt, **options)
            except TyqwError as exc:
                self._last_reply = exc.reply
                raise
            self._last_reply = reply
            return reply
        finally:
            self._end(call)

    async def _pump(self, call: Call, inner: MessageStream) -> None:
        """Run a stream's turn, putting each message on ``call.queue``, ``End`` last."""
        q = call.queue
        assert q is not None
        put, size = q.put, q.qsize
        # Holding the last messages here makes this thread, where they were built and are
        # still in cache, drop their last reference rather than the reader's thread: freeing
        # them (and their raw JSON) on another core cost a fifth of the time of an event.
        # The reader is at most HIGH_WATER behind, so it has let go of what falls out.
        hold = deque[Message](maxlen=HIGH_WATER).append
        error: BaseException | None = None
        try:
            if await self._begin(call):
                try:
                    async for message in inner:
                        put(message)
                        hold(message)
                        if size() >= HIGH_WATER:
                            await self._pause(call, q)
                except Exception as exc:
                    error = exc
                finally:
                    await inner.aclose()
                    reply = error.reply if isinstance(error, TyqwError) else None
                    self._last_reply = reply or inner.reply
        finally:
            self._end(call)
            put(End(error))

    async def _pause(self, call: Call, q: queue.SimpleQueue[Any]) -> None:
        call.resume_asked = False
        call.paused = asyncio.get_running_loop().create_future()
        call.attention = True
        # The reader may have emptied the queue before it could see the pause.
        if q.qsize() >= HIGH_WATER and not call.stopped:
            await call.paused
        call.paused = None
        call.attention = call.stopped


# -- the stream -------------------------------------------------------------------
#
# The loop thread puts each ``Message`` on the call's queue and an ``End`` last; the
# caller's thread takes them, so a message costs a queue put and get, not a thread hop.

# A stream's loop side pauses when this many messages wait for the reader, and goes on
# once no more than LOW_WATER do: a slow reader does not buffer a whole reply.
HIGH_WATER = 1024
LOW_WATER = 256


def resolve(future: asyncio.Future[None] | None) -> None:
    """Wake whoever awaits ``future`` (on the loop thread)."""
    if future is not None and not future.done():
        future.set_result(None)


class End:
    """The last item on a stream's queue: how the turn ended."""

    __slots__ = ("error",)

    def __init__(self, error: BaseException | None) -> None:
        self.error = error


class Call:
    """One ``send()`` or ``stream()``. The loop thread alone writes its fields, except
    ``resume_asked``, which only the reading thread writes."""

    __slots__ = ("attention", "go", "paused", "queue", "resume_asked", "running", "stopped")

    def __init__(self, q: queue.SimpleQueue[Any] | None = None) -> None:
        self.queue = q
        self.go: asyncio.Future[None] | None = None  # resolved when its turn comes
        self.running = False
        self.stopped = False
        self.paused: asyncio.Future[None] | None = None  # a stream waiting for its reader
        self.attention = False  # stopped or paused: the reader leaves its fast path
        self.resume_asked = False


class SyncMessageStream:
    """The iterator ``SyncSession.stream()`` returns; also a context manager.

    ``reply`` is the ``Reply`` so far (complete once the loop ends). A loop that stops
    early may have seen a few messages fewer than ``reply`` holds: it holds everything
    received.

    Example::

        with session.stream("你好") as stream:
            for message in stream:
                print(message.delta, end="")
        print(stream.reply.usage)
    """

    __slots__ = ("_call", "_future", "_get", "_inner", "_owner", "_state")

    def __init__(self, owner: SyncSession, inner: MessageStream) -> None:
        self._state = 0  # 0 not started, 1 running, 2 finished
        self._owner = owner
        self._inner = inner
        self._call: Call | None = None
        self._future: concurrent.futures.Future[None] | None = None
        self._get: Callable[[], Any] = _no_item

    def __iter__(self) -> SyncMessageStream:
        return self

    def __next__(self) -> Message:
        if self._state != 1:
            self._start()
        try:
            item = self._get()
        except KeyboardInterrupt:
            self.close()
            raise
        call = self._call
        assert call is not None  # _start() made it
        if item.__class__ is Message and not call.attention:
            return item
        return self._attend(item)

    @property
    def reply(self) -> Reply:
        """What the turn has produced so far."""
        if self._state == 1:  # the loop thread may be adding to it: read it there
            return self._owner._on_loop(lambda: self._inner.reply)
        return self._inner.reply

    def close(self) -> None:
        """Stop the turn and release the HTTP response; returns once both are done."""
        self._finish()

    def __enter__(self) -> SyncMessageStream:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def __del__(self) -> None:
        # A loop left with break drops the last reference here: the turn ends now.
        self._finish()

    def _start(self) -> None:
        if self._state == 2:
            raise StopIteration
        owner = self._owner
        call = Call(queue.SimpleQueue())
        self._future = owner._submit(call, lambda: owner._pump(call, self._inner))
        self._call = call
        owner._open_streams[call] = threading.get_ident()
        assert call.queue is not None
        self._get = call.queue.get if sys.platform != "win32" else _polling(call.queue)
        self._state = 1

    def _attend(self, item: Any) -> Message:
        call = self._call
        assert call is not None and call.queue is not None
        if call.stopped:  # aborted: the loop ends here, whatever is still queued
            self._finish()
            raise StopIteration
        if item.__class__ is Message:
            paused = call.paused
            if paused is not None and not call.resume_asked and call.queue.qsize() <= LOW_WATER:
                call.resume_asked = True
                on_loop(self._owner._loop, resolve, paused)
            return item
        self._finish(stop=False)
        if item.error is not None:
            raise item.error
        raise StopIteration

    def _finish(self, *, stop: bool = True) -> None:
        """Mark the stream finished; unless its turn ended by itself, stop it and wait."""
        started, self._state = self._state == 1, 2
        if not started:
            return
        call, future = self._call, self._future
        assert call is not None and future is not None
        owner = self._owner
        owner._open_streams.pop(call, None)
        if stop and not future.done():
            owner._stop_soon(call)
            if threading.get_ident() != owner._loop_ident:
                concurrent.futures.wait([future])


def _no_item() -> Any:
    raise StopIteration


def _polling(q: queue.SimpleQueue[Any]) -> Callable[[], Any]:
    """``q.get`` that Ctrl-C can interrupt on Windows, where a blocking get cannot be."""

    def get() -> Any:
        while True:
            try:
                return q.get(timeout=0.2)
            except queue.Empty:
                continue

    return get
