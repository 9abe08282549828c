"""``--store`` and ``--state-dir``: where the commands keep conversations.

``--store`` (or ``TYQW_STORE``) takes a folder or a Redis URL, read by
``tyqw.stores.StoreLocation`` as ``tyqw serve`` and the relay read theirs (only
``memory`` is refused here: these commands' conversations outlive them);
``--state-dir`` is the folder shorthand, as ``state_dir=`` is the SDK's. A flag wins
over the environment. A URL may hold a password: no message, listing or error ever
shows more of it than scheme, host, port and database.
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from pathlib import Path

from .._config import STORE_ENV
from ..stores import FileStore, Store, StoreLocation
from ..stores._file import default_state_dir
from ..stores._location import STORE_FORMS

__all__ = ["ChosenStore", "StoreUsageError", "choose_store", "store_parent"]


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
        help=f"where conversation ids are kept: {STORE_FORMS}, shared by every process "
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
        location = StoreLocation.parse(args.state_dir)
    else:
        try:
            if args.store is not None:
                location = StoreLocation.parse(args.store, memory=False, source="--store")
            else:
                location = StoreLocation.from_environment(memory=False) or StoreLocation.parse(
                    default_state_dir()
                )
        except (ValueError, ImportError) as exc:
            raise StoreUsageError(str(exc)) from None
    return ChosenStore(location.open(), location.shown)
