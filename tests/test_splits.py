"""Where the network splits a reply into reads never changes its messages or errors.

Every stream of the corpus below (Bailian's framing with and without its blank lines, in
each line-end style, multi-line data, keep-alive comments, results then an error,
malformed events, a BOM, an error-only answer), cut at every position or into random
pieces, gives exactly what the unsplit stream gives: the same ordered messages (delta,
text, finish_reason, session_id) and errors (class, status, code), through
``Session.stream()`` and through ``Session.send()`` with an error handler. The server
is a hand-written one on 127.0.0.1 that writes each piece on its own and lets the
client read it before writing the next (pieces may still coalesce in the kernel now and
then; the property holds either way). The same corpus is also fed straight to the
decoder in every split.
"""

from __future__ import annotations

import asyncio
import itertools
import socket
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tyqw import Message, Session, TyqwError
from tyqw import _wire as wire
from tyqw.sse import ServerSentEvent, SSEDecoder

from .helpers import TcpServerFactory, raw_session, read_request

SID = "5b1f7c"
BOM = b"\xef\xbb\xbf"
HEAD = (
    b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream;charset=UTF-8\r\n"
    b"connection: close\r\n\r\n"
)

Item = tuple[str, str, str, str | None, str | None] | tuple[str, str, int | None, str | None]
"""("message", delta, text, finish_reason, session_id) or ("error", class, status, code)."""


def frame(n: int, text: str, finish_reason: str = "null") -> bytes:
    """A result frame exactly as Bailian writes it, blank line included."""
    output = {"session_id": SID, "finish_reason": finish_reason, "text": text}
    return wire.frame(n, wire.dumps({"output": output, "request_id": "r1"}))


def error_frame(n: int, status: int, code: str) -> bytes:
    """An error frame as Bailian writes it: no blank line after it (the stream ends)."""
    data = wire.dumps(wire.error_body(code, "refused", "r1"))
    return wire.frame(n, data, event="error", status=status, end=False)


def without_blank_lines(stream: bytes) -> bytes:
    """The framing of older gateways: no blank line after a frame."""
    return stream.replace(b"\n\n", b"\n")


def messages(*pieces: tuple[str, str | None]) -> list[Item]:
    """The messages of an incremental reply made of these (delta, finish_reason) pieces."""
    text = ""
    out: list[Item] = []
    for delta, finish_reason in pieces:
        text += delta
        out.append(("message", delta, text, finish_reason, SID))
    return out


REPLY = frame(1, "你好") + frame(2, "，🎉") + frame(3, "", "stop")
REPLY_MESSAGES = messages(("你好", None), ("，🎉", None), ("", "stop"))

MULTI_LINE = (
    b'id:1\nevent:result\n:HTTP_STATUS/200\ndata:{"output":{"session_id":"5b1f7c",\n'
    b'data:"finish_reason":"null","text":"\xe5\xa4\x9a\xe8\xa1\x8c"},"request_id":"r1"}\n\n'
    + frame(2, "", "stop")
)
THEN_ERROR = frame(1, "你") + frame(2, "好") + error_frame(3, 400, "DataInspectionFailed")
THEN_ERROR_ITEMS = [
    *messages(("你", None), ("好", None)),
    ("error", "BadRequestError", 400, "DataInspectionFailed"),
]
MALFORMED = (
    frame(1, "你")
    + b"id:2\nevent:result\n:HTTP_STATUS/200\ndata:{not json\n\n"
    + b'id:3\nevent:result\n:HTTP_STATUS/200\ndata:{"no":"output"}\n\n'
    + frame(4, "好")
    + frame(5, "", "stop")
)
MALFORMED_ERROR: Item = ("error", "StreamError", None, None)
_first, _second, _stop = messages(("你", None), ("好", None), ("", "stop"))
MALFORMED_ITEMS = [_first, MALFORMED_ERROR, MALFORMED_ERROR, _second, _stop]


