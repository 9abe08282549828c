"""Whatever bytes a server sends, a turn yields messages and TyqwErrors only.

Generated HTTP answers (status lines, headers, framings, encodings) and generated SSE
bodies (frames in any order and case, JSON of any shape and depth, fields of the wrong
type) are served over a real socket on 127.0.0.1 to ``send()`` with an ``error``
handler and to ``stream()``: nothing but a ``Message`` or a ``TyqwError`` comes out, the
``error`` handler hears every failure, and the ``reply`` event fires once.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import tyqw
from tyqw import Message, Reply

from .helpers import TcpServerFactory, raw_session, read_request

examples = settings(
    max_examples=150,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)

_scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(2**70), 2**70),
    st.floats(allow_nan=False),
    st.text(max_size=8),
)
_json = st.recursive(
    _scalars,
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner, max_size=3)
    ),
    max_leaves=8,
)
_field = st.one_of(_json, st.sampled_from(["null", "stop", "", "\ud800", "x" * 300]))
_output = st.fixed_dictionaries(
    {},
    optional={
        "text": _field,
        "finish_reason": _field,
        "session_id": _field,
        "thoughts": _field,
        "doc_references": _field,
        "workflow_message": _field,
    },
)


def _dumps(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"))  # ensure_ascii: surrogates escaped


_data = st.one_of(
    _output.map(lambda output: _dumps({"output": output, "request_id": "r"})),
    st.fixed_dictionaries({"output": _json, "usage": _json, "request_id": _json}).map(_dumps),
    _json.map(_dumps),
    st.sampled_from(
        [
            "[" * 60_000,
            '{"output":' * 5_000,
            '{"code":"Throttling","message":"slow down"}',
            '{"code":' + "[" * 10_000 + "}",
            '{"output":{"text":"a","finish_reason":"stop"}} trailing',
            "{not json",
            "",
        ]
    ),
    st.text(max_size=20),
)
_line = st.one_of(
    _data.map(lambda data: f"data:{data}"),
    st.sampled_from(["result", "Result", "error", "Error", "message", "other", ""]).map(
        lambda kind: f"event:{kind}"
    ),
    st.integers(0, 999).map(lambda status: f":HTTP_STATUS/{status}"),
    st.sampled_from(["id:1", ":", "retry:10", "data", "event: result", ": keep-alive"]),
)
_body = st.builds(
    lambda lines, newline, blank: (newline.join(lines) + newline * blank).encode(
        "utf-8", "surrogatepass"
    ),
    st.lists(_line, max_size=12),
    st.sampled_from(["\n", "\r\n", "\r"]),
    st.integers(0, 2),
) | st.binary(max_size=200)

_content_types = st.sampled_from(
    [
        "text/event-stream;charset=UTF-8",
        "Text/Event-Stream",
        "application/json",
        "APPLICATION/JSON; charset=gbk",
        "text/html",
        "",
        "text/event-stream; charset=\x7f",
    ]
)
_statuses = st.sampled_from([200, 200, 200, 204, 301, 400, 401, 403, 404, 429, 500, 503, 599, 999])
_extra_headers = st.lists(
    st.sampled_from(
        [
            "Retry-After: 1 Jan 99999999999999999999 00:00:00 GMT",
            "Retry-After: -5",
            "Retry-After: 1e999",
            "retry-after-ms: nan",
            "retry-after-ms: 99999999999999999999999",
            "x-request-id: " + "\u00e9" * 3,
            "content-encoding: gzip",
            "content-encoding: br-x",
            "content-encoding: deflate",
            "x-dashscope-finished: true",
        ]
    ),
    max_size=3,
)
_framings = st.sampled_from(["close", "length", "short-length", "chunked", "bad-chunks"])


def answer(status: int, content_type: str, headers: list[str], framing: str, body: bytes) -> bytes:
    lines = [f"HTTP/1.1 {status} Whatever"]
    if content_type:
        lines.append(f"Content-Type: {content_type}")
    lines += headers
    if framing == "close":
        lines.append("Connection: close")
        payload = body
    elif framing in ("length", "short-length"):
        lines.append(f"Content-Length: {len(body) + (5 if framing == 'short-length' else 0)}")
        lines.append("Connection: close")
        payload = body
    else:
        lines.append("Transfer-Encoding: chunked")
        payload = f"{len(body):x}\r\n".encode() + body + b"\r\n" if body else b""
        payload += b"0\r\n\r\n" if framing == "chunked" else b"zz\r\n"
    return "\r\n".join(lines).encode("utf-8", "surrogateescape") + b"\r\n\r\n" + payload


@pytest.fixture(autouse=True)
def _quick_retries(monkeypatch: pytest.MonkeyPatch) -> None:
    from tyqw import _retry

    monkeypatch.setattr(_retry, "BACKOFF_BASE", 0.001)
    monkeypatch.setattr(_retry, "RETRY_AFTER_CAP", 0.001)


@examples
@given(
    status=_statuses,
    content_type=_content_types,
    headers=_extra_headers,
    framing=_framings,
    body=_body,
)
async def test_any_answer_gives_messages_and_tyqw_errors_only(
    tcp_server: TcpServerFactory,
    tmp_path: Path,
    status: int,
    content_type: str,
    headers: list[str],
    framing: str,
    body: bytes,
) -> None:
    """send() with an error handler returns a Reply, emitting Messages and TyqwErrors;
    stream() yields Messages and raises only TyqwErrors; reply fires once per turn."""
    wire = answer(status, content_type, headers, framing, body)

    async def script(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(wire)
        await writer.drain()

    base_url = await tcp_server(script)
    async with raw_session(base_url, tmp_path / "state", max_retries=1, read_timeout=5) as session:
        messages: list[object] = []
        errors: list[object] = []
        replies: list[Reply] = []
        session.on("message", messages.append)
        session.on("error", errors.append)
        session.on("reply", replies.append)
        reply = await asyncio.wait_for(session.send("hi"), 20)
        assert isinstance(reply, Reply) and replies == [reply]
        assert all(isinstance(m, Message) for m in messages)
        assert all(isinstance(e, tyqw.TyqwError) for e in errors)
        if reply.error is not None:
            assert reply.error in errors
        try:
            async for message in session.stream("again"):
                assert isinstance(message, Message)
        except tyqw.TyqwError:
            pass
