"""How the relay writes a stream to its client: the frames of events it has already read
go out together, whole and in order; a lone event goes out at once; an event's JSON goes
on as the upstream wrote it. Over real sockets: a hand-written upstream, the relay, and
a raw client that reads the HTTP chunks the relay wrote."""

from __future__ import annotations

import asyncio
import itertools
import json
from collections.abc import Callable
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tyqw import Message
from tyqw._protocol import ReplyReader
from tyqw._wire import dumps, frame
from tyqw.relay._openai import _CONTENT, _REASONING, _Chunks

from .helpers import RawServerFactory, TcpServerFactory, bailian_stream, read_request
from .relay_helpers import BOUND, SSE_HEADERS, Relay, body, connect, post_head

SESSION = "s" * 32

# The kinds of event a stream may hold, each as its bytes (n: its position).
_EVENT_KINDS = {
    "compact": lambda n: frame(n, dumps(_output(n))),
    "spaced": lambda n: f"event:result\ndata: {json.dumps(_output(n))} \n\n".encode(),
    "two-lines": lambda n: (
        f'data:{{"output":\ndata:{json.dumps(_output(n)["output"])}}}\n\n'.encode()
    ),
    "ping": lambda n: b"event:ping\ndata:{}\n\n",
    "comment": lambda n: b":keep-alive\n\n",
}


def _output(n: int) -> dict[str, object]:
    return {"output": {"session_id": SESSION, "finish_reason": "null", "text": f"<{n}>"}}


def relay_for(base_url: str) -> Relay:
    return Relay(None, app_ids=["app"], api_key="sk-test", base_url=base_url)


async def ask(
    relay: Relay,
    *,
    receive_buffer: int | None = None,
    limit: int | None = None,
    path: str = "",
    request: dict[str, Any] | None = None,
) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    """Alice's streamed turn (by default on the native endpoint) on a raw connection
    that the relay closes after it."""
    reader, writer = await connect(relay, receive_buffer, limit=limit)
    payload = json.dumps(request or body("hi", incremental_output=True)).encode()
    path = path or "/" + relay.url().split("/", 3)[3]
    writer.write(post_head(relay, path, len(payload), Connection="close", **SSE_HEADERS))
    writer.write(payload)
    await writer.drain()
    return reader, writer


async def http_chunks(reader: asyncio.StreamReader, size: int = 1 << 16) -> list[bytes]:
    """The body of a chunked HTTP answer as the chunks the relay wrote, read ``size``
    bytes at a time (each read bounded)."""
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), BOUND)
    assert head.startswith(b"HTTP/1.1 200 ")
    assert b"transfer-encoding: chunked" in head.lower()
    raw = b""
    while chunk := await asyncio.wait_for(reader.read(size), BOUND):
        raw += chunk
    chunks: list[bytes] = []
    while True:
        length, _, raw = raw.partition(b"\r\n")
        n = int(length, 16)
        if n == 0:
            return chunks
        chunks.append(raw[:n])
        assert raw[n : n + 2] == b"\r\n"
        raw = raw[n + 2 :]


def relayed(upstream: bytes) -> bytes:
    """What the relay sent for ``upstream``'s events before it wrote them together: one
    frame per event, its JSON encoded again."""
    out: list[bytes] = []
    for line in upstream.split(b"\n"):
        if line.startswith(b"data:"):
            out.append(frame(len(out) + 1, dumps(json.loads(line[5:]))))
    return b"".join(out)


async def test_the_events_of_one_upstream_read_go_out_together_whole_and_in_order(
    raw_server: RawServerFactory,
) -> None:
    """300 events the upstream wrote at once reach the client byte for byte as one frame
    each would, in a few writes rather than one per event."""
    upstream = bailian_stream([f"piece {i} " for i in range(300)], SESSION)
    raw = await raw_server([upstream])
    async with relay_for(raw.base_url) as relay:
        reader, writer = await ask(relay)
        chunks = await http_chunks(reader)
        writer.close()
    assert b"".join(chunks) == relayed(upstream)
    assert len(chunks) <= 10, f"{len(chunks)} writes for 301 events"


_DIALECTS: dict[str, tuple[str, dict[str, Any], Callable[[dict[str, Any]], str]]] = {
    "openai": (
        "/v1/chat/completions",
        {"model": "app", "stream": True, "messages": [{"role": "user", "content": "hi"}]},
        lambda chunk: chunk["choices"][0]["delta"].get("content", "") if chunk["choices"] else "",
    ),
    "ui-stream": (
        "/api/chat",
        {
            "id": "chat1",
            "trigger": "submit-message",
            "messages": [{"id": "u0", "role": "user", "parts": [{"type": "text", "text": "hi"}]}],
        },
        lambda chunk: chunk["delta"] if chunk["type"] == "text-delta" else "",
    ),
}


@pytest.mark.parametrize("dialect", sorted(_DIALECTS))
async def test_a_dialect_sends_the_events_of_one_upstream_read_together(
    raw_server: RawServerFactory, dialect: str
) -> None:
    """The OpenAI and UI-stream endpoints too: 300 events the upstream wrote at once
    reach the client whole and in order, in a few writes rather than one per event."""
    pieces = [f"piece {i} " for i in range(300)]
    raw = await raw_server([bailian_stream(pieces, SESSION)])
    path, request, text_of = _DIALECTS[dialect]
    async with relay_for(raw.base_url) as relay:
        reader, writer = await ask(relay, path=path, request=request)
        chunks = await http_chunks(reader)
        writer.close()
    blocks = b"".join(chunks).decode().split("\n\n")
    assert blocks[-2:] == ["data: [DONE]", ""]
    said = "".join(text_of(json.loads(block.removeprefix("data: "))) for block in blocks[:-2])
    assert said == "".join(pieces)
    assert len(chunks) <= 10, f"{len(chunks)} writes for 301 events"