@dataclass(frozen=True)
class Case:
    """One stream of the corpus and what the two ways of reading it must give."""

    body: bytes
    sent: list[Item]  # everything, through send() with handlers
    streamed: list[Item] = field(default_factory=list)  # through stream(): up to an error

    def expected_stream(self) -> list[Item]:
        return self.streamed or self.sent


CORPUS: dict[str, Case] = {
    "blank-lines": Case(REPLY, REPLY_MESSAGES),
    "no-blank-lines": Case(without_blank_lines(REPLY), REPLY_MESSAGES),
    "crlf": Case(REPLY.replace(b"\n", b"\r\n"), REPLY_MESSAGES),
    "crlf-no-blank-lines": Case(
        without_blank_lines(REPLY).replace(b"\n", b"\r\n"), REPLY_MESSAGES
    ),
    "cr": Case(REPLY.replace(b"\n", b"\r"), REPLY_MESSAGES),
    "cr-no-blank-lines": Case(without_blank_lines(REPLY).replace(b"\n", b"\r"), REPLY_MESSAGES),
    "multi-line-data": Case(MULTI_LINE, messages(("多行", None), ("", "stop"))),
    "multi-line-data-no-blank-lines": Case(
        without_blank_lines(MULTI_LINE), messages(("多行", None), ("", "stop"))
    ),
    "keep-alive-comments": Case(
        b":\n\n" + REPLY.replace(b"\n\nid:", b"\n\n: ping\n\nid:") + b":keepalive\n\n",
        REPLY_MESSAGES,
    ),
    "results-then-error": Case(THEN_ERROR + b"\n", THEN_ERROR_ITEMS),
    "results-then-error-no-blank-lines": Case(without_blank_lines(THEN_ERROR), THEN_ERROR_ITEMS),
    "malformed-events": Case(MALFORMED, MALFORMED_ITEMS, MALFORMED_ITEMS[:2]),
    "malformed-events-no-blank-lines": Case(
        without_blank_lines(MALFORMED), MALFORMED_ITEMS, MALFORMED_ITEMS[:2]
    ),
    "bom": Case(BOM + REPLY, REPLY_MESSAGES),
    "bom-no-blank-lines": Case(BOM + without_blank_lines(REPLY), REPLY_MESSAGES),
    "error-only": Case(
        b'id:1\nevent:error\n:HTTP_STATUS/400\ndata:{"code":"InvalidParameter","message":'
        b'"Required parameter(AppId) missing or invalid.","request_id":"d18bb1bc"}\n',
        [("error", "BadRequestError", 400, "InvalidParameter")],
    ),
}
# Split at every position over real sockets only up to this size (each position is two
# turns); longer streams get random pieces, and every position at the decoder level.
SHORT = 600


def split_at(stream: bytes, cuts: list[int]) -> list[bytes]:
    """The stream cut at the given offsets (empty pieces dropped)."""
    bounds = [0, *sorted(set(cuts)), len(stream)]
    return [stream[a:b] for a, b in itertools.pairwise(bounds) if b > a]


def message_item(message: Message) -> Item:
    return ("message", message.delta, message.text, message.finish_reason, message.session_id)


def error_item(error: TyqwError) -> Item:
    status, code = getattr(error, "status_code", None), getattr(error, "code", None)
    return ("error", type(error).__name__, status, code)


# -- over real sockets ------------------------------------------------------------------


@dataclass
class SplitServer:
    """Serves ``pieces`` as the body of the next answer, one write per piece."""

    base_url: str = ""
    pieces: list[bytes] = field(default_factory=list)


@pytest.fixture
async def split_server(tcp_server: TcpServerFactory) -> SplitServer:
    server = SplitServer()

    async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.get_extra_info("socket").setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        writer.write(HEAD)
        for piece in server.pieces:
            await writer.drain()
            # The client runs on this event loop: a few passes of it let the client read
            # the previous piece on its own before this one is written.
            for _ in range(4):
                await asyncio.sleep(0)
            writer.write(piece)
        await writer.drain()

    server.base_url = await tcp_server(answer)
    return server


