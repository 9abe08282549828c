"""The floor: the minimal correct-ish hand-written loop over aiohttp.

``resp.content.iter_any()`` gives whatever bytes arrived; we split events on ``b"\\n\\n"``
ourselves (Bailian sends LF only), take the ``data:`` line and ``json.loads`` it. No
models, no events, no callbacks: anything a library does on top of this is its overhead.
"""

from __future__ import annotations

import json

from scenarios import Reply

from clients.aiohttp_base import AiohttpClient
from clients.base import NO_PROBE, Probe, request_body, sse_headers


class Client(AiohttpClient):
    name = "floor"

    async def open(self, slots: int) -> None:
        await super().open(slots)
        self.headers = sse_headers()

    async def consume(
        self, reply: Reply, probe: Probe = NO_PROBE, slot: int = 0
    ) -> tuple[int, int]:
        loads = json.loads
        cumulative = not reply.incremental
        events = chars = prev = 0
        done = False
        nxt = probe.next_at
        async with self.http.post(self.url, json=request_body(reply), headers=self.headers) as r:
            if r.status != 200:
                raise RuntimeError(f"HTTP {r.status}: {await r.text()}")
            tail = b""
            async for chunk in r.content.iter_any():
                if tail:
                    # Search only the new bytes (and one before them) for the separator.
                    scan = len(tail) - 1
                    data = tail + chunk
                else:
                    scan = 0
                    data = chunk
                start = 0
                while (end := data.find(b"\n\n", scan)) >= 0:
                    block = data[start:end]
                    start = scan = end + 2
                    if block.startswith(b"data:"):
                        head, payload = b"", block[5:]
                    else:
                        i = block.find(b"\ndata:")
                        if i < 0:
                            continue
                        head, payload = block[:i], block[i + 6 :]
                    if b"event:error" in head:
                        raise RuntimeError(f"error event: {payload[:200]!r}")
                    output = loads(payload)["output"]
                    text = output["text"]
                    if output["finish_reason"] == "stop":
                        done = True
                    if cumulative:
                        text, prev = text[prev:], len(text)
                    chars += len(text)
                    events += 1
                    if events == nxt:
                        nxt = probe.hit(events)
                tail = data[start:] if start < len(data) else b""
        if not done:
            raise RuntimeError("the stream ended before finish_reason 'stop'")
        return events, chars
