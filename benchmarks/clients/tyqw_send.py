"""tyqw ``Session.send()`` with one ``message`` handler doing trivial work.

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


class Counter:
    """The ``message`` handler: counts events and delta characters, hits the probe."""

    __slots__ = ("chars", "events", "nxt", "probe")

    def __init__(self) -> None:
        self.reset(NO_PROBE)

    def reset(self, probe: Probe) -> None:
        self.events = self.chars = 0
        self.probe = probe
        self.nxt = probe.next_at

    def __call__(self, message: Any) -> None:
        self.chars += len(message.delta)
        self.events += 1
        if self.events == self.nxt:
            self.nxt = self.probe.hit(self.events)


class Client(BenchClient):
    name = "tyqw_send"

    def version(self) -> str:
        return f"tyqw {package_version('tyqw')}"

    async def open(self, slots: int) -> None:
        self.tmp = tempfile.TemporaryDirectory(prefix="tyqw-bench-")
        self.sessions: list[Any] = []
        # One stream: tyqw's own HTTP session. Many: one shared pool without a cap.
        self.http = (
            aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) if slots > 1 else None
        )
        self.counters: list[Counter] = []
        for i in range(slots):
            session = Session(
                APP_ID,
                api_key=API_KEY,
                base_url=self.base_url,
                state_dir=f"{self.tmp.name}/{i}",
                http_session=self.http,
            )
            await session.__aenter__()
            counter = Counter()
            session.on("message", counter)
            self.sessions.append(session)
            self.counters.append(counter)

    async def close(self) -> None:
        for session in self.sessions:
            await session.__aexit__(None, None, None)
        if self.http is not None:
            await self.http.close()
        self.tmp.cleanup()

    async def consume(
        self, reply: Reply, probe: Probe = NO_PROBE, slot: int = 0
    ) -> tuple[int, int]:
        counter = self.counters[slot]
        counter.reset(probe)
        await self.sessions[slot].send(
            PROMPT, incremental_output=reply.incremental, parameters=reply.params()
        )
        return counter.events, counter.chars
