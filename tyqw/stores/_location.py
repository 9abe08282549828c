"""``StoreLocation``: a store named by text, read one way wherever text names one.

The ``tyqw`` commands' ``--store``, ``TYQW_STORE``, ``tyqw serve --store`` and
``tyqw.relay.create_app(store="...")`` all parse here, so ``file:///tmp/x``,
``REDIS://...`` and ``memory`` mean the same everywhere. A URL may hold a password: no
message, repr or error shows more of it than scheme, host, port and database.
"""

from __future__ import annotations

import os
import re
import urllib.parse
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from .._config import STORE_ENV, environment_store
from ._base import Store

__all__ = ["StoreLocation"]

_REDIS_SCHEMES = ("redis", "rediss", "unix")
_SCHEME = re.compile(r"([A-Za-z][A-Za-z0-9+.-]*)://")
_REDIS_FORMS = "redis://[[user]:password@]host[:port][/db], rediss://... or unix://..."
STORE_FORMS = f"a folder, {_REDIS_FORMS}"
"""The forms a store location takes, for help texts."""


@dataclass(frozen=True, slots=True)
class StoreLocation:
    """Where conversations live, as text names it: ``memory``, a folder (a path or a
    ``file://`` URL), or Redis (``redis://``, ``rediss://``, ``unix://``; any case).

    ``parse()`` checks the text and connects to nothing; ``open()`` makes the store.
    ``shown`` names it for messages: the folder, or the URL without its user, password
    and query. ``memory=False`` refuses ``memory``, for a program whose conversations
    must outlive it (the ``tyqw`` commands other than ``serve`` do).

    Example::

        from tyqw.stores import StoreLocation

        location = StoreLocation.parse("redis://:pw@localhost:6379/0")
        print(location.kind, location.shown)   # redis redis://localhost:6379/0
        store = location.open()                # a RedisStore; close it with aclose()
    """

    kind: Literal["memory", "folder", "redis"]
    target: str = field(default="", repr=False)
    """The folder, or the Redis URL as given (it may hold a password)."""
    shown: str = "memory"
    """How messages name it: never a password."""

    @classmethod
    def parse(
        cls, text: str | os.PathLike[str], *, memory: bool = True, source: str = "store"
    ) -> StoreLocation:
        """The location ``text`` names; a path object is always a folder.

        Raises ``ValueError`` (its message starts with ``source``, such as
        ``"--store"``) for text that names no store tyqw can use, and ``ImportError``
        for a Redis URL without redis-py installed.

        Example::

            StoreLocation.parse("file:///var/lib/bot").shown    # '/var/lib/bot'
            StoreLocation.parse("memory", memory=False)         # ValueError
        """
        if isinstance(text, os.PathLike):
            return _folder(Path(os.fspath(text)))
        if not isinstance(text, str):
            raise TypeError(f"a store location is text or a path, not {type(text).__name__}")
        if re.search("[\ud800-\udfff]", text) or not text.isprintable():
            raise ValueError(f"{source} holds a character that is not printable text")
        if not text.strip():
            raise ValueError(f"{source} is empty; {_expected(memory)}")
        if text.strip().lower() == "memory":
            if not memory:
                raise ValueError(
                    f"{source}: a memory store forgets every conversation when tyqw exits; "
                    f"{_expected(memory)}"
                )
            return cls("memory")
        scheme = _SCHEME.match(text)
        if scheme is None:
            return _folder(Path(text).expanduser())
        kind = scheme.group(1).lower()
        if kind == "file":
            parts = urllib.parse.urlsplit(text)
            if parts.netloc not in ("", "localhost"):
                raise ValueError(f"{source}: a file:// store must be on this machine")
            return _folder(Path(urllib.parse.unquote(parts.path)))
        if kind not in _REDIS_SCHEMES:
            raise ValueError(
                f"{source}: {kind}:// is no kind of store tyqw knows; {_expected(memory)}"
            )
        return _redis(text, source)

    @classmethod
    def from_environment(cls, *, memory: bool = True) -> StoreLocation | None:
        """The location ``TYQW_STORE`` names, or ``None`` when it is unset or empty.

        Example::

            location = StoreLocation.from_environment() or StoreLocation.parse("memory")
        """
        text = environment_store()
        return cls.parse(text, memory=memory, source=STORE_ENV) if text else None

    def open(self) -> Store:
        """A new store at this location (connecting to nothing yet); the caller closes it.

        Example::

            store = StoreLocation.parse("/srv/bot/conversations").open()   # a FileStore
        """
        if self.kind == "redis":
            from . import RedisStore

            return RedisStore.from_url(self.target)
        if self.kind == "folder":
            from ._file import FileStore

            return FileStore(self.target)
        from ._memory import MemoryStore

        return MemoryStore()


def _expected(memory: bool) -> str:
    return f"expected {'memory, ' if memory else ''}a folder or a redis:// URL ({_REDIS_FORMS})"


def _folder(path: Path) -> StoreLocation:
    return StoreLocation("folder", str(path), str(path))


def _redis(url: str, source: str) -> StoreLocation:
    try:
        from . import RedisStore
    except ImportError as exc:
        raise ImportError(
            f"{source} names Redis, which needs redis-py: pip install 'tyqw[redis]'",
            name=exc.name,
        ) from None
    where = shown_url(url)
    unusable = f"{source}: invalid Redis URL {where}; expected {STORE_FORMS}"
    try:
        parts = urllib.parse.urlsplit(url)
    except ValueError:  # an unclosed [IPv6 address
        raise ValueError(unusable) from None
    try:
        parts.port  # noqa: B018  (raises ValueError: not a port)
    except ValueError:
        raise ValueError(
            f"{source}: invalid Redis URL {where}: the port is not a number from 1 to 65535"
        ) from None
    if parts.scheme.lower() != "unix" and not re.fullmatch(r"/?\d*", parts.path):
        # redis-py would quietly use database 0 instead
        raise ValueError(f"{source}: invalid Redis URL {where}: the database is not a number")
    try:
        # What redis-py refuses, refused now rather than at the first turn. The store is
        # not kept: it has opened nothing (its pool connects on first use).
        RedisStore.from_url(url)
    except ValueError:
        raise ValueError(unusable) from None
    return StoreLocation("redis", url, where)


def shown_url(url: str) -> str:
    """``url`` as messages show it: scheme, host, port and database; for ``unix://``, the
    socket's path. Never the user, password or query (which may hold a password)."""
    try:
        parts = urllib.parse.urlsplit(url)
        host = parts.hostname or ""
    except ValueError:
        return f"{url.split(':', 1)[0].lower()}://(unparsable)"
    try:
        port = f":{parts.port}" if parts.port else ""
    except ValueError:
        port = ":(?)"
    if parts.scheme.lower() == "unix":
        return f"unix://{parts.path}"
    database = parts.path if re.fullmatch(r"/\d*", parts.path or "/") else "/(?)"
    shown_host = f"[{host}]" if ":" in host else host
    return f"{parts.scheme.lower()}://{shown_host}{port}{database if database != '/' else ''}"
