"""Hostile or broken input, from the wire and from the caller.

The wire: oversized and endless events, answers that are not event streams, malformed
events, invalid UTF-8, frames without separators. The caller: app ids that could change
the URL path, base URLs that are not http(s) or would send the key in clear text,
workspace ids, prompts that are not strings.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest

import tyqw
from tyqw import Message, Session
from tyqw._json import json_problem
from tyqw.sse import SSEDecoder
from tyqw.testing import BailianSimulator, Fault

from .helpers import (
    RawServerFactory,
    SessionFactory,
    TcpServerFactory,
    bailian_event,
    bailian_stream,
    raw_messages,
    raw_session,
    sim_session,
)

BOUND = 5.0
PROMPT = "hello there, tell me something"
REPLY = "one two three four five six"


# -- oversized and endless input -------------------------------------------------------


async def test_oversized_event_raises_event_too_large(
    make_session: SessionFactory, sim: BailianSimulator
) -> None:
    """An event past max_event_size: EventTooLargeError (a StreamError), partial reply."""
    sim.reply = lambda prompt, history: REPLY
    sim.inject(Fault.oversized(8192, after=2))
    session = make_session(max_event_size=1024)
    with pytest.raises(tyqw.EventTooLargeError) as info:
        await session.send(PROMPT)
    error = info.value
    assert isinstance(error, tyqw.StreamError) and error.limit == 1024
    assert "1024" in str(error)
    assert error.reply is not None and error.reply.text == REPLY[:8]  # two 4-char events
    assert len(sim.requests) == 1


async def test_events_before_an_oversized_line_are_kept(
    raw_server: RawServerFactory, state_dir: Path
) -> None:
    """Events that arrived in the same read as an oversized line still reach the Reply."""
    first = bailian_event(1, {"session_id": "s7", "finish_reason": "null", "text": "kept"})
    server = await raw_server([first + b"data:" + b"x" * 4096 + b"\n\n"])
    async with raw_session(server.base_url, state_dir, max_event_size=1024) as session:
        with pytest.raises(tyqw.EventTooLargeError) as info:
            await session.send("hi")
        assert session.session_id == "s7"
    assert info.value.reply is not None and info.value.reply.text == "kept"


def test_decoder_returns_events_before_an_oversized_line() -> None:
    """feed() returns the events it completed, then the next call raises."""
    decoder = SSEDecoder(max_size=100)
    events = decoder.feed(b"data: a\n\ndata: b\n\ndata: " + b"x" * 200)
    assert [e.data for e in events] == ["a", "b"]
    with pytest.raises(tyqw.EventTooLargeError, match="line longer than 100"):
        decoder.feed(b"more")
    with pytest.raises(ValueError, match="closed"):
        decoder.feed(b"more")


@pytest.mark.parametrize(
    "overflow",
    [b"data: " + b"x" * 200, b"data: 123456789\n" * 11],
    ids=["long-line", "long-event"],
)
def test_decoder_raises_a_held_error_on_close(overflow: bytes) -> None:
    """A held-back EventTooLargeError is raised by close() if no feed() came first."""
    decoder = SSEDecoder(max_size=100)
    assert [e.data for e in decoder.feed(b"id: 3\ndata: a\n\n" + overflow)] == ["a"]
    assert decoder.last_event_id == "3"
    with pytest.raises(tyqw.EventTooLargeError):
        decoder.close(dispatch_incomplete=True)
    assert decoder.close() == []


async def test_event_under_the_cap_is_fine(
    make_session: SessionFactory, sim: BailianSimulator
) -> None:
    """The cap is a limit, not a guess: a 900-byte event passes a 1024-byte cap."""
    sim.inject(Fault.oversized(900, after=1))
    reply = await make_session(max_event_size=1024).send(PROMPT)
    assert reply.finish_reason == "stop" and "x" * 500 in reply.text


async def test_oversized_event_is_emitted_to_error_listeners(
    make_session: SessionFactory, sim: BailianSimulator
) -> None:
    """With an error listener, send() returns the partial Reply carrying the error."""
    sim.inject(Fault.oversized(4096, after=1))
    session = make_session(max_event_size=1024)
    errors: list[tyqw.TyqwError] = []
    session.on("error", errors.append)
    reply = await session.send(PROMPT)
    assert [type(e) for e in errors] == [tyqw.EventTooLargeError]
    assert reply.error is errors[0] and reply.text and reply.finish_reason is None


@pytest.fixture
def endless_server(
    tcp_server: TcpServerFactory,
) -> Callable[[bytes, bytes], Awaitable[dict[str, Any]]]:
    """``await endless_server(head, chunk)``: answers with ``head`` and then ``chunk``
    over and over (64 MiB at most) until the client hangs up; reports bytes sent.
    """

    async def start(head: bytes, chunk: bytes) -> dict[str, Any]:
        state: dict[str, Any] = {"sent": 0, "base_url": ""}

        async def flood(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            await reader.readuntil(b"\r\n\r\n")
            writer.write(head)
            while state["sent"] < 64 * 2**20:
                writer.write(chunk)
                await writer.drain()
                state["sent"] += len(chunk)

        state["base_url"] = await tcp_server(flood)
        return state

    return start


SSE_HEAD = b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\nconnection: close\r\n\r\n"


@pytest.mark.parametrize(
    ("head", "chunk", "error"),
    [
        (b"data:", b"x" * 65536, tyqw.EventTooLargeError),
        # Each data line is handed over as it completes: the first, not JSON, ends it.
        (b"", b"data:" + b"x" * 1000 + b"\n", tyqw.StreamError),
    ],
    ids=["one-endless-line", "endless-data-lines"],
)
async def test_endless_stream_is_never_buffered(
    endless_server: Callable[[bytes, bytes], Awaitable[dict[str, Any]]],
    state_dir: Path,
    head: bytes,
    chunk: bytes,
    error: type[tyqw.StreamError],
) -> None:
    """A line that never ends is refused at the cap; nothing is buffered without end."""
    server = await endless_server(SSE_HEAD + head, chunk)
    async with raw_session(server["base_url"], state_dir, max_event_size=256 * 1024) as session:
        with pytest.raises(error):
            await asyncio.wait_for(session.send("hi"), BOUND)
    assert server["sent"] < 32 * 2**20  # the client hung up long before the server's limit


async def test_endless_error_body_is_read_only_up_to_a_bound(
    endless_server: Callable[[bytes, bytes], Awaitable[dict[str, Any]]], state_dir: Path
) -> None:
    """A 500 whose body never ends still becomes an error with a short message."""
    head = b"HTTP/1.1 500 Oops\r\ncontent-type: text/html\r\nconnection: close\r\n\r\n"
    server = await endless_server(head, b"<p>" + b"x" * 4096)
    async with raw_session(server["base_url"], state_dir, max_retries=0) as session:
        with pytest.raises(tyqw.InternalServerError) as info:
            await asyncio.wait_for(session.send("hi"), BOUND)
    assert info.value.status_code == 500
    assert "<p>xxx" in str(info.value) and len(str(info.value)) < 500


# -- answers that are not event streams ------------------------------------------------


@pytest.mark.parametrize(
    ("content_type", "body"),
    [
        ("text/html", b"<html><body><h1>Welcome to the captive portal</h1>" + b"x" * 2**20),
        ("text/plain", b"upstream connect error or disconnect/reset before headers"),
        ("application/octet-stream", b"\x00\x01\x02\xff" * 1000),
        ("", b"no content type at all"),
    ],
    ids=["html-page", "plain-text", "binary", "no-content-type"],
)
async def test_a_200_that_is_not_an_event_stream(
    make_session: SessionFactory, sim: BailianSimulator, content_type: str, body: bytes
) -> None:
    """A 200 proxy page: UnexpectedContentTypeError with the status and a short excerpt."""
    sim.inject(Fault.content_type(content_type, body, status=200))
    session = make_session()
    with pytest.raises(tyqw.UnexpectedContentTypeError) as info:
        await asyncio.wait_for(session.send(PROMPT), BOUND)
    error = info.value
    assert error.status_code == 200 and error.content_type == content_type
    assert "HTTP 200" in str(error) and (content_type or "no content type") in str(error)
    assert error.excerpt and len(str(error)) < 2048  # bounded, however large the page
    assert len(sim.requests) == 1  # a 200 is an answer: never retried
    assert (await session.send("again")).finish_reason == "stop"


async def test_a_non_json_answer_in_non_streaming_mode(
    raw_server: RawServerFactory, state_dir: Path
) -> None:
    """stream=False expects JSON, and the error says so (not "expected text/event-stream")."""
    server = await raw_server([b"<html>portal</html>"], content_type="text/html")
    async with raw_session(server.base_url, state_dir) as session:
        with pytest.raises(tyqw.UnexpectedContentTypeError) as info:
            await session.send("hi", stream=False)
    assert str(info.value).startswith("expected application/json, got text/html")


async def test_an_event_stream_answering_a_non_streaming_request_is_read(
    raw_server: RawServerFactory, state_dir: Path
) -> None:
    """A gateway that streams although stream=False was asked: the reply is read as SSE."""
    server = await raw_server([bailian_stream(["你", "好"])])
    async with raw_session(server.base_url, state_dir) as session:
        reply = await session.send("hi", stream=False)
    assert (reply.text, reply.finish_reason) == ("你好", "stop")


async def test_a_200_json_body_that_is_not_json(
    make_session: SessionFactory, sim: BailianSimulator
) -> None:
    """A relay that drops the SSE switch but sends garbage as JSON: a StreamError."""
    sim.inject(Fault.content_type("application/json", b"<html>502</html>", status=200))
    with pytest.raises(tyqw.StreamError, match="not valid JSON") as info:
        await make_session().send(PROMPT)
    assert "<html>502" in info.value.excerpt


# -- malformed events ------------------------------------------------------------------


@pytest.mark.parametrize(
    "data",
    [
        "{not json",
        "[1, 2, 3]",
        '"just a string"',
        "null",
        '{"output": "text"}',
        '{"output": null}',
        '{"foo": 1}',
        "garbage " * 20_000,
    ],
    ids=[
        "bad-json",
        "array",
        "string",
        "null",
        "output-not-object",
        "output-null",
        "no-output",
        "huge-garbage",
    ],
)
async def test_malformed_event_is_reported_and_the_turn_goes_on(
    make_session: SessionFactory, sim: BailianSimulator, data: str
) -> None:
    """Each malformed event: one StreamError with a bounded excerpt; the rest arrives."""
    sim.reply = lambda prompt, history: REPLY
    sim.inject(Fault.malformed(after=2, data=data))
    session = make_session()
    errors: list[tyqw.TyqwError] = []
    session.on("error", errors.append)
    reply = await session.send(PROMPT)
    assert reply.text == REPLY and reply.finish_reason == "stop"
    [error] = errors
    assert type(error) is tyqw.StreamError
    assert error.excerpt and len(error.excerpt) <= 210 and len(str(error)) < 500
    assert error.reply is not None and error.reply.text == REPLY[:8]


async def test_malformed_event_ends_a_stream_loop(
    make_session: SessionFactory, sim: BailianSimulator
) -> None:
    """stream() raises the StreamError (it has no error handlers to report it to)."""
    sim.inject(Fault.malformed(after=2))
    received: list[Message] = []

    async def consume() -> None:
        async for message in make_session().stream(PROMPT):
            received.append(message)

    with pytest.raises(tyqw.StreamError, match="not JSON"):
        await consume()
    assert len(received) == 2


# -- invalid UTF-8 and odd framing -----------------------------------------------------

EVENT_1 = bailian_event(1, {"session_id": "s", "finish_reason": "null", "text": "ab"})
STOP = bailian_event(2, {"session_id": "s", "finish_reason": "stop", "text": ""})


@pytest.mark.parametrize(
    ("body", "deltas"),
    [
        (b"event:res\xffult\ndata:{}\n\n" + EVENT_1 + STOP, ["ab", ""]),
        (b":\xff\xfe\xfd\n\n" + EVENT_1 + STOP, ["ab", ""]),
        (b"id:\xff\xc0\n" + EVENT_1 + STOP, ["ab", ""]),
        (b"\xffdata:oops\n\n" + EVENT_1 + STOP, ["ab", ""]),
        (EVENT_1.replace(b'"ab"', b'"a\xc0\xafb"') + STOP, ["a\ufffd\ufffdb", ""]),
        (EVENT_1.replace(b'"ab"', b'"a\xed\xa0\x80b"') + STOP, ["a\ufffd\ufffd\ufffdb", ""]),
        (EVENT_1.replace(b'"ab"', b'"a' + "好".encode()[:-1] + b'"') + STOP, ["a\ufffd", ""]),
    ],
    ids=[
        "in-event-name",
        "in-comment",
        "in-id",
        "in-field-name",
        "overlong",
        "surrogate",
        "cut-character",
    ],
)
async def test_invalid_utf8_anywhere_never_raises(
    raw_server: RawServerFactory, state_dir: Path, body: bytes, deltas: list[str]
) -> None:
    """Invalid UTF-8 becomes U+FFFD wherever it is; unknown events are ignored."""
    server = await raw_server([body])
    messages = await raw_messages(server.base_url, state_dir)
    assert [m.delta for m in messages] == deltas


@pytest.mark.parametrize("newline", [b"\n", b"\r\n", b"\r"], ids=["LF", "CRLF", "CR"])
async def test_frames_without_blank_lines_with_any_line_ending(
    raw_server: RawServerFactory, state_dir: Path, newline: bytes
) -> None:
    """Older gateways' frames without the blank separator, with each line ending."""
    stream = bailian_stream(["你", "好", "!"]).replace(b"\n\n", b"\n").replace(b"\n", newline)
    server = await raw_server([stream])
    messages = await raw_messages(server.base_url, state_dir)
    assert [m.delta for m in messages] == ["你", "好", "!", ""]
    assert messages[-1].finish_reason == "stop"


