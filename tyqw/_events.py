"""Events: the handler registry, the one loop that calls and awaits handlers, and the
turn-level events derived from a turn's messages (each thought and each cited document
once, each workflow node event, each piece of a model's reasoning). ``TurnEvents.deliver``
is what ``Session.send()`` does with each item of the turn's stream.

Registration, ``once`` and removal are pyee's (``AsyncIOEventEmitter``); tyqw calls the
handlers itself, so that a coroutine handler is awaited before the next handler runs
instead of being scheduled as a task.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Coroutine
from inspect import isawaitable
from typing import Any, Literal, TypeVar, cast, get_args, overload

from pyee.asyncio import AsyncIOEventEmitter

from ._exceptions import HandlerError, StreamError, TyqwError
from ._models import Citation, Message, Reply, Thought, ToolCall, WorkflowEvent

__all__ = [
    "EVENTS",
    "Announced",
    "Emitter",
    "Event",
    "Subscriptions",
    "TurnEvents",
    "check_event",
    "emit",
    "emit_error",
]

Event = Literal["message", "error", "thought", "reference", "workflow", "tool_call", "reply"]
EVENTS: tuple[str, ...] = get_args(Event)
_DERIVED = ("thought", "reference", "workflow")

Handler = Callable[[Any], object]
ReplyFor = Callable[[TyqwError], Reply]


_MessageHandler = TypeVar("_MessageHandler", bound=Callable[[Message], object])
_ErrorHandler = TypeVar("_ErrorHandler", bound=Callable[[TyqwError], object])
_ThoughtHandler = TypeVar("_ThoughtHandler", bound=Callable[[Thought], object])
_ReferenceHandler = TypeVar("_ReferenceHandler", bound=Callable[[Citation], object])
_WorkflowHandler = TypeVar("_WorkflowHandler", bound=Callable[[WorkflowEvent], object])
_ToolCallHandler = TypeVar("_ToolCallHandler", bound=Callable[[ToolCall], object])
_ReplyHandler = TypeVar("_ReplyHandler", bound=Callable[[Reply], object])
_Handler = TypeVar("_Handler", bound=Callable[..., object])


class Subscriptions:
    """``on()``, ``once()`` and ``off()``, typed per event: a ``message`` handler takes a
    ``Message``, an ``error`` handler a ``TyqwError``, and so on. ``Session`` and
    ``SyncSession`` share them; each says in ``_subscribe`` where handlers go."""

    def _subscribe(self, how: str, event: str, handler: Callable[..., object]) -> None:
        raise NotImplementedError

    @overload
    def on(self, event: Literal["message"], handler: _MessageHandler) -> _MessageHandler: ...
    @overload
    def on(self, event: Literal["error"], handler: _ErrorHandler) -> _ErrorHandler: ...
    @overload
    def on(self, event: Literal["thought"], handler: _ThoughtHandler) -> _ThoughtHandler: ...
    @overload
    def on(self, event: Literal["reference"], handler: _ReferenceHandler) -> _ReferenceHandler: ...
    @overload
    def on(self, event: Literal["workflow"], handler: _WorkflowHandler) -> _WorkflowHandler: ...
    @overload
    def on(self, event: Literal["tool_call"], handler: _ToolCallHandler) -> _ToolCallHandler: ...
    @overload
    def on(self, event: Literal["reply"], handler: _ReplyHandler) -> _ReplyHandler: ...
    def on(self, event: Event, handler: _Handler) -> _Handler:
        """Call ``handler`` for every ``event``; coroutine functions are awaited, in order.

        ``"message"`` gets each ``Message``, ``"error"`` each ``TyqwError``,
        ``"thought"`` each new ``Thought``, ``"reference"`` each newly cited
        ``Citation``, ``"workflow"`` each ``WorkflowEvent``, ``"tool_call"`` each
        ``ToolCall`` a model made once tyqw ran the tool, and ``"reply"`` the turn's
        ``Reply`` when it ends, success or failure. A thinking model's reasoning arrives
        as ``"thought"`` events, one per piece (``action_type`` ``"reasoning"``).

        Example::

            session.on("message", lambda m: print(m.delta, end=""))
            session.on("error", lambda e: print("error:", e))
        """
        self._subscribe("on", check_event(event), handler)
        return handler

    @overload
    def once(self, event: Literal["message"], handler: _MessageHandler) -> _MessageHandler: ...
    @overload
    def once(self, event: Literal["error"], handler: _ErrorHandler) -> _ErrorHandler: ...
    @overload
    def once(self, event: Literal["thought"], handler: _ThoughtHandler) -> _ThoughtHandler: ...
    @overload
    def once(
        self, event: Literal["reference"], handler: _ReferenceHandler
    ) -> _ReferenceHandler: ...
    @overload
    def once(self, event: Literal["workflow"], handler: _WorkflowHandler) -> _WorkflowHandler: ...
    @overload
    def once(self, event: Literal["tool_call"], handler: _ToolCallHandler) -> _ToolCallHandler: ...
    @overload
    def once(self, event: Literal["reply"], handler: _ReplyHandler) -> _ReplyHandler: ...
    def once(self, event: Event, handler: _Handler) -> _Handler:
        """Like ``on()``, for the next event only.

        Example::

            session.once("message", lambda m: print("first piece:", m.delta))
        """
        self._subscribe("once", check_event(event), handler)
        return handler

    def off(self, event: Event, handler: Callable[..., object]) -> None:
        """Stop calling ``handler`` for ``event``.

        Example::

            session.off("message", printer)
        """
        self._subscribe("off", check_event(event), handler)


def check_event(event: str) -> str:
    if event not in EVENTS:
        raise ValueError(f"unknown event {event!r}; tyqw emits {', '.join(map(repr, EVENTS))}")
    return event


class Emitter(AsyncIOEventEmitter):
    """pyee's emitter, plus each event's current handler list, kept ready for the
    per-message path (new lists on every change: a turn iterating the old one is not
    disturbed)."""

    def __init__(self) -> None:
        super().__init__()
        self._refresh()

    def _refresh(self) -> None:
        events = self._events
        self.handlers: dict[str, list[Handler]] = {
            event: list(events.get(event, {}).values()) for event in EVENTS
        }
        self.message = self.handlers["message"]
        self.errors = self.handlers["error"]
        self.replies = self.handlers["reply"]
        self.derived = any(self.handlers[event] for event in _DERIVED)

    def _add_event_handler(self, event: str, k: Callable[..., Any], v: Callable[..., Any]) -> None:
        super()._add_event_handler(event, k, v)
        self._refresh()

    def _remove_listener(self, event: str, f: Callable[..., Any]) -> None:
        super()._remove_listener(event, f)
        self._refresh()

    def remove_all_listeners(self, event: str | None = None) -> None:
        super().remove_all_listeners(event)
        self._refresh()


class Announced:
    """The turn-level events a turn's messages announced so far: each thought and each
    cited document once (the service repeats them on every event)."""

    __slots__ = ("references", "thoughts")

    def __init__(self) -> None:
        self.thoughts: list[dict[str, Any]] = []
        self.references: set[str] = set()

    def derive(
        self, message: Message, handlers: dict[str, list[Handler]]
    ) -> list[tuple[str, Any]]:
        """The events of ``message``, in the order they are emitted: its new thoughts,
        the ``message`` itself, its newly cited documents, its workflow event. The
        service repeats every thought and every reference on each event: each is
        announced once, when it first appears."""
        found: list[tuple[str, Any]] = []
        if handlers["thought"] and message.reasoning:
            # A model's reasoning streams in pieces, each new: no list to compare.
            piece = message.reasoning
            thought = Thought("reasoning", None, None, piece, {"reasoning": piece})
            found.append(("thought", thought))
        if handlers["thought"] and message.thoughts:
            for raw in message.thoughts:
                if isinstance(raw, dict) and raw not in self.thoughts:
                    self.thoughts.append(raw)
                    found.append(("thought", Thought.from_raw(raw)))
        if handlers["message"]:
            found.append(("message", message))
        if handlers["reference"] and message.doc_references:
            new: list[Citation] = []
            for raw in message.doc_references:
                citation = Citation.from_raw(raw) if isinstance(raw, dict) else None
                if citation is not None and citation.index_id not in self.references:
                    self.references.add(citation.index_id)
                    new.append(citation)
            if len(new) > 1:
                # Several documents cited by one event: in the order the text cites them.
                text = message.text
                new.sort(key=lambda c: text.find(c.marker) % (len(text) + 1))
            found += [("reference", citation) for citation in new]
        if handlers["workflow"] and message.workflow_message:
            found.append(("workflow", WorkflowEvent.from_raw(message.workflow_message)))
        return found


class TurnEvents(Announced):
    """One turn's emission: what each item of its stream becomes for the handlers."""

    __slots__ = ("emitter", "reply")

    def __init__(self, emitter: Emitter, reply: ReplyFor) -> None:
        super().__init__()
        self.emitter = emitter
        self.reply = reply

    def deliver(self, item: Message | StreamError | ToolCall) -> Awaitable[None] | None:
        """Emit one item of the turn's stream to its handlers: a ``Message`` (and what it
        derives), a malformed event's ``StreamError``, a tool call. Returns ``None`` when
        every handler has finished (the common case costs no coroutine), else what is
        left to await; the handlers of one item finish before those of the next start."""
        emitter = self.emitter
        if item.__class__ is Message:
            if not emitter.derived:
                return emit(emitter, "message", emitter.message, item, self.reply)
            # A thought comes before the text it led to; a citation after the text
            # that cites it, and a workflow event after its piece of text.
            return self._emit_each(self.derive(item, emitter.handlers))
        if item.__class__ is ToolCall:
            return emit(emitter, "tool_call", emitter.handlers["tool_call"], item, self.reply)
        # A malformed event: reported, skipped, and the turn goes on.
        error = cast(StreamError, item)
        error.reply = self.reply(error)
        return emit_error(emitter, error)

    def _emit_each(self, events: list[tuple[str, Any]]) -> Awaitable[None] | None:
        handlers = self.emitter.handlers
        for position, (event, value) in enumerate(events):
            pending = emit(self.emitter, event, handlers[event], value, self.reply)
            if pending is not None:
                return self._emit_rest(pending, events[position + 1 :])
        return None

    async def _emit_rest(self, pending: Awaitable[None], events: list[tuple[str, Any]]) -> None:
        await pending
        for event, value in events:
            pending_next = emit(
                self.emitter, event, self.emitter.handlers[event], value, self.reply
            )
            if pending_next is not None:
                await pending_next


