"""``FileStore``: one small JSON file per conversation, under a state folder.

Layout (``<key>`` is ``sha256(app_id NUL name)[:32]``, as in tyqw 0.1)::

    <state_dir>/<key>.json          the record, with its app_id and name; mode 0600
    <state_dir>/<key>.transcript.jsonl  its transcript, one JSON line per exchange; 0600
    <state_dir>/.tmp/<key>.*.tmp    a write in progress (then os.replace'd into place)
    <state_dir>/.locks/<key>.lock   the conversation's OS lock (an empty file)

A save touches only its own file and the in-flight temporaries, so its cost does not
depend on how many conversations the folder holds. The store never raises for I/O:
an unusable folder is one warning per folder and process, and the conversation goes
on in this process's memory; a damaged file is one warning and "no conversation".

Several processes share the folder as workers share a Redis store: what another process
stored or cleared is never overwritten by a stale copy. A file is only ever replaced,
so what ``lstat()`` says of it (its *version*) changes with every write: the write at a
turn's end is skipped when the file is no longer the version the turn read (another
process changed it without the lock, as ``clear()`` does), and a record kept in memory
after a failed write stands only while the file is still the version it shadowed.
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import json
import logging
import os
import re
import stat
import tempfile
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any, final

import platformdirs

from ._base import LocalStoreMethods
from ._keyed import KeyedLocks
from ._oslock import lock_file, unlock_file
from ._record import MAX_RECORD, conversation_key, copy_record, decode, encode, to_utf8_json

__all__ = ["FileStore", "default_state_dir", "stored_files"]

logger = logging.getLogger("tyqw")

_READ_FLAGS = (
    os.O_RDONLY
    | getattr(os, "O_CLOEXEC", 0)
    | getattr(os, "O_NOFOLLOW", 0)  # a symlink in place of the file is damage
    | getattr(os, "O_NONBLOCK", 0)  # a FIFO in place of the file must not block
    | getattr(os, "O_NOCTTY", 0)
)
_STALE_TEMPORARY = 60.0
_LIST_BATCH = 256

# Per process, like the warning: a folder that failed once is reported once, and what
# could not be written lives here, for every FileStore of that folder.
_warned_dirs: set[Path] = set()
_in_memory: dict[tuple[Path, str, str], tuple[dict[str, Any], object]] = {}
_in_memory_guard = threading.Lock()
_locks = KeyedLocks()

# A file's version: (inode, device, size, mtime_ns), None for no file, or _UNKNOWN when
# the folder cannot be read. _UNREAD: a lock under which the file was not read yet.
_UNKNOWN = object()
_UNREAD = object()
# The _FileLock held on each conversation file (its OS lock makes it one per process,
# whichever loop; without an OS lock the folder is unusable and versions unknown): the
# turn's read and write, made through the store's async methods under it, note and
# check there the version the turn read.
_held: dict[Path, _FileLock] = {}

Found = tuple[str, str, dict[str, Any], float]
"""``(app_id, name, record, mtime)`` read from one file."""

# What the last read of each file found, under what its lstat() said then. A turn reads
# its conversation at every start (another process may have changed it): when the file
# is the one read last time (tyqw replaces a file, so a change is a new inode), the
# record is not read and parsed again.
_read_cache: dict[Path, tuple[tuple[int, int, int, int], Found]] = {}
_READ_CACHE_SIZE = 4096


def default_state_dir() -> Path:
    """``platformdirs.user_state_path("tyqw")``: ``$XDG_STATE_HOME/tyqw`` on Linux."""
    return platformdirs.user_state_path("tyqw", appauthor=False)


class FileStore(LocalStoreMethods):
    """Conversations in a local folder: the default store.

    Atomic (a temporary file, then ``os.replace``), mode 0600 in a 0700 folder, and
    locked per conversation with an OS file lock, so several processes on one machine
    can share the folder. It reads tyqw 0.1's files, and 0.1 reads its ``session_id``.

    Example::

        store = FileStore("/var/lib/mybot/tyqw")
        async with Session(app_id, name="alice", store=store) as session:
            await session.send("你好")
    """

    def __init__(self, state_dir: str | os.PathLike[str] | None = None) -> None:
        self.directory = Path(state_dir) if state_dir is not None else default_state_dir()
        # (app_id, name) -> (its file, its lock file, its transcript): a turn needs them
        # every time.
        self._paths_of: dict[tuple[str, str], tuple[Path, Path, Path]] = {}
        # A transcript this process appended to last -> (its version then, its last
        # line's number, the mark its next rewrite starts from: see _compact).
        self._appended: dict[
            Path, tuple[tuple[int, int, int, int], int, tuple[int, int] | None]
        ] = {}

    def _files(self, app_id: str, name: str) -> tuple[Path, Path, Path]:
        paths = self._paths_of.get((app_id, name))
        if paths is None:
            if len(self._paths_of) >= 4096:
                self._paths_of.clear()
            key = conversation_key(app_id, name)
            paths = self._paths_of[app_id, name] = (
                self.directory / f"{key}.json",
                self.directory / ".locks" / f"{key}.lock",
                self.directory / f"{key}{_TRANSCRIPT_SUFFIX}",
            )
        return paths

    def __repr__(self) -> str:
        return f"FileStore({str(self.directory)!r})"

    def path(self, app_id: str, name: str) -> Path:
        """The file that holds the conversation ``(app_id, name)``."""
        return self._files(app_id, name)[0]

    # -- synchronous: quick, local, never waits on another process ---------------------

    def get_now(self, app_id: str, name: str) -> dict[str, Any] | None:
        """The record, or ``None`` (no file, a damaged one, or an unusable folder)."""
        return self._get(app_id, name)[0]

    def _get(self, app_id: str, name: str) -> tuple[dict[str, Any] | None, object]:
        """The record, and the version of the file it stands for."""
        path = self.path(app_id, name)
        memory_key = (self.directory, app_id, name)
        with _in_memory_guard:
            kept = _in_memory.get(memory_key)
        if kept is not None:
            record, shadowed = kept
            now = _version(path)
            if now is _UNKNOWN or shadowed is _UNKNOWN or now == shadowed:
                return copy.deepcopy(record), now
            # Another process stored or cleared the conversation since: theirs is newer.
            with _in_memory_guard:
                if _in_memory.get(memory_key) is kept:
                    del _in_memory[memory_key]
        try:
            found, version = _read_versioned(path)
        except OSError as exc:
            self._unusable("read", exc)
            return None, _UNKNOWN
        if found is None:
            return None, version
        stored_app_id, stored_name, record, _ = found
        if (stored_app_id, stored_name) != (app_id, name):
            logger.warning("tyqw: %s belongs to another conversation; ignoring it", path)
            return None, version
        return record, version

    def set_now(self, app_id: str, name: str, record: dict[str, Any]) -> None:
        """Replace the record: readers see the old file or the new one, never a mix."""
        memory_key = (self.directory, app_id, name)
        try:
            data = encode(app_id, name, record)
        except ValueError as exc:
            logger.warning(
                "tyqw: cannot store the conversation %r of %r (%s); it is kept in memory "
                "for this process only",
                name,
                app_id,
                exc,
            )
            self._keep_in_memory(memory_key, record)
            return
        path = self.path(app_id, name)
        try:
            _replace(path, data, self.directory / ".tmp", self._make_folders)
        except IsADirectoryError:  # damage in place of this one file, not the folder
            logger.warning(
                "tyqw: cannot replace %s (a folder is in its place); the conversation is "
                "kept in memory for this process only",
                path,
            )
            self._keep_in_memory(memory_key, record)
            return
        except OSError as exc:
            self._unusable("write", exc)
            self._keep_in_memory(memory_key, record)
            return
        with _in_memory_guard:
            _in_memory.pop(memory_key, None)
        _remove_stale_temporaries(self.directory / ".tmp")

    def _make_folders(self) -> None:
        """The state folder and its ``.tmp``, owner-only, where a write finds them missing."""
        self.directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        (self.directory / ".tmp").mkdir(mode=0o700, exist_ok=True)

    # -- the transcript: appended, never rewritten but to drop the oldest --------------

    def transcript_path(self, app_id: str, name: str) -> Path:
        """The file that holds the transcript of ``(app_id, name)``."""
        return self._files(app_id, name)[2]

    def append_transcript_now(
        self, app_id: str, name: str, entry: dict[str, Any], keep: int
    ) -> None:
        """Append ``entry`` as one line; the oldest lines past ``keep`` are dropped now
        and then: when the file holds ``2 * keep`` lines it is rewritten with the
        ``keep`` most recent, so it never holds more than ``2 * keep`` whole lines and an
        append costs the same however long the transcript is. Call it under the
        conversation's lock."""
        path = self.transcript_path(app_id, name)
        try:
            if keep < 1:
                raise ValueError(f"keep must be >= 1, not {keep}")
            try:
                fd = os.open(path, _APPEND_FLAGS, 0o600)
            except FileNotFoundError:
                self.directory.mkdir(mode=0o700, parents=True, exist_ok=True)
                fd = os.open(path, _APPEND_FLAGS, 0o600)
            kept = None
            try:
                before = os.fstat(fd)
                known = self._appended.get(path)
                if known is not None and known[0] == _stamp(before):
                    # This process wrote the file's last line, and nothing has changed it
                    # since: its number is known without reading the tail.
                    last, whole, mark = known[1], True, known[2]
                else:
                    (last, whole), mark = _last_number(fd, before.st_size), None
                number = last + 1
                line = to_utf8_json({"n": number, "keep": keep, "entry": entry})
                # After a torn tail (a writer killed mid-line) the new line starts on a
                # line of its own; the torn piece is then one unreadable line, skipped.
                _write_all(fd, line + b"\n" if whole else b"\n" + line + b"\n")
                # The stamp is read again, not computed: the size is known, but the
                # modification time is the kernel's, and it tells this write apart from
                # another process's replacing the file by one of the same size.
                after = os.fstat(fd)
                if number % keep == 0 and number > keep:
                    kept = _kept_lines(fd, after.st_size, number, keep, mark)
            finally:
                os.close(fd)
            if kept is not None:  # replaced once closed: Windows replaces no open file
                after = _replace(path, kept, self.directory / ".tmp", self._make_folders)
            if number % keep == 0:
                # The next rewrite keeps the lines after this one.
                mark = (number, after.st_size)
            if len(self._appended) >= 4096:
                self._appended.clear()
            self._appended[path] = (_stamp(after), number, mark)
        except (TypeError, ValueError, RecursionError) as exc:
            logger.warning("tyqw: cannot store an exchange of %r (%s); not kept", name, exc)
        except OSError as exc:
            # The folder's one warning; the exchange is not kept.
            self._appended.pop(path, None)
            self._unusable("write", exc)

    def read_transcript_now(self, app_id: str, name: str) -> list[dict[str, Any]]:
        """The transcript, oldest first; unreadable lines (a torn tail) are skipped."""
        path = self.transcript_path(app_id, name)
        try:
            return _kept_entries(path)
        except OSError as exc:
            self._unusable("read", exc)
            return []

    def delete_transcript_now(self, app_id: str, name: str) -> None:
        """Forget the transcript: remove its file."""
        self._remove(self.transcript_path(app_id, name))

    async def append_transcript(
        self, app_id: str, name: str, entry: dict[str, Any], keep: int
    ) -> None:
        """``append_transcript_now()``."""
        self.append_transcript_now(app_id, name, entry, keep)

    async def read_transcript(self, app_id: str, name: str) -> list[dict[str, Any]]:
        """``read_transcript_now()``, in a thread (a transcript may be long)."""
        return await asyncio.to_thread(self.read_transcript_now, app_id, name)

    async def delete_transcript(self, app_id: str, name: str) -> None:
        """``delete_transcript_now()``."""
        self.delete_transcript_now(app_id, name)

    def delete_now(self, app_id: str, name: str) -> None:
        """Forget the conversation: remove its file."""
        with _in_memory_guard:
            _in_memory.pop((self.directory, app_id, name), None)
        self._remove(self.path(app_id, name))

    def _remove(self, path: Path) -> None:
        """Remove one file of a conversation: one already gone is fine; a folder that
        refuses is reported as any refused write is (a warning once per folder)."""
        try:
            os.unlink(path)
        except FileNotFoundError:
            pass
        except OSError as exc:
            self._unusable("write", exc)

    # -- the Store protocol --------------------------------------------------------------

    def lock(self, app_id: str, name: str) -> _FileLock:
        """Exclusive per conversation, across tasks and processes on this machine.

        A lock file that cannot be used (an unusable folder) leaves the in-process lock
        only, with the folder's one warning.
        """
        return _FileLock(self, *self._files(app_id, name)[:2])

    async def get(self, app_id: str, name: str) -> dict[str, Any] | None:
        """``get_now()``; under ``lock()`` it also notes the version of the file it read,
        which the write under the same lock checks."""
        holder = _held.get(self.path(app_id, name))
        if holder is None:
            return self.get_now(app_id, name)
        record, holder.version = self._get(app_id, name)
        return record

    async def set(self, app_id: str, name: str, record: dict[str, Any]) -> None:
        """``set_now()``; under ``lock()``, skipped if another process changed the file
        since it was read under that lock (their change is newer than this copy)."""
        if not self._changed_since_read(app_id, name):
            self.set_now(app_id, name, record)

    async def delete(self, app_id: str, name: str) -> None:
        """``delete_now()``; under ``lock()``, skipped as ``set()`` is."""
        if not self._changed_since_read(app_id, name):
            self.delete_now(app_id, name)

    def _changed_since_read(self, app_id: str, name: str) -> bool:
        path = self.path(app_id, name)
        holder = _held.get(path)
        if holder is None or holder.version is _UNREAD:
            return False
        read, holder.version = holder.version, _UNREAD
        now = _version(path)
        if read is _UNKNOWN or now is _UNKNOWN or now == read:
            return False
        logger.info(
            "tyqw: the conversation %r of %r was changed by another process during the "
            "turn; keeping that change",
            name,
            app_id,
        )
        return True

    async def conversations(
        self, app_id: str | None = None
    ) -> AsyncIterator[tuple[str, str, dict[str, Any]]]:
        """Every stored conversation (of ``app_id``); files are read in a thread.

        ``record["updated_at"]`` is the later of the stored time and the file's
        modification time (a file of tyqw 0.1 has only the latter).
        """
        paths = await asyncio.to_thread(self._paths)
        for start in range(0, len(paths), _LIST_BATCH):
            batch = paths[start : start + _LIST_BATCH]
            found = await asyncio.to_thread(self._scan_list, batch, app_id)
            for stored_app_id, stored_name, record, _path in found:
                yield stored_app_id, stored_name, record

    async def aclose(self) -> None:
        """Nothing to close: a FileStore holds no open file between calls."""

    # -- listing, for ``stored_conversations()`` -----------------------------------------

    def _paths(self) -> list[Path]:
        try:
            return sorted(self.directory.glob("*.json"))
        except OSError:
            return []

    def _scan_list(
        self, paths: list[Path], app_id: str | None
    ) -> list[tuple[str, str, dict[str, Any], Path]]:
        return list(self._scan(paths, app_id))

    def _scan(
        self, paths: list[Path], app_id: str | None = None
    ) -> Iterator[tuple[str, str, dict[str, Any], Path]]:
        for path in paths:
            try:
                found = _read(path)
            except OSError as exc:
                logger.warning(
                    "tyqw: cannot read conversation file %s (%s); skipping it", path, exc
                )
                continue
            if found is None:
                continue
            stored_app_id, stored_name, record, mtime = found
            if path.stem != conversation_key(stored_app_id, stored_name):
                logger.warning("tyqw: %s belongs to another conversation; ignoring it", path)
                continue
            if app_id is not None and stored_app_id != app_id:
                continue
            record["updated_at"] = max(float(record.get("updated_at", 0.0)), mtime)
            yield stored_app_id, stored_name, record, path

    # -- failures ------------------------------------------------------------------------

    async def _lock_file(self, path: Path) -> int | None:
        try:
            try:
                return await lock_file(path)
            except FileNotFoundError:
                self.directory.mkdir(mode=0o700, parents=True, exist_ok=True)
                path.parent.mkdir(mode=0o700, exist_ok=True)
                return await lock_file(path)
        except OSError as exc:
            self._unusable("lock", exc)
            return None

    def _keep_in_memory(self, memory_key: tuple[Path, str, str], record: dict[str, Any]) -> None:
        try:
            kept = copy.deepcopy(record)
        except Exception:  # a record that cannot even be copied is kept as given
            kept = record
        # It stands in for the file only while the file stays the version it shadows.
        shadowed = _version(self.path(memory_key[1], memory_key[2]))
        with _in_memory_guard:
            _in_memory[memory_key] = (kept, shadowed)

    def _unusable(self, action: str, exc: OSError) -> None:
        """Warn once per folder and process, whether reading or writing failed first."""
        if self.directory in _warned_dirs:
            logger.debug("tyqw: cannot %s in %s: %s", action, self.directory, exc)
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