@pytest.mark.parametrize(
    ("fed", "flushed"),
    [
        (b"id:1\nevent:result\n:HTTP_STATUS/200\ndata:{}\n", ["{}"]),
        (b"data:{}\n\n", []),  # already dispatched by its blank line
        (b"event:result\n", []),  # no data yet: the block stays as it is
        (b"data:{}\nid:2", []),  # a line is half-received
        (b"data:{}\r", ["{}"]),  # a CR ends the line; a LF after it is not a blank line
    ],
    ids=["whole-frame", "already-dispatched", "no-data", "half-line", "cr"],
)
def test_decoder_flush(fed: bytes, flushed: list[str]) -> None:
    """flush() (deprecated: it warns) dispatches a pending block with data whose lines
    are all complete."""
    decoder = SSEDecoder()
    decoder.feed(fed)
    with pytest.deprecated_call():
        assert [e.data for e in decoder.flush()] == flushed
    with pytest.deprecated_call():
        assert decoder.flush() == []
    assert [e.data for e in decoder.feed(b"\n")] == []  # the late blank line is a no-op


async def test_frames_without_blank_lines_stream_as_they_arrive(state_dir: Path) -> None:
    """Without blank separators each event still arrives when its data line does, not
    when the stream ends: the server holds the rest back until the client has the first.
    """
    first_seen = asyncio.Event()
    rest_sent = asyncio.Event()
    frames = bailian_stream(["早", "上好"]).replace(b"\n\n", b"\n").splitlines(keepends=True)
    split = frames.index(next(f for f in frames if f.startswith(b"data:"))) + 1

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            await reader.readuntil(b"\r\n\r\n")
            writer.write(SSE_HEAD + b"".join(frames[:split]))
            await writer.drain()
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(first_seen.wait(), BOUND)
            writer.write(b"".join(frames[split:]))
            rest_sent.set()
            await writer.drain()
        finally:
            writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    base_url = f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}/api/v1"
    try:
        async with raw_session(base_url, state_dir) as session:
            early: list[bool] = []

            def on_message(message: Message) -> None:
                if not early:
                    early.append(not rest_sent.is_set())
                    first_seen.set()

            session.on("message", on_message)
            reply = await asyncio.wait_for(session.send("hi"), BOUND * 2)
    finally:
        server.close()
        await server.wait_closed()
    assert reply.text == "早上好" and reply.finish_reason == "stop"
    assert early == [True], "the first event waited for the end of the stream"


