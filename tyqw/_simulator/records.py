"""What the simulator keeps of each request it received."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Any

from .faults import Fault


@dataclass(slots=True, eq=False)
class SimRequest:
    """One request the simulator received, appended to ``sim.requests`` on arrival.

    ``sse`` is true when it asked for a stream (``X-DashScope-SSE: enable`` or ``Accept:
    text/event-stream``), ``session_id`` is the id the response used (None if it was
    rejected), ``done`` is set when the server is finished with the request however that
    happened, and ``disconnected`` is true if the client went away before the response
    ended::

        await asyncio.wait_for(sim.requests[-1].done.wait(), 1)
        assert sim.requests[-1].disconnected
        assert sim.requests[-1].body["input"]["prompt"] == "hi"
    """

    method: str
    path: str
    app_id: str | None
    headers: dict[str, str]
    body: Any
    raw_body: bytes = field(repr=False)
    sse: bool
    request_id: str
    session_id: str | None = None
    fault: Fault | None = None
    disconnected: bool = False
    done: asyncio.Event = field(default_factory=asyncio.Event, repr=False)
