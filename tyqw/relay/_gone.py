"""The client's side of a relay request: its body read within a time, its answer's
writes grouped and watched, and its turn ended when it goes away. Every relay endpoint
(the native one and the chat dialects) runs its turn through ``unless_gone()``."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Coroutine
from typing import Any

from aiohttp import web

from .. import MessageStream
from .._http import read_body
from ._request import Refused

__all__ = ["DISCONNECT_POLL", "HELD_AT_MOST", "Writing", "hang_up", "read_within", "unless_gone"]

logger = logging.getLogger("tyqw.relay")

DISCONNECT_POLL = 0.25  # seconds: how soon a vanished client's upstream turn is closed
# Bytes of frames held for one write at most: aiohttp's own unit between two waits for
# a slow client (its writer drains every 64 KiB), so holding never defers that wait.
HELD_AT_MOST = 64 * 1024


class Writing:
    """The writes of one streamed answer to its client.

    Frames of messages that are already read (one upstream read often carries many
    events) are held and sent together, in one write: one ``send()`` instead of one per
    event. A frame whose next message is not ready is sent at once, so holding adds no
    wait. ``since``: when the write under way began (``None``: none is). A client that
    stops reading blocks a write, and with it the turn and its user's conversation lock;
    one watch per request reads this, rather than a timer per event.

    Example::

        async for message in stream:
            if writing.keep(frame_of(message), stream):
                await writing.send(response)
        await writing.send(response, last=True)
    """

    __slots__ = ("_held", "_size", "since")

    def __init__(self) -> None:
        self.since: float | None = None
        self._held: list[bytes] = []
        self._size = 0

    def keep(self, data: bytes, stream: MessageStream) -> bool:
        """Hold ``data``, what one message of ``stream`` makes (``b""``: nothing); True
        when what is held should be sent now: the stream's next message has not been
        read yet, or enough is held (what is held is bounded, and so is each write)."""
        if data:
            self._held.append(data)
            self._size += len(data)
            if self._size >= HELD_AT_MOST:
                return True
        return bool(self._held) and not stream._ahead()

    async def send(
        self, response: web.StreamResponse, data: bytes = b"", *, last: bool = False
    ) -> None:
        """Write what is held, then ``data``, in one write; ``last`` ends the answer."""
        held = self._held
        if held:
            if data:
                held.append(data)
            data = b"".join(held)
            held.clear()
            self._size = 0
        # Watched by unless_gone(): a client that stops reading blocks this write.
        self.since = time.monotonic()
        if last:
            await response.write_eof(data)  # the data and the end in one write
        elif data:
            await response.write(data)
        self.since = None


async def read_within(request: web.Request, limit: int, timeout: float) -> bytes:
    """At most ``limit`` bytes of the request's body, or a 408 if they have not all
    arrived within ``timeout`` seconds (answer it with ``hang_up()``)."""
    try:
        return await asyncio.wait_for(read_body(request.content, limit), timeout)
    except asyncio.TimeoutError:
        raise Refused(
            408, "RequestTimeOut", f"The request body did not arrive within {timeout:g}s."
        ) from None


async def hang_up(request: web.Request, answer: web.Response) -> web.Response:
    """Send ``answer`` and close the connection: after a body that stalled, aiohttp would
    wait (linger) for the rest of it before closing, and it may never come."""
    answer.force_close()
    await answer.prepare(request)
    await answer.write_eof()
    if request.transport is not None:
        request.transport.close()
    return answer


async def unless_gone(
    request: web.Request,
    work: Coroutine[Any, Any, web.StreamResponse],
    writing: Writing,
    send_timeout: float,
) -> web.StreamResponse:
    """Run ``work`` until it is done, the client's connection has closed, or the client
    has read nothing for ``send_timeout`` seconds (then its connection is dropped).

    aiohttp tells a handler of a disconnect only when it writes, and a turn may wait a
    long time between events: the turn runs in a child task, cancelled the moment the
    connection is seen closed, which closes the upstream response at once.
    """
    task = asyncio.ensure_future(work)
    try:
        while True:
            done, _ = await asyncio.wait((task,), timeout=DISCONNECT_POLL)
            if done:
                return task.result()
            transport = request.transport
            since = writing.since
            if (
                transport is not None
                and since is not None
                and time.monotonic() - since > send_timeout
            ):
                logger.warning(
                    "tyqw.relay: a client read nothing for %gs; its turn is stopped", send_timeout
                )
                transport.abort()  # what it never read is dropped with the connection
            if transport is None or transport.is_closing():
                # nginx's "client closed request". Nobody reads it: aiohttp's write of it
                # fails quietly, where an exception raised here is logged as an error.
                return web.Response(status=499, reason="Client Closed Request")
    finally:
        if not task.done():
            task.cancel()
            await asyncio.wait((task,))
        if not task.cancelled():
            task.exception()  # retrieved: a write that failed after the client left
