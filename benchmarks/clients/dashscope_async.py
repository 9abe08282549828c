"""The official SDK's 2.x async client: ``AsyncClient().apps.completions.create(stream=True)``.

httpx underneath; its pool defaults to 100 connections (20 kept alive), raised here through
the SDK's own environment variables so that every concurrent stream gets a connection.
"""

from __future__ import annotations

import os

import dashscope
from scenarios import Reply

from clients.base import API_KEY, APP_ID, NO_PROBE, PROMPT, BenchClient, Probe, package_version


class Client(BenchClient):
    name = "ds_async"

    def version(self) -> str:
        return f"dashscope {package_version('dashscope')}"

    async def open(self, slots: int) -> None:
        os.environ["DASHSCOPE_HTTP_MAX_CONNECTIONS"] = str(max(100, slots))
        os.environ["DASHSCOPE_HTTP_MAX_KEEPALIVE_CONNECTIONS"] = str(max(20, slots))
        self.client = dashscope.AsyncClient(api_key=API_KEY, base_url=self.base_url)

    async def close(self) -> None:
        await self.client.aclose()

    async def consume(
        self, reply: Reply, probe: Probe = NO_PROBE, slot: int = 0
    ) -> tuple[int, int]:
        events = chars = 0
        nxt = probe.next_at
        stream = await self.client.apps.completions.create(
            app_id=APP_ID,
            prompt=PROMPT,
            stream=True,
            incremental_output=reply.incremental,
            parameters=reply.params(),
        )
        async for completion in stream:
            chars += len(completion.text or "")
            events += 1
            if events == nxt:
                nxt = probe.hit(events)
        return events, chars
