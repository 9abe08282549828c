"""Injected failures: :class:`Fault`, and the one place where each kind is interpreted.

A fault is plain data built by a constructor. What it does lives in one action class per
kind, which says how the fault acts at each of the three places it can: before the
request is checked (a gateway answering in the service's stead), on a stream once
``after`` events were sent, and on the one body of a non-streaming answer.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Literal

from aiohttp import web

from .._wire import error_body
from . import generation
from .answers import Answer, padded_payload
from .errors import describe
from .generation import Generation
from .streams import BodyWriter, EventWriter, Exchange, json_response

# An app's answer or a model's: faults act on both the same way.
Answers = Answer | Generation

FaultKind = Literal[
    "http",
    "stream_error",
    "cut",
    "truncate",
    "stall",
    "drip",
    "malformed",
    "content_type",
    "oversized",
    "headers_stall",
]

_BAD_GATEWAY_PAGE = (
    b"<html>\r\n<head><title>502 Bad Gateway</title></head>\r\n<body>\r\n"
    b"<center><h1>502 Bad Gateway</h1></center>\r\n</body>\r\n</html>\r\n"
)


def _number(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else str(value)


@dataclass(frozen=True, slots=True)
class Fault:
    """One injected failure; build it with a classmethod and pass it to ``sim.inject``.

    ``after`` counts the normal ``result`` events sent before the fault strikes; if it
    is past the end of the stream the fault strikes after the final event. On a
    non-streaming request the stream faults act on the one JSON body instead (see each
    constructor). Example::

        sim.inject(Fault.stream_error(after=2, code="DataInspectionFailed"))
        sim.inject(Fault.cut(after=1), times=3)
    """

    kind: FaultKind
    after: int = 0
    status: int = 500
    code: str | None = None
    message: str | None = None
    retry_after: float | None = None
    retry_after_ms: float | None = None
    seconds: float = 0.0
    keepalive: float | None = None
    data: str = ""
    media_type: str = ""
    body: bytes = b""
    size: int = 0

    def __post_init__(self) -> None:
        if self.after < 0:
            raise ValueError("after must be >= 0")
        if self.seconds < 0:
            raise ValueError("seconds must be >= 0")
        if self.keepalive is not None and self.keepalive <= 0:
            raise ValueError("keepalive must be > 0")
        if not 100 <= self.status <= 599:
            raise ValueError("status must be an HTTP status code")

    @classmethod
    def http(
        cls,
        status: int,
        code: str | None = None,
        message: str | None = None,
        *,
        retry_after: float | None = None,
        retry_after_ms: float | None = None,
    ) -> Fault:
        """Answer with an HTTP error and a DashScope JSON body ``{code,message,request_id}``.

        ``code`` defaults per status (429 ``Throttling``, 500 ``InternalError`` ...) and
        ``message`` per code, else per status; ``retry_after`` sets ``Retry-After``
        (seconds), ``retry_after_ms`` sets ``retry-after-ms``. Applies before any request
        validation, like a gateway::

            sim.inject(Fault.http(429, retry_after=1.0))
            sim.inject(Fault.http(403, "Workspace.AccessDenied", "Workspace access denied."))
        """
        if status < 400:
            raise ValueError("Fault.http needs an error status (400-599)")
        return cls(
            "http",
            status=status,
            code=code,
            message=message,
            retry_after=retry_after,
            retry_after_ms=retry_after_ms,
        )

    @classmethod
    def stream_error(
        cls, after: int = 0, status: int = 500, code: str | None = None, message: str | None = None
    ) -> Fault:
        """Send ``after`` result events, then an ``event:error`` frame, then end.

        The frame is ``id:<n>\\nevent:error\\n:HTTP_STATUS/<status>\\ndata:{...}\\n`` with
        no closing blank line, as captured from the real service; the message defaults per
        code (``DataInspectionFailed`` has its own), else per status. On a non-streaming
        request: an HTTP ``status`` error with that JSON body::

            sim.inject(Fault.stream_error(after=3, status=400, code="DataInspectionFailed"))
        """
        return cls("stream_error", after=after, status=status, code=code, message=message)

    @classmethod
    def cut(cls, after: int = 0) -> Fault:
        """Send ``after`` result events, then close the TCP connection mid-body.

        No chunked terminator is sent, so the client sees a broken payload. On a
        non-streaming request the connection closes before any response::

            sim.inject(Fault.cut(after=2))
        """
        return cls("cut", after=after)

    @classmethod
    def truncate(cls, after: int = 0) -> Fault:
        """Send ``after`` result events, then end the response cleanly without ``stop``.

        On a non-streaming request: the first half of the JSON body, then a clean end::

            sim.inject(Fault.truncate(after=2))
        """
        return cls("truncate", after=after)

    @classmethod
    def stall(cls, seconds: float, after: int = 0, keepalive: float | None = None) -> Fault:
        """Send headers and ``after`` events, go quiet for ``seconds``, then carry on.

        With ``keepalive=x`` the quiet period carries an SSE comment ``:\\n\\n`` every ``x``
        seconds. Stops at once when the client goes away. On a non-streaming request:
        wait before answering::

            sim.inject(Fault.stall(30, after=1))  # trips a 1 s idle-read timeout
        """
        return cls("stall", after=after, seconds=seconds, keepalive=keepalive)

    @classmethod
    def drip(cls, after: int = 0) -> Fault:
        """Send ``after`` events normally, then the rest one byte per write.

        For testing parsers against every possible split::

            sim.inject(Fault.drip())
        """
        return cls("drip", after=after)

    @classmethod
    def malformed(cls, after: int = 1, data: str = "{not json") -> Fault:
        """After ``after`` events, send one extra ``result`` event with this ``data``.

        ``data`` must be one line; ``'{"foo":1}'`` gives valid JSON without ``output``.
        The stream then continues normally (later ids shift by one). On a
        non-streaming request: ``data`` is the whole 200 body::

            sim.inject(Fault.malformed(after=1, data='{"foo":1}'))
        """
        if "\n" in data or "\r" in data:
            raise ValueError("data must be a single line")
        return cls("malformed", after=after, data=data)

    @classmethod
    def content_type(
        cls,
        content_type: str = "text/html",
        body: bytes = _BAD_GATEWAY_PAGE,
        status: int = 200,
    ) -> Fault:
        """Answer with this status, content type and body instead of the API's reply.

        Defaults to an nginx "502 Bad Gateway" HTML page sent with status 200, the way a
        misbehaving proxy does::

            sim.inject(Fault.content_type("text/plain", b"upstream timed out", status=504))
        """
        return cls("content_type", status=status, media_type=content_type, body=body)

    @classmethod
    def oversized(cls, size: int, after: int = 0) -> Fault:
        """After ``after`` events, send one extra event whose JSON data is ``size`` bytes.

        It is a valid, non-final event with a huge ``output.text``; the stream then
        continues. On a non-streaming request: a ``size``-byte JSON body::

            sim.inject(Fault.oversized(2**20))
        """
        if size < 0:
            raise ValueError("size must be >= 0")
        return cls("oversized", after=after, size=size)

    @classmethod
    def headers_stall(cls, seconds: float) -> Fault:
        """Accept the request but send nothing, not even headers, for ``seconds``.

        Then answer normally. Stops at once when the client goes away::

            sim.inject(Fault.headers_stall(30))  # trips a timeout before headers
        """
        return cls("headers_stall", seconds=seconds)


class FaultAction:
    """How one kind of fault acts; by default it changes nothing at that place."""

    async def at_gateway(
        self, fault: Fault, ex: Exchange, request_id: str
    ) -> web.StreamResponse | None:
        """Before any check: an answer in the service's stead, or None to go on."""
        return None

    def opens_finished(self, fault: Fault) -> bool:
        """Whether the stream's headers already say ``x-dashscope-finished: true``."""
        return False

    async def in_stream(self, fault: Fault, out: EventWriter, answer: Answers) -> bool:
        """Strike after ``fault.after`` events; False when the stream ended here."""
        return True

    async def in_body(self, fault: Fault, out: BodyWriter, answer: Answers) -> web.StreamResponse:
        """Shape the one JSON body of a non-streaming answer."""
        return await out.finish()


