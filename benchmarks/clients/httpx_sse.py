"""httpx + httpx-sse: ``aconnect_sse(client, "POST", ...)`` and ``aiter_sse()``."""

from __future__ import annotations

import json

import httpx
from httpx_sse import aconnect_sse
from scenarios import Reply

from clients.base import NO_PROBE, BenchClient, Probe, package_version, request_body, sse_headers


class Client(BenchClient):
    name = "httpx_sse"

    def version(self) -> str:
        return f"httpx {package_version('httpx')}, httpx-sse {package_version('httpx-sse')}"

    async def open(self, slots: int) -> None:
        # httpx pools 100 connections by default; let every concurrent stream have one.
        self.http = httpx.AsyncClient(
            limits=httpx.Limits(max_connections=None, max_keepalive_connections=None),
            timeout=httpx.Timeout(60.0, connect=10.0),
        )
        self.headers = sse_headers()

    async def close(self) -> None:
        await self.http.aclose()

    async def consume(
        self, reply: Reply, probe: Probe = NO_PROBE, slot: int = 0
    ) -> tuple[int, int]:
        loads = json.loads
        cumulative = not reply.incremental
        events = chars = prev = 0
        nxt = probe.next_at
        async with aconnect_sse(
            self.http, "POST", self.url, json=request_body(reply), headers=self.headers
        ) as source:
            source.response.raise_for_status()
            async for sse in source.aiter_sse():
                if sse.event == "error":
                    raise RuntimeError(f"error event: {sse.data[:200]!r}")
                text = loads(sse.data)["output"]["text"]
                if cumulative:
                    text, prev = text[prev:], len(text)
                chars += len(text)
                events += 1
                if events == nxt:
                    nxt = probe.hit(events)
        return events, chars
