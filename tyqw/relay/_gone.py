"""A handler's work bounded by the client's connection: every relay endpoint runs its
turn through ``unless_gone()``, so a client that goes away stops the upstream turn."""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from typing import Any

from aiohttp import web

__all__ = ["DISCONNECT_POLL", "unless_gone"]

DISCONNECT_POLL = 0.25  # seconds: how soon a vanished client's upstream turn is closed


async def unless_gone(
    request: web.Request, work: Coroutine[Any, Any, web.StreamResponse]
) -> web.StreamResponse:
    """Run ``work`` until it is done or the client's connection has closed.

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