class _Http(FaultAction):
    async def at_gateway(
        self, fault: Fault, ex: Exchange, request_id: str
    ) -> web.StreamResponse | None:
        code, message = describe(fault.status, fault.code, fault.message)
        extra = {}
        if fault.retry_after is not None:
            extra["Retry-After"] = _number(fault.retry_after)
        if fault.retry_after_ms is not None:
            extra["retry-after-ms"] = _number(fault.retry_after_ms)
        return json_response(
            fault.status, error_body(code, message, request_id), request_id, extra
        )


class _ContentType(FaultAction):
    async def at_gateway(
        self, fault: Fault, ex: Exchange, request_id: str
    ) -> web.StreamResponse | None:
        headers = {"Content-Type": fault.media_type, "x-request-id": request_id}
        return web.Response(status=fault.status, body=fault.body, headers=headers)


class _HeadersStall(FaultAction):
    async def at_gateway(
        self, fault: Fault, ex: Exchange, request_id: str
    ) -> web.StreamResponse | None:
        await asyncio.sleep(fault.seconds)
        return None


class _StreamError(FaultAction):
    def opens_finished(self, fault: Fault) -> bool:
        return fault.after == 0

    async def in_stream(self, fault: Fault, out: EventWriter, answer: Answers) -> bool:
        await out.error(fault.status, fault.code, fault.message)
        await out.end()
        return False

    async def in_body(self, fault: Fault, out: BodyWriter, answer: Answers) -> web.StreamResponse:
        return out.error(fault.status, fault.code, fault.message)


