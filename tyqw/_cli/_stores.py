"""``--store`` and ``--state-dir``: where the commands keep conversations.

``--store`` (or ``TYQW_STORE``) takes a folder or a Redis URL; ``--state-dir`` is the
folder shorthand, as ``state_dir=`` is the SDK's. A flag wins over the environment. A
URL may hold a password: no message, listing or error ever shows more of it than
scheme, host, port and database.
"""

from __future__ import annotations

import argparse
import os
import re
import urllib.parse
from dataclasses import dataclass
from pathlib import Path

from ..stores import FileStore, Store
from ..stores._file import default_state_dir

__all__ = [
    "STORE_ENV",
    "ChosenStore",
    "StoreUsageError",
    "choose_store",
    "shown_url",
    "store_parent",
]

STORE_ENV = "TYQW_STORE"
_REDIS_SCHEMES = ("redis", "rediss", "unix")
_SCHEME = re.compile(r"([A-Za-z][A-Za-z0-9+.-]*)://")
_FORMS = "a folder, redis://[[user]:password@]host[:port][/db], rediss://... or unix://..."


class StoreUsageError(Exception):
    """A ``--store`` / ``TYQW_STORE`` / ``--state-dir`` mistake: exit status 2."""


@dataclass(frozen=True)
class ChosenStore:
    """The store a command uses, and how to name it in a message (never a password)."""

    store: Store
    where: str

    @property
    def shared(self) -> bool:
        return not isinstance(self.store, FileStore)


def store_parent() -> argparse.ArgumentParser:
    """``--store`` and ``--state-dir``."""
    parent = argparse.ArgumentParser(add_help=False)
    group = parent.add_argument_group("conversation store")
    group.add_argument(
        "--store",
        metavar="URL",
        help=f"where conversation ids are kept: {_FORMS}, shared by every process "
        f"that uses it ({STORE_ENV}; put a password there rather than on the command line)",
    )
    group.add_argument(
        "--state-dir",
        type=Path,
        metavar="DIR",
        help="a folder to keep conversation ids in, the same as --store DIR "
        f"(default: the user state folder, {default_state_dir()})",
    )
    return parent


def choose_store(args: argparse.Namespace) -> ChosenStore:
    """The store the flags and ``TYQW_STORE`` ask for; ``StoreUsageError`` for a mistake."""
    if args.store is not None and args.state_dir is not None:
        raise StoreUsageError("pass --store or --state-dir, not both")
    if args.state_dir is not None:
        return _folder(args.state_dir)
    if args.store is not None:
        return _parse(args.store, "--store")
    from_env = os.environ.get(STORE_ENV)
    if from_env:
        return _parse(from_env, STORE_ENV)
    return _folder(default_state_dir())


def _folder(path: Path) -> ChosenStore:
    return ChosenStore(FileStore(path), str(path))


def _parse(value: str, source: str) -> ChosenStore:
    if re.search("[\ud800-\udfff]", value) or not value.isprintable():
        raise StoreUsageError(f"{source} holds a character that is not printable text")
    if not value.strip():
        raise StoreUsageError(f"{source} is empty; expected {_FORMS}")
    if value.strip().lower() == "memory":
        raise StoreUsageError(
            f"{source}: a memory store forgets every conversation when tyqw exits; "
            f"expected {_FORMS}"
        )
    scheme = _SCHEME.match(value)
    if scheme is None:
        return _folder(Path(value).expanduser())
    kind = scheme.group(1).lower()
    if kind == "file":
        parts = urllib.parse.urlsplit(value)
        if parts.netloc not in ("", "localhost"):
            raise StoreUsageError(f"{source}: a file:// store must be on this machine")
        return _folder(Path(urllib.parse.unquote(parts.path)))
    if kind not in _REDIS_SCHEMES:
        raise StoreUsageError(
            f"{source}: {kind}:// is no kind of store tyqw knows; expected {_FORMS}"
        )
    try:
        from ..stores import RedisStore
    except ImportError:
        raise StoreUsageError(
            f"{source} names Redis, which needs redis-py: pip install 'tyqw[redis]'"
        ) from None
    where = shown_url(value)
    unusable = f"{source}: {where} is not a Redis URL tyqw can use; expected {_FORMS}"
    try:
        parts = urllib.parse.urlsplit(value)
    except ValueError:  # an unclosed [IPv6 address
        raise StoreUsageError(unusable) from None
    try:
        parts.port  # noqa: B018  (raises ValueError: not a port)
    except ValueError:
        raise StoreUsageError(
            f"{source}: the port in {where} is not a number from 1 to 65535"
        ) from None
    if kind != "unix" and not re.fullmatch(r"/?\d*", parts.path):
        # redis-py would quietly use database 0 instead
        raise StoreUsageError(f"{source}: the database in {where} is not a number")
    try:
        store = RedisStore.from_url(value)
    except ValueError:
        raise StoreUsageError(unusable) from None
    return ChosenStore(store, where)


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