# -- 6. bad input from the caller -------------------------------------------------------


@pytest.mark.parametrize(
    "app_id",
    [
        *["", "/", "a/b", "..", "a..b", "../x", ".", " a", "a b", "a\t", "a\n", "a?b", "a#b"],
        *["a%2fb", "a\\b", "应用", "a" * 129, None, 42],
    ],
    ids=lambda v: repr(v)[:20],
)
def test_app_id_that_could_change_the_path_is_refused(tmp_path: Path, app_id: Any) -> None:
    """Empty ids and ids with '/', '..', whitespace, '?', '#'...: ValueError at once."""
    with pytest.raises(ValueError, match="app_id"):
        Session(app_id, api_key="sk-x", state_dir=tmp_path)


@pytest.mark.parametrize(
    "app_id", ["010aa085cc9943268731861c9511bb0c", "app-1", "app_1", "A"], ids=repr
)
async def test_valid_app_id_lands_in_the_path_verbatim(state_dir: Path, app_id: str) -> None:
    """A valid id is used as is: POST {base}/apps/{app_id}/completion."""
    async with (
        BailianSimulator(app_ids=[app_id]) as sim,
        sim_session(sim, state_dir, app_id=app_id) as session,
    ):
        await session.send("hi")
    assert sim.requests[-1].path == f"/api/v1/apps/{app_id}/completion"


