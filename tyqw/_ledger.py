"""A Session's ledger of its conversation: Bailian's ``session_id`` and the tokens used
since it began, kept in a store, read and written under the store's lock at every turn.

(Names: the *conversation* is the dialogue the service knows by its ``session_id``; the
*record* is what a store keeps of it; the ``Ledger`` is this object, the Session's
bookkeeping of both.)

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

With a store that keeps transcripts (``TranscriptStore``), every turn that held the
lock appends its ``Exchange`` before giving the lock back, success or failure, so the
workers sharing a store write one ordered transcript (a store that can, as
``RedisStore`` does, appends it in the same step that writes the record and releases
the lock). A caller's change (``clear()``, a new ``session_id``) ends the transcript
with the conversation: at once with a local store, under the lock of the next turn (or
``flush()``) with a shared one.

The record also keeps when the conversation was last used and how many rounds it has
had, so that a turn knows when the service has forgotten it (``Expiry``): that turn
takes the most recent exchanges from the transcript and sends them as ``messages``
instead of the dead id, and the id the service answers with carries on.
"""

from __future__ import annotations

import contextlib
import logging
import math
import time
from collections.abc import Callable, Coroutine
from typing import Any, cast

from . import _clock
from ._exceptions import StoreError, TyqwError
from ._history import Exchange, Expiry, context_messages
from ._models import TokenUsage
from ._options import is_session_id
from .stores import Store
from .stores._base import (
    KEEP,
    TranscriptStore,
    TurnLock,
    _Keep,
    _store_error,
    begin_turn,
    end_turn,
    end_turn_appending,
    folds_appends,
    forget,
    has_transcript_methods,
    has_turn_methods,
    is_local,
    read_history,
    read_now,
    recent_replied,
    transcript_entries,
    write_now,
)
from .stores._record import record_problem

logger = logging.getLogger("tyqw")

__all__ = ["USAGE_WRITE_INTERVAL", "Ledger"]

USAGE_WRITE_INTERVAL = 10.0


class _Ticket:
    """One turn's hold on the conversation."""

    __slots__ = ("generation", "lock", "lost", "resent", "sent", "unwritten")

    def __init__(
        self, generation: int, lock: TurnLock, sent: str | None, unwritten: bool, resent: int
    ) -> None:
        self.generation = generation
        self.lock = lock
        self.sent = sent
        self.unwritten = unwritten  # a caller's change the store still lacks
        self.lost = False  # the store could not prove the lock held: write nothing more
        self.resent = resent  # exchanges sent as messages in place of a dead id