def stored_files(store: FileStore) -> list[tuple[str, str, dict[str, Any], Path]]:
    """Every conversation file of ``store``: app id, name, record and path, read now (for
    ``stored_conversations()``, in this package; a damaged file is logged and skipped)."""
    return store._scan_list(store._paths(), None)


def _damaged(path: Path, why: str) -> None:
    logger.warning(
        "tyqw: ignoring unreadable conversation file %s (%s); the conversation starts anew",
        path,
        why,
    )


@final
class _FileLock:
    """``FileStore.lock()``: the in-process lock of the file, then the OS lock on it (a
    class, not an ``asynccontextmanager``: it is on every turn's path)."""

    __slots__ = ("_fd", "_hold", "_path", "_record_path", "_store", "version")

    def __init__(self, store: FileStore, record_path: Path, path: Path) -> None:
        self._store = store
        self._path = path
        self._hold = _locks.hold(path)
        self._fd: int | None = None
        self._record_path = record_path
        self.version: object = _UNREAD  # of the record file, as read under this lock

    async def __aenter__(self) -> None:
        await self._hold.__aenter__()
        try:
            self._fd = await self._store._lock_file(self._path)
        except BaseException:
            await self._hold.__aexit__(None, None, None)
            raise
        self.version = _UNREAD
        _held[self._record_path] = self

    async def __aexit__(self, *exc_info: object) -> None:
        if _held.get(self._record_path) is self:
            del _held[self._record_path]
        fd, self._fd = self._fd, None
        try:
            if fd is not None:
                unlock_file(fd)
        finally:
            await self._hold.__aexit__(None, None, None)


