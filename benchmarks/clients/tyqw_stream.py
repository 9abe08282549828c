"""tyqw ``async for m in Session.stream(...)``: the iterator the SDK is built around.

One ``Session`` (one conversation) per concurrent stream, each with its own state dir;
concurrent Sessions share one caller-owned ``aiohttp.ClientSession`` (``http_session=``), as
an application serving many conversations would.
"""

from __future__ import annotations

import tempfile
from typing import Any

import aiohttp
from scenarios import Reply

from clients.base import API_KEY, APP_ID, NO_PROBE, PROMPT, BenchClient, Probe, package_version
from tyqw import Session


class Client(BenchClient):
    name = "tyqw_stream"

    def version(self) -> str:
        return f"tyqw {package_version('tyqw')}"

    async def open(self, slots: int) -> None:
        self.tmp = tempfile.TemporaryDirectory(prefix="tyqw-bench-")
        self.sessions: list[Any] = []
        # One stream: tyqw's own HTTP session. Many: one shared pool without a cap.
        self.http = (
            aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) if slots > 1 else None
        )
        for i in range(slots):
            session = Session(
                APP_ID,
                api_key=API_KEY,
                base_url=self.base_url,
                state_dir=f"{self.tmp.name}/{i}",
                http_session=self.http,
            )
            await session.__aenter__()
            self.sessions.append(session)

    async def close(self) -> None:
        for session in self.sessions:
            await session.__aexit__(None, None, None)
        if self.http is not None:
            await self.http.close()
        self.tmp.cleanup()

    async def consume(
        self, reply: Reply, probe: Probe = NO_PROBE, slot: int = 0
    ) -> tuple[int, int]:
        events = chars = 0
        nxt = probe.next_at
        stream = self.sessions[slot].stream(
            PROMPT, incremental_output=reply.incremental, parameters=reply.params()
        )
        async for message in stream:
            chars += len(message.delta)
            events += 1
            if events == nxt:
                nxt = probe.hit(events)
        return events, chars
