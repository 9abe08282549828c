"""A conversation's transcript: one ``Exchange`` per finished turn, and its JSON form.

A store keeps exchanges as JSON-compatible dicts (``Exchange.to_dict()``), so a store
never needs tyqw's classes and any tool can read what it holds. The form carries a
version (``"v"``) and readers ignore keys they do not know, so later versions can add
to an exchange (a model's tool calls, its reasoning) without breaking older readers.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Any

from ._exceptions import RecordedError, TyqwError
from ._models import Reply, ToolCall

__all__ = [
    "DEFAULT_HISTORY",
    "FORMAT_VERSION",
    "Exchange",
    "Expiry",
    "check_expiry",
    "check_history",
    "context_messages",
    "ended_now",
]

DEFAULT_HISTORY = 200
"""Exchanges a Session keeps per conversation unless told otherwise.

The service itself keeps a conversation for 50 rounds: 200 holds four times that, enough
to show any conversation a person has in one sitting, and bounded so a bot talking with
one user for months keeps a transcript of a few hundred kilobytes, not an ever-growing one.
"""

FORMAT_VERSION = 1
"""The version of ``Exchange.to_dict()``'s form, stored as ``"v"``."""


def check_history(history: object) -> int:
    """``Session(history=...)`` as the number of exchanges to keep (0: none)."""
    if history is True:
        return DEFAULT_HISTORY
    if history is False:
        return 0
    if isinstance(history, bool) or not isinstance(history, int):
        raise TypeError(f"history must be True, False or an int, not {type(history).__name__}")
    if history < 0:
        raise ValueError("history must be >= 0 (the number of exchanges to keep)")
    return history


@dataclass(frozen=True, slots=True)
class Expiry:
    """When the service has forgotten a conversation, and how much of the transcript
    tyqw then sends instead of the forgotten id: ``Session(..., expiry=...)``.

    The service forgets a conversation ``idle`` seconds after its last turn (an hour)
    or once it holds ``rounds`` turns (50). When the stored id is known to be past
    either, the next turn sends the ``resend`` most recent exchanges of the transcript
    as ``input.messages`` (which the service reads in place of ``session_id``), and
    the id the service answers with continues from there. ``expiry=True`` (the
    default) is ``Expiry()``; ``expiry=False`` sends the stored id whatever its age.

    Example::

        Session("YOUR_APP_ID", expiry=Expiry(idle=1800))   # an app kept half an hour
    """

    idle: float = 3600.0
    rounds: int = 50
    resend: int = 20

    def __post_init__(self) -> None:
        idle = self.idle
        if isinstance(idle, bool) or not isinstance(idle, (int, float)) or not idle >= 0:
            raise ValueError("Expiry.idle must be a number of seconds >= 0")
        for name in ("rounds", "resend"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"Expiry.{name} must be an int >= 1")


def check_expiry(expiry: object) -> Expiry | None:
    """``Session(expiry=...)`` as the limits to watch, or ``None`` (not watched)."""
    if expiry is True:
        return Expiry()
    if expiry is False:
        return None
    if not isinstance(expiry, Expiry):
        raise TypeError(f"expiry must be True, False or an Expiry, not {type(expiry).__name__}")
    return expiry


def context_messages(exchanges: list[Exchange]) -> list[dict[str, str]]:
    """``exchanges`` as ``input.messages``: a user and an assistant turn each. A turn
    that got no text at all (it failed before any arrived) is left out: the service
    never saw it as a round either."""
    messages = []
    for exchange in exchanges:
        if exchange.reply.text:
            messages.append({"role": "user", "content": exchange.prompt})
            messages.append({"role": "assistant", "content": exchange.reply.text})
    return messages


def _now() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc)


