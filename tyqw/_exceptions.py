"""Every error tyqw raises or emits.

The tree::

    TyqwError
    ├── MissingAPIKeyError          no api_key and no DASHSCOPE_API_KEY
    ├── SessionClosedError          the Session was used after aclose()
    ├── HandlerError                a handler raised (the original is __cause__)
    ├── StoreError                  a conversation store failed (at a turn's start: nothing sent)
    ├── RecordedError               an error read back from a transcript (``Exchange``)
    ├── APIStatusError              the service answered with an error
    │   ├── BadRequestError             400
    │   │   └── ContextLengthError          the conversation is longer than the model reads
    │   ├── AuthenticationError         401
    │   ├── PermissionDeniedError       403
    │   ├── NotFoundError               404
    │   ├── RateLimitError              429
    │   └── InternalServerError         500 and above
    ├── APIConnectionError          the network failed, at any phase of the turn
    │   ├── APITimeoutError             a time limit expired (also a builtin TimeoutError)
    │   └── ConnectionLostError         the connection broke mid-reply (also Incomplete...)
    └── StreamError                 the reply arrived in a shape tyqw cannot read
        ├── UnexpectedContentTypeError  not text/event-stream (an HTML page from a proxy)
        ├── EventTooLargeError          one line or event past the size cap
        └── IncompleteStreamError       the stream ended before its final event

The tree groups failures by what happened, not by when: ``except APIConnectionError``
catches every network failure, before the answer or in the middle of it.
``ConnectionLostError`` is both an ``APIConnectionError`` and an
``IncompleteStreamError``, so code written for either keeps working.

Errors that happen during a turn carry the partial reply as ``.reply``, so nothing
received before the error is lost. No message, attribute or chained cause ever holds
the API key.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ._models import Reply

__all__ = [
    "APIConnectionError",
    "APIStatusError",
    "APITimeoutError",
    "AuthenticationError",
    "BadRequestError",
    "ConnectionLostError",
    "ContextLengthError",
    "EventTooLargeError",
    "HandlerError",
    "IncompleteStreamError",
    "InternalServerError",
    "MissingAPIKeyError",
    "NotFoundError",
    "PermissionDeniedError",
    "RateLimitError",
    "RecordedError",
    "SessionClosedError",
    "StoreError",
    "StreamError",
    "TyqwError",
    "UnexpectedContentTypeError",
]

EXCERPT_LIMIT = 200


def excerpt(data: bytes | str, limit: int = EXCERPT_LIMIT) -> str:
    """A short, printable excerpt of what arrived, for error messages."""
    if isinstance(data, bytes):
        data = data[: limit * 4].decode("utf-8", "replace")
    text = data[:limit]
    suffix = "..." if len(data) > limit else ""
    return repr(text + suffix) if text else "''"


class TyqwError(Exception):
    """The root of every tyqw error.

    Example::

        try:
            await session.send("你好")
        except tyqw.TyqwError as exc:
            print("failed:", exc, "partial text:", exc.reply and exc.reply.text)
    """

    reply: Reply | None
    """The partial reply of the turn that failed, or ``None`` outside a turn."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message
        self.reply = None


class MissingAPIKeyError(TyqwError):
    """No API key: pass ``api_key=`` or set ``DASHSCOPE_API_KEY``."""


class SessionClosedError(TyqwError, RuntimeError):
    """The Session was used after ``aclose()``."""


class HandlerError(TyqwError):
    """An event handler raised; the handler's exception is ``__cause__``."""


class StoreError(TyqwError):
    """A conversation store could not be used: Redis unreachable, a lock not granted...

    At the start of a turn it is raised before any request is sent, so the turn can
    simply be tried again. At the end of a turn (the reply arrived, but the store could
    not record it) the message says the turn ran and ``.reply`` holds the whole reply;
    a turn stopped because its lock was lost (a lease that could not be renewed) holds
    the partial reply. The store's own exception is ``__cause__``.
    """


class RecordedError(TyqwError):
    """The error of a past turn, read back from its conversation's transcript.

    An exchange keeps its error as a readable record, not as a live exception: ``kind``
    is the original class name (``"RateLimitError"``), ``str(exc)`` its message, and
    ``code`` / ``status_code`` the service's code and HTTP status when it had them.

    Example::

        for exchange in await session.history():
            if exchange.reply.error is not None:
                print(exchange.reply.error.kind, exchange.reply.error)
    """

    def __init__(
        self,
        message: str,
        *,
        kind: str,
        code: str | None = None,
        status_code: int | None = None,
    ) -> None:
        super().__init__(message)
        self.kind = kind
        self.code = code
        self.status_code = status_code

    def __repr__(self) -> str:
        return f"RecordedError({self.kind}: {self.message!r})"


