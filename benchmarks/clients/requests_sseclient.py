"""requests (``stream=True``) + sseclient-py, as sseclient-py's README shows (sync).

``SSEClient(response)`` iterates the response itself, i.e. requests' 128-byte
``iter_content`` chunks: that is the documented usage, so that is what is measured.
"""

from __future__ import annotations

import json

import requests
import sseclient
from scenarios import Reply

from clients.base import NO_PROBE, BenchClient, Probe, package_version, request_body, sse_headers


class Client(BenchClient):
    name = "sseclient"
    sync = True

    def version(self) -> str:
        return (
            f"requests {package_version('requests')}, "
            f"sseclient-py {package_version('sseclient-py')}"
        )

    def open(self, slots: int) -> None:
        self.http = requests.Session()
        self.headers = sse_headers()

    def close(self) -> None:
        self.http.close()

    def consume(self, reply: Reply, probe: Probe = NO_PROBE, slot: int = 0) -> tuple[int, int]:
        loads = json.loads
        cumulative = not reply.incremental
        events = chars = prev = 0
        nxt = probe.next_at
        with self.http.post(
            self.url, json=request_body(reply), headers=self.headers, stream=True, timeout=60
        ) as response:
            response.raise_for_status()
            for event in sseclient.SSEClient(response).events():
                if event.event == "error":
                    raise RuntimeError(f"error event: {event.data[:200]!r}")
                text = loads(event.data)["output"]["text"]
                if cumulative:
                    text, prev = text[prev:], len(text)
                chars += len(text)
                events += 1
                if events == nxt:
                    nxt = probe.hit(events)
        return events, chars
