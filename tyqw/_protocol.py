"""Bailian's JSON to tyqw's objects, in one place: events to ``Message``, a turn's events
to its ``Reply``, error bodies and ``event:error`` frames to ``APIStatusError``.

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
from collections.abc import Callable, Mapping
from typing import Any

from ._exceptions import APIStatusError, StreamError, TyqwError, error_for_status, excerpt
from ._models import Message, Reply, TokenUsage, _Text, new_message
from ._options import is_session_id
from .sse import ServerSentEvent, SSEDecoder

__all__ = ["ReplyReader", "error_from_body", "error_from_frame", "is_final", "parse_json"]

logger = logging.getLogger("tyqw")

_HTTP_STATUS = re.compile(r"HTTP_STATUS/(\d{3})")
_NOT_FINAL = frozenset({"", "null", "none"})
_MESSAGE_LIMIT = 2000
_FAILED = object()


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
    """Reads one turn's events: keeps the text (right in both wire modes), the ids, the
    usage, thoughts and references seen so far, and builds the ``Reply``.

    ``on_session_id`` is called with each new conversation id the service sends.
    """

    __slots__ = (
        "cumulative",
        "doc_references",
        "finish_reason",
        "header_request_id",
        "incremental",
        "on_session_id",
        "request_id",
        "session_id",
        "text",
        "thoughts",
        "usage",
    )

    def __init__(self, *, incremental: bool, on_session_id: Callable[[str], None]) -> None:
        self.incremental = incremental
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

    def message(self, obj: dict[str, Any], output: dict[str, Any]) -> Message:
        """The ``Message`` of one result event; raises ``_Malformed`` and keeps nothing
        if a known field has the wrong type."""
        # Runs once per event: every check is a class test, done before any state changes.
        get = output.get
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

    def malformed(self, sse: ServerSentEvent, exc: _Malformed) -> StreamError:
        return _malformed(sse, str(exc), sse.data)

    def json_answer(self, obj: Any) -> Message:
        """The one ``Message`` of a non-streaming (JSON) answer."""
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
        text = self.text
        return Reply(
            text=text.upto(text.length),
            session_id=self.session_id,
            request_id=self.request_id or self.header_request_id,
            finish_reason=self.finish_reason,
            usage=self.usage,
            thoughts=self.thoughts,
            doc_references=self.doc_references,
            error=error,
        )

    def token_usage(self) -> dict[str, TokenUsage]:
        """The turn's tokens per model, from the last usage the service reported."""
        models = self.usage.get("models") if self.usage else None
        totals: dict[str, TokenUsage] = {}
        for model in models if isinstance(models, list) else ():
            if not isinstance(model, dict):
                continue
            model_id = model.get("model_id")
            read, wrote = model.get("input_tokens", 0), model.get("output_tokens", 0)
            if isinstance(model_id, str) and _count(read) and _count(wrote):
                totals[model_id] = totals.get(model_id, TokenUsage()) + TokenUsage(read, wrote)
        return totals


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
