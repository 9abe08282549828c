"""The relay's users: one ``Session`` per ``(app_id, user)``, all on one store.

Every Session shares one ``aiohttp.ClientSession`` (one connection pool to the
service), so a relay with thousands of users holds a few kept-alive connections, not
one per user. Sessions not in use are dropped past ``MAX_SESSIONS``; the store still
holds their conversation ids, so the next turn of that user continues it.

A client that sends a ``session_id`` may only continue the user's current
conversation. That is checked where the Session reads the stored record at the start
of its turn, while it holds the conversation's lock: a check made before the turn
(``store.get()``, or this worker's copy of the id) could pass, then another worker
could start a new conversation for the same user, and the turn would go on in a
conversation the client never named. Under the lock nothing can change the record
between the check and the request that carries its id.

``current()`` gives a user's current conversation, its id and its transcript, read
from the store (every worker sees the same), for the page to draw on load.

A user may keep several conversations, each named by the client (the chat page picks
an id per conversation): the Session ``"<user>\0conversation\0<id>"``. A request
without an id uses the Session named by the user alone, as before. The relay refuses
user names holding a NUL, so no user can spell another's names; listing, reading and
deleting take the caller's user, never a name from the request.
"""

from __future__ import annotations

import logging
import os
import re
from collections import OrderedDict
from collections.abc import AsyncIterator
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from contextvars import ContextVar
from typing import Any

import aiohttp

from .. import Exchange, Session, TyqwError
from ..stores import (
    LocalStore,
    MemoryStore,
    Store,
    StoreLocation,
    TurnStore,
    forget,
    read_history,
)
from ..stores._base import has_transcript_methods

__all__ = [
    "CONVERSATION_ID",
    "MAX_SESSIONS",
    "NotCurrent",
    "UserSessions",
    "session_name",
    "store_location",
]

logger = logging.getLogger("tyqw.relay")

MAX_SESSIONS = 10_000

CONVERSATION_ID = re.compile(r"[A-Za-z0-9_-]{1,64}")
"""What a client may name a conversation: short, and safe in a URL path as it is."""

_TITLE = 80  # characters of a conversation's first prompt that name it in a list


def session_name(user: str, conversation: str | None) -> str:
    """The Session (and store) name of a user's conversation; ``None``: the user's one
    conversation of old. ``user`` holds no NUL (the relay refuses such names)."""
    return user if conversation is None else f"{user}\0conversation\0{conversation}"


class NotCurrent(TyqwError):
    """The request's ``session_id`` is not the user's current conversation."""


def store_location(store: Store | str | os.PathLike[str] | None) -> Store | StoreLocation:
    """The store the relay is given (which it uses and never closes), or the location of
    the one it makes and closes.

    ``None``: memory; text or a path: read by ``tyqw.stores.StoreLocation``, as ``tyqw
    serve --store`` and the other commands read theirs; a ``tyqw.stores.Store``: that
    store.
    """
    if isinstance(store, Store):
        return store
    if store is None:
        return StoreLocation("memory")
    if isinstance(store, (str, os.PathLike)):
        return StoreLocation.parse(store, memory=True)
    raise TypeError(
        "store must be a tyqw.stores.Store, 'memory', a folder path or a redis:// URL, "
        f"not {type(store).__name__}"
    )