async def streamed(session: Session) -> list[Item]:
    """What ``stream()`` gives: the messages, then the error that ended the loop."""
    items: list[Item] = []
    try:
        async for message in session.stream("hi"):
            items.append(message_item(message))
    except TyqwError as exc:
        items.append(error_item(exc))
    return items


async def sent(session: Session) -> list[Item]:
    """What ``send()`` emits to a message handler and an error handler, in order."""
    items: list[Item] = []
    on_message = session.on("message", lambda m: items.append(message_item(m)))
    on_error = session.on("error", lambda e: items.append(error_item(e)))
    try:
        await session.send("hi")
    finally:
        session.off("message", on_message)
        session.off("error", on_error)
    return items


@pytest.fixture
async def session(split_server: SplitServer, state_dir: Path) -> AsyncIterator[Session]:
    async with raw_session(split_server.base_url, state_dir, read_timeout=5) as session:
        yield session


@pytest.mark.parametrize(
    "name", [name for name, case in CORPUS.items() if len(case.body) <= SHORT]
)
async def test_every_split_gives_the_unsplit_result(
    split_server: SplitServer, session: Session, name: str
) -> None:
    """Cut at any byte, a stream gives the messages and errors of the unsplit stream."""
    case = CORPUS[name]
    body = case.body
    split_server.pieces = [body]
    assert await streamed(session) == case.expected_stream()
    assert await sent(session) == case.sent
    for i in range(1, len(body)):
        split_server.pieces = [body[:i], body[i:]]
        assert await streamed(session) == case.expected_stream(), f"stream() cut at {i}"
        assert await sent(session) == case.sent, f"send() cut at {i}"


@settings(
    max_examples=60,
    deadline=None,
    # One server and Session per test, reused by every example on purpose.
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(name=st.sampled_from(sorted(CORPUS)), data=st.data())
async def test_random_pieces_give_the_unsplit_result(
    split_server: SplitServer, session: Session, name: str, data: st.DataObject
) -> None:
    """Cut into random pieces, a stream gives the messages and errors of the unsplit one."""
    case = CORPUS[name]
    cuts = data.draw(st.lists(st.integers(1, len(case.body) - 1), max_size=12), label="cuts")
    split_server.pieces = split_at(case.body, cuts)
    assert await streamed(session) == case.expected_stream()
    assert await sent(session) == case.sent


# -- the decoder alone ------------------------------------------------------------------


def decode(chunks: list[bytes]) -> list[ServerSentEvent]:
    """The events of a turn's decoder (implicit dispatch, the last block kept) fed chunks."""
    decoder = SSEDecoder(implicit_dispatch=True)
    events = [event for chunk in chunks for event in decoder.feed(chunk)]
    return events + decoder.close(dispatch_incomplete=True)


@pytest.mark.parametrize("name", list(CORPUS))
def test_decoder_every_split_gives_the_same_events(name: str) -> None:
    """Fed any two-way split, or a byte at a time, the decoder gives the same events."""
    body = CORPUS[name].body
    whole = decode([body])
    assert whole, "every stream of the corpus has events"
    for i in range(len(body) + 1):
        assert decode([body[:i], body[i:]]) == whole, i
    assert decode([body[i : i + 1] for i in range(len(body))]) == whole


@settings(max_examples=200, deadline=None)
@given(name=st.sampled_from(sorted(CORPUS)), data=st.data())
def test_decoder_random_pieces_give_the_same_events(name: str, data: st.DataObject) -> None:
    """Fed random pieces, the decoder gives the events of the unsplit stream."""
    body = CORPUS[name].body
    cuts = data.draw(st.lists(st.integers(0, len(body)), max_size=20), label="cuts")
    assert decode(split_at(body, cuts)) == decode([body])