def _version(path: Path) -> object:
    """The version of the file at ``path``: what ``lstat()`` says of it, ``None`` if
    there is none, ``_UNKNOWN`` if the folder cannot be read."""
    try:
        status = os.lstat(path)
    except FileNotFoundError:
        return None
    except OSError:
        return _UNKNOWN
    return (status.st_ino, status.st_dev, status.st_size, status.st_mtime_ns)


def _read(path: Path) -> Found | None:
    """What ``path`` holds: ``None`` if nothing, or damage (warned about once, here).

    Anything but a small regular file of the right shape is damage, found at once: the
    file is checked before it is opened and opened so that nothing can block or
    redirect the open. Other ``OSError`` is raised: only the caller knows what an
    unreadable folder means.
    """
    return _read_versioned(path)[0]


def _read_versioned(path: Path) -> tuple[Found | None, object]:
    """``_read()``, and the version of the file (see ``_version``) it read. The version
    is taken before the read: a change in between makes the turn's write skip, never
    lets it overwrite."""
    try:
        before = os.lstat(path)
    except FileNotFoundError:
        return None, None
    signature = (before.st_ino, before.st_dev, before.st_size, before.st_mtime_ns)
    cached = _read_cache.get(path)
    if cached is not None and cached[0] == signature:
        app_id, name, record, mtime = cached[1]
        return (app_id, name, copy_record(record), mtime), signature
    found = _read_fresh(path, before)
    if found is not None:
        if len(_read_cache) >= _READ_CACHE_SIZE:
            _read_cache.clear()
        _read_cache[path] = (signature, found)
        found = (found[0], found[1], copy_record(found[2]), found[3])
    return found, signature