@pytest.mark.parametrize(
    "base_url",
    [
        "ftp://dashscope.aliyuncs.com/api/v1",
        "file:///etc/passwd",
        "ws://127.0.0.1:8000/api/v1",
        "dashscope.aliyuncs.com/api/v1",
        "localhost:8000/api/v1",
        "//dashscope.aliyuncs.com/api/v1",
        "https://",
        "http:///api/v1",
    ],
)
def test_base_url_that_is_not_http_is_refused(tmp_path: Path, base_url: str) -> None:
    """Anything but an http(s) URL with a host: ValueError at construction."""
    with pytest.raises(ValueError, match="http"):
        Session("app", api_key="sk-x", base_url=base_url, state_dir=tmp_path)


@pytest.mark.parametrize(
    "base_url",
    [
        "http://dashscope.aliyuncs.com/api/v1",
        "http://10.0.0.8:8080/api/v1",
        "http://0.0.0.0:8000/api/v1",
        "http://localhost.example.com/api/v1",
        "http://127.0.0.1.nip.io/api/v1",
        "http://127.0.0.1@evil.example/api/v1",
        "http://evil.example#@127.0.0.1/api/v1",
        "http://[::2]:8000/api/v1",
    ],
)
def test_plain_http_to_another_host_is_refused(tmp_path: Path, base_url: str) -> None:
    """The key never goes over plain http beyond loopback without an explicit opt-in."""
    with pytest.raises(ValueError, match="allow_insecure_http"):
        Session("app", api_key="sk-x", base_url=base_url, state_dir=tmp_path)
    if "#" in base_url:  # opting in does not make a URL with a fragment usable
        with pytest.raises(ValueError, match="query or fragment"):
            Session("app", api_key="sk-x", base_url=base_url, allow_insecure_http=True)
        return
    if "@" in base_url:  # nor one with credentials, which aiohttp would send as well
        with pytest.raises(ValueError, match="credentials"):
            Session("app", api_key="sk-x", base_url=base_url, allow_insecure_http=True)
        return
    session = Session(
        "app", api_key="sk-x", base_url=base_url, state_dir=tmp_path, allow_insecure_http=True
    )
    assert session.base_url == base_url.rstrip("/")


