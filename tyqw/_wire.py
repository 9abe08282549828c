"""Bailian's wire format, server side: the one SSE frame writer, the JSON encoder, the
error body, and what request headers switch on.

Every event the simulator and the relay send is made by :func:`frame`, and so are the
events of the test helpers and of the benchmark server, so one function says what an
event looks like (protocol reference §4.2): ``id:<n>``, ``event:<type>``, the
``:HTTP_STATUS/<n>`` comment, one ``data:`` line of compact JSON and a blank line, with
no space after any colon and LF line ends. The simulator ends an error frame that ends a
stream without the blank line, as the service does; the relay keeps it (spec-following
clients such as fetch-event-source dispatch an event only at a blank line).

This module sits at the bottom of the package: it imports nothing of tyqw.
"""

from __future__ import annotations

import json
import zlib
from collections.abc import Mapping
from typing import Any

__all__ = [
    "JSON_TYPE",
    "KEEPALIVE",
    "SSE_TYPE",
    "accepts_gzip",
    "compress",
    "dumps",
    "error_body",
    "frame",
    "wants_sse",
]

SSE_TYPE = "text/event-stream;charset=UTF-8"
JSON_TYPE = "application/json"
KEEPALIVE = b":\n\n"


# One encoder for every event: json.dumps() with options builds a new one per call.
_ENCODER = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"))


def dumps(obj: Any) -> str:
    """Compact, single-line JSON with UTF-8 text left as is, as the service writes it."""
    # json escapes any newline inside strings, so the result is always one line.
    return _ENCODER.encode(obj)


def frame(
    event_id: int, data: str, *, event: str = "result", status: int = 200, end: bool = True
) -> bytes:
    """One SSE event exactly as the service frames it; ``end=False`` omits the blank line.

    For example::

        frame(1, dumps({"output": {...}, "usage": {}, "request_id": rid}))
        frame(3, dumps(error), event="error", status=400, end=False)
    """
    tail = "\n\n" if end else "\n"
    return f"id:{event_id}\nevent:{event}\n:HTTP_STATUS/{status}\ndata:{data}{tail}".encode()


def error_body(code: str, message: str, request_id: str) -> dict[str, str]:
    """DashScope's flat error object, the same in a JSON body and in an error frame."""
    return {"code": code, "message": message, "request_id": request_id}


def wants_sse(headers: Mapping[str, str]) -> bool:
    """True when a request asks for SSE: ``X-DashScope-SSE: enable`` or an ``Accept``
    naming ``text/event-stream``, values in any case, with spaces, parameters
    (``;q=0.9``) or among other types; ``headers`` is a lower-case-keyed dict or
    aiohttp's case-insensitive headers."""
    if headers.get("x-dashscope-sse", "").strip().lower() == "enable":
        return True
    accept = headers.get("accept", "")
    return "event-stream" in accept.lower() and any(
        part.split(";", 1)[0].strip().lower() == "text/event-stream" for part in accept.split(",")
    )


def accepts_gzip(headers: Mapping[str, str]) -> bool:
    """True when ``Accept-Encoding`` allows gzip (``gzip``, ``x-gzip`` or ``*``, q > 0)."""
    for part in headers.get("accept-encoding", "").split(","):
        coding, _, params = part.partition(";")
        if coding.strip().lower() not in ("gzip", "x-gzip", "*"):
            continue
        name, _, value = params.partition("=")
        if name.strip().lower() != "q":
            return True
        try:
            return float(value) > 0
        except ValueError:
            return False
    return False


def compress(body: bytes) -> bytes:
    """``body`` gzip-compressed, byte for byte the same on every run."""
    # A 512-byte window and little memory: answers are short, and setting up zlib's full
    # state would cost several times the compression itself (tests send thousands).
    packer = zlib.compressobj(6, zlib.DEFLATED, 16 + 9, 4)
    return packer.compress(body) + packer.flush()
