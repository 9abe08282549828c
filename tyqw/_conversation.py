"""A Session's conversation: Bailian's ``session_id`` and the tokens used since it began,
kept in a store, read and written under the store's lock at every turn.

With a local store (the default ``FileStore``, ``MemoryStore``) the id is read when the
Session is made, and ``session_id = ...`` / ``clear()`` reach the store before they
return. With a shared store (``RedisStore``, your own) those changes are written before
the Session's next turn starts, at ``aclose()``, or at once with ``await flush()``; a
write that fails is raised from there, never dropped.

Every turn takes the store's lock and reads the record (another worker may have changed
it). A shared store is written at the end of every turn (which also renews its TTL). A
local store is written when the id changes; the token totals, which change every turn,
at most every ``USAGE_WRITE_INTERVAL`` seconds and at ``aclose()`` / ``flush()``, because
an atomic file write costs more than a whole turn on a busy disk. The totals are kept
as this process's increments on top of what the store holds, and merged under the
lock, so several processes sharing a folder never lose each other's tokens.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Coroutine
from typing import Any

from ._exceptions import StoreError
from ._models import TokenUsage
from ._options import is_session_id
from .stores import Store, TurnLock, begin_turn, end_turn
from .stores._base import KEEP, is_local, read_now, write_now
from .stores._record import record_problem

logger = logging.getLogger("tyqw")

__all__ = ["USAGE_WRITE_INTERVAL", "Conversation"]

USAGE_WRITE_INTERVAL = 10.0


class _Ticket:
    """One turn's hold on the conversation."""

    __slots__ = ("generation", "lock", "sent", "unwritten")

    def __init__(self, generation: int, lock: TurnLock, sent: str | None, unwritten: bool) -> None:
        self.generation = generation
        self.lock = lock
        self.sent = sent
        self.unwritten = unwritten  # a caller's change the store still lacks


class Conversation:
    """The conversation a Session continues, as its turns and its store see it."""

    def __init__(self, store: Store, app_id: str, name: str) -> None:
        self.store = store
        self.app_id = app_id
        self.name = name
        self.local = is_local(store)
        self.session_id: str | None = None
        self.stored: dict[str, TokenUsage] = {}  # the totals the store holds
        self.added: dict[str, TokenUsage] = {}  # this process's, not yet written
        self.written_at = time.monotonic()
        # Bumped by every change the caller makes, so that a turn that started before
        # the change does not write over it.
        self.generation = 0
        self.dirty = False  # a caller's change not yet written to a shared store
        self._loaded: object = None  # the record last taken from the store
        if is_local(store):
            self._load(read_now(store, app_id, name))

    @property
    def usage(self) -> dict[str, TokenUsage]:
        return _sum(self.stored, self.added)

    # -- the caller's changes --------------------------------------------------------------

    def change(self, session_id: str | None) -> None:
        """Continue ``session_id`` from now on, or (``None``) start anew."""
        self.generation += 1
        self.session_id = session_id
        self.stored, self.added = {}, {}
        store = self.store
        if is_local(store):
            try:
                write_now(store, self.app_id, self.name, self._record())
            except StoreError:
                self.dirty = True  # kept, and written at the next turn or flush()
                raise
            self.dirty = False
            self.written_at = time.monotonic()
        else:
            self.dirty = True

    async def flush(self) -> None:
        """Write what the store lacks (a caller's change, tokens not yet written) now."""
        if not self.dirty and not self.added:
            return
        lock, record = await begin_turn(self.store, self.app_id, self.name)
        dirty = self.dirty
        if not dirty:
            self._merge(record)
        self.dirty = False
        try:
            await self._write(lock, self._record())
        except BaseException:
            self.dirty = self.dirty or dirty  # kept for a later try
            raise

    # -- turns -----------------------------------------------------------------------------

    async def begin(self, on_lost: Callable[[StoreError], object]) -> tuple[object, str | None]:
        lock, record = await begin_turn(self.store, self.app_id, self.name)
        unwritten = self.dirty
        if unwritten:
            # The caller's change is newer than what the store holds: it wins.
            self.dirty = False
        else:
            self._merge(record)
        lock.on_lost(on_lost)
        return _Ticket(self.generation, lock, self.session_id, unwritten), self.session_id

    def seen(self, ticket: object, session_id: str) -> None:
        assert isinstance(ticket, _Ticket)
        if ticket.generation == self.generation:
            self.session_id = session_id

    def end(
        self, ticket: object, session_id: str | None, usage: dict[str, TokenUsage]
    ) -> Coroutine[Any, Any, None]:
        assert isinstance(ticket, _Ticket)
        changed = False
        if ticket.generation == self.generation and session_id is not None:
            if session_id != ticket.sent:
                # The service started a new conversation: its tokens start at zero.
                self.stored, self.added, changed = {}, {}, True
            self.session_id = session_id
            self.added = _sum(self.added, usage)
        elif ticket.generation != self.generation:
            changed = True  # the caller changed the conversation during the turn
        changed = changed or ticket.unwritten
        if (
            self.local
            and not changed
            and time.monotonic() - self.written_at < USAGE_WRITE_INTERVAL
        ):
            return end_turn(self.store, ticket.lock, self.app_id, self.name, KEEP)
        return self._write(ticket.lock, self._record())

    # -- records ---------------------------------------------------------------------------

    async def _write(self, lock: TurnLock, record: dict[str, Any] | None) -> None:
        added = self.added
        await end_turn(self.store, lock, self.app_id, self.name, record)
        self.written_at = time.monotonic()
        if record is not None and self.added is added:
            self.stored, self.added = _sum(self.stored, added), {}

    def _record(self) -> dict[str, Any] | None:
        if self.session_id is None:
            return None
        return {
            "session_id": self.session_id,
            "usage": {
                model: {"input_tokens": used.input_tokens, "output_tokens": used.output_tokens}
                for model, used in self.usage.items()
            },
            "updated_at": time.time(),
        }

    def _merge(self, record: object) -> None:
        """Take what the store holds; keep this process's unwritten tokens only if the
        store still holds the same conversation."""
        session_id = record.get("session_id") if isinstance(record, dict) else None
        if session_id != self.session_id:
            self.added = {}
        self._load(record)

    def _load(self, record: object) -> None:
        if record is not None and record == self._loaded:
            return  # what the store held last time: nothing to check again
        self._loaded = record
        # tyqw's stores check a record's shape before they hand it out; a store written
        # by a user may not, and an id that cannot go on the wire is no conversation.
        problem = None if record is None else record_problem(record)
        if problem is None and record is not None and not is_session_id(record["session_id"]):  # type: ignore[index]
            problem = "session_id is not an id tyqw can send"
        if problem is not None:
            logger.warning("tyqw: ignoring the stored conversation %r: %s", self.name, problem)
        if record is None or problem is not None:
            self.session_id, self.stored = None, {}
            return
        assert isinstance(record, dict)
        self.session_id = record["session_id"]
        self.stored = {
            model: TokenUsage(used["input_tokens"], used["output_tokens"])
            for model, used in record.get("usage", {}).items()
        }


def _sum(a: dict[str, TokenUsage], b: dict[str, TokenUsage]) -> dict[str, TokenUsage]:
    if not b:
        return dict(a)
    total = dict(a)
    for model, used in b.items():
        total[model] = total.get(model, TokenUsage()) + used
    return total
