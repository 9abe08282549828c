"""tyqw ``async for m in Session.stream(...)``: the iterator the SDK is built around.

Sessions are opened and closed as for ``tyqw_send`` (``clients.tyqw_base``).
"""

from __future__ import annotations

from scenarios import Reply

from clients.base import NO_PROBE, PROMPT, Probe
from clients.tyqw_base import TyqwClient


class Client(TyqwClient):
    name = "tyqw_stream"

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