def _read_fresh(path: Path, before: os.stat_result) -> Found | None:
    if not stat.S_ISREG(before.st_mode):
        _damaged(path, "not a regular file")
        return None
    if before.st_size > MAX_RECORD:
        _damaged(path, f"over {MAX_RECORD} bytes")
        return None
    try:
        fd = os.open(path, _READ_FLAGS)
    except FileNotFoundError:
        return None
    except OSError as exc:
        if not path.is_symlink():
            raise
        _damaged(path, f"a symbolic link ({exc.strerror})")
        return None
    try:
        status = os.fstat(fd)
        if not stat.S_ISREG(status.st_mode):
            _damaged(path, "not a regular file")
            return None
        chunks, size = [], 0
        while size <= MAX_RECORD:
            chunk = os.read(fd, MAX_RECORD + 1 - size)
            if not chunk:
                break
            chunks.append(chunk)
            size += len(chunk)
    finally:
        os.close(fd)
    decoded = decode(b"".join(chunks))
    if isinstance(decoded, str):
        _damaged(path, decoded)
        return None
    return (*decoded, status.st_mtime)


_TRANSCRIPT_SUFFIX = ".transcript.jsonl"
_APPEND_FLAGS = (
    os.O_RDWR
    | os.O_APPEND
    | os.O_CREAT
    | getattr(os, "O_CLOEXEC", 0)
    | getattr(os, "O_NOFOLLOW", 0)
    | getattr(os, "O_BINARY", 0)
)
_TAIL_STEP = 64 * 1024
_FIRST_TAIL = 4096  # most lines are shorter: one small read finds the last one
# The head of every line tyqw writes, so that an append and a compaction need not parse
# the entries (see _line_head).
_HEAD = re.compile(rb'\{"n":(\d{1,18}),"keep":(\d{1,18}),"entry":\{')


