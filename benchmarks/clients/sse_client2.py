"""aiohttp-sse-client2: a W3C ``EventSource`` over aiohttp, used as its README shows.

It reads lines with aiohttp's ``readline`` (so it fails on a very long line), and it
reconnects when a stream ends: a caller breaks out after the final event, which closes
the connection (no keep-alive reuse between requests).
"""

from __future__ import annotations

import json

from aiohttp_sse_client2 import client as sse_client
from scenarios import Reply

from clients.aiohttp_base import AiohttpClient
from clients.base import API_KEY, NO_PROBE, Probe, package_version, request_body


class Client(AiohttpClient):
    name = "sse_client2"
    expected_failures = frozenset({"bigline"})

    def version(self) -> str:
        return f"aiohttp-sse-client2 {package_version('aiohttp-sse-client2')}"

    async def consume(
        self, reply: Reply, probe: Probe = NO_PROBE, slot: int = 0
    ) -> tuple[int, int]:
        loads = json.loads
        cumulative = not reply.incremental
        events = chars = prev = 0
        nxt = probe.next_at
        headers = {"Authorization": f"Bearer {API_KEY}", "X-DashScope-SSE": "enable"}
        async with sse_client.EventSource(
            self.url,
            option={"method": "POST"},
            session=self.http,
            max_connect_retry=0,
            json=request_body(reply),
            headers=headers,
        ) as source:
            async for event in source:
                if event.type == "error":
                    raise RuntimeError(f"error event: {event.data[:200]!r}")
                output = loads(event.data)["output"]
                text = output["text"]
                if cumulative:
                    text, prev = text[prev:], len(text)
                chars += len(text)
                events += 1
                if events == nxt:
                    nxt = probe.hit(events)
                if output["finish_reason"] == "stop":
                    break  # else EventSource reconnects and asks again
        return events, chars
