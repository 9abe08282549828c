"""What every client module builds on: the probe, the client interface, request helpers."""

from __future__ import annotations

import time
from collections.abc import Awaitable
from typing import Any, ClassVar

from scenarios import Reply

API_KEY = "sk-bench-0000"
APP_ID = "0123456789abcdef0123456789abcdef"
PROMPT = "你好"


class Probe:
    """Records CPU and wall clock when the event counter reaches chosen values.

    A client loop keeps ``nxt = probe.next_at`` and, after counting an event, does
    ``if n == nxt: nxt = probe.hit(n)``: one integer comparison per event, the same for
    every client, and the clocks are read only at the chosen events.
    """

    __slots__ = ("_i", "marks", "next_at", "points")

    def __init__(self, points: tuple[int, ...] = ()) -> None:
        self.points = points
        self.marks: list[tuple[int, float, float]] = []  # (event, cpu_s, wall_s)
        self._i = 0
        self.next_at = points[0] if points else -1

    def hit(self, n: int) -> int:
        self.marks.append((n, time.process_time(), time.perf_counter()))
        self._i += 1
        self.next_at = self.points[self._i] if self._i < len(self.points) else -1
        return self.next_at


NO_PROBE = Probe()


class ClientFailure(Exception):
    """The client could not read the reply (a known limitation, recorded as "fails")."""


class BenchClient:
    """One client under test. Subclasses implement ``open``, ``consume`` and ``close``.

    ``consume`` may be sync (blocking clients) or async; it reads one whole reply and
    returns ``(events, chars)``: the events it delivered and ``sum(len(text))`` over them
    (the trivial per-event work; for cumulative replies, hand-written loops count deltas).
    """

    name: ClassVar[str] = ""
    sync: ClassVar[bool] = False
    # Scenarios this client is known not to handle; their failure is recorded, not an error.
    expected_failures: ClassVar[frozenset[str]] = frozenset()
    # Set by the runner before ``open``: keep every stream's state in one folder (only
    # clients that keep state, tyqw, care).
    shared_state: bool = False
    seed_history: int = 0  # exchanges already in each conversation's transcript (tyqw)

    def __init__(self, base_url: str) -> None:
        self.base_url = base_url.rstrip("/")
        self.url = f"{self.base_url}/apps/{APP_ID}/completion"

    def version(self) -> str:
        return ""

    def open(self, slots: int) -> Awaitable[None] | None:
        """Create what the client needs to run ``slots`` streams at once."""
        raise NotImplementedError

    def consume(
        self, reply: Reply, probe: Probe = NO_PROBE, slot: int = 0
    ) -> Awaitable[tuple[int, int]] | tuple[int, int]:
        raise NotImplementedError

    def close(self) -> Awaitable[None] | None:
        raise NotImplementedError


def sse_headers() -> dict[str, str]:
    """Headers for hand-written clients (what the service needs, protocol §2)."""
    return {
        "Authorization": f"Bearer {API_KEY}",
        "X-DashScope-SSE": "enable",
        "Accept": "text/event-stream",
    }


def request_body(reply: Reply) -> dict[str, Any]:
    return {
        "input": {"prompt": PROMPT},
        "parameters": {"incremental_output": reply.incremental, **reply.params()},
    }


def package_version(dist: str) -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(dist)
    except PackageNotFoundError:
        return "?"