def emit(
    emitter: Emitter, event: str, handlers: list[Handler], value: object, reply: ReplyFor
) -> Coroutine[Any, Any, None] | None:
    """Call each handler with ``value``, in order; an awaitable result is awaited before
    the next handler runs. A handler that raises is reported as a ``HandlerError`` to
    the ``error`` handlers. Returns ``None`` when every handler has already finished
    (the common case costs no coroutine), else what is left to await."""
    for index, handler in enumerate(handlers):
        try:
            result = handler(value)
        except Exception as exc:
            return _rest(emitter, event, handlers, index, value, reply, exc)
        if result is not None and isawaitable(result):
            return _rest(emitter, event, handlers, index, value, reply, result)
    return None


async def _rest(
    emitter: Emitter,
    event: str,
    handlers: list[Handler],
    index: int,
    value: object,
    reply: ReplyFor,
    started: Exception | Awaitable[object],
) -> None:
    """``emit()`` from handler ``index`` on, whose call raised or returned ``started``."""
    for position in range(index, len(handlers)):
        try:
            if position == index:
                if isinstance(started, Exception):
                    raise started
                await started
            else:
                result = handlers[position](value)
                if result is not None and isawaitable(result):
                    await result
        except Exception as exc:
            error = HandlerError(f"a {event!r} handler raised {exc!r}")
            error.__cause__ = exc
            error.reply = reply(error)
            await emit_error(emitter, error)


async def emit_error(emitter: Emitter, error: TyqwError) -> None:
    """Await each ``error`` handler in order; with none, raise ``error``. An ``error``
    handler that raises ends the turn with its exception."""
    handlers = emitter.errors
    if not handlers:
        raise error
    for handler in handlers:
        result = handler(error)
        if result is not None and isawaitable(result):
            await result