async def test_a_client_that_reads_slowly_gets_every_event_whole_and_in_order(
    raw_server: RawServerFactory,
) -> None:
    """A client with a small socket buffer that reads a little at a time (the relay
    waits for it, frames held and all) still gets every event, byte for byte."""
    upstream = bailian_stream([f"{i:05d}" + "x" * 100 for i in range(3000)], SESSION)
    writes = [upstream[i : i + 50_000] for i in range(0, len(upstream), 50_000)]
    raw = await raw_server(writes)
    async with relay_for(raw.base_url) as relay:
        reader, writer = await ask(relay, receive_buffer=4096, limit=512)
        chunks = await http_chunks(reader, size=512)
        writer.close()
    assert b"".join(chunks) == relayed(upstream)


@pytest.mark.parametrize(
    "after",
    [b"", b":keep-alive\n\n", b"event:ping\ndata:{}\n\n"],
    ids=["alone", "before-a-comment", "before-an-event-of-no-result"],
)
async def test_an_event_is_written_before_the_upstream_sends_the_next(
    tcp_server: TcpServerFactory, after: bytes
) -> None:
    """The relay does not hold an event for the next one: the upstream sends its second
    event only once the client has received the first."""
    seen = asyncio.get_running_loop().create_future()

    async def upstream(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        events = bailian_stream(["first", "second"], SESSION).split(b"\n\n")
        writer.write(
            b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\nconnection: close\r\n\r\n"
        )
        writer.write(events[0] + b"\n\n" + after)
        await writer.drain()
        await asyncio.wait_for(asyncio.shield(seen), BOUND)
        writer.write(b"\n\n".join(events[1:]))
        await writer.drain()

    async with relay_for(await tcp_server(upstream)) as relay:
        reader, writer = await ask(relay)
        await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), BOUND)
        first = await asyncio.wait_for(reader.readuntil(b"\n\n"), BOUND)
        seen.set_result(None)
        rest = b""
        while chunk := await asyncio.wait_for(reader.read(1 << 16), BOUND):
            rest += chunk
        writer.close()
    assert b'"text":"first"' in first
    assert b'"text":"second"' in rest and rest.endswith(b"0\r\n\r\n")


async def test_an_event_goes_on_as_the_upstream_wrote_its_json(
    raw_server: RawServerFactory,
) -> None:
    """The relay passes an event's JSON on unchanged (spacing, escapes); one whose JSON
    spans two data lines goes out on one line, its JSON encoded again."""
    spaced = (
        f'{{"output": {{"session_id": "{SESSION}", "finish_reason": "null", '
        '"text": "\\u4f60\\u597d"}, "usage": {}, "request_id": "r-1"}'
    )
    split = {"output": {"session_id": SESSION, "finish_reason": "stop", "text": " more"}}
    upstream = (
        f"id:1\nevent:result\ndata:{spaced}\n\n"
        f'id:2\nevent:result\ndata:{{"output":\ndata:{json.dumps(split["output"])}}}\n\n'
    ).encode()
    raw = await raw_server([upstream])
    async with relay_for(raw.base_url) as relay:
        reader, writer = await ask(relay)
        sent = b"".join(await http_chunks(reader))
        writer.close()
    assert sent == frame(1, spaced) + frame(2, dumps(split))


@settings(max_examples=200, deadline=None)
@given(
    kinds=st.lists(st.sampled_from(sorted(_EVENT_KINDS)), max_size=12),
    cuts=st.lists(st.integers(1, 2000), max_size=6),
)
def test_what_the_relay_asks_of_a_stream_is_exact(kinds: list[str], cuts: list[int]) -> None:
    """However a stream is cut into reads: after each message, the reader says another
    is ready exactly when the same read gives one, and the JSON it hands the relay is
    that message's whole JSON, on one line."""
    stream = b"".join(_EVENT_KINDS[kind](n) for n, kind in enumerate(kinds, 1))
    bounds = sorted({0, len(stream), *(c for c in cuts if c < len(stream))})
    reader = ReplyReader(incremental=True, on_session_id=lambda _: None, max_event_size=1 << 20)
    reader.open_stream()
    texts: list[str] = []
    for start, end in itertools.pairwise(bounds):
        items = list(_walk(reader, stream[start:end]))
        for i, (message, ahead, data) in enumerate(items):
            assert ahead == (i < len(items) - 1)
            assert data is None or ("\n" not in data and json.loads(data) == message.raw)
            texts.append(message.delta)
    assert texts == [f"<{n}>" for n, kind in enumerate(kinds, 1) if kind in _RESULTS]


_RESULTS = {"compact", "spaced", "two-lines"}


def _walk(reader: ReplyReader, chunk: bytes) -> list[tuple[Message, bool, str | None]]:
    """Each message of one read, with what ahead() and data() said right after it."""
    walked: list[tuple[Message, bool, str | None]] = []
    for item in reader.feed(chunk):
        assert isinstance(item, Message)
        walked.append((item, reader.ahead(), reader.data()))
    return walked


@pytest.mark.parametrize("text", ["a", '你好\n"x"\\', "\u2028\x00", ""], ids=repr)
def test_an_openai_chunk_of_text_is_the_chunk_of_its_delta(text: str) -> None:
    """The OpenAI endpoint's shortcut for a piece of text writes, byte for byte, the
    chunk of the delta object it stands for."""
    chunks = _Chunks("app", "r-1", False, {})
    assert chunks.said(_CONTENT, text) == chunks.chunk({"content": text})
    assert chunks.said(_REASONING, text) == chunks.chunk({"reasoning_content": text})
