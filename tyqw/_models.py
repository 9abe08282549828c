"""What a turn produces: one ``Message`` per streamed event, one ``Reply`` per turn, and
the turn-level items derived from them (``Thought``, ``Citation``, ``WorkflowEvent``,
``ToolCall``, ``TokenUsage``)."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ._exceptions import TyqwError

__all__ = ["Citation", "Message", "Reply", "Thought", "TokenUsage", "ToolCall", "WorkflowEvent"]


class _Text:
    """The reply text of one turn, kept in pieces and joined only when someone asks.

    Each ``Message`` remembers the length of the text when it was made. Joining on
    demand keeps the cost of an event independent of how long the reply already is:
    building "the text so far" eagerly would copy the whole reply on every event.
    Every 256 pieces are merged into one, so a long reply does not keep a string object
    per event alive.

    The text only grows, and a reader may run on another thread than the writer (a
    ``SyncSession`` reads ``message.text`` in the caller's thread while the loop thread
    reads on). So no lock: a merge never changes a list a reader may hold, it swaps in
    new ones, and a reader joins the one ``view`` it took, which holds all the text
    written before it took it.
    """

    __slots__ = ("_joined", "chunks", "length", "recent", "view")

    def __init__(self) -> None:
        self.chunks: list[str] = []
        self.recent: list[str] = []
        self.view = (self.chunks, self.recent)
        self.length = 0
        self._joined = ""

    def append(self, piece: str) -> None:
        recent = self.recent
        recent.append(piece)
        self.length += len(piece)
        if len(recent) == 256:
            chunks = self.chunks = [*self.chunks, "".join(recent)]
            recent = self.recent = []
            self.view = (chunks, recent)

    def upto(self, length: int) -> str:
        """The first ``length`` characters of the text."""
        joined = self._joined
        if len(joined) < length:
            chunks, recent = self.view
            joined = self._joined = "".join(chunks) + "".join(recent)
        return joined if len(joined) == length else joined[:length]


@dataclass(frozen=True, slots=True, eq=False)
class Message:
    """One ``result`` event of a streamed reply.

    ``delta`` is what this event added and ``text`` the reply so far, right in both
    wire modes (incremental and cumulative). ``finish_reason`` is ``None`` while the
    reply streams and ``"stop"`` on the last event (a model also ends with ``"length"``
    or ``"tool_calls"``). ``reasoning`` is the piece of a thinking model's reasoning this
    event added (``""`` for apps and for the answer). ``raw`` is the decoded JSON object.

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
    reasoning: str
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

    # Equal by value, and its raw dict is unhashable: so is the Message, as a dataclass
    # with eq=True is; typeshed types __hash__ as a method, hence the ignore.
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
    reasoning: str
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
    reasoning: str = "",
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
    message.reasoning = reasoning
    message._text = text
    message._length = text.length
    message.__class__ = Message  # type: ignore[assignment]
    return message  # type: ignore[return-value]


@dataclass(frozen=True, slots=True)
class Thought:
    """One step of the app's work (retrieval, a plugin call, memory, reasoning), as the
    ``thought`` event and ``Reply.thoughts`` report it (``has_thoughts=True``).

    ``text`` is the readable part: the thought, the reasoning response, the observation
    or the tool input, whichever the step has. ``raw`` is the item as it arrived.

    Example::

        session.on("thought", lambda t: print(f"[{t.action_name}] {t.text}"))
    """

    action_type: str | None
    action: str | None
    action_name: str | None
    text: str
    raw: dict[str, Any]

    @classmethod
    def from_raw(cls, raw: dict[str, Any]) -> Thought:
        """A ``Thought`` from one item of ``output.thoughts``."""
        text = next(
            (
                value
                for key in (
                    "thought",
                    "response",
                    "observation",
                    "action_input_stream",
                    "arguments",
                )
                if isinstance(value := raw.get(key), str) and value
            ),
            "",
        )
        return cls(
            _opt_str(raw, "action_type"),
            _opt_str(raw, "action"),
            _opt_str(raw, "action_name"),
            text,
            raw,
        )


