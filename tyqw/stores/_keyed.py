"""One ``asyncio.Lock`` per key, kept only while someone holds or waits for it.

A bot with 100,000 end users must not keep 100,000 locks. Locks are per event loop
too: a store used from two loops (the sync facade's and the caller's) gets one lock
per loop, and leaves exclusion between them to its OS or server lock.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Hashable


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

    @contextlib.asynccontextmanager
    async def hold(self, key: Hashable) -> AsyncIterator[None]:
        slot = (id(asyncio.get_running_loop()), key)
        lock, users = self._locks.get(slot) or (asyncio.Lock(), 0)
        self._locks[slot] = (lock, users + 1)
        try:
            async with lock:
                yield
        finally:
            lock, users = self._locks[slot]
            if users == 1:
                del self._locks[slot]
            else:
                self._locks[slot] = (lock, users - 1)
