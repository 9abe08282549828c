"""Conversations on disk as the public API lists them: ``tyqw.stored_conversations()``.

``FileStore`` does the reading (``stored_files``); this module turns what it finds into
``StoredConversation`` values, newest first, for the ``tyqw conversations`` command and
for users cleaning up a state folder.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import os
from dataclasses import dataclass
from pathlib import Path

from ._file import _TRANSCRIPT_SUFFIX, FileStore, stored_files

__all__ = ["StoredConversation", "stored_conversations"]


@dataclass(frozen=True, slots=True)
class StoredConversation:
    """A conversation id kept on disk, as listed by ``stored_conversations()``.

    Example::

        for conversation in tyqw.stored_conversations():
            print(conversation.name, conversation.app_id, conversation.session_id)
    """

    app_id: str
    name: str
    session_id: str
    last_used: dt.datetime
    path: Path

    def delete(self) -> None:
        """Forget this conversation and its transcript (the next turn under its name
        starts a new one)."""
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()
        with contextlib.suppress(FileNotFoundError):
            self.path.with_suffix(_TRANSCRIPT_SUFFIX).unlink()


def stored_conversations(
    state_dir: str | os.PathLike[str] | None = None,
) -> list[StoredConversation]:
    """Every conversation stored under ``state_dir``, most recently used first.

    Example::

        for conversation in tyqw.stored_conversations():
            if conversation.name == "alice":
                conversation.delete()
    """
    store = FileStore(state_dir)
    found = [
        StoredConversation(
            app_id=app_id,
            name=name,
            session_id=record["session_id"],
            last_used=dt.datetime.fromtimestamp(record["updated_at"], dt.timezone.utc),
            path=path,
        )
        for app_id, name, record, path in stored_files(store)
    ]
    found.sort(key=lambda c: c.last_used, reverse=True)
    return found
