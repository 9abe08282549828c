"""The one private event loop thread that every ``SyncSession`` of the process shares,
and the one way tyqw runs code on a loop from another thread (``on_loop``, ``call_on_loop``).

Started by the first user, stopped (and joined) when the last one releases it; a daemon
thread, so it never holds up interpreter exit.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import threading
from collections.abc import Callable
from typing import TypeVar

__all__ = ["LoopThread", "call_on_loop", "loop_thread", "on_loop"]

_T = TypeVar("_T")

# How long a stopping loop lets the tasks still running (a session closing) finish
# before it cancels them.
_DRAIN_TIMEOUT = 5.0


class LoopThread:
    """An event loop on a daemon thread named ``tyqw-sync``, counted by its users."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._users = 0

    def acquire(self) -> tuple[asyncio.AbstractEventLoop, int]:
        """The running loop and its thread's ident, starting them for the first user."""
        with self._lock:
            if self._loop is None or self._thread is None:
                loop = asyncio.new_event_loop()
                started = threading.Event()
                thread = threading.Thread(
                    target=_serve, args=(loop, started), name="tyqw-sync", daemon=True
                )
                thread.start()
                self._loop, self._thread = loop, thread
                started.wait()
            self._users += 1
            assert self._thread.ident is not None
            return self._loop, self._thread.ident

    def release(self, closing: asyncio.Task[None] | None = None) -> None:
        """One user fewer; the last one stops the loop (once ``closing`` is done)."""
        with self._lock:
            self._users -= 1
            if self._users or self._loop is None or self._thread is None:
                return
            loop, thread = self._loop, self._thread
            self._loop = self._thread = None
        if threading.current_thread() is thread:  # from a handler: the thread cannot join itself
            if closing is None:
                loop.stop()
            else:
                closing.add_done_callback(lambda _: loop.stop())
        else:
            loop.call_soon_threadsafe(loop.stop)
            thread.join()


def on_loop(loop: asyncio.AbstractEventLoop, fn: Callable[..., object], *args: object) -> None:
    """Call ``fn(*args)`` now when running on ``loop``, else as soon as ``loop`` can, from
    any thread: ``call_soon_threadsafe`` wakes its selector whatever it waits for. Once
    ``loop`` is closed nothing runs there any more, and neither does ``fn``."""
    try:
        running = asyncio.get_running_loop()
    except RuntimeError:
        running = None
    if running is loop:
        fn(*args)
    elif not loop.is_closed():
        # Closed since the check: what fn would act on is gone with it.
        with contextlib.suppress(RuntimeError):
            loop.call_soon_threadsafe(fn, *args)


def call_on_loop(loop: asyncio.AbstractEventLoop, fn: Callable[[], _T]) -> _T:
    """``fn()`` run on ``loop``, waited for from another thread: its result or its
    exception. Only for a thread other than the loop's (it would wait for itself)."""
    future: concurrent.futures.Future[_T] = concurrent.futures.Future()

    def run() -> None:
        try:
            future.set_result(fn())
        except BaseException as exc:
            future.set_exception(exc)

    loop.call_soon_threadsafe(run)
    return future.result()


def _serve(loop: asyncio.AbstractEventLoop, started: threading.Event) -> None:
    asyncio.set_event_loop(loop)
    loop.call_soon(started.set)
    try:
        loop.run_forever()
        loop.run_until_complete(_drain())
        loop.run_until_complete(loop.shutdown_asyncgens())
        loop.run_until_complete(loop.shutdown_default_executor())
    finally:
        asyncio.set_event_loop(None)
        loop.close()


async def _drain() -> None:
    tasks = asyncio.all_tasks() - {asyncio.current_task()}
    if tasks:
        _, pending = await asyncio.wait(tasks, timeout=_DRAIN_TIMEOUT)
        for task in pending:
            task.cancel()
        await asyncio.gather(*pending, return_exceptions=True)


loop_thread = LoopThread()
