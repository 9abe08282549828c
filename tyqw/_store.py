"""Where conversation ids live between runs: one small JSON file per (app_id, name)."""

from __future__ import annotations

import contextlib
import datetime as dt
import hashlib
import json
import logging
import os
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import platformdirs

__all__ = ["StoredConversation", "stored_conversations"]

logger = logging.getLogger("tyqw")

_MAX_FILE = 64 * 1024
_warned_dirs: set[Path] = set()


def default_state_dir() -> Path:
    """``platformdirs.user_state_path("tyqw")``: ``$XDG_STATE_HOME/tyqw`` on Linux."""
    return platformdirs.user_state_path("tyqw", appauthor=False)


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
        """Forget this conversation (the next turn under its name starts a new one)."""
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()


def stored_conversations(
    state_dir: str | os.PathLike[str] | None = None,
) -> list[StoredConversation]:
    """Every conversation stored under ``state_dir``, most recently used first.

    Example::

        for conversation in tyqw.stored_conversations():
            if conversation.name == "alice":
                conversation.delete()
    """
    directory = Path(state_dir) if state_dir is not None else default_state_dir()
    found = []
    try:
        paths = list(directory.glob("*.json"))
    except OSError:
        return []
    for path in paths:
        try:
            record = _read(path)
        except OSError as exc:
            logger.warning("tyqw: cannot read conversation file %s (%s); skipping it", path, exc)
            continue
        if record is None:
            continue
        try:
            mtime = path.stat().st_mtime
        except OSError:
            continue
        found.append(
            StoredConversation(
                app_id=record["app_id"],
                name=record["name"],
                session_id=record["session_id"],
                last_used=dt.datetime.fromtimestamp(mtime, dt.timezone.utc),
                path=path,
            )
        )
    found.sort(key=lambda c: c.last_used, reverse=True)
    return found


def _read(path: Path) -> dict[str, str] | None:
    """The record in ``path``: ``None`` if there is none or it is damaged (with a warning).

    Other ``OSError`` is raised: only the caller knows what an unreadable file means.
    """
    try:
        with path.open("rb") as f:
            data = f.read(_MAX_FILE + 1)
    except FileNotFoundError:
        return None
    try:
        record = json.loads(data) if len(data) <= _MAX_FILE else None
    except ValueError:
        record = None
    if not isinstance(record, dict) or not all(
        isinstance(record.get(key), str) and record[key]
        for key in ("app_id", "name", "session_id")
    ):
        logger.warning(
            "tyqw: ignoring unreadable conversation file %s; the conversation starts anew", path
        )
        return None
    return record


class ConversationStore:
    """The file that holds one conversation id, written atomically with mode 0600."""

    def __init__(self, directory: Path, app_id: str, name: str) -> None:
        self.directory = directory
        self.app_id = app_id
        self.name = name
        digest = hashlib.sha256(f"{app_id}\0{name}".encode()).hexdigest()[:32]
        self.path = directory / f"{digest}.json"
        self._tmp_prefix = f".{digest}."

    def load(self) -> str | None:
        try:
            record = _read(self.path)
        except OSError as exc:
            self._unusable("read", exc)
            return None
        if record is None:
            return None
        if (record["app_id"], record["name"]) != (self.app_id, self.name):
            logger.warning("tyqw: %s belongs to another conversation; ignoring it", self.path)
            return None
        return record["session_id"]

    def save(self, session_id: str) -> None:
        """Replace the stored id: readers see the old file or the new one, never a mix."""
        data = json.dumps(
            {"app_id": self.app_id, "name": self.name, "session_id": session_id},
            ensure_ascii=False,
        ).encode()
        tmp = None
        try:
            self.directory.mkdir(mode=0o700, parents=True, exist_ok=True)
            # mkstemp creates the file with mode 0600 in the same folder, so the
            # rename below stays on one file system and is atomic.
            fd, tmp = tempfile.mkstemp(dir=self.directory, prefix=self._tmp_prefix, suffix=".tmp")
            with os.fdopen(fd, "wb") as f:
                f.write(data)
            os.replace(tmp, self.path)
            tmp = None
            self._remove_stale_temporaries()
        except OSError as exc:
            self._unusable("write", exc)
        finally:
            if tmp is not None:
                with contextlib.suppress(OSError):
                    os.unlink(tmp)

    def _remove_stale_temporaries(self) -> None:
        """Remove this conversation's temporary files that a killed writer left behind.

        Only files older than a minute: a younger one may be another process's write
        in progress.
        """
        cutoff = time.time() - 60
        for leftover in self.directory.glob(f"{self._tmp_prefix}*.tmp"):
            with contextlib.suppress(OSError):
                if leftover.stat().st_mtime < cutoff:
                    leftover.unlink()

    def delete(self) -> None:
        try:
            self.path.unlink()
        except FileNotFoundError:
            pass
        except OSError as exc:
            self._unusable("write", exc)

    def touch(self) -> None:
        """Record that the conversation was used now (its file's modification time)."""
        with contextlib.suppress(OSError):
            os.utime(self.path)

    def _unusable(self, action: str, exc: OSError) -> None:
        """Warn once per folder and process, whether reading or writing failed first."""
        if self.directory in _warned_dirs:
            logger.debug("tyqw: cannot %s %s: %s", action, self.path, exc)
            return
        _warned_dirs.add(self.directory)
        logger.warning(
            "tyqw: cannot %s conversation ids in %s (%s); conversations are kept in "
            "memory for this process only. Pass state_dir= or set XDG_STATE_HOME to a "
            "writable folder.",
            action,
            self.directory,
            exc.strerror or exc,
        )
