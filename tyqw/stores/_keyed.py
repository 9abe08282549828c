"""One ``asyncio.Lock`` per key, kept only while someone holds or waits for it.

A bot with 100,000 end users must not keep 100,000 locks. Locks are per event loop
too: a store used from two loops (the sync facade's and the caller's) gets one lock
per loop, and leaves exclusion between them to its OS or server lock.
"""

from __future__ import annotations

import asyncio
from collections.abc import Hashable
from typing import final


class KeyedLocks:
    """``async with locks.hold(key):`` excludes every other holder of ``key``.

    Example::

        locks = KeyedLocks()
        async with locks.hold(("app", "alice")):
            ...
    """

    __slots__ = ("_locks",)

    def __init__(self) -> None:
        self._locks: dict[tuple[int, Hashable], tuple[asyncio.Lock, int]] = {}

    def __len__(self) -> int:
        return len(self._locks)

    def hold(self, key: Hashable) -> Hold:
        """The context that holds ``key``'s lock (one per loop)."""
        return Hold(self._locks, key)


@final
class Hold:
    """``async with`` holds one key of a ``KeyedLocks``; see ``KeyedLocks.hold``.

    A class rather than an ``asynccontextmanager``: this is on every turn's path, and an
    async generator costs a loop hook, a weak reference and two resumptions per use.
    """

    __slots__ = ("_key", "_lock", "_locks", "_slot")

    def __init__(
        self, locks: dict[tuple[int, Hashable], tuple[asyncio.Lock, int]], key: Hashable
    ) -> None:
        self._locks = locks
        self._key = key

    async def __aenter__(self) -> None:
        slot = self._slot = (id(asyncio.get_running_loop()), self._key)
        lock, users = self._locks.get(slot) or (asyncio.Lock(), 0)
        self._locks[slot] = (lock, users + 1)
        try:
            await lock.acquire()
        except BaseException:
            self._leave()
            raise
        self._lock = lock

    async def __aexit__(self, *exc_info: object) -> None:
        self._lock.release()
        self._leave()

    def _leave(self) -> None:
        slot = self._slot
        lock, users = self._locks[slot]
        if users == 1:
            del self._locks[slot]
        else:
            self._locks[slot] = (lock, users - 1)