def _replace(
    path: Path, data: bytes, temporaries: Path, make_folders: Callable[[], None]
) -> os.stat_result:
    """Put ``data`` at ``path`` in one step: a temporary file in ``temporaries`` (the same
    filesystem), then ``os.replace``, so a reader sees the old file or the new one, never
    a part. ``make_folders`` runs once when ``temporaries`` does not exist yet. Returns
    the new file's status (a rename keeps it)."""
    try:
        fd, tmp = tempfile.mkstemp(dir=temporaries, prefix=path.stem + ".", suffix=".tmp")
    except FileNotFoundError:
        make_folders()
        fd, tmp = tempfile.mkstemp(dir=temporaries, prefix=path.stem + ".", suffix=".tmp")
    # mkstemp made the file 0600, in the folder, so the rename is atomic.
    try:
        try:
            _write_all(fd, data)
            status = os.fstat(fd)
        finally:
            os.close(fd)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    return status


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


def _parse_line(line: bytes) -> tuple[int, int, dict[str, Any]] | None:
    """``(number, keep, entry)`` of one transcript line, or ``None`` if it is damaged."""
    try:
        item = json.loads(line)
        number, keep, entry = item["n"], item["keep"], item["entry"]
    except (ValueError, TypeError, KeyError, RecursionError):
        return None
    if isinstance(number, int) and isinstance(keep, int) and keep >= 1 and isinstance(entry, dict):
        return number, keep, entry
    return None