class UserSessions:
    """Sessions by ``(app_id, user)``; ``async with sessions.use(app, user, id)``."""

    def __init__(self, store: Store | StoreLocation, session_options: dict[str, Any]) -> None:
        # None: the caller's store, which is never closed here.
        self.location = store if isinstance(store, StoreLocation) else None
        self._options = session_options
        self._sessions: OrderedDict[tuple[str, str], Session] = OrderedDict()
        self._busy: dict[tuple[str, str], int] = {}
        self._http: aiohttp.ClientSession | None = None
        self._forwarder: Session | None = None
        # Made here, so that a URL the store refuses fails create_app(), not the start.
        self._store: Store | None = store.open() if isinstance(store, StoreLocation) else store
        self._checked = current_only(self._store)  # what the Sessions use: it checks ids

    @property
    def store(self) -> Store:
        """The store the relay's Sessions use, for records of the relay's own (the
        chat dialects' pointers to conversations)."""
        return self._checked

    def check(self, app_id: str) -> None:
        """Raise ``ValueError`` / ``TyqwError`` now for an app id or option Session refuses."""
        Session(app_id, name="check", store=MemoryStore(), **self._options)

    def check_model(self, model: str) -> None:
        """The same, for a model name."""
        Session(model=model, name="check", store=MemoryStore(), history=False, **self._options)

    def forwarder(self) -> Session:
        """The Session that sends relayed generation requests on: no conversation of its
        own (the client keeps the history), each request on a turn slot of its own."""
        if self._forwarder is None:
            self._forwarder = Session(
                model="relay",
                name="relay",
                store=MemoryStore(),
                history=False,
                http_session=self._http,
                **self._options,
            )
        return self._forwarder

    async def start(self) -> None:
        # Many users stream at once through one pool; Session sets its own timeouts.
        self._http = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=1000))

    async def aclose(self) -> None:
        if self._forwarder is not None:
            forwarder, self._forwarder = self._forwarder, None
            await _close(forwarder)
        sessions = list(self._sessions.values())
        self._sessions.clear()
        self._busy.clear()
        for session in sessions:
            await _close(session)
        if self._http is not None:
            await self._http.close()
            self._http = None
        if self._store is not None and self.location is not None:
            await self._store.aclose()
        self._store = None

    @asynccontextmanager
    async def use(
        self, app_id: str, user: str, session_id: str | None, conversation: str | None = None
    ) -> AsyncIterator[Session]:
        """The Session of the user's ``conversation`` (``None``: the user's one
        conversation), kept from being dropped while the block runs.

        ``session_id`` ``None``: the Session starts a new conversation. Otherwise a turn
        the block runs raises ``NotCurrent`` (before any request) unless ``session_id``
        is that conversation's current one in the store.
        """
        name = session_name(user, conversation)
        key = (app_id, name)
        session = self._sessions.get(key)
        if session is None:
            session = self._sessions[key] = self._new_session(app_id, name)
        else:
            self._sessions.move_to_end(key)
        self._busy[key] = self._busy.get(key, 0) + 1
        if session_id is None:
            session.clear()  # a shared store gets it under the lock of the next turn
        expecting = _EXPECTED.set(None if session_id is None else (app_id, name, session_id))
        try:
            yield session
        finally:
            _EXPECTED.reset(expecting)
            left = self._busy.pop(key) - 1
            if left:
                self._busy[key] = left
            if len(self._sessions) > MAX_SESSIONS:
                await self._drop_idle()

    async def current(self, app_id: str, user: str) -> tuple[str | None, list[Exchange]]:
        """The user's current conversation id (``None``: none yet) and its transcript,
        oldest first, as the store holds them. ``TyqwError`` if the store fails."""
        session = self._sessions.get((app_id, user))
        if session is not None:
            await session.flush()  # a new conversation this worker has not written yet
        store = self._checked
        record = await store.get(app_id, user)
        session_id = record.get("session_id") if isinstance(record, dict) else None
        if not has_transcript_methods(store):
            return session_id, []
        return session_id, await read_history(store, app_id, user)

    async def listed(self, app_id: str, user: str) -> list[dict[str, Any]]:
        """The user's named conversations, most recently used first: ``id``, ``title``
        (the first prompt, shortened; ``""`` without a transcript) and ``updated_at``."""
        store = self._checked
        prefix = session_name(user, "")
        found: list[dict[str, Any]] = []
        async for _, name, record in store.conversations(app_id):
            if not name.startswith(prefix):
                continue
            title = ""
            updated = record.get("updated_at")
            used = float(updated) if isinstance(updated, (int, float)) else 0.0
            if has_transcript_methods(store):
                entries = await read_history(store, app_id, name)
                if entries:
                    title = " ".join(entries[0].prompt.split())[:_TITLE]
                    # A turn that continues a conversation may leave its record as it
                    # was: the transcript knows when it was last used.
                    used = max(used, entries[-1].ended_at.timestamp())
            found.append({"id": name[len(prefix) :], "title": title, "updated_at": used})
        found.sort(key=lambda c: c["updated_at"], reverse=True)
        return found

    async def read(
        self, app_id: str, user: str, conversation: str
    ) -> tuple[str | None, list[Exchange]] | None:
        """A conversation of the user: its current id and its transcript, oldest first;
        ``None`` if the store holds no such conversation."""
        name = session_name(user, conversation)
        session = self._sessions.get((app_id, name))
        if session is not None:
            await session.flush()  # what this worker has not written yet
        store = self._checked
        record = await store.get(app_id, name)
        if not isinstance(record, dict):
            return None
        session_id = record.get("session_id")
        kept = has_transcript_methods(store)
        exchanges = await read_history(store, app_id, name) if kept else []
        return (session_id if isinstance(session_id, str) else None), exchanges

    async def forget(self, app_id: str, user: str, conversation: str) -> None:
        """Delete a conversation of the user: its record and transcript, under its lock
        (a turn under way in it finishes first)."""
        name = session_name(user, conversation)
        session = self._sessions.get((app_id, name))
        if session is not None and (app_id, name) not in self._busy:
            del self._sessions[app_id, name]
            await _close(session)
        await forget(self._checked, app_id, name)

    def _new_session(self, app_id: str, name: str) -> Session:
        # The one place that says where a user's conversation lives.
        return Session(
            app_id, name=name, store=self._checked, http_session=self._http, **self._options
        )

    async def _drop_idle(self) -> None:
        excess = len(self._sessions) - MAX_SESSIONS
        for key in list(self._sessions):
            if excess <= 0:
                break
            if key not in self._busy:
                await _close(self._sessions.pop(key))
                excess -= 1


async def _close(session: Session) -> None:
    try:
        await session.aclose()  # writes a clear() a shared store does not have yet
    except TyqwError as exc:
        logger.warning("tyqw.relay: could not save %r's conversation: %s", session.name, exc)


# -- the check of a client's session_id ------------------------------------------------

