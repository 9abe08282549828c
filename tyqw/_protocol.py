"""Bailian's bytes and JSON to tyqw's objects, in one place: a response's bytes to its
events to ``Message`` objects, a turn's events to its ``Reply``, error bodies and
``event:error`` frames to ``APIStatusError``.

``ReplyReader.feed`` is the whole read path of an event stream: the fast path (one
well-formed ``result`` object) and the slow one (``irregular``: error frames, several
objects in one event, anything malformed) live side by side, so the irregular cases are
handled once. The turn around it (``tyqw._turn``) only moves bytes and decides when to stop.

An app's event carries ``output.text``; a model's (the text-generation endpoint)
``output.choices[0].message`` with ``content``, ``reasoning_content`` and ``tool_calls``
fragments. Both are read by ``ReplyReader.message``, the one decoding place.

``ReplyReader`` is the text accumulator of one turn. Every known field of an event is
type-checked before anything is kept, so a wrong-typed field makes that one event a
``StreamError`` (reported, skipped) and never reaches the text, the store or the caller.
The one tolerant field is ``finish_reason``: anything but a word such as ``"stop"``
(``"null"``, ``""``, ``false``) means "not finished", and the event counts as any other.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Callable, Iterator, Mapping
from operator import length_hint
from typing import Any

from ._exceptions import (
    APIStatusError,
    EventTooLargeError,
    StreamError,
    TyqwError,
    error_for_status,
    excerpt,
)
from ._models import Message, Reply, TokenUsage, ToolCall, _Text, new_message
from ._options import is_session_id
from .sse import ServerSentEvent, SSEDecoder

__all__ = [
    "ReplyReader",
    "error_from_body",
    "error_from_frame",
    "is_final",
    "parse_json",
    "tool_call_fragments",
]

logger = logging.getLogger("tyqw")

_HTTP_STATUS = re.compile(r"HTTP_STATUS/(\d{3})")
_NOT_FINAL = frozenset({"", "null", "none"})
_MESSAGE_LIMIT = 2000
_FAILED = object()
_ITEM_EVENTS = frozenset({"result", "message", "error"})  # see ReplyReader.ahead()
_NO_EVENTS: list[ServerSentEvent] = []  # never changed: the events of no read
_NO_EVENTS_LEFT: Iterator[ServerSentEvent] = iter(())
_NO_TOKENS = TokenUsage()  # frozen: one for every reader, not one per turn
# raw_decode is json.loads without its wrapping, which costs a third as much again as the
# parse; anything it does not read whole takes the slow path (ReplyReader.irregular).
_decode_json = json.JSONDecoder().raw_decode


def parse_json(text: str | bytes) -> Any:
    """The decoded JSON value, or ``_FAILED`` for anything that is not JSON (including
    nesting too deep for the parser)."""
    try:
        return json.loads(text)
    except (ValueError, RecursionError):
        return _FAILED


def is_final(finish_reason: object) -> bool:
    """True for a finish_reason that ends a reply: a word such as ``"stop"``; not
    ``"null"`` (Bailian's "still streaming"), not ``""``, ``None`` or a non-string."""
    return isinstance(finish_reason, str) and finish_reason.strip().lower() not in _NOT_FINAL


class _Malformed(Exception):
    """An event with a field of the wrong type; becomes a ``StreamError``."""


class ReplyReader:
    """Reads one turn's responses: decodes their bytes (``feed``), keeps the text (right
    in both wire modes), the ids, the usage, thoughts and references seen so far, and
    builds the ``Reply``.

    ``on_session_id`` is called with each new conversation id the service sends;
    ``max_event_size`` caps one event (and a JSON answer) in bytes.
    """

    __slots__ = (
        "_events",
        "_left",
        "calls",
        "cumulative",
        "decoder",
        "doc_references",
        "finish_reason",
        "header_request_id",
        "incremental",
        "max_event_size",
        "model",
        "on_session_id",
        "reasoning",
        "reasoning_cumulative",
        "request_id",
        "session_id",
        "spent",
        "text",
        "thoughts",
        "tool_calls",
        "usage",
    )

    def __init__(
        self,
        *,
        incremental: bool,
        on_session_id: Callable[[str], None],
        model: str | None = None,
        max_event_size: int,
    ) -> None:
        self.incremental = incremental
        self.max_event_size = max_event_size
        self.decoder: SSEDecoder | None = None  # the event stream being read, if any
        # The events of the read being decoded, and an iterator over those not decoded
        # yet (ahead() asks it how many are left: no count is kept per event).
        self._events = _NO_EVENTS
        self._left = _NO_EVENTS_LEFT
        self.model = model  # a model's turn: its usage counts under this name
        self.reasoning = _Text()
        self.reasoning_cumulative = ""
        # The tool calls of the round being read, by index: [id, name, arguments].
        self.tool_calls: dict[int, list[str]] = {}
        self.calls: list[ToolCall] = []  # the calls of earlier rounds, with their results
        self.spent = _NO_TOKENS  # the tokens of earlier rounds of this turn
        self.on_session_id = on_session_id
        self.text = _Text()
        self.cumulative = ""
        self.session_id: str | None = None
        self.request_id: str | None = None
        self.header_request_id: str | None = None
        self.finish_reason: str | None = None
        self.usage: dict[str, Any] | None = None
        self.thoughts: list[dict[str, Any]] | None = None
        self.doc_references: list[dict[str, Any]] | None = None

    # -- events ------------------------------------------------------------------------

    def open_stream(self) -> None:
        """A new event-stream response begins (the first, or a tool round's next)."""
        # Older gateways send no blank line after a frame: implicit dispatch ends each
        # frame on its own lines, wherever the reads end.
        self.decoder = SSEDecoder(max_size=self.max_event_size, implicit_dispatch=True)
        self._events, self._left = _NO_EVENTS, _NO_EVENTS_LEFT

    def feed(self, chunk: bytes) -> Iterator[Message | StreamError]:
        """The items of one read of the event stream (``b""``: the body ended), lazily,
        so that a turn interrupted between two items decodes no further; stops after
        the final event. A malformed event is yielded as a ``StreamError``; an error
        frame raises its ``APIStatusError``.

        Example (``reader.open_stream()`` first)::

            for item in reader.feed(chunk):
                print(item.delta if isinstance(item, Message) else item)
        """
        decoder = self.decoder
        assert decoder is not None, "open_stream() first"
        events = decoder.feed(chunk) if chunk else decoder.close(dispatch_incomplete=True)
        self._events = events
        left = self._left = iter(events)
        # The hot loop: runs once per event, so it is kept flat (one frame, local names).
        message = self.message
        decode = _decode_json
        try:
            for sse in left:
                if sse.event == "result":
                    data = sse.data
                    try:
                        obj, end = decode(data)
                        output = obj["output"] if end == len(data) else None
                    except (ValueError, TypeError, KeyError, RecursionError):
                        output = None
                    if output.__class__ is dict:
                        try:
                            item: Message | StreamError = message(obj, output)
                        except _Malformed as exc:
                            item = _malformed(sse, str(exc), data)
                        yield item
                        if self.finish_reason is not None:
                            return
                        continue
                yield from self.irregular(sse)
                if self.finish_reason is not None:
                    return
        finally:
            # The read's events go as soon as it is decoded, as they did before ahead()
            # and data() needed them: the next read's events then reuse their memory
            # rather than adding to it (a fast stream's read holds hundreds).
            self._events, self._left = _NO_EVENTS, _NO_EVENTS_LEFT

    def ahead(self) -> bool:
        """True when ``feed()`` will give another item without a new read: an event of
        the current read that makes one (or raises) is still to be decoded, and the
        final event has not come. A relay writes the frames of such items together."""
        if self.finish_reason is not None:
            return False
        events = self._events
        # result and message events always give an item (a malformed one too), an
        # error event raises; events of any other type give nothing and are skipped.
        for at in range(len(events) - length_hint(self._left), len(events)):
            if events[at].event.lower() in _ITEM_EVENTS:
                return True
        return False

    def data(self) -> str | None:
        """The data of the event the last item came from, when it is that item's whole
        JSON on one line: a relay can send it on as is instead of encoding the item's
        ``raw`` again. ``None`` for an item of a JSON answer, or one of several objects
        a gateway put in one event (one per line)."""
        left = length_hint(self._left)
        events = self._events
        if left >= len(events):
            return None
        # feed() yields each item as soon as its event is decoded: the event just taken
        # from the iterator is the last item's.
        data = events[-left - 1].data
        return None if "\n" in data else data

    def message(self, obj: dict[str, Any], output: dict[str, Any]) -> Message:
        """The ``Message`` of one result event; raises ``_Malformed`` and keeps nothing
        if a known field has the wrong type."""
        # Runs once per event: every check is a class test, done before any state changes.
        get = output.get
        choices = get("choices")
        if choices is not None:
            return self._choice(obj, output, choices)
        wire_text = get("text")
        if wire_text.__class__ is not str:
            if wire_text is not None:
                raise _Malformed(f"output.text is {_type(wire_text)}, not a string")
            wire_text = ""
        finish = get("finish_reason")
        if finish == "null" or finish is None:
            finish = None
        elif finish.__class__ is not str or not is_final(finish):
            # The tolerant reading: anything but a word such as "stop" (false, 0, "") says
            # "not finished yet", and the event's text is kept like any other's.
            finish = None
        session_id = get("session_id")
        if session_id is not None and session_id != self.session_id:
            if session_id == "":
                session_id = None
            elif not is_session_id(session_id):
                raise _Malformed(
                    f"output.session_id is not a usable id: {excerpt(repr(session_id))}"
                )
        usage = obj.get("usage")
        thoughts = get("thoughts")
        doc_references = get("doc_references")
        workflow_message = get("workflow_message")
        request_id = obj.get("request_id")
        if (
            (usage is not None and usage.__class__ is not dict)
            or (thoughts is not None and thoughts.__class__ is not list)
            or (doc_references is not None and doc_references.__class__ is not list)
            or (workflow_message is not None and workflow_message.__class__ is not dict)
            or (request_id is not None and request_id.__class__ is not str)
        ):
            raise _Malformed(
                "usage, thoughts, doc_references, workflow_message or request_id "
                "has the wrong type"
            )
        text = self.text
        if self.incremental:
            delta = wire_text
        else:
            previous = self.cumulative
            if wire_text.startswith(previous):
                delta = wire_text[len(previous) :]
            elif not wire_text:
                delta = ""
            else:
                # The text was rewritten rather than extended: start over from it.
                text = self.text = _Text()
                delta = wire_text
            if delta:
                self.cumulative = wire_text
        if delta:
            text.append(delta)
        if finish is not None:
            self.finish_reason = finish
        if session_id is not None and session_id != self.session_id:
            self.session_id = session_id
            self.on_session_id(session_id)
        else:
            session_id = self.session_id
        request_id = self.request_id = request_id or self.header_request_id
        if usage:
            self.usage = usage
        if thoughts:
            self.thoughts = thoughts
        if doc_references:
            self.doc_references = doc_references
        return new_message(
            delta,
            session_id,
            request_id,
            finish,
            thoughts,
            doc_references,
            usage,
            workflow_message,
            obj,
            text,
        )

    def _choice(self, obj: dict[str, Any], output: dict[str, Any], choices: Any) -> Message:
        """A model's event: the first choice's ``message``, in the same two wire modes."""
        # Runs once per event, as message() does: class tests first, calls only for the
        # shapes that are not a plain piece of text.
        choice = choices[0] if choices.__class__ is list and choices else None
        if choice.__class__ is not dict:
            raise _Malformed("output.choices is not a list of objects")
        message = choice.get("message")
        if message.__class__ is not dict:
            if message is not None:
                raise _Malformed(f"choices[0].message is {_type(message)}, not an object")
            message = {}
        content = message.get("content")
        if content.__class__ is not str:
            content = _text_of(content, "content")
        reasoning = message.get("reasoning_content")
        if reasoning.__class__ is not str:
            reasoning = _text_of(reasoning, "reasoning_content")
        tool_calls = message.get("tool_calls")
        fragments = () if tool_calls is None else tool_call_fragments(tool_calls)
        finish = choice.get("finish_reason")
        if finish is None:
            finish = output.get("finish_reason")  # qwen-mt puts it beside the choices
        if finish == "null" or finish is None:
            finish = None
        elif finish.__class__ is not str or not is_final(finish):
            finish = None  # tolerant, as for an app: anything but a word is "not yet"
        usage = obj.get("usage")
        request_id = obj.get("request_id")
        if (usage is not None and usage.__class__ is not dict) or (
            request_id is not None and request_id.__class__ is not str
        ):
            raise _Malformed("usage or request_id has the wrong type")
        # Checked: from here on nothing raises.
        if self.incremental:
            delta, thought = content, reasoning
        else:
            delta, self.cumulative, restart = _advance(self.cumulative, content)
            if restart:
                self.text = _Text()
            thought, self.reasoning_cumulative, restart = _advance(
                self.reasoning_cumulative, reasoning
            )
            if restart:
                self.reasoning = _Text()
        text = self.text
        if delta:
            text.append(delta)
        if thought:
            self.reasoning.append(thought)
        calls = self.tool_calls
        for index, call_id, name, arguments in fragments or ():
            known = calls.get(index)
            if known is None:
                calls[index] = [call_id, name, arguments]
            elif self.incremental:
                # Continuations carry "id": "" and the next piece of the arguments.
                known[0] = known[0] or call_id
                known[1] += name
                known[2] += arguments
            else:
                known[0], known[1], known[2] = call_id or known[0], name or known[1], arguments
        if finish is not None:
            self.finish_reason = finish
        request_id = self.request_id = request_id or self.header_request_id
        if usage:
            self.usage = usage
        return new_message(
            delta,
            self.session_id,
            request_id,
            finish,
            None,
            None,
            usage,
            None,
            obj,
            text,
            thought,
        )

    def next_round(self) -> list[ToolCall]:
        """End a round that asked for tools: the calls it made, in index order; the
        reader is ready for the next round of the same turn."""
        calls = [ToolCall(i or "", n, a) for _, (i, n, a) in sorted(self.tool_calls.items())]
        self.spent = self._round_usage()
        self.tool_calls = {}
        self.finish_reason = None
        self.usage = None
        self.cumulative = self.reasoning_cumulative = ""
        return calls

    def irregular(self, sse: ServerSentEvent) -> list[Message | StreamError]:
        """The slow path: an event that is not one well-formed ``result`` object.

        An error object sent as a result event (some gateways do) raises it as an
        ``APIStatusError``, like an ``event:error`` frame.
        """
        kind = sse.event.lower()
        if kind == "error":
            raise error_from_frame(sse, self.header_request_id)
        if kind not in ("result", "message"):
            logger.debug("tyqw: ignoring SSE event of type %r", sse.event[:100])
            return []
        items: list[Message | StreamError] = []
        # A gateway that omits the blank line between frames may put several complete
        # JSON objects in one event, one per data line.
        whole = parse_json(sse.data)
        lines = (
            [sse.data] if whole is not _FAILED or "\n" not in sse.data else sse.data.split("\n")
        )
        for line in lines:
            obj = whole if len(lines) == 1 else parse_json(line)
            output = obj.get("output") if isinstance(obj, dict) else None
            if isinstance(output, dict):
                try:
                    items.append(self.message(obj, output))
                except _Malformed as exc:
                    items.append(_malformed(sse, str(exc), line))
            elif isinstance(obj, dict) and "code" in obj and "message" in obj:
                raise error_from_frame(
                    ServerSentEvent(event="error", data=line, id=sse.id, comment=sse.comment),
                    self.header_request_id,
                )
            else:
                what = "is not JSON" if obj is _FAILED else "has no 'output' object"
                items.append(_malformed(sse, f"its data {what}", line))
        return items

    def json_answer(self, body: bytes) -> Message:
        """The one ``Message`` of a non-streaming (JSON) answer's body."""
        self._events, self._left = _NO_EVENTS, _NO_EVENTS_LEFT  # no event of a stream made it
        limit = self.max_event_size
        if len(body) > limit:
            # A non-streaming answer is one event: the same cap applies.
            raise EventTooLargeError(f"JSON answer larger than {limit} bytes", limit=limit)
        obj = parse_json(body.decode("utf-8", "replace"))
        if obj is _FAILED:
            shown = excerpt(body)
            raise StreamError(f"the answer is not valid JSON: {shown}", excerpt=shown)
        output = obj.get("output") if isinstance(obj, dict) else None
        if not isinstance(output, dict):
            shown = excerpt(_dumps(obj))
            raise StreamError(f"the JSON answer has no 'output' object: {shown}", excerpt=shown)
        self.incremental = True  # one answer holds the whole text
        try:
            message = self.message(obj, output)
        except _Malformed as exc:
            shown = excerpt(_dumps(obj))
            raise StreamError(f"malformed JSON answer: {exc}: {shown}", excerpt=shown) from None
        if self.finish_reason is None:
            self.finish_reason = "stop"
        return message

    # -- the turn's result ---------------------------------------------------------------

    def reply(self, error: TyqwError | None) -> Reply:
        text, reasoning = self.text, self.reasoning
        calls = self.tool_calls
        pending = (
            [ToolCall(i or "", n, a) for _, (i, n, a) in sorted(calls.items())] if calls else ()
        )
        return Reply(
            text=text.upto(text.length),
            session_id=self.session_id,
            request_id=self.request_id or self.header_request_id,
            finish_reason=self.finish_reason,
            usage=self.usage,
            thoughts=self.thoughts,
            doc_references=self.doc_references,
            error=error,
            reasoning=reasoning.upto(reasoning.length) if reasoning.length else None,
            tool_calls=(*self.calls, *pending),
        )

    def _round_usage(self) -> TokenUsage:
        """The tokens of this turn's rounds so far: a model's usage is a running total
        within a request, so the last one of each request counts."""
        usage = self.usage or {}
        read, wrote = usage.get("input_tokens", 0), usage.get("output_tokens", 0)
        details = usage.get("output_tokens_details")
        reasoned = details.get("reasoning_tokens", 0) if isinstance(details, dict) else 0
        if not (_count(read) and _count(wrote) and _count(reasoned)):
            return self.spent
        return self.spent + TokenUsage(read, wrote, reasoned)

    def token_usage(self) -> dict[str, TokenUsage]:
        """The turn's tokens per model, from the last usage the service reported."""
        if self.model is not None:
            used = self._round_usage()
            return {self.model: used} if used != _NO_TOKENS else {}
        models = self.usage.get("models") if self.usage else None
        totals: dict[str, TokenUsage] = {}
        for model in models if isinstance(models, list) else ():
            if not isinstance(model, dict):
                continue
            model_id = model.get("model_id")
            read, wrote = model.get("input_tokens", 0), model.get("output_tokens", 0)
            if isinstance(model_id, str) and _count(read) and _count(wrote):
                used = TokenUsage(read, wrote)
                earlier = totals.get(model_id)  # a model listed twice: its counts add up
                totals[model_id] = used if earlier is None else earlier + used
        return totals


def _text_of(value: Any, name: str) -> str:
    """A model message's ``content`` or ``reasoning_content``: a string, or (multimodal)
    a list of parts whose ``text`` pieces make it."""
    if value.__class__ is str:
        return str(value)
    if value is None:
        return ""
    if value.__class__ is list:
        texts = [part.get("text") if part.__class__ is dict else None for part in value]
        if all(t is None or t.__class__ is str for t in texts):
            return "".join(t for t in texts if t)
    raise _Malformed(f"message.{name} is {_type(value)}, not a string or a list of parts")


def tool_call_fragments(value: Any) -> list[tuple[int, str, str, str]]:
    """The ``tool_calls`` fragments of one event: ``(index, id, name, arguments)``
    (the relay passes a model's on to OpenAI clients as they come)."""
    if value is None:
        return []
    if value.__class__ is not list:
        raise _Malformed(f"message.tool_calls is {_type(value)}, not a list")
    fragments: list[tuple[int, str, str, str]] = []
    for position, item in enumerate(value):
        function = item.get("function") if item.__class__ is dict else None
        if function is None:
            function = {}
        index = item.get("index", position) if item.__class__ is dict else None
        if function.__class__ is not dict or not _count(index):
            raise _Malformed(f"tool_calls[{position}] is not a tool call fragment")
        call_id, name, arguments = item.get("id"), function.get("name"), function.get("arguments")
        if not all(f is None or f.__class__ is str for f in (call_id, name, arguments)):
            raise _Malformed(f"tool_calls[{position}] is not a tool call fragment")
        fragments.append((index or 0, call_id or "", name or "", arguments or ""))
    return fragments


def _advance(previous: str, wire: str) -> tuple[str, str, bool]:
    """Cumulative mode: what ``wire`` adds to ``previous``, the new snapshot, and whether
    the text was rewritten (then the text starts over from ``wire``)."""
    if wire.startswith(previous):
        return wire[len(previous) :], (wire if wire else previous), False
    if not wire:
        return "", previous, False
    return wire, wire, True


def _count(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and 0 <= value < 2**53


def _type(value: object) -> str:
    return type(value).__name__


def _dumps(obj: Any) -> str:
    try:
        return json.dumps(obj, ensure_ascii=False)
    except (ValueError, TypeError, RecursionError):
        return "<unprintable>"


def _malformed(sse: ServerSentEvent, what: str, data: str) -> StreamError:
    shown = excerpt(data)
    return StreamError(
        f"malformed event (id {sse.id[:40] or '?'}): {what}: {shown}", excerpt=shown
    )


# -- errors ------------------------------------------------------------------------------


def error_from_frame(sse: ServerSentEvent, header_request_id: str | None) -> APIStatusError:
    """An ``event:error`` frame: the status is in its ``:HTTP_STATUS/<n>`` comment."""
    obj = parse_json(sse.data)
    if not isinstance(obj, dict):
        obj = {"message": f"malformed error event: {excerpt(sse.data)}"}
    match = _HTTP_STATUS.search(sse.comment or "")
    status = int(match.group(1)) if match else 500
    return api_error(status, obj, header_request_id)


def error_from_body(
    status: int, reason: str | None, body: bytes, headers: Mapping[str, str]
) -> APIStatusError:
    """An HTTP error answer: DashScope's ``{code, message, request_id}`` JSON, the same
    framed as SSE by some gateways, an OpenAI-style ``{"error": {...}}``, or any text."""
    text = body.decode("utf-8", "replace")
    obj = parse_json(text)
    if obj is _FAILED:
        decoder = SSEDecoder(max_size=len(body) + 1, implicit_dispatch=True)
        for sse in decoder.feed(body) + decoder.close(dispatch_incomplete=True):
            obj = parse_json(sse.data)
            if obj is not _FAILED:
                break
    if isinstance(obj, dict) and isinstance(obj.get("error"), dict):
        obj = obj["error"]  # an OpenAI-style body from a compatible gateway
    if not isinstance(obj, dict):
        obj = {"message": f"{reason or 'error'}: {excerpt(text)}" if text else None}
    return api_error(status, obj, headers.get("x-request-id"))


def api_error(status: int, obj: dict[str, Any], request_id: str | None) -> APIStatusError:
    """The ``APIStatusError`` for ``status`` from DashScope's error object."""
    code, message, body_request_id = obj.get("code"), obj.get("message"), obj.get("request_id")
    if isinstance(code, int) and not isinstance(code, bool):
        code = str(code)
    return error_for_status(
        status,
        message[:_MESSAGE_LIMIT] if isinstance(message, str) and message else f"HTTP {status}",
        code=code[:200] if isinstance(code, str) and code else None,
        request_id=(body_request_id if isinstance(body_request_id, str) else None)
        or request_id
        or None,
    )
