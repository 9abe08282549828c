"""What a turn produces: one ``Message`` per streamed event, one ``Reply`` per turn."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ._exceptions import TyqwError

__all__ = ["Message", "Reply"]


class _Text:
    """The reply text of one turn, kept in pieces and joined only when someone asks.

    Each ``Message`` remembers the length of the text when it was made. Joining on
    demand keeps the cost of an event independent of how long the reply already is:
    building "the text so far" eagerly would copy the whole reply on every event.
    Every 256 pieces are merged into one, so a long reply does not keep a string object
    per event alive.
    """

    __slots__ = ("_joined", "_joined_length", "chunks", "length", "recent")

    def __init__(self) -> None:
        self.chunks: list[str] = []
        self.recent: list[str] = []
        self.length = 0
        self._joined = ""
        self._joined_length = 0

    def append(self, piece: str) -> None:
        recent = self.recent
        recent.append(piece)
        self.length += len(piece)
        if len(recent) == 256:
            self.chunks.append("".join(recent))
            recent.clear()

    def upto(self, length: int) -> str:
        """The first ``length`` characters of the text."""
        if length != self._joined_length:
            if self._joined_length != self.length:
                self._joined = "".join(self.chunks) + "".join(self.recent)
                self._joined_length = self.length
            if length != self.length:
                return self._joined[:length]
        return self._joined


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
    _length: int = field(repr=False)

    @property
    def text(self) -> str:
        """The reply so far, this event included."""
        return self._text.upto(self._length)

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


class _MessageBuilder:
    """A mutable twin of ``Message`` with the same slots, to build messages fast.

    A frozen dataclass stores each field through ``object.__setattr__``, which costs as
    much as parsing the event. ``new_message`` fills a builder with plain slot stores
    and then switches its class: Python allows ``__class__`` assignment between classes
    with identical ``__slots__``, and the result is an ordinary, frozen ``Message``.
    ``tyqw.sse`` builds its events the same way.
    """

    __slots__ = Message.__slots__
    delta: str
    session_id: str | None
    request_id: str | None
    finish_reason: str | None
    thoughts: list[dict[str, Any]] | None
    doc_references: list[dict[str, Any]] | None
    usage: dict[str, Any] | None
    workflow_message: dict[str, Any] | None
    raw: dict[str, Any]
    _text: _Text
    _length: int


_new = object.__new__


def new_message(
    delta: str,
    session_id: str | None,
    request_id: str | None,
    finish_reason: str | None,
    thoughts: list[dict[str, Any]] | None,
    doc_references: list[dict[str, Any]] | None,
    usage: dict[str, Any] | None,
    workflow_message: dict[str, Any] | None,
    raw: dict[str, Any],
    text: _Text,
) -> Message:
    """A ``Message`` for one event, the text so far being all of ``text``."""
    message = _new(_MessageBuilder)
    message.delta = delta
    message.session_id = session_id
    message.request_id = request_id
    message.finish_reason = finish_reason
    message.thoughts = thoughts
    message.doc_references = doc_references
    message.usage = usage
    message.workflow_message = workflow_message
    message.raw = raw
    message._text = text
    message._length = text.length
    message.__class__ = Message  # type: ignore[assignment]
    return message  # type: ignore[return-value]


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