class Ledger:
    """The conversation a Session continues, as its turns and its store see it."""

    def __init__(
        self, store: Store, app_id: str, name: str, keep: int = 0, expiry: Expiry | None = None
    ) -> None:
        self.store = store
        self.app_id = app_id
        self.name = name
        self.local = is_local(store)
        self.transcripts = has_transcript_methods(store)
        self.keep = keep if self.transcripts else 0  # exchanges to keep; 0: none
        self.folds = self.transcripts and folds_appends(store)  # appends in end_turn
        self.transcript_ended = False  # a caller's change not yet applied to it
        self.expiry = expiry
        self.session_id: str | None = None
        self.rounds = 0  # turns the service has had under session_id (at least)
        self.used_at: float | None = None  # when it was last used (_clock.now()), if known
        self.age_unwritten = False  # rounds and used_at a local store has not been given
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
        self.rounds, self.used_at = 0, None  # an id from elsewhere: its age is unknown
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
        if self.transcripts:
            delete_now = getattr(store, "delete_transcript_now", None)
            if self.local and callable(delete_now):
                delete_now(self.app_id, self.name)
            else:
                self.transcript_ended = True

    async def forget(self) -> None:
        """Delete the conversation and its transcript from the store, under its lock."""
        self.generation += 1
        self.session_id = None
        self.stored, self.added = {}, {}
        self.rounds, self.used_at = 0, None
        # Until the store has done it, the next turn (or flush) still must.
        self.dirty, self.transcript_ended = True, self.transcripts
        await forget(self.store, self.app_id, self.name)
        self.dirty = self.transcript_ended = False
        self.written_at = time.monotonic()

    async def history(self) -> list[Exchange]:
        """The transcript, oldest first."""
        if self.transcript_ended and self.transcripts:
            return []  # cleared here; the store hears of it at the next turn
        return await read_history(self.store, self.app_id, self.name)

    async def context(self) -> list[Exchange]:
        """The transcript a model's turn sends again (read under the turn's lock): none
        when the store keeps no transcripts or the Session keeps no history."""
        if not self.keep or self.transcript_ended:
            return []
        return await read_history(self.store, self.app_id, self.name)

    async def _end_transcript(self) -> None:
        """Apply a caller's ``clear()`` to the transcript (under the lock)."""
        if self.transcript_ended:
            store = cast("TranscriptStore", self.store)
            try:
                await store.delete_transcript(self.app_id, self.name)
            except TyqwError:
                raise
            except Exception as exc:
                raise _store_error(self.store, "delete the transcript", exc) from exc
            self.transcript_ended = False

    async def flush(self) -> None:
        """Write what the store lacks (a caller's change, tokens not yet written) now."""
        if (
            not self.dirty
            and not self.added
            and not self.transcript_ended
            and not self.age_unwritten
        ):
            return
        lock, record = await begin_turn(self.store, self.app_id, self.name)
        try:
            await self._end_transcript()
        except BaseException:
            await end_turn(self.store, lock, self.app_id, self.name, self._unchanged(record))
            raise
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

    async def begin(
        self, on_lost: Callable[[StoreError], object]
    ) -> tuple[object, str | None, list[dict[str, str]] | None]:
        lock, record = await begin_turn(self.store, self.app_id, self.name)
        unwritten = self.dirty
        try:
            if self.transcript_ended:
                await self._end_transcript()
            if unwritten:
                # The caller's change is newer than what the store holds: it wins.
                self.dirty = False
            else:
                self._merge(record)
            session_id, context = self.session_id, None
            if session_id is not None and self._expired():
                session_id, context = None, await self._context()
        except BaseException:
            self.dirty = self.dirty or unwritten
            await end_turn(self.store, lock, self.app_id, self.name, self._unchanged(record))
            raise
        resent = len(context) // 2 if context else 0
        ticket = _Ticket(self.generation, lock, session_id, unwritten, resent)

        def lost(error: StoreError) -> None:
            ticket.lost = True
            on_lost(error)

        lock.on_lost(lost)
        return ticket, session_id, context

    def _expired(self) -> bool:
        """True when the service is known to have forgotten the conversation and the
        transcript can stand in for it."""
        limits = self.expiry
        if limits is None or not self.keep:
            return False
        if self.rounds >= limits.rounds:
            return True
        return self.used_at is not None and _clock.now() - self.used_at > limits.idle

    async def _context(self) -> list[dict[str, str]]:
        """The most recent exchanges of the transcript as ``input.messages``."""
        assert self.expiry is not None
        if self.transcript_ended:
            return []  # cleared here; the store hears of it at the next turn
        entries = await transcript_entries(self.store, self.app_id, self.name)
        return context_messages(recent_replied(entries, self.name, self.expiry.resend))

    def seen(self, ticket: object, session_id: str) -> None:
        assert isinstance(ticket, _Ticket)
        if ticket.generation == self.generation:
            self.session_id = session_id

    def end(
        self,
        ticket: object,
        session_id: str | None,
        usage: dict[str, TokenUsage],
        exchange: Callable[[], Exchange],
    ) -> Coroutine[Any, Any, None]:
        assert isinstance(ticket, _Ticket)
        if self.keep and ticket.generation == self.generation and not ticket.lost:
            # A turn that began before a clear() belongs to the conversation it ended.
            # A turn whose lock was lost appends nothing: another worker may hold the
            # conversation by now, and its transcript must stay one ordered sequence.
            if self.folds:
                entry = exchange().to_dict()
                return self._finish(ticket, session_id, usage, (entry, self.keep))
            return self._append_then(ticket, exchange(), self._finish(ticket, session_id, usage))
        return self._finish(ticket, session_id, usage)

    async def _append_then(
        self, ticket: _Ticket, exchange: Exchange, then: Coroutine[Any, Any, None]
    ) -> None:
        """Append the turn's exchange, then end the turn (which releases the lock)."""
        store = cast("TranscriptStore", self.store)
        try:
            await store.append_transcript(self.app_id, self.name, exchange.to_dict(), self.keep)
        except BaseException as exc:
            # The lock is given back all the same; the record is written as it would be.
            with contextlib.suppress(TyqwError):
                await then
            if isinstance(exc, Exception) and not isinstance(exc, TyqwError):
                raise _store_error(self.store, "append to the transcript", exc) from exc
            raise
        await then

    def _finish(
        self,
        ticket: _Ticket,
        session_id: str | None,
        usage: dict[str, TokenUsage],
        append: tuple[dict[str, Any], int] | None = None,
    ) -> Coroutine[Any, Any, None]:
        """End the turn: write what changed and release the lock; ``append`` (an entry
        and the cap, for a store that ``folds_appends``) in the same step."""
        changed = False
        if ticket.generation == self.generation and session_id is not None:
            if session_id != ticket.sent:
                # The service started a new conversation: its tokens start at zero, and
                # the exchanges resent to it count as its rounds.
                self.stored, self.added, changed = {}, {}, True
                self.rounds = ticket.resent
            self.session_id = session_id
            self.added = _sum(self.added, usage)
            self.rounds += 1
            self.used_at = _clock.now()
            self.age_unwritten = True
        elif ticket.generation != self.generation:
            changed = True  # the caller changed the conversation during the turn
        changed = changed or ticket.unwritten
        if (
            append is None
            and self.local
            and not changed
            and time.monotonic() - self.written_at < USAGE_WRITE_INTERVAL
        ):
            return end_turn(self.store, ticket.lock, self.app_id, self.name, KEEP)
        return self._write(ticket.lock, self._record(), append)

    def _unchanged(self, record: dict[str, Any] | None) -> dict[str, Any] | _Keep | None:
        """What ``end_turn()`` writes to leave ``record`` as the store holds it."""
        return record if has_turn_methods(self.store) else KEEP

    # -- records ---------------------------------------------------------------------------

    async def _write(
        self,
        lock: TurnLock,
        record: dict[str, Any] | None,
        append: tuple[dict[str, Any], int] | None = None,
    ) -> None:
        added = self.added
        unkept = None
        if append is None:
            await end_turn(self.store, lock, self.app_id, self.name, record)
        else:
            unkept = await end_turn_appending(
                self.store, lock, self.app_id, self.name, record, *append
            )
        self.written_at = time.monotonic()
        self.age_unwritten = False
        if record is not None and self.added is added:
            self.stored, self.added = _sum(self.stored, added), {}
        if unkept is not None:
            raise unkept  # the record is written: only the exchange was not kept

    def _record(self) -> dict[str, Any] | None:
        if self.session_id is None:
            return None
        record: dict[str, Any] = {
            "session_id": self.session_id,
            "usage": {model: _counts(used) for model, used in self.usage.items()},
            "updated_at": time.time(),
            "rounds": self.rounds,
        }
        if self.used_at is not None:
            record["used_at"] = self.used_at
        return record

    def _merge(self, record: object) -> None:
        """Take what the store holds; keep this process's unwritten tokens only if the
        store still holds the same conversation."""
        session_id = record.get("session_id") if isinstance(record, dict) else None
        same = session_id == self.session_id
        if not same:
            self.added = {}
        rounds, used_at = self.rounds, self.used_at
        self._load(record)
        if same and self.session_id is not None:
            # A local store may not have this process's latest turn yet: the most
            # rounds and the latest use known are the ones to go by.
            self.rounds = max(self.rounds, rounds)
            if used_at is not None and (self.used_at is None or used_at > self.used_at):
                self.used_at = used_at

    def _load(self, record: object) -> None:
        if record is not None and record == self._loaded:
            return  # what the store held last time: nothing to check again
        self._loaded = record
        # tyqw's stores check a record's shape before they hand it out; a store written
        # by a user may not, and an id that cannot go on the wire is no conversation.
        problem = None if record is None else record_problem(record)
        # Without a problem, the record is a record's dict (or None).
        checked = None if problem is not None else cast("dict[str, Any] | None", record)
        if checked is not None and not is_session_id(checked["session_id"]):
            problem = "session_id is not an id tyqw can send"
        if problem is not None:
            logger.warning("tyqw: ignoring the stored conversation %r: %s", self.name, problem)
        if record is None or problem is not None:
            self.session_id, self.stored = None, {}
            self.rounds, self.used_at = 0, None
            return
        assert isinstance(record, dict)
        self.session_id = record["session_id"]
        rounds, used_at = record.get("rounds"), record.get("used_at")
        # Written by tyqw, but a store of a user's may hand back anything: what cannot
        # be read is unknown, and unknown is never "expired".
        self.rounds = rounds if isinstance(rounds, int) and not isinstance(rounds, bool) else 0
        self.used_at = (
            float(used_at)
            if isinstance(used_at, (int, float))
            and not isinstance(used_at, bool)
            and math.isfinite(used_at)
            else None
        )
        self.stored = {
            model: TokenUsage(
                used["input_tokens"], used["output_tokens"], used.get("reasoning_tokens", 0)
            )
            for model, used in record.get("usage", {}).items()
        }


def _counts(used: TokenUsage) -> dict[str, int]:
    counts = {"input_tokens": used.input_tokens, "output_tokens": used.output_tokens}
    if used.reasoning_tokens:
        # Only a thinking model's: an app's record reads as it always did.
        counts["reasoning_tokens"] = used.reasoning_tokens
    return counts


def _sum(a: dict[str, TokenUsage], b: dict[str, TokenUsage]) -> dict[str, TokenUsage]:
    if not b:
        return dict(a)
    total = dict(a)
    for model, used in b.items():
        earlier = total.get(model)
        total[model] = used if earlier is None else earlier + used
    return total