@dataclass(frozen=True, slots=True)
class Citation:
    """A document the reply cites with a ``<ref>[n]</ref>`` marker.

    ``marker`` is ``"[n]"``, ``index_id`` the ``n`` (the knowledge base's chunk number,
    not a position), ``excerpt`` the cited text. ``raw`` is the ``doc_references`` item.

    Example::

        for citation in reply.citations:
            print(citation.marker, citation.title, citation.doc_id)
    """

    marker: str
    index_id: str
    title: str | None
    doc_id: str | None
    doc_name: str | None
    excerpt: str | None
    raw: dict[str, Any]

    @classmethod
    def from_raw(cls, raw: dict[str, Any]) -> Citation | None:
        """A ``Citation`` from one ``doc_references`` item; ``None`` without an index id."""
        index_id = raw.get("index_id")
        if isinstance(index_id, int) and not isinstance(index_id, bool):
            index_id = str(index_id)
        if not isinstance(index_id, str) or not index_id:
            return None
        return cls(
            f"[{index_id}]",
            index_id,
            _opt_str(raw, "title"),
            _opt_str(raw, "doc_id"),
            _opt_str(raw, "doc_name"),
            _opt_str(raw, "text"),
            raw,
        )


@dataclass(frozen=True, slots=True)
class WorkflowEvent:
    """One workflow node event (``flow_stream_mode="message_format"`` and ``_plus``).

    ``content`` is this event's piece of the node's output; ``completed`` is true on the
    node's last event.

    Example::

        session.on("workflow", lambda w: print(w.node_name, w.node_status, w.content))
    """

    node_id: str | None
    node_name: str | None
    node_type: str | None
    node_status: str | None
    completed: bool
    content: str
    raw: dict[str, Any]

    @classmethod
    def from_raw(cls, raw: dict[str, Any]) -> WorkflowEvent:
        """A ``WorkflowEvent`` from an ``output.workflow_message`` object."""
        message = raw.get("message")
        content = message.get("content") if isinstance(message, dict) else None
        completed = raw.get("node_is_completed")
        return cls(
            _opt_str(raw, "node_id"),
            _opt_str(raw, "node_name"),
            _opt_str(raw, "node_type"),
            _opt_str(raw, "node_status"),
            completed is True or completed == "true",
            content if isinstance(content, str) else "",
            raw,
        )


@dataclass(frozen=True, slots=True)
class TokenUsage:
    """Tokens one model read and wrote: per turn, or summed over a conversation.

    ``reasoning_tokens`` is the part of ``output_tokens`` a thinking model spent
    reasoning; ``total_tokens`` is input and output together, as the service counts it.

    Example::

        for model, used in session.usage.items():
            print(model, used.input_tokens, used.output_tokens, used.total_tokens)
    """

    input_tokens: int = 0
    output_tokens: int = 0
    reasoning_tokens: int = 0

    @property
    def total_tokens(self) -> int:
        """``input_tokens + output_tokens``."""
        return self.input_tokens + self.output_tokens

    def __add__(self, other: TokenUsage) -> TokenUsage:
        return TokenUsage(
            self.input_tokens + other.input_tokens,
            self.output_tokens + other.output_tokens,
            self.reasoning_tokens + other.reasoning_tokens,
        )


@dataclass(frozen=True, slots=True)
class ToolCall:
    """One call a model made to a tool, as the ``tool_call`` event and ``Reply.tool_calls``
    report it.

    ``arguments`` is the JSON text the model wrote. Once tyqw ran the tool, ``result``
    is what was sent back to the model; ``error`` is set instead when the tool raised or
    the arguments did not fit (the model is told that text, and answers from it).

    Example::

        session.on("tool_call", lambda c: print(c.name, c.arguments, "->", c.result))
    """

    id: str
    name: str
    arguments: str
    result: str | None = None
    error: str | None = None


