"""Where conversations live: the ``Store`` interface and the stores tyqw ships.

- ``FileStore(state_dir)``: a file per conversation on this machine (the default);
  locked across the processes of one machine.
- ``MemoryStore()``: this process's memory; for tests and single-process bots.
- ``RedisStore(client)`` / ``RedisStore.from_url(url)``: shared by every worker on
  every machine (``pip install 'tyqw[redis]'``; redis-py is imported only when
  ``RedisStore`` is first used).
- ``StoreLocation.parse(text)``: one of those named by text (``memory``, a folder or
  ``file://`` URL, ``redis://...``), read as the ``tyqw`` commands read ``--store``.

Example::

    from tyqw.stores import RedisStore

    store = RedisStore.from_url("redis://localhost:6379/0")
    async with Session(app_id, name=user_id, store=store) as session:
        await session.send("你好")
"""

import typing as _typing
import warnings as _warnings

from ._base import LocalStore, Store, TranscriptStore, TurnStore, forget, read_history
from ._file import FileStore
from ._location import StoreLocation
from ._memory import MemoryStore

if _typing.TYPE_CHECKING:
    from ._redis import RedisStore

__all__ = [
    "FileStore",
    "LocalStore",
    "MemoryStore",
    "RedisStore",
    "Store",
    "StoreLocation",
    "TranscriptStore",
    "TurnStore",
    "forget",
    "read_history",
]


# Public in 0.1 / 0.2, no part of the contract now: importable, with a warning. The turn
# lock is how a Session takes its conversation; StoreError is ``tyqw.StoreError``.
_DEPRECATED = {
    "StoreError": "tyqw.StoreError",
    "TurnLock": "a Session, which takes the conversation's lock itself",
    "begin_turn": "a Session, which takes the conversation's lock itself",
    "end_turn": "a Session, which takes the conversation's lock itself",
}


def __getattr__(name: str) -> _typing.Any:
    if name in _DEPRECATED:
        _warnings.warn(
            f"tyqw.stores.{name} is deprecated; use {_DEPRECATED[name]}",
            DeprecationWarning,
            stacklevel=2,
        )
        if name == "StoreError":
            from .._exceptions import StoreError

            return StoreError
        from . import _base

        return getattr(_base, name)
    if name == "RedisStore":
        try:
            from ._redis import RedisStore
        except ImportError as exc:
            if exc.name is None or not exc.name.startswith("redis"):
                raise
            raise ImportError(
                "RedisStore needs redis-py: pip install 'tyqw[redis]'", name=exc.name
            ) from exc
        return RedisStore
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
