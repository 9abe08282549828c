"""A Session's conversation: Bailian's ``session_id`` and the tokens used since it began,
kept in a store, read and written under the store's lock at every turn.

With a local store (the default ``FileStore``, ``MemoryStore``) the id is read when the
Session is made, and ``session_id = ...`` / ``clear()`` reach the store before they
return. With a shared store (``RedisStore``, your own) those changes are written before
the Session's next turn starts, at ``aclose()``, or at once with ``await flush()``; a
write that fails is raised from there, never dropped.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Coroutine
from typing import Any

from ._exceptions import StoreError
from ._models import TokenUsage
from ._options import is_session_id
from .stores import LocalStore, Store, begin_turn, end_turn

__all__ = ["Conversation"]

logger = logging.getLogger("tyqw")


class _Ticket:
    """One turn's hold on the conversation."""

    __slots__ = ("generation", "lease", "sent")

    def __init__(self, generation: int, lease: object, sent: str | None) -> None:
        self.generation = generation
        self.lease = lease
        self.sent = sent


class Conversation:
    """The conversation a Session continues, as its turns and its store see it."""

    def __init__(self, store: Store, app_id: str, name: str) -> None:
        self.store = store
        self.app_id = app_id
        self.name = name
        self.local = isinstance(store, LocalStore)
        self.session_id: str | None = None
        self.usage: dict[str, TokenUsage] = {}
        # Bumped by every change the caller makes, so that a turn that started before
        # the change does not write over it.
        self.generation = 0
        self.dirty = False  # a caller's change not yet written to a shared store
        if self.local:
            self._load(self.store.get_now(app_id, name))  # type: ignore[attr-defined]

    # -- the caller's changes --------------------------------------------------------------

    def change(self, session_id: str | None) -> None:
        """Continue ``session_id`` from now on, or (``None``) start anew."""
        self.generation += 1
        self.session_id = session_id
        self.usage = {}
        if self.local:
            record = self._record()
            if record is None:
                self.store.delete_now(self.app_id, self.name)  # type: ignore[attr-defined]
            else:
                self.store.set_now(self.app_id, self.name, record)  # type: ignore[attr-defined]
        else:
            self.dirty = True

    async def flush(self) -> None:
        """Write a change the caller made to a shared store now."""
        if not self.dirty:
            return
        record = self._record()
        try:
            async with self.store.lock(self.app_id, self.name):
                if record is None:
                    await self.store.delete(self.app_id, self.name)
                else:
                    await self.store.set(self.app_id, self.name, record)
        except StoreError:
            raise
        except Exception as exc:
            raise StoreError(f"could not write the conversation to the store: {exc!r}") from exc
        self.dirty = False

    # -- turns -----------------------------------------------------------------------------

    async def begin(self) -> tuple[object, str | None]:
        lease, record = await begin_turn(self.store, self.app_id, self.name)
        if self.dirty:
            # The caller's change is newer than what the store holds: it wins.
            self.dirty = False
        else:
            self._load(record)
        return _Ticket(self.generation, lease, self.session_id), self.session_id

    def seen(self, ticket: object, session_id: str) -> None:
        assert isinstance(ticket, _Ticket)
        if ticket.generation == self.generation:
            self.session_id = session_id

    def end(
        self, ticket: object, session_id: str | None, usage: dict[str, TokenUsage]
    ) -> Coroutine[Any, Any, None]:
        assert isinstance(ticket, _Ticket)
        if ticket.generation == self.generation and session_id is not None:
            if session_id != ticket.sent:
                self.usage = {}  # the service started a new conversation
            self.session_id = session_id
            for model, used in usage.items():
                self.usage[model] = self.usage.get(model, TokenUsage()) + used
        return end_turn(self.store, ticket.lease, self.app_id, self.name, self._record())

    # -- records ---------------------------------------------------------------------------

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

    def _load(self, record: object) -> None:
        session_id = record.get("session_id") if isinstance(record, dict) else None
        if record is not None and not is_session_id(session_id):
            logger.warning(
                "tyqw: the stored record of %r has no usable session_id; starting anew",
                self.name,
            )
        if not is_session_id(session_id):
            self.session_id, self.usage = None, {}
            return
        assert isinstance(record, dict) and isinstance(session_id, str)
        self.session_id = session_id
        self.usage = {}
        usage = record.get("usage")
        for model, used in usage.items() if isinstance(usage, dict) else ():
            if not isinstance(model, str) or not isinstance(used, dict):
                continue
            read, wrote = used.get("input_tokens"), used.get("output_tokens")
            if _count(read) and _count(wrote):
                self.usage[model] = TokenUsage(read, wrote)  # type: ignore[arg-type]


def _count(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and 0 <= value < 2**63
