"""aiohttp's line reader: ``async for line in resp.content`` (``readline()`` underneath).

The loop most people write first. aiohttp caps a line at the reader's high-water mark, so
a very long ``data:`` line fails with ``LineTooLong`` / ``ValueError``.
"""

from __future__ import annotations

import json

from scenarios import Reply

from clients.aiohttp_base import AiohttpClient
from clients.base import NO_PROBE, Probe, request_body, sse_headers


class Client(AiohttpClient):
    name = "readline"
    expected_failures = frozenset({"bigline"})

    async def open(self, slots: int) -> None:
        await super().open(slots)
        self.headers = sse_headers()

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
