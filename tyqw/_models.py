"""What a turn produces: one ``Message`` per streamed event, one ``Reply`` per turn."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ._exceptions import TyqwError

__all__ = ["Message", "Reply"]


class _Text:
    """The reply text of one turn, kept as pieces and joined only when someone asks.

    Each ``Message`` remembers how many pieces existed when it was made. Joining on
    demand keeps the cost of an event independent of how long the reply already is:
    building "the text so far" eagerly would copy the whole reply on every event.
    """

    __slots__ = ("_joined", "_joined_count", "pieces")

    def __init__(self) -> None:
        self.pieces: list[str] = []
        self._joined = ""
        self._joined_count = 0

    def upto(self, count: int) -> str:
        if count == self._joined_count:
            return self._joined
        if count > self._joined_count:
            # Extend the cached prefix instead of joining from the start.
            joined = self._joined + "".join(self.pieces[self._joined_count : count])
        else:
            joined = "".join(self.pieces[:count])
        if count == len(self.pieces):
            self._joined, self._joined_count = joined, count
        return joined


@dataclass(frozen=True, slots=True, eq=False)
class Message:
    """One ``result`` event of a streamed reply.

    ``delta`` is what this event added and ``text`` the reply so far, right in both
    wire modes (incremental and cumulative). ``finish_reason`` is ``None`` while the
    reply streams and ``"stop"`` on the last event. ``raw`` is the decoded JSON object.

    Example::

        async for message in session.stream("讲个笑话"):
            print(message.delta, end="", flush=True)
        print()
        print(message.text)        # the whole reply
    """

    delta: str
    session_id: str | None
    request_id: str | None
    finish_reason: str | None
    thoughts: list[dict[str, Any]] | None
    doc_references: list[dict[str, Any]] | None
    usage: dict[str, Any] | None
    workflow_message: dict[str, Any] | None
    raw: dict[str, Any]
    _text: _Text = field(repr=False)
    _count: int = field(repr=False)

    @property
    def text(self) -> str:
        """The reply so far, this event included."""
        return self._text.upto(self._count)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Message):
            return NotImplemented
        return (self.text, self.delta, self.raw) == (other.text, other.delta, other.raw)

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return (
            f"Message(delta={self.delta!r}, text={_short(self.text)}, "
            f"finish_reason={self.finish_reason!r}, session_id={self.session_id!r}, "
            f"request_id={self.request_id!r})"
        )


@dataclass(frozen=True, slots=True)
class Reply:
    """The result of one turn, returned by ``Session.send()``.

    ``error`` is ``None`` on success. When an ``error`` handler is listening, a failed
    turn returns a ``Reply`` whose ``error`` is set and whose ``text`` holds everything
    received before the failure.

    Example::

        reply = await session.send("你好")
        if reply.error is None:
            print(reply.text, reply.usage)
    """

    text: str
    session_id: str | None
    request_id: str | None
    finish_reason: str | None
    usage: dict[str, Any] | None = None
    thoughts: list[dict[str, Any]] | None = None
    doc_references: list[dict[str, Any]] | None = None
    error: TyqwError | None = field(default=None, compare=False)

    def __repr__(self) -> str:
        return (
            f"Reply(text={_short(self.text)}, finish_reason={self.finish_reason!r}, "
            f"session_id={self.session_id!r}, request_id={self.request_id!r}, "
            f"error={self.error!r})"
        )


def _short(text: str, limit: int = 80) -> str:
    return repr(text if len(text) <= limit else text[:limit] + "...")