@pytest.mark.parametrize(
    "host", ["localhost", "LOCALHOST", "127.0.0.1", "127.0.0.2", "127.255.255.254", "[::1]"]
)
def test_plain_http_to_loopback_is_allowed(tmp_path: Path, host: str) -> None:
    """localhost, 127.0.0.0/8 and ::1 may use plain http (local simulators, tunnels)."""
    Session("app", api_key="sk-x", base_url=f"http://{host}:8000/api/v1", state_dir=tmp_path)


async def test_refused_url_is_refused_before_any_connection(
    sim: BailianSimulator, state_dir: Path
) -> None:
    """The insecure-http check runs in the constructor: nothing reaches any server."""
    url = sim.base_url.replace("127.0.0.1", "localtest.me")  # resolves to 127.0.0.1
    with pytest.raises(ValueError, match="allow_insecure_http"):
        sim_session(sim, state_dir, base_url=url)
    assert sim.requests == [] and sim.connections == 0


@pytest.mark.parametrize(
    "workspace",
    ["-ws", "_ws", "ws 1", "ws/1", "ws.1", "ws\n", "a" * 65, "工作区", "ws?x=1"],
    ids=repr,
)
def test_invalid_workspace_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, workspace: str
) -> None:
    """Workspace ids must match ^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$, argument or env."""
    with pytest.raises(ValueError, match="workspace"):
        Session("app", api_key="sk-x", workspace=workspace, state_dir=tmp_path)
    monkeypatch.setenv("DASHSCOPE_WORKSPACE", workspace)
    with pytest.raises(ValueError, match="workspace"):
        Session("app", api_key="sk-x", state_dir=tmp_path)