@dataclass(frozen=True, slots=True)
class Exchange:
    """One turn of a conversation as its transcript keeps it: what was asked, the
    ``Reply`` (partial, with its ``error``, if the turn failed), and when it started
    and ended (aware datetimes, UTC).

    ``to_dict()`` gives the JSON-compatible form a store keeps and ``from_dict()``
    reads it back. A read-back reply's ``error`` is a ``RecordedError`` holding the
    original error's class name (``kind``), message, ``code`` and ``status_code``.

    Example::

        for exchange in await session.history():
            print(exchange.started_at, exchange.prompt, "->", exchange.reply.text)
    """

    prompt: str
    reply: Reply
    started_at: dt.datetime
    ended_at: dt.datetime

    def to_dict(self) -> dict[str, Any]:
        """The exchange as JSON-compatible data (``json.dumps`` takes it as is).

        Example::

            line = json.dumps(exchange.to_dict(), ensure_ascii=False)
        """
        reply = self.reply
        error = reply.error
        return {
            "v": FORMAT_VERSION,
            "prompt": self.prompt,
            "started_at": self.started_at.astimezone(dt.timezone.utc).isoformat(),
            "ended_at": self.ended_at.astimezone(dt.timezone.utc).isoformat(),
            "reply": {
                "text": reply.text,
                "session_id": reply.session_id,
                "request_id": reply.request_id,
                "finish_reason": reply.finish_reason,
                "usage": reply.usage,
                "thoughts": reply.thoughts,
                "doc_references": reply.doc_references,
                "error": None if error is None else _error_dict(error),
                # A model's turn: kept only when there is some, so an app's exchange
                # reads as it always did, and an older reader skips what it does not know.
                **({"reasoning": reply.reasoning} if reply.reasoning is not None else {}),
                **(
                    {"tool_calls": [_call_dict(call) for call in reply.tool_calls]}
                    if reply.tool_calls
                    else {}
                ),
            },
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Exchange:
        """The exchange ``to_dict()`` gave; keys it does not know are ignored.

        Raises ``ValueError`` for data that is not an exchange.

        Example::

            exchange = Exchange.from_dict(json.loads(line))
        """
        try:
            reply = data["reply"]
            error = reply.get("error")
            return cls(
                prompt=_text(data["prompt"]),
                reply=Reply(
                    text=_text(reply.get("text", "")),
                    session_id=_opt_text(reply.get("session_id")),
                    request_id=_opt_text(reply.get("request_id")),
                    finish_reason=_opt_text(reply.get("finish_reason")),
                    usage=_opt(reply.get("usage"), dict),
                    thoughts=_opt(reply.get("thoughts"), list),
                    doc_references=_opt(reply.get("doc_references"), list),
                    error=None if error is None else _read_error(error),
                    reasoning=_opt_text(reply.get("reasoning")),
                    tool_calls=tuple(_read_call(c) for c in reply.get("tool_calls") or ()),
                ),
                started_at=_time(data["started_at"]),
                ended_at=_time(data["ended_at"]),
            )
        except (KeyError, TypeError, AttributeError, ValueError) as exc:
            raise ValueError(f"not an exchange: {type(exc).__name__}: {exc}") from None


def ended_now(prompt: str, reply: Reply, started_at: dt.datetime) -> Exchange:
    """The exchange of a turn that ends now."""
    return Exchange(prompt, reply, started_at, _now())


def _call_dict(call: ToolCall) -> dict[str, Any]:
    return {
        "id": call.id,
        "name": call.name,
        "arguments": call.arguments,
        "result": call.result,
        "error": call.error,
    }


def _read_call(data: dict[str, Any]) -> ToolCall:
    return ToolCall(
        _text(data["id"]),
        _text(data["name"]),
        _text(data["arguments"]),
        _opt_text(data.get("result")),
        _opt_text(data.get("error")),
    )


def _error_dict(error: TyqwError) -> dict[str, Any]:
    kind = error.kind if isinstance(error, RecordedError) else type(error).__name__
    code = getattr(error, "code", None)
    status_code = getattr(error, "status_code", None)
    return {
        "type": kind,
        "message": str(error),
        "code": code if isinstance(code, str) else None,
        "status_code": status_code if isinstance(status_code, int) else None,
    }


def _read_error(data: dict[str, Any]) -> RecordedError:
    status_code = data.get("status_code")
    return RecordedError(
        _text(data.get("message", "")),
        kind=_text(data["type"]),
        code=_opt_text(data.get("code")),
        status_code=status_code
        if isinstance(status_code, int) and not isinstance(status_code, bool)
        else None,
    )


def _text(value: object) -> str:
    if not isinstance(value, str):
        raise TypeError(f"expected a string, got {type(value).__name__}")
    return value


def _opt_text(value: object) -> str | None:
    return None if value is None else _text(value)


def _opt(value: Any, kind: type) -> Any:
    if value is None or isinstance(value, kind):
        return value
    raise TypeError(f"expected {kind.__name__} or null, got {type(value).__name__}")


def _time(value: object) -> dt.datetime:
    parsed = dt.datetime.fromisoformat(_text(value))
    if parsed.tzinfo is None:
        raise ValueError("a time without a time zone")
    return parsed.astimezone(dt.timezone.utc)
