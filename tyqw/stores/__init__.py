"""Where conversations live. (Placeholder on main while the stores package is built.)"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator
from contextlib import AbstractAsyncContextManager
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

from .._exceptions import StoreError
from .._store import ConversationStore

__all__ = [
    "FileStore",
    "LocalStore",
    "MemoryStore",
    "Store",
    "StoreError",
    "begin_turn",
    "end_turn",
]


class Store(Protocol):
    async def get(self, app_id: str, name: str) -> dict[str, Any] | None: ...
    async def set(self, app_id: str, name: str, record: dict[str, Any]) -> None: ...
    async def delete(self, app_id: str, name: str) -> None: ...
    def lock(self, app_id: str, name: str) -> AbstractAsyncContextManager[object]: ...
    async def aclose(self) -> None: ...


@runtime_checkable
class LocalStore(Protocol):
    def get_now(self, app_id: str, name: str) -> dict[str, Any] | None: ...
    def set_now(self, app_id: str, name: str, record: dict[str, Any]) -> None: ...
    def delete_now(self, app_id: str, name: str) -> None: ...


class MemoryStore:
    def __init__(self) -> None:
        self._data: dict[tuple[str, str], str] = {}
        self._locks: dict[tuple[str, str], asyncio.Lock] = {}

    def get_now(self, app_id: str, name: str) -> dict[str, Any] | None:
        value = self._data.get((app_id, name))
        return None if value is None else json.loads(value)

    def set_now(self, app_id: str, name: str, record: dict[str, Any]) -> None:
        self._data[(app_id, name)] = json.dumps(record)

    def delete_now(self, app_id: str, name: str) -> None:
        self._data.pop((app_id, name), None)

    async def get(self, app_id: str, name: str) -> dict[str, Any] | None:
        return self.get_now(app_id, name)

    async def set(self, app_id: str, name: str, record: dict[str, Any]) -> None:
        self.set_now(app_id, name, record)

    async def delete(self, app_id: str, name: str) -> None:
        self.delete_now(app_id, name)

    def lock(self, app_id: str, name: str) -> AbstractAsyncContextManager[object]:
        return self._locks.setdefault((app_id, name), asyncio.Lock())

    async def aclose(self) -> None:
        pass


class FileStore:
    def __init__(self, state_dir: str | Path) -> None:
        self.state_dir = Path(state_dir)
        self._files: dict[tuple[str, str], ConversationStore] = {}
        self._locks: dict[tuple[str, str], asyncio.Lock] = {}

    def _file(self, app_id: str, name: str) -> ConversationStore:
        key = (app_id, name)
        if key not in self._files:
            self._files[key] = ConversationStore(self.state_dir, app_id, name)
        return self._files[key]

    def path(self, app_id: str, name: str) -> Path:
        return self._file(app_id, name).path

    def get_now(self, app_id: str, name: str) -> dict[str, Any] | None:
        session_id = self._file(app_id, name).load()
        return None if session_id is None else {"session_id": session_id}

    def set_now(self, app_id: str, name: str, record: dict[str, Any]) -> None:
        self._file(app_id, name).save(record["session_id"])

    def delete_now(self, app_id: str, name: str) -> None:
        self._file(app_id, name).delete()

    async def get(self, app_id: str, name: str) -> dict[str, Any] | None:
        return self.get_now(app_id, name)

    async def set(self, app_id: str, name: str, record: dict[str, Any]) -> None:
        self.set_now(app_id, name, record)

    async def delete(self, app_id: str, name: str) -> None:
        self.delete_now(app_id, name)

    def lock(self, app_id: str, name: str) -> AbstractAsyncContextManager[object]:
        return self._locks.setdefault((app_id, name), asyncio.Lock())

    async def aclose(self) -> None:
        pass


async def begin_turn(store: Store, app_id: str, name: str) -> tuple[object, dict[str, Any] | None]:
    lock = store.lock(app_id, name)
    try:
        await lock.__aenter__()
        return lock, await store.get(app_id, name)
    except StoreError:
        raise
    except Exception as exc:
        raise StoreError(f"the store failed: {exc!r}") from exc


async def end_turn(
    store: Store, lease: object, app_id: str, name: str, record: dict[str, Any] | None
) -> None:
    lock: Any = lease
    try:
        if record is None:
            await store.delete(app_id, name)
        else:
            await store.set(app_id, name, record)
    finally:
        with contextlib.suppress(Exception):
            await lock.__aexit__(None, None, None)


async def _unused() -> AsyncIterator[None]:
    yield None