def _line_head(line: bytes) -> tuple[int, int] | None:
    """``(number, keep)`` of a whole transcript line, or ``None`` if it is damaged.

    The fast path reads the head tyqw writes and checks that the line ends as an entry
    does, without parsing the entry (an append and a compaction need only the head).
    A line cut short by a killed writer fails the check, unless it was cut just after
    a nested object; a compaction then keeps that one line, and readers, which parse
    every entry they return, skip it as they skip every damaged line. Any other line
    is parsed, as ``_parse_line`` reads it.
    """
    match = _HEAD.match(line)
    if match is not None and line.endswith(b"}}"):
        keep = int(match[2])
        if keep >= 1:
            return int(match[1]), keep
    parsed = _parse_line(line)
    return None if parsed is None else (parsed[0], parsed[1])


def _kept_lines(
    fd: int, size: int, number: int, keep: int, mark: tuple[int, int] | None
) -> bytes | None:
    """The ``keep`` most recent whole lines of the transcript open as ``fd`` (``size``
    bytes, its last line numbered ``number``), to rewrite it with; ``None`` when there
    are none.

    ``mark`` is ``(n, offset)``: line ``n`` ends at ``offset`` and this process wrote
    every line after it. When ``n`` is ``number - keep``, the lines to keep are exactly
    the bytes after ``offset``, copied as they are. Otherwise (another process wrote
    since, a torn tail) every line is read and checked.
    """
    if mark is not None and mark[0] == number - keep:
        data = _read_at(fd, mark[1], size - mark[1])
        if data.startswith(b'{"n":%d,' % (number - keep + 1)) and data.endswith(b"\n"):
            return data
    whole = _read_at(fd, 0, size)
    pieces = whole.split(b"\n")
    if whole and not whole.endswith(b"\n"):
        pieces.pop()  # a torn tail
    # The lines are copied as they are: re-encoding every entry cost more than all the
    # appends between two rewrites.
    lines = [line for line in pieces if line and _line_head(line)]
    return b"".join(line + b"\n" for line in lines[-keep:]) if lines else None


