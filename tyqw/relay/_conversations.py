"""The relay's conversations: one ``Session`` per ``(app_id, user)``, kept in a store.

Every Session shares one ``aiohttp.ClientSession`` (one connection pool to the
service), so a relay with thousands of users holds a few kept-alive connections, not
one per user. Sessions not in use are dropped past ``MAX_SESSIONS``; the store still
holds their conversation ids, so the next turn of that user continues it.
"""

from __future__ import annotations

import os
import tempfile
from collections import OrderedDict
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import aiohttp

from .. import Session

__all__ = ["Conversations", "StoreChoice"]

MAX_SESSIONS = 10_000


@dataclass(frozen=True, slots=True)
class StoreChoice:
    """Where conversation ids live: ``memory``, a ``folder``, or ``redis`` (a URL)."""

    kind: Literal["memory", "folder", "redis"]
    location: str = ""

    @classmethod
    def parse(cls, store: str | os.PathLike[str] | None) -> StoreChoice:
        """``None``: memory; ``redis://`` / ``rediss://`` / ``unix://``: Redis; else a folder."""
        if store is None:
            return cls("memory")
        text = os.fspath(store)
        if not text:
            raise ValueError("store must be a folder path or a redis:// URL")
        if text.startswith(("redis://", "rediss://", "unix://")):
            return cls("redis", text)
        return cls("folder", text)


class Conversations:
    """Sessions by ``(app_id, user)``; ``async with conversations.use(app, user)``."""

    def __init__(self, choice: StoreChoice, session_options: dict[str, Any]) -> None:
        self.choice = choice
        self._options = session_options
        self._sessions: OrderedDict[tuple[str, str], Session] = OrderedDict()
        self._busy: dict[tuple[str, str], int] = {}
        self._http: aiohttp.ClientSession | None = None
        self._scratch: tempfile.TemporaryDirectory[str] | None = None
        self._folder: Path | None = None

    def check(self, app_id: str) -> None:
        """Raise ``ValueError`` / ``TyqwError`` now for an app id or option Session refuses."""
        with tempfile.TemporaryDirectory() as empty:
            Session(app_id, name="check", state_dir=empty, **self._options)

    async def start(self) -> None:
        # Many users stream at once through one pool; Session sets its own timeouts.
        self._http = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=1000))

    async def aclose(self) -> None:
        sessions = list(self._sessions.values())
        self._sessions.clear()
        self._busy.clear()
        for session in sessions:
            await session.aclose()
        if self._http is not None:
            await self._http.close()
            self._http = None
        if self._scratch is not None:
            self._scratch.cleanup()
            self._scratch = self._folder = None

    @asynccontextmanager
    async def use(self, app_id: str, user: str) -> AsyncIterator[Session]:
        """The user's Session, kept from being dropped while the block runs."""
        key = (app_id, user)
        session = self._sessions.get(key)
        if session is None:
            session = self._sessions[key] = self._new_session(app_id, user)
        else:
            self._sessions.move_to_end(key)
        self._busy[key] = self._busy.get(key, 0) + 1
        try:
            yield session
        finally:
            left = self._busy.pop(key) - 1
            if left:
                self._busy[key] = left
            if len(self._sessions) > MAX_SESSIONS:
                await self._drop_idle()

    def _new_session(self, app_id: str, user: str) -> Session:
        # The one place that says where a user's conversation lives.
        return Session(
            app_id,
            name=user,
            state_dir=self._state_dir(),
            http_session=self._http,
            **self._options,
        )

    def _state_dir(self) -> Path:
        if self.choice.kind == "folder":
            return Path(self.choice.location)
        # Memory, and for now Redis too: conversation ids in a private folder that is
        # removed when the relay stops (the rate limit already lives in Redis).
        if self._folder is None:
            self._scratch = tempfile.TemporaryDirectory(prefix="tyqw-relay-")
            self._folder = Path(self._scratch.name)
        return self._folder

    async def _drop_idle(self) -> None:
        excess = len(self._sessions) - MAX_SESSIONS
        for key in list(self._sessions):
            if excess <= 0:
                break
            if key not in self._busy:
                await self._sessions.pop(key).aclose()
                excess -= 1
