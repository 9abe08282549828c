"""The clients under test, one module each; ``runner.py`` imports only the one it runs.

Every module defines ``Client``, a subclass of ``base.BenchClient`` whose ``consume`` holds
that client's whole per-event loop, written the way its documentation shows.
"""

from __future__ import annotations

# name -> (module, one-line description); the order is the order of the report's columns.
CLIENTS: dict[str, tuple[str, str]] = {
    "floor": ("floor", "hand-written aiohttp loop: iter_any() + own b'\\n\\n' splitter + json"),
    "tyqw_send": ("tyqw_send", "tyqw Session.send() with one 'message' handler"),
    "tyqw_stream": ("tyqw_stream", "tyqw `async for m in Session.stream()`"),
    "readline": ("readline", "aiohttp `async for line in resp.content` (readline) loop"),
    "sse_client2": ("sse_client2", "aiohttp-sse-client2 EventSource"),
    "httpx_sse": ("httpx_sse", "httpx AsyncClient + httpx-sse aconnect_sse"),
    "sseclient": ("requests_sseclient", "requests (stream=True) + sseclient-py (sync)"),
    "ds_call": ("dashscope_call", "dashscope Application.call(stream=True) (sync, 1.x API)"),
    "ds_async": ("dashscope_async", "dashscope AsyncClient apps.completions.create(stream=True)"),
}

FLOOR = "floor"
TYQW = ("tyqw_send", "tyqw_stream")
