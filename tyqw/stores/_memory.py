"""``MemoryStore``: conversations in this process's memory, for tests and simple bots."""

from __future__ import annotations

import json
from collections import deque
from collections.abc import AsyncIterator
from typing import Any

from .._exceptions import StoreError
from ._base import LocalStoreMethods
from ._keyed import Hold, KeyedLocks
from ._record import copy_record, decode, encode, to_json

__all__ = ["MemoryStore"]


class MemoryStore(LocalStoreMethods):
    """Conversations in a dict, locked per conversation with asyncio locks.

    Records go through the encoding the shared stores use (and are kept as it decodes
    them): what you read is a copy, and a record a shared store would refuse is refused
    here too (a ``StoreError``), so tests with a MemoryStore catch what production would.

    Example::

        store = MemoryStore()
        async with Session(app_id, name="alice", store=store) as session:
            await session.send("你好")
        [(app, name, record)] = [c async for c in store.conversations()]
    """

    def __init__(self) -> None:
        self._records: dict[tuple[str, str], dict[str, Any]] = {}
        self._locks = KeyedLocks()
        # Kept encoded, as a shared store keeps them: a reader gets its own copy.
        self._transcripts: dict[tuple[str, str], deque[str]] = {}

    def __repr__(self) -> str:
        return f"<MemoryStore with {len(self._records)} conversations>"

    def get_now(self, app_id: str, name: str) -> dict[str, Any] | None:
        """The record of ``(app_id, name)``, or ``None``."""
        record = self._records.get((app_id, name))
        return None if record is None else copy_record(record)

    def set_now(self, app_id: str, name: str, record: dict[str, Any]) -> None:
        """Replace the record; ``StoreError`` for a record that is not storable."""
        try:
            decoded = decode(encode(app_id, name, record))
        except ValueError as exc:
            raise StoreError(f"MemoryStore: cannot store this record ({exc})") from None
        assert not isinstance(decoded, str), decoded  # what encode() wrote
        self._records[app_id, name] = decoded[2]

    def delete_now(self, app_id: str, name: str) -> None:
        """Forget the record."""
        self._records.pop((app_id, name), None)

    def append_transcript_now(
        self, app_id: str, name: str, entry: dict[str, Any], keep: int
    ) -> None:
        """Add ``entry`` to the transcript, which keeps the ``keep`` most recent."""
        try:
            data = to_json(entry)
        except (TypeError, ValueError, RecursionError) as exc:
            raise StoreError(f"MemoryStore: cannot store this entry ({exc})") from None
        entries = self._transcripts.get((app_id, name))
        if entries is None or entries.maxlen != keep:
            entries = self._transcripts[app_id, name] = deque(entries or (), maxlen=keep)
        entries.append(data)

    def read_transcript_now(self, app_id: str, name: str) -> list[dict[str, Any]]:
        """The transcript, oldest first."""
        return [json.loads(data) for data in self._transcripts.get((app_id, name), ())]

    def delete_transcript_now(self, app_id: str, name: str) -> None:
        """Forget the transcript."""
        self._transcripts.pop((app_id, name), None)

    async def append_transcript(
        self, app_id: str, name: str, entry: dict[str, Any], keep: int
    ) -> None:
        """``append_transcript_now()``."""
        self.append_transcript_now(app_id, name, entry, keep)

    async def read_transcript(self, app_id: str, name: str) -> list[dict[str, Any]]:
        """``read_transcript_now()``."""
        return self.read_transcript_now(app_id, name)

    async def delete_transcript(self, app_id: str, name: str) -> None:
        """``delete_transcript_now()``."""
        self.delete_transcript_now(app_id, name)

    def lock(self, app_id: str, name: str) -> Hold:
        """Exclusive per conversation among the tasks of this process."""
        return self._locks.hold((app_id, name))

    async def conversations(
        self, app_id: str | None = None
    ) -> AsyncIterator[tuple[str, str, dict[str, Any]]]:
        """Every conversation (of ``app_id``), as it was when the listing started."""
        for (stored_app_id, stored_name), record in list(self._records.items()):
            if app_id is None or stored_app_id == app_id:
                yield stored_app_id, stored_name, copy_record(record)

    async def aclose(self) -> None:
        """Nothing to close; the records stay (a test may read them afterwards)."""