@pytest.mark.parametrize("workspace", ["a", "ws-1", "A_b-9", "llm-" + "x" * 60], ids=repr)
def test_valid_workspace_is_accepted(tmp_path: Path, workspace: str) -> None:
    """Letters, digits, '_' and '-', starting alphanumeric, up to 64 characters."""
    session = Session("app", api_key="sk-x", workspace=workspace, state_dir=tmp_path)
    assert session.workspace == workspace


@pytest.mark.parametrize(
    "prompt", [None, 42, b"hi", ["hi"], {"prompt": "hi"}, 3.5], ids=lambda v: type(v).__name__
)
async def test_non_string_prompt_is_a_type_error(
    make_session: SessionFactory, sim: BailianSimulator, prompt: Any
) -> None:
    """send() and stream() refuse non-str prompts with TypeError; nothing is sent."""
    session = make_session()
    with pytest.raises(TypeError, match="str"):
        await session.send(prompt)
    with pytest.raises(TypeError, match="str"):
        session.stream(prompt)
    assert sim.requests == []


async def test_a_key_the_service_quotes_back_is_not_in_the_error(
    make_session: SessionFactory, sim: BailianSimulator
) -> None:
    """A service or gateway error that quotes the API key: the error's message, args
    and str() hold *** instead, in an HTTP error and in an in-stream error."""
    session = make_session(max_retries=0)
    for fault in (
        Fault.http(401, "InvalidApiKey", f"bad key {sim.api_key}!"),
        Fault.stream_error(after=1, status=400, code="X", message=f"bad key {sim.api_key}!"),
    ):
        sim.inject(fault)
        with pytest.raises(tyqw.APIStatusError) as info:
            await session.send(PROMPT)
        assert info.value.message == "bad key ***!"
        assert sim.api_key not in str(info.value) and sim.api_key not in repr(info.value.args)


