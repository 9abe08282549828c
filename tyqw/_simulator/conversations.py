"""What the simulator remembers: conversations under a ``session_id``, and long-term
memories under a ``memory_id``.

A conversation is the server-side history the service keeps for a ``session_id``; it
ends after ``ttl`` idle seconds or ``max_rounds`` turns (by tyqw's clock, which
``tyqw.testing.advance_clock()`` moves), and a request naming an ended or unknown id
silently starts a new one under a newly minted id (the tolerant reading of the protocol
reference). A turn joins its conversation only once its answer was sent whole.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass

from .. import _clock

# Every this many new conversations, the ended ones are dropped.
_SWEEP_EVERY = 1024


@dataclass(slots=True)
class Conversation:
    history: list[tuple[str, str]]
    last_used: float


class Conversations:
    """The live conversations by ``session_id``."""

    __slots__ = ("_by_id", "_started", "max_rounds", "ttl")

    def __init__(self, ttl: float, max_rounds: int) -> None:
        self.ttl = ttl
        self.max_rounds = max_rounds
        self._by_id: dict[str, Conversation] = {}
        self._started = 0

    def live(self, session_id: str) -> Conversation | None:
        """The conversation ``session_id`` names if it has not ended; an ended one is dropped."""
        conversation = self._by_id.get(session_id)
        if conversation is not None and self._ended(conversation, _clock.monotonic()):
            del self._by_id[session_id]
            return None
        return conversation

    def open(self, session_id: str | None) -> tuple[str, Conversation]:
        """The live conversation ``session_id`` names, else a new one under a new id."""
        now = _clock.monotonic()
        conversation = self.live(session_id) if session_id else None
        if session_id and conversation is not None:
            conversation.last_used = now
            return session_id, conversation
        self._started += 1
        if self._started % _SWEEP_EVERY == 0:
            ended = [k for k, c in self._by_id.items() if self._ended(c, now)]
            for stale in ended:
                del self._by_id[stale]
        session_id = uuid.uuid4().hex
        conversation = self._by_id[session_id] = Conversation([], now)
        return session_id, conversation

    def expire(self, *session_ids: str) -> None:
        """End the given conversations, or all of them when none are given."""
        if not session_ids:
            self._by_id.clear()
        for session_id in session_ids:
            self._by_id.pop(session_id, None)

    def add_turn(
        self, session_id: str, conversation: Conversation, prompt: str, text: str
    ) -> None:
        conversation.history.append((prompt, text))
        conversation.last_used = _clock.monotonic()
        if len(conversation.history) >= self.max_rounds and self._by_id.get(session_id) is (
            conversation
        ):
            # Ended by its rounds: dropped now, as a client that knows the limit never
            # names it again (and so never makes live() drop it).
            del self._by_id[session_id]

    def _ended(self, conversation: Conversation, now: float) -> bool:
        idle = now - conversation.last_used
        return idle > self.ttl or len(conversation.history) >= self.max_rounds


class Memories:
    """Long-term memory: what the user said in earlier turns sent with a ``memory_id``."""

    __slots__ = ("_by_id",)

    def __init__(self) -> None:
        self._by_id: dict[str, list[str]] = {}

    def recall(self, memory_id: str) -> list[str]:
        return list(self._by_id.get(memory_id, ()))

    def remember(self, memory_id: str, prompt: str) -> None:
        self._by_id.setdefault(memory_id, []).append(prompt)
