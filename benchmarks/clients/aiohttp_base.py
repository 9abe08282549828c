"""What the hand-written aiohttp clients share: one ``ClientSession``, opened the same way.

The pool has no cap (every concurrent stream gets a connection) and the timeouts are the
same for ``floor``, ``readline`` and ``sse_client2``, so that they differ only in their
read loops (``consume``).
"""

from __future__ import annotations

import aiohttp

from clients.base import BenchClient, package_version


class AiohttpClient(BenchClient):
    def version(self) -> str:
        return f"aiohttp {package_version('aiohttp')}"

    async def open(self, slots: int) -> None:
        self.http = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=0),
            timeout=aiohttp.ClientTimeout(total=None, sock_connect=10, sock_read=60),
        )

    async def close(self) -> None:
        await self.http.close()
