"""``MemoryStore``: conversations in this process's memory, for tests and simple bots."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from typing import Any

from .._exceptions import StoreError
from ._base import LocalStoreMethods
from ._keyed import KeyedLocks
from ._record import decode, encode

__all__ = ["MemoryStore"]


class MemoryStore(LocalStoreMethods):
    """Conversations in a dict, locked per conversation with asyncio locks.

    Records are stored encoded, exactly as the shared stores keep them: what you read
    is a copy, and a record a shared store would refuse is refused here too (a
    ``StoreError``), so tests with a MemoryStore catch what production would.

    Example::

        store = MemoryStore()
        async with Session(app_id, name="alice", store=store) as session:
            await session.send("你好")
        [(app, name, record)] = [c async for c in store.conversations()]
    """

    def __init__(self) -> None:
        self._records: dict[tuple[str, str], bytes] = {}
        self._locks = KeyedLocks()

    def __repr__(self) -> str:
        return f"<MemoryStore with {len(self._records)} conversations>"

    def get_now(self, app_id: str, name: str) -> dict[str, Any] | None:
        """The record of ``(app_id, name)``, or ``None``."""
        data = self._records.get((app_id, name))
        if data is None:
            return None
        decoded = decode(data)
        assert not isinstance(decoded, str), decoded  # only encode() writes here
        return decoded[2]

    def set_now(self, app_id: str, name: str, record: dict[str, Any]) -> None:
        """Replace the record; ``StoreError`` for a record that is not storable."""
        try:
            self._records[app_id, name] = encode(app_id, name, record)
        except ValueError as exc:
            raise StoreError(f"MemoryStore: cannot store this record ({exc})") from None

    def delete_now(self, app_id: str, name: str) -> None:
        """Forget the record."""
        self._records.pop((app_id, name), None)

    @contextlib.asynccontextmanager
    async def lock(self, app_id: str, name: str) -> AsyncIterator[None]:
        """Exclusive per conversation among the tasks of this process."""
        async with self._locks.hold((app_id, name)):
            yield

    async def conversations(
        self, app_id: str | None = None
    ) -> AsyncIterator[tuple[str, str, dict[str, Any]]]:
        """Every conversation (of ``app_id``), as it was when the listing started."""
        for (stored_app_id, stored_name), data in list(self._records.items()):
            if app_id is None or stored_app_id == app_id:
                decoded = decode(data)
                assert not isinstance(decoded, str), decoded
                yield stored_app_id, stored_name, decoded[2]

    async def aclose(self) -> None:
        """Nothing to close; the records stay (a test may read them afterwards)."""
