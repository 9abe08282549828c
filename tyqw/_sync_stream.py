"""``SyncMessageStream``: the iterator ``SyncSession.stream()`` returns, and the ``Call``
record that the caller's thread and the loop thread share for one turn.

The loop thread puts each ``Message`` on the call's queue and an ``End`` last; the
caller's thread takes them, so a message costs a queue put and get, not a thread hop.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import queue
import sys
import threading
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from ._loop_thread import on_loop
from ._models import Message, Reply
from ._session import MessageStream

if TYPE_CHECKING:
    from types import TracebackType

    from ._sync import SyncSession

__all__ = ["HIGH_WATER", "LOW_WATER", "Call", "End", "SyncMessageStream", "resolve"]

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
        if item.__class__ is Message and not self._call.attention:  # type: ignore[union-attr]
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
