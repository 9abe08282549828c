"""The official SDK's documented entry point: ``dashscope.Application.call(stream=True)``.

Synchronous (requests underneath, a process-wide shared ``requests.Session`` since 1.26.5).
Pointed at the local server through ``dashscope.base_http_api_url``; the ``bench_*`` keys
ride in ``**kwargs``, which the SDK puts into ``parameters``.
"""

from __future__ import annotations

from http import HTTPStatus
from typing import Any

import dashscope
from dashscope import Application
from scenarios import Reply

from clients.base import API_KEY, APP_ID, NO_PROBE, PROMPT, BenchClient, Probe, package_version


class Client(BenchClient):
    name = "ds_call"
    sync = True

    def version(self) -> str:
        return f"dashscope {package_version('dashscope')}"

    def open(self, slots: int) -> None:
        dashscope.base_http_api_url = self.base_url

    def close(self) -> None:
        close = getattr(dashscope, "close_shared_sync_session", None)
        if close is not None:
            close()

    def consume(self, reply: Reply, probe: Probe = NO_PROBE, slot: int = 0) -> tuple[int, int]:
        kwargs: dict[str, Any] = dict(reply.params())
        if reply.incremental:
            # Passing incremental_output=False would make the SDK ask for deltas and rebuild
            # the cumulative text itself; omitting it gets the server's cumulative default.
            kwargs["incremental_output"] = True
        events = chars = 0
        nxt = probe.next_at
        responses = Application.call(
            app_id=APP_ID, prompt=PROMPT, api_key=API_KEY, stream=True, **kwargs
        )
        for response in responses:
            if response.status_code != HTTPStatus.OK:
                raise RuntimeError(f"{response.status_code} {response.code}: {response.message}")
            chars += len(response.output.text)
            events += 1
            if events == nxt:
                nxt = probe.hit(events)
        return events, chars