class APIStatusError(TyqwError):
    """The service answered with an error status, over HTTP or inside the stream.

    ``status_code`` is the HTTP status, or for an in-stream ``event:error`` the status
    from its ``:HTTP_STATUS/<n>`` line. ``code`` and ``request_id`` are DashScope's.

    Example::

        except tyqw.RateLimitError as exc:
            print(exc.status_code, exc.code, exc.request_id)   # 429 Throttling ...
    """

    def __init__(
        self,
        message: str,
        *,
        status_code: int,
        code: str | None = None,
        request_id: str | None = None,
    ) -> None:
        self.status_code = status_code
        self.code = code
        self.request_id = request_id
        details = [f"HTTP {status_code}"]
        if code:
            details.append(f"code {code}")
        if request_id:
            details.append(f"request_id {request_id}")
        super().__init__(f"{message} ({', '.join(details)})")
        self.message = message


class BadRequestError(APIStatusError):
    """400: the request was invalid (``InvalidParameter``, ``DataInspectionFailed``...)."""


class ContextLengthError(BadRequestError):
    """400: the messages sent are longer than the model's context ("Range of input
    length should be [1, n]"); a model session's ``max_history_chars`` keeps the
    history it sends under a budget, so this means the budget is too large for the
    model, or the prompt alone is too long.

    Example::

        except tyqw.ContextLengthError:
            session.clear()                      # or lower max_history_chars
    """


class AuthenticationError(APIStatusError):
    """401: the API key is wrong, or belongs to another region (``InvalidApiKey``)."""


class PermissionDeniedError(APIStatusError):
    """403: no access to the app or workspace (``App.AccessDenied``...)."""


class NotFoundError(APIStatusError):
    """404: the resource does not exist."""


class RateLimitError(APIStatusError):
    """429: throttled or out of quota (``Throttling``...)."""


class InternalServerError(APIStatusError):
    """500 and above: the service failed (``InternalError``...)."""


class APIConnectionError(TyqwError):
    """The network failed: the host could not be reached, the connection broke, or a
    time limit expired, before the answer started or in the middle of it.

    Example::

        except tyqw.APIConnectionError:      # any network failure: worth another try
            reply = await session.send("你好")
    """


class StreamError(TyqwError):
    """The reply arrived in a shape tyqw cannot read.

    ``excerpt`` holds a short, bounded piece of what arrived.
    """

    def __init__(self, message: str, *, excerpt: str = "") -> None:
        super().__init__(message)
        self.excerpt = excerpt


class UnexpectedContentTypeError(StreamError):
    """The answer was not ``text/event-stream`` (or not JSON in non-streaming mode)."""

    def __init__(self, message: str, *, status_code: int, content_type: str, excerpt: str) -> None:
        super().__init__(message, excerpt=excerpt)
        self.status_code = status_code
        self.content_type = content_type


class EventTooLargeError(StreamError):
    """One SSE line or event grew past the size cap; nothing past the cap was buffered."""

    def __init__(self, message: str, *, limit: int) -> None:
        super().__init__(message)
        self.limit = limit


class IncompleteStreamError(StreamError):
    """The stream ended before its final event (the one with ``finish_reason`` ``"stop"``).

    ``.reply`` holds everything received before the end.
    """


class APITimeoutError(APIConnectionError, TimeoutError):
    """A time limit expired: connecting, sending, waiting for bytes, or the deadline.

    Also a builtin ``TimeoutError``, so ``except TimeoutError`` catches it.
    """


class ConnectionLostError(APIConnectionError, IncompleteStreamError):
    """The connection broke in the middle of the reply; ``.reply`` holds what arrived."""


_STATUS_CLASSES: dict[int, type[APIStatusError]] = {
    400: BadRequestError,
    401: AuthenticationError,
    403: PermissionDeniedError,
    404: NotFoundError,
    429: RateLimitError,
}


def error_for_status(
    status_code: int, message: str, *, code: str | None, request_id: str | None
) -> APIStatusError:
    """The ``APIStatusError`` subclass for ``status_code``."""
    if status_code >= 500:
        cls: type[APIStatusError] = InternalServerError
    else:
        cls = _STATUS_CLASSES.get(status_code, APIStatusError)
    if cls is BadRequestError and _CONTEXT_LENGTH in message:
        cls = ContextLengthError
        message = f"the conversation is too long for the model's context: {message}"
    return cls(message, status_code=status_code, code=code, request_id=request_id)


# DashScope's words for input past a model's context (generation error reference).
_CONTEXT_LENGTH = "Range of input length should be"
