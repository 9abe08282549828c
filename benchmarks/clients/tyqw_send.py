"""tyqw ``Session.send()`` with one ``message`` handler doing trivial work.

Sessions are opened and closed as for ``tyqw_stream`` (``clients.tyqw_base``).
"""

from __future__ import annotations

from typing import Any

from scenarios import Reply

from clients.base import NO_PROBE, PROMPT, Probe
from clients.tyqw_base import TyqwClient


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


class Client(TyqwClient):
    name = "tyqw_send"

    async def open(self, slots: int) -> None:
        await super().open(slots)
        self.counters: list[Counter] = []
        for session in self.sessions:
            counter = Counter()
            session.on("message", counter)
            self.counters.append(counter)

    async def consume(
        self, reply: Reply, probe: Probe = NO_PROBE, slot: int = 0
    ) -> tuple[int, int]:
        counter = self.counters[slot]
        counter.reset(probe)
        await self.sessions[slot].send(
            PROMPT, incremental_output=reply.incremental, parameters=reply.params()
        )
        return counter.events, counter.chars