@pytest.mark.parametrize(
    ("prompt", "options", "field"),
    [
        pytest.param("hi \ud800", {}, "prompt", id="surrogate-prompt"),
        pytest.param(
            PROMPT, {"biz_params": {"city": "\udc00"}}, "biz_params.city", id="surrogate"
        ),
        pytest.param(PROMPT, {"biz_params": {"n": float("nan")}}, "biz_params.n", id="nan"),
        pytest.param(
            PROMPT, {"biz_params": {"n": [1, float("-inf")]}}, "biz_params.n[1]", id="infinity"
        ),
        pytest.param(PROMPT, {"input": {"x": {"\ud800": 1}}}, "input.x", id="surrogate-key"),
        pytest.param(PROMPT, {"parameters": {"t": float("inf")}}, "parameters.t", id="parameters"),
        pytest.param(PROMPT, {"image_list": ["a\ud800"]}, "image_list[0]", id="list-option"),
    ],
)
async def test_text_and_numbers_json_cannot_carry_are_refused_before_any_request(
    make_session: SessionFactory,
    sim: BailianSimulator,
    prompt: str,
    options: dict[str, Any],
    field: str,
) -> None:
    """A lone surrogate or NaN / infinity anywhere in the prompt or an option:
    send() and stream() raise ValueError naming the field; nothing is sent."""
    session = make_session()
    with pytest.raises(ValueError, match=f"^{re.escape(field)} "):
        await session.send(prompt, **options)
    with pytest.raises(ValueError, match=f"^{re.escape(field)} "):
        session.stream(prompt, **options)
    assert sim.requests == []


@pytest.mark.parametrize(
    "options",
    [
        {"max_retries": -1},
        {"max_retries": 1.5},
        {"connect_timeout": 0},
        {"read_timeout": -1},
        {"deadline": 0},
        {"max_event_size": 10},
    ],
    ids=lambda o: next(iter(o)),
)
def test_nonsense_limits_are_refused(tmp_path: Path, options: dict[str, Any]) -> None:
    """Negative retries, non-positive timeouts and tiny event caps: ValueError."""
    with pytest.raises(ValueError, match=next(iter(options))):
        Session("app", api_key="sk-x", state_dir=tmp_path, **options)


class _Text(str):
    pass


@pytest.mark.parametrize(
    "value",
    [
        pytest.param({"a": [1, 2.5, "西湖", {"b": ("y", None, True)}], 3: "x"}, id="clean"),
        pytest.param("你好", id="clean-str"),
        pytest.param({"a": {"b": [{"c": "\ud800"}]}}, id="deep-surrogate"),
        pytest.param({"a": (1, float("nan"))}, id="nan-in-tuple"),
        pytest.param({"a": {"k\udc00": 1}}, id="deep-surrogate-key"),
        pytest.param(_Text("\ud800"), id="str-subclass"),
        pytest.param([[[float("-inf")]]], id="deep-infinity"),
    ],
)
def test_json_check_refuses_exactly_what_strict_json_cannot_carry(value: Any) -> None:
    """check_json accepts a value exactly when strict JSON can carry it as UTF-8 text,
    however deep the problem (its quick pass over clean values agrees with its walk)."""
    try:
        json.dumps(value, allow_nan=False, ensure_ascii=False).encode("utf-8")
        carried = True
    except ValueError:  # NaN, infinity; UnicodeEncodeError for a lone surrogate
        carried = False
    assert (json_problem(value, "v") is None) == carried
