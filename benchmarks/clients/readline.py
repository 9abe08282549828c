"""aiohttp's line reader: ``async for line in resp.content`` (``readline()`` underneath).

The loop most people write first. aiohttp caps a line at the reader's high-water mark, so
a very long ``data:`` line fails with ``LineTooLong`` / ``ValueError``.
"""

from __future__ import annotations

import json

import aiohttp
from scenarios import Reply

from clients.base import NO_PROBE, BenchClient, Probe, package_version, request_body, sse_headers


class Client(BenchClient):
    name = "readline"
    expected_failures = frozenset({"bigline"})

    def version(self) -> str:
        return f"aiohttp {package_version('aiohttp')}"

    async def open(self, slots: int) -> None:
        self.http = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=0),
            timeout=aiohttp.ClientTimeout(total=None, sock_connect=10, sock_read=60),
        )
        self.headers = sse_headers()

    async def close(self) -> None:
        await self.http.close()

    async def consume(
        self, reply: Reply, probe: Probe = NO_PROBE, slot: int = 0
    ) -> tuple[int, int]:
        loads = json.loads
        cumulative = not reply.incremental
        events = chars = prev = 0
        nxt = probe.next_at
        is_error = False
        async with self.http.post(self.url, json=request_body(reply), headers=self.headers) as r:
            if r.status != 200:
                raise RuntimeError(f"HTTP {r.status}: {await r.text()}")
            async for line in r.content:
                if line.startswith(b"data:"):
                    if is_error:
                        raise RuntimeError(f"error event: {line[:200]!r}")
                    text = loads(line[5:])["output"]["text"]
                    if cumulative:
                        text, prev = text[prev:], len(text)
                    chars += len(text)
                    events += 1
                    if events == nxt:
                        nxt = probe.hit(events)
                elif line.startswith(b"event:error"):
                    is_error = True
        return events, chars
