"""The response side of one request: raw writes, SSE events, and JSON bodies.

:class:`Exchange` owns the aiohttp response (start, write, drip, end, cut the TCP
connection); :class:`EventWriter` numbers and frames the events of a stream;
:class:`BodyWriter` sends the one body of a non-streaming answer. Faults act through
these, so that what a fault does is written in terms of the protocol, not of aiohttp.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

from aiohttp import web

from .._wire import JSON_TYPE, KEEPALIVE, SSE_TYPE, compress, dumps, error_body, frame
from .errors import describe


def json_headers(request_id: str) -> dict[str, str]:
    return {"Content-Type": JSON_TYPE, "x-request-id": request_id, "x-dashscope-finished": "true"}


def json_response(
    status: int, payload: Any, request_id: str, extra: dict[str, str] | None = None
) -> web.Response:
    headers = json_headers(request_id)
    if extra:
        headers.update(extra)
    return web.Response(status=status, body=dumps(payload).encode(), headers=headers)


class Exchange:
    """What was started of one response, and how to write to it."""

    __slots__ = ("request", "resp")

    def __init__(self, request: web.BaseRequest) -> None:
        self.request = request
        self.resp: web.StreamResponse | None = None

    async def start(self, status: int, headers: dict[str, str]) -> None:
        self.resp = web.StreamResponse(status=status, headers=headers)
        await self.resp.prepare(self.request)

    async def send(self, data: bytes) -> None:
        assert self.resp is not None
        await self.resp.write(data)

    async def drip(self, data: bytes) -> None:
        for i in range(len(data)):
            await self.send(data[i : i + 1])
            await asyncio.sleep(0)  # let each byte leave as its own segment

    async def end(self) -> web.StreamResponse:
        assert self.resp is not None
        await self.resp.write_eof()
        return self.resp

    def cut(self) -> web.StreamResponse:
        """Close the TCP connection now, with no chunked terminator."""
        transport = self.request.transport
        if transport is not None:
            transport.close()
        # aiohttp's attempt to finish this response hits the closed transport and is
        # treated as a premature disconnect, so nothing more is written.
        return self.resp or web.Response()


class EventWriter:
    """The events of one stream, numbered from 1; ``dripping`` sends each byte alone."""

    __slots__ = ("dripping", "ex", "next_id", "request_id")

    def __init__(self, ex: Exchange, request_id: str) -> None:
        self.ex = ex
        self.request_id = request_id
        self.next_id = 1
        self.dripping = False

    async def open(self, *, finished: bool) -> None:
        await self.ex.start(
            200,
            {
                "Content-Type": SSE_TYPE,
                "x-request-id": self.request_id,
                "x-dashscope-call-gateway": "true",
                "x-dashscope-timeout": "180",
                "x-dashscope-finished": "true" if finished else "false",
            },
        )

    async def result(self, data: str) -> None:
        """One ``result`` event with this ``data`` line."""
        raw = frame(self.next_id, data)
        self.next_id += 1
        if self.dripping:
            await self.ex.drip(raw)
        else:
            await self.ex.send(raw)

    async def error(self, status: int, code: str | None, message: str | None) -> None:
        """The ``event:error`` frame that ends a stream, with no closing blank line."""
        code, message = describe(status, code, message)
        data = dumps(error_body(code, message, self.request_id))
        await self.ex.send(frame(self.next_id, data, event="error", status=status, end=False))
        self.next_id += 1

    async def keepalive(self) -> None:
        await self.ex.send(KEEPALIVE)

    async def end(self) -> web.StreamResponse:
        return await self.ex.end()

    def cut(self) -> web.StreamResponse:
        return self.ex.cut()

    @property
    def response(self) -> web.StreamResponse:
        return self.ex.resp or web.Response()


class BodyWriter:
    """The one JSON body of a non-streaming answer; ``finish()`` sends it as the service
    does (gzip-compressed when the request accepts it) and records the turn."""

    __slots__ = ("body", "commit", "ex", "gzip", "request_id")

    def __init__(
        self, ex: Exchange, request_id: str, body: bytes, commit: Callable[[], None], gzip: bool
    ) -> None:
        self.ex = ex
        self.request_id = request_id
        self.body = body
        self.commit = commit
        self.gzip = gzip

    async def finish(self) -> web.StreamResponse:
        self.commit()
        headers = json_headers(self.request_id)
        if not self.gzip:
            return web.Response(body=self.body, headers=headers)
        headers["Content-Encoding"] = "gzip"
        headers["Vary"] = "Accept-Encoding"
        return web.Response(body=compress(self.body), headers=headers)

    def error(self, status: int, code: str | None, message: str | None) -> web.StreamResponse:
        code, message = describe(status, code, message)
        return json_response(status, error_body(code, message, self.request_id), self.request_id)

    def raw(self, body: bytes) -> web.StreamResponse:
        """This body instead of the answer, with the answer's headers."""
        return web.Response(body=body, headers=json_headers(self.request_id))

    async def start(self) -> None:
        await self.ex.start(200, json_headers(self.request_id))
