"""What one connection may hold: the server-side bounds of ``tyqw serve``.

aiohttp's server waits as long as a client likes for the first request head (a
"slowloris" client sends a byte now and then and never finishes), and nothing stops one
client from opening connections until the process runs out of file descriptors. So
``tyqw serve`` listens through :class:`Site`: each connection is a :class:`_Guarded`
protocol in front of aiohttp's own, which

- closes a connection whose first request head is not complete ``head_timeout`` seconds
  after it opened (later heads on a kept-alive connection are bounded by aiohttp's
  ``keepalive_timeout``, which ``tyqw serve`` sets to the same value), and
- refuses a connection past ``max_connections`` open ones, or past
  ``max_connections_per_peer`` from one address other than loopback (a reverse proxy on
  this machine carries every client), with a short 503 and no further reading.

The request body and the answer are bounded by the relay's handler (``body_timeout``,
``send_timeout`` of ``create_app``), where a stall also holds a user's turn.
"""

from __future__ import annotations

import asyncio
from typing import Any

from aiohttp import web

from .._config import is_loopback
from .._wire import JSON_TYPE, dumps, error_body

__all__ = ["ConnectionLimits", "Site", "default_max_connections"]

_HEAD_END = b"\r\n\r\n"


def default_max_connections() -> int:
    """Half of what the open-file limit leaves after 32 descriptors, between 8 and 1000:
    each relayed turn holds a client's connection and one to the service."""
    try:
        import resource
    except ImportError:  # Windows: no such limit to fit under
        return 1000
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY:
        return 1000
    return max(8, min(1000, (soft - 32) // 2))


class ConnectionLimits:
    """Counts of open connections, in total and per peer address, and the bounds."""

    def __init__(
        self, *, head_timeout: float, max_connections: int, max_connections_per_peer: int
    ) -> None:
        self.head_timeout = head_timeout
        self.max_connections = max_connections
        self.max_per_peer = max_connections_per_peer
        self.open = 0
        self.per_peer: dict[str, int] = {}

    def admit(self, peer: str) -> bool:
        """Count a new connection from ``peer`` if the limits allow it."""
        if self.open >= self.max_connections:
            return False
        counted = bool(peer) and not is_loopback(peer)
        if counted:
            if self.per_peer.get(peer, 0) >= self.max_per_peer:
                return False
            self.per_peer[peer] = self.per_peer.get(peer, 0) + 1
        self.open += 1
        return True

    def release(self, peer: str) -> None:
        self.open -= 1
        left = self.per_peer.get(peer, 0) - 1
        if left > 0:
            self.per_peer[peer] = left
        else:
            self.per_peer.pop(peer, None)


_REFUSED = dumps(
    error_body(
        "ServiceUnavailable",
        "The relay has too many open connections (from your address or in all); "
        "try again shortly.",
        "",
    )
).encode()
_REFUSAL = (
    b"HTTP/1.1 503 Service Unavailable\r\nContent-Type: "
    + JSON_TYPE.encode()
    + b"\r\nRetry-After: 1\r\nConnection: close\r\nContent-Length: "
    + str(len(_REFUSED)).encode()
    + b"\r\n\r\n"
    + _REFUSED
)


class _Guarded(asyncio.Protocol):
    """aiohttp's protocol for one connection, behind the limits and the head timer."""

    def __init__(self, inner: Any, limits: ConnectionLimits) -> None:
        self.inner = inner
        self.limits = limits
        self.peer = ""
        self.admitted = False
        self.timer: asyncio.TimerHandle | None = None
        self.tail = b""  # the last bytes received, for a head end split between reads

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        name = transport.get_extra_info("peername")
        self.peer = str(name[0]) if isinstance(name, (tuple, list)) and name else ""
        if not self.limits.admit(self.peer):
            assert isinstance(transport, asyncio.Transport)
            transport.write(_REFUSAL)
            transport.close()
            return
        self.admitted = True
        loop = asyncio.get_running_loop()
        self.timer = loop.call_later(self.limits.head_timeout, self._late, transport)
        self.inner.connection_made(transport)

    def _late(self, transport: asyncio.BaseTransport) -> None:
        # No complete request head in time: nothing was answered, nothing is owed.
        self.timer = None
        if isinstance(transport, asyncio.Transport):
            transport.abort()
        else:
            transport.close()

    def data_received(self, data: bytes) -> None:
        if self.timer is not None:
            seen = self.tail + data
            if _HEAD_END in seen:
                self.timer.cancel()
                self.timer = None
                self.tail = b""
            else:
                self.tail = seen[-3:]
        if self.admitted:
            self.inner.data_received(data)

    def eof_received(self) -> bool | None:
        return self.inner.eof_received() if self.admitted else None

    def connection_lost(self, exc: Exception | None) -> None:
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None
        if self.admitted:
            self.admitted = False
            self.limits.release(self.peer)
            self.inner.connection_lost(exc)

    def pause_writing(self) -> None:
        if self.admitted:
            self.inner.pause_writing()

    def resume_writing(self) -> None:
        if self.admitted:
            self.inner.resume_writing()


class Site(web.BaseSite):
    """A TCP site like aiohttp's ``TCPSite`` whose connections are held to ``limits``."""

    def __init__(
        self, runner: web.BaseRunner, host: str | None, port: int, limits: ConnectionLimits
    ) -> None:
        super().__init__(runner)
        self.host = host or None  # "" and None: every interface
        self.port = port
        self.limits = limits

    @property
    def name(self) -> str:
        return f"http://{self.host or '0.0.0.0'}:{self.port}"

    async def start(self) -> None:
        await super().start()
        server = self._runner.server
        if server is None:  # set up by the runner before any site starts
            raise RuntimeError("the relay's runner is not set up")
        limits = self.limits
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(
            lambda: _Guarded(server(), limits), self.host, self.port
        )