class _Cut(FaultAction):
    async def in_stream(self, fault: Fault, out: EventWriter, answer: Answers) -> bool:
        out.cut()
        return False

    async def in_body(self, fault: Fault, out: BodyWriter, answer: Answers) -> web.StreamResponse:
        return out.ex.cut()


class _Truncate(FaultAction):
    async def in_stream(self, fault: Fault, out: EventWriter, answer: Answers) -> bool:
        await out.end()
        return False

    async def in_body(self, fault: Fault, out: BodyWriter, answer: Answers) -> web.StreamResponse:
        await out.start()
        await out.ex.send(out.body[: len(out.body) // 2])
        return await out.ex.end()


class _Stall(FaultAction):
    async def in_stream(self, fault: Fault, out: EventWriter, answer: Answers) -> bool:
        if fault.keepalive is None:
            await asyncio.sleep(fault.seconds)
            return True
        loop = asyncio.get_running_loop()
        deadline = loop.time() + fault.seconds
        while (left := deadline - loop.time()) > 0:
            if left <= fault.keepalive:
                await asyncio.sleep(left)
                break
            await asyncio.sleep(fault.keepalive)
            await out.keepalive()
        return True

    async def in_body(self, fault: Fault, out: BodyWriter, answer: Answers) -> web.StreamResponse:
        await asyncio.sleep(fault.seconds)
        return await out.finish()


class _Drip(FaultAction):
    async def in_stream(self, fault: Fault, out: EventWriter, answer: Answers) -> bool:
        out.dripping = True
        return True

    async def in_body(self, fault: Fault, out: BodyWriter, answer: Answers) -> web.StreamResponse:
        await out.start()
        await out.ex.drip(out.body)
        out.commit()
        return await out.ex.end()


class _Malformed(FaultAction):
    async def in_stream(self, fault: Fault, out: EventWriter, answer: Answers) -> bool:
        await out.result(fault.data)
        return True

    async def in_body(self, fault: Fault, out: BodyWriter, answer: Answers) -> web.StreamResponse:
        return out.raw(fault.data.encode())


class _Oversized(FaultAction):
    async def in_stream(self, fault: Fault, out: EventWriter, answer: Answers) -> bool:
        await out.result(_padded(answer, fault.size))
        return True

    async def in_body(self, fault: Fault, out: BodyWriter, answer: Answers) -> web.StreamResponse:
        return out.raw(_padded(answer, fault.size).encode())


_ACTIONS: dict[FaultKind, FaultAction] = {
    "http": _Http(),
    "content_type": _ContentType(),
    "headers_stall": _HeadersStall(),
    "stream_error": _StreamError(),
    "cut": _Cut(),
    "truncate": _Truncate(),
    "stall": _Stall(),
    "drip": _Drip(),
    "malformed": _Malformed(),
    "oversized": _Oversized(),
}

_NO_FAULT = FaultAction()


def action_of(fault: Fault | None) -> FaultAction:
    """How ``fault`` acts; no fault acts on nothing."""
    return _NO_FAULT if fault is None else _ACTIONS[fault.kind]


def _padded(answer: Answers, size: int) -> str:
    if isinstance(answer, Generation):
        return generation.padded_payload(answer, size)
    return padded_payload(answer, size)
