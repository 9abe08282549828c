"""Conversations on disk as the public API lists them: ``stored_conversations()``.

``FileStore`` (in ``tyqw.stores``) does the work; ``ConversationStore`` binds one to a
single ``(app_id, name)`` for a Session that keeps the id itself.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import os
import time
from dataclasses import dataclass
from pathlib import Path

from .stores._file import _TRANSCRIPT_SUFFIX, FileStore, default_state_dir

__all__ = ["ConversationStore", "StoredConversation", "default_state_dir", "stored_conversations"]


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
        for app_id, name, record, path in store._scan(store._paths())
    ]
    found.sort(key=lambda c: c.last_used, reverse=True)
    return found


class ConversationStore:
    """The stored id of one conversation, in a ``FileStore``."""

    def __init__(self, directory: Path, app_id: str, name: str) -> None:
        self.directory = directory
        self.app_id = app_id
        self.name = name
        self.files = FileStore(directory)
        self.path = self.files.path(app_id, name)

    def load(self) -> str | None:
        record = self.files.get_now(self.app_id, self.name)
        return None if record is None else str(record["session_id"])

    def save(self, session_id: str) -> None:
        """Replace the stored id: readers see the old file or the new one, never a mix."""
        self.files.set_now(
            self.app_id, self.name, {"session_id": session_id, "updated_at": time.time()}
        )

    def delete(self) -> None:
        self.files.delete_now(self.app_id, self.name)

    def touch(self) -> None:
        """Record that the conversation was used now (its file's modification time)."""
        with contextlib.suppress(OSError):
            os.utime(self.path)