# (app_id, user, session_id) while a turn that continues session_id runs: the context
# of the handler, copied into the task that runs the turn.
_EXPECTED: ContextVar[tuple[str, str, str] | None] = ContextVar(
    "tyqw_relay_expected_session_id", default=None
)


def _not_current(app_id: str, name: str, record: object) -> bool:
    expected = _EXPECTED.get()
    if expected is None or (expected[0], expected[1]) != (app_id, name):
        return False
    current = record.get("session_id") if isinstance(record, dict) else None
    return current != expected[2]


def _refusal() -> NotCurrent:
    return NotCurrent("input.session_id is not the current conversation of this user")


class _CurrentOnly:
    """A store as it is, except that reading the record at the start of a turn raises
    ``NotCurrent`` when the client named another conversation (see the module)."""

    def __init__(self, store: Store) -> None:
        self.inner = store

    def __repr__(self) -> str:
        return f"<relay view of {self.inner!r}>"

    async def get(self, app_id: str, name: str) -> dict[str, Any] | None:
        record = await self.inner.get(app_id, name)
        if _not_current(app_id, name, record):
            raise _refusal()
        return record

    async def set(self, app_id: str, name: str, record: dict[str, Any]) -> None:
        await self.inner.set(app_id, name, record)

    async def delete(self, app_id: str, name: str) -> None:
        await self.inner.delete(app_id, name)

    def lock(self, app_id: str, name: str) -> AbstractAsyncContextManager[object]:
        return self.inner.lock(app_id, name)

    def conversations(
        self, app_id: str | None = None
    ) -> AsyncIterator[tuple[str, str, dict[str, Any]]]:
        return self.inner.conversations(app_id)

    async def aclose(self) -> None:
        pass  # the relay closes the store it made, and never one it was given


class _CurrentOnlyLocal(_CurrentOnly):
    """``_CurrentOnly`` of a ``LocalStore``: its quick synchronous calls pass through."""

    inner: Any

    def get_now(self, app_id: str, name: str) -> dict[str, Any] | None:
        record: dict[str, Any] | None = self.inner.get_now(app_id, name)
        return record

    def set_now(self, app_id: str, name: str, record: dict[str, Any]) -> None:
        self.inner.set_now(app_id, name, record)

    def delete_now(self, app_id: str, name: str) -> None:
        self.inner.delete_now(app_id, name)


class _CurrentOnlyTurn(_CurrentOnly):
    """``_CurrentOnly`` of a ``TurnStore``: lock and read stay one call (one round trip)."""

    inner: Any

    async def begin_turn(self, app_id: str, name: str) -> tuple[object, dict[str, Any] | None]:
        held, record = await self.inner.begin_turn(app_id, name)
        if _not_current(app_id, name, record):
            await self.inner.end_turn(held, app_id, name, record)  # as it was; unlocked
            raise _refusal()
        return held, record

    async def end_turn(
        self, held: object, app_id: str, name: str, record: dict[str, Any] | None
    ) -> None:
        await self.inner.end_turn(held, app_id, name, record)


class _CurrentOnlyLocalTurn(_CurrentOnlyLocal, _CurrentOnlyTurn):
    pass


class _Transcripts:
    """The transcript methods of a ``TranscriptStore``, passed through a view."""

    inner: Any

    async def append_transcript(
        self, app_id: str, name: str, entry: dict[str, Any], keep: int
    ) -> None:
        await self.inner.append_transcript(app_id, name, entry, keep)

    async def read_transcript(self, app_id: str, name: str) -> list[dict[str, Any]]:
        entries: list[dict[str, Any]] = await self.inner.read_transcript(app_id, name)
        return entries

    async def delete_transcript(self, app_id: str, name: str) -> None:
        await self.inner.delete_transcript(app_id, name)


class _CurrentOnlyTranscripts(_Transcripts, _CurrentOnly):
    pass


class _CurrentOnlyLocalTranscripts(_Transcripts, _CurrentOnlyLocal):
    pass


class _CurrentOnlyTurnTranscripts(_Transcripts, _CurrentOnlyTurn):
    pass


class _CurrentOnlyLocalTurnTranscripts(_Transcripts, _CurrentOnlyLocalTurn):
    pass


_VIEWS: dict[tuple[bool, bool, bool], type[_CurrentOnly]] = {
    (False, False, False): _CurrentOnly,
    (True, False, False): _CurrentOnlyLocal,
    (False, True, False): _CurrentOnlyTurn,
    (True, True, False): _CurrentOnlyLocalTurn,
    (False, False, True): _CurrentOnlyTranscripts,
    (True, False, True): _CurrentOnlyLocalTranscripts,
    (False, True, True): _CurrentOnlyTurnTranscripts,
    (True, True, True): _CurrentOnlyLocalTurnTranscripts,
}


def current_only(store: Store) -> Store:
    """``store`` seen through the check, with the same abilities (local, one-call turns,
    transcripts)."""
    local, turn = isinstance(store, LocalStore), isinstance(store, TurnStore)
    return _VIEWS[local, turn, has_transcript_methods(store)](store)