def _opt_str(raw: dict[str, Any], key: str) -> str | None:
    value = raw.get(key)
    return value if isinstance(value, str) else None


# A citation marker: "<ref>[4]</ref>", also "<ref>[2][4]</ref>".
_REF = re.compile(r"<ref>((?:\s*\[[^\[\]<>]{1,32}\]\s*)+)</ref>")
_REF_ID = re.compile(r"\[([^\[\]<>]{1,32})\]")


def plain_markers(text: str) -> str:
    """``text`` with each ``<ref>[n]</ref>`` citation marker as a plain ``[n]``."""
    if "<ref>" not in text:
        return text
    return _REF.sub(
        lambda match: "".join(f"[{i.strip()}]" for i in _REF_ID.findall(match.group(1))), text
    )


def cite(
    text: str, doc_references: list[dict[str, Any]] | None
) -> tuple[str, tuple[Citation, ...]]:
    """``text`` with each ``<ref>[n]</ref>`` marker as plain ``[n]``, and the cited
    documents in the order the text first cites them."""
    if "<ref>" not in text:
        return text, ()
    by_id: dict[str, Citation] = {}
    for item in doc_references or ():
        if isinstance(item, dict) and (citation := Citation.from_raw(item)) is not None:
            by_id.setdefault(citation.index_id, citation)
    cited: dict[str, Citation] = {}

    def plain(match: re.Match[str]) -> str:
        ids = _REF_ID.findall(match.group(1))
        for index_id in ids:
            citation = by_id.get(index_id.strip())
            if citation is not None:
                cited.setdefault(citation.index_id, citation)
        return "".join(f"[{index_id.strip()}]" for index_id in ids)

    return _REF.sub(plain, text), tuple(cited.values())


@dataclass(frozen=True, slots=True)
class Reply:
    """The result of one turn, returned by ``Session.send()``.

    ``error`` is ``None`` on success. When an ``error`` handler is listening, a failed
    turn returns a ``Reply`` whose ``error`` is set and whose ``text`` holds everything
    received before the failure. ``text`` is the reply as the service wrote it;
    ``display_text`` has each ``<ref>[n]</ref>`` citation marker as a plain ``[n]``, and
    ``citations`` lists the cited documents in the order the text first cites them.
    A model's ``reasoning`` (thinking models) is kept apart from the answer, ``None``
    when there was none; ``tool_calls`` are the calls the model made during the turn.

    Example::

        reply = await session.send("你好")
        if reply.error is None:
            print(reply.display_text, reply.usage)
            for citation in reply.citations:
                print(citation.marker, citation.title)
    """

    text: str
    session_id: str | None
    request_id: str | None
    finish_reason: str | None
    usage: dict[str, Any] | None = None
    thoughts: list[dict[str, Any]] | None = None
    doc_references: list[dict[str, Any]] | None = None
    error: TyqwError | None = field(default=None, compare=False)
    reasoning: str | None = None
    tool_calls: tuple[ToolCall, ...] = ()
    display_text: str = field(default="", compare=False)
    citations: tuple[Citation, ...] = field(default=(), compare=False)

    def __post_init__(self) -> None:
        if not self.display_text and self.text:
            display_text, citations = cite(self.text, self.doc_references)
            object.__setattr__(self, "display_text", display_text)
            object.__setattr__(self, "citations", citations)

    def __repr__(self) -> str:
        return (
            f"Reply(text={_short(self.text)}, finish_reason={self.finish_reason!r}, "
            f"session_id={self.session_id!r}, request_id={self.request_id!r}, "
            f"error={self.error!r})"
        )


def _short(text: str, limit: int = 80) -> str:
    return repr(text if len(text) <= limit else text[:limit] + "...")
