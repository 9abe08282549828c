"""An exclusive OS lock on a file, waited for without blocking the event loop.

``flock`` (``msvcrt.locking`` on Windows) is taken with a non-blocking call, retried
with a short backoff: the wait is a plain ``await asyncio.sleep``, so it is cancellable
and other tasks run meanwhile. The OS drops the lock when its holder dies, so a killed
worker never leaves a conversation locked.
"""

from __future__ import annotations

import asyncio
import os
import sys
from pathlib import Path

_FIRST_WAIT = 0.0005
_LONGEST_WAIT = 0.02
_OPEN_FLAGS = (
    os.O_RDWR
    | os.O_CREAT
    | getattr(os, "O_CLOEXEC", 0)
    | getattr(os, "O_NOFOLLOW", 0)  # a planted symlink is not followed
    | getattr(os, "O_NONBLOCK", 0)  # nor does a planted FIFO block the open
)

if sys.platform == "win32":
    import msvcrt

    def _try_lock(fd: int) -> bool:
        try:
            msvcrt.locking(fd, msvcrt.LK_NBLCK, 1)
        except OSError:
            return False
        return True

    def _unlock(fd: int) -> None:
        os.lseek(fd, 0, os.SEEK_SET)
        msvcrt.locking(fd, msvcrt.LK_UNLCK, 1)

else:
    import fcntl

    def _try_lock(fd: int) -> bool:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return False
        return True

    def _unlock(fd: int) -> None:
        fcntl.flock(fd, fcntl.LOCK_UN)


async def lock_file(path: Path) -> int:
    """Open ``path`` (created empty, mode 0600) and lock it; returns the descriptor.

    Raises ``OSError`` when the file cannot be opened or locked at all (the caller
    decides what that means). Cancelling the wait closes the descriptor.
    """
    fd = os.open(path, _OPEN_FLAGS, 0o600)
    try:
        wait = _FIRST_WAIT
        while not _try_lock(fd):
            await asyncio.sleep(wait)
            wait = min(wait * 2, _LONGEST_WAIT)
    except BaseException:
        os.close(fd)
        raise
    return fd


def unlock_file(fd: int) -> None:
    """Release the lock and close the descriptor."""
    try:
        _unlock(fd)
    finally:
        os.close(fd)