def _read_at(fd: int, offset: int, size: int) -> bytes:
    """Up to ``size`` bytes of ``fd`` from ``offset`` (fewer at its end)."""
    os.lseek(fd, offset, os.SEEK_SET)
    chunks, left = [], size
    while left > 0:
        chunk = os.read(fd, left)
        if not chunk:
            break
        chunks.append(chunk)
        left -= len(chunk)
    return b"".join(chunks)


def _stamp(status: os.stat_result) -> tuple[int, int, int, int]:
    """What changes when anything writes or replaces a file."""
    return status.st_dev, status.st_ino, status.st_size, status.st_mtime_ns


def _last_number(fd: int, size: int) -> tuple[int, bool]:
    """The number of the last whole line of the transcript open as ``fd`` (0 if none),
    and whether the file ends with a whole line. Reads from the end only as far back
    as that line starts: the cost of one line, not of the transcript."""
    if size == 0:
        return 0, True
    position, tail, step = size, b"", _FIRST_TAIL
    while position > 0:
        step = min(step, position)
        position -= step
        os.lseek(fd, position, os.SEEK_SET)
        tail = os.read(fd, step) + tail
        lines = tail.split(b"\n")
        # The last piece is "" (the file ends with a newline) or a torn line; the first
        # may be the end of a line that starts further back.
        whole = lines[1 if position > 0 else 0 : -1]
        for line in reversed(whole):
            head = _line_head(line)
            if head is not None:
                return head[0], tail.endswith(b"\n")
        step = _TAIL_STEP
    return 0, tail.endswith(b"\n")


def _kept_entries(path: Path) -> list[dict[str, Any]]:
    """The entries of the ``keep`` most recent readable lines (``keep`` as the last one
    says), oldest first. Lines are parsed from the end, and only as many as are kept:
    the file may hold twice as many (see ``append_transcript_now``)."""
    try:
        with open(path, "rb") as f:
            data = f.read()
    except FileNotFoundError:
        return []
    lines = data.split(b"\n")
    if data and not data.endswith(b"\n"):
        lines.pop()  # a torn tail: the append that wrote it never finished
    entries: list[dict[str, Any]] = []
    keep = 0
    for line in reversed(lines):
        parsed = _parse_line(line) if line else None
        if parsed is not None:
            keep = keep or parsed[1]
            entries.append(parsed[2])
            if len(entries) >= keep:
                break
    entries.reverse()
    return entries


def _remove_stale_temporaries(temporaries: Path) -> None:
    """Remove temporary files a killed writer left behind (older than a minute: a
    younger one may be another process's write in progress)."""
    cutoff = time.time() - _STALE_TEMPORARY
    with contextlib.suppress(OSError), os.scandir(temporaries) as entries:
        for entry in entries:
            with contextlib.suppress(OSError):
                if entry.stat(follow_symlinks=False).st_mtime < cutoff:
                    os.unlink(entry.path)
