"""The Bailian layer over hand-written byte streams: errors, framing, awkward splits."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

import tyqw

from .helpers import RawServerFactory, bailian_event, bailian_stream, raw_messages, raw_session

ERROR_FRAME = (
    b"id:1\nevent:error\n:HTTP_STATUS/400\n"
    b'data:{"code":"InvalidParameter","message":"Required parameter(AppId) missing or '
    b'invalid, please check the request parameters.","request_id":"d18bb1bc-1"}\n'
)


@pytest.mark.parametrize(
    ("status", "cls"),
    [
        (400, tyqw.BadRequestError),
        (401, tyqw.AuthenticationError),
        (403, tyqw.PermissionDeniedError),
        (404, tyqw.NotFoundError),
        (429, tyqw.RateLimitError),
        (500, tyqw.InternalServerError),
        (503, tyqw.InternalServerError),
        (418, tyqw.APIStatusError),
    ],
    ids=lambda v: str(v) if isinstance(v, int) else v.__name__,
)
async def test_http_error_maps_to_class(
    raw_server: RawServerFactory, state_dir: Path, status: int, cls: type[tyqw.APIStatusError]
) -> None:
    """HTTP >= 400 with a DashScope JSON body becomes the matching class, fields filled."""
    body = json.dumps({"code": "SomeCode", "message": "It broke.", "request_id": "rid-7"})
    server = await raw_server([body.encode()], status=status, content_type="application/json")
    async with raw_session(server.base_url, state_dir, max_retries=0) as session:
        with pytest.raises(cls) as info:
            await session.send("hi")
    error = info.value
    assert type(error) is cls
    assert (error.status_code, error.code, error.request_id) == (status, "SomeCode", "rid-7")
    assert "It broke." in str(error) and "SomeCode" in str(error)


async def test_non_json_error_body_uses_header_request_id(
    raw_server: RawServerFactory, state_dir: Path
) -> None:
    """An error body that is not JSON still gives the x-request-id and an excerpt."""
    server = await raw_server(
        [b"<html>Bad Gateway</html>"],
        status=502,
        content_type="text/html",
        headers={"x-request-id": "hdr-42"},
    )
    async with raw_session(server.base_url, state_dir, max_retries=0) as session:
        with pytest.raises(tyqw.InternalServerError) as info:
            await session.send("hi")
    assert info.value.request_id == "hdr-42"
    assert "Bad Gateway" in str(info.value)


async def test_sse_framed_error_body(raw_server: RawServerFactory, state_dir: Path) -> None:
    """A 4xx whose body is SSE-framed (some gateways) is still read."""
    server = await raw_server([ERROR_FRAME + b"\n"], status=400)
    async with raw_session(server.base_url, state_dir) as session:
        with pytest.raises(tyqw.BadRequestError) as info:
            await session.send("hi")
    assert info.value.code == "InvalidParameter" and info.value.request_id == "d18bb1bc-1"


async def test_error_frame_without_closing_blank_line(
    raw_server: RawServerFactory, state_dir: Path
) -> None:
    """The service's real error frame (200, event:error, no final blank line) is read."""
    server = await raw_server([ERROR_FRAME])
    async with raw_session(server.base_url, state_dir) as session:
        with pytest.raises(tyqw.BadRequestError) as info:
            await session.send("hi")
    assert info.value.status_code == 400
    assert info.value.code == "InvalidParameter"
    assert "AppId" in info.value.message


@pytest.mark.parametrize(
    ("status", "cls"),
    [(401, tyqw.AuthenticationError), (429, tyqw.RateLimitError), (500, tyqw.InternalServerError)],
    ids=["401", "429", "500"],
)
async def test_in_stream_error_status_comes_from_comment(
    raw_server: RawServerFactory, state_dir: Path, status: int, cls: type[tyqw.APIStatusError]
) -> None:
    """:HTTP_STATUS/<n> picks the class, not the 200 of the HTTP response."""
    frame = ERROR_FRAME.replace(b"HTTP_STATUS/400", f"HTTP_STATUS/{status}".encode())
    body = bailian_event(1, {"session_id": "s1", "finish_reason": "null", "text": "半"}) + frame
    server = await raw_server([body])
    async with raw_session(server.base_url, state_dir) as session:
        errors: list[tyqw.TyqwError] = []
        session.on("error", errors.append)
        reply = await session.send("hi")
    assert isinstance(reply.error, cls) and reply.error.status_code == status
    assert reply.text == "半" and errors == [reply.error]
    assert session.session_id == "s1"


async def test_html_page_instead_of_stream(raw_server: RawServerFactory, state_dir: Path) -> None:
    """A 200 that is not text/event-stream is a clear error with status and excerpt."""
    page = b"<html><body>" + b"x" * 5000 + b"</body></html>"
    server = await raw_server([page], content_type="text/html")
    async with raw_session(server.base_url, state_dir) as session:
        with pytest.raises(tyqw.UnexpectedContentTypeError) as info:
            await session.send("hi")
    error = info.value
    assert error.status_code == 200 and error.content_type == "text/html"
    assert "<html>" in error.excerpt and len(error.excerpt) < 300
    assert len(str(error)) < 500


async def test_malformed_event_is_reported_and_skipped(
    raw_server: RawServerFactory, state_dir: Path
) -> None:
    """Bad JSON or JSON without output: StreamError emitted, later events still arrive."""
    events = [
        bailian_event(1, {"session_id": "s", "finish_reason": "null", "text": "a"}),
        b"id:2\nevent:result\ndata:{not json\n\n",
        b'id:3\nevent:result\ndata:{"foo":1}\n\n',
        bailian_event(4, {"session_id": "s", "finish_reason": "null", "text": "b"}),
        bailian_event(5, {"session_id": "s", "finish_reason": "stop", "text": ""}),
    ]
    server = await raw_server(events)
    async with raw_session(server.base_url, state_dir) as session:
        errors: list[tyqw.TyqwError] = []
        session.on("error", errors.append)
        reply = await session.send("hi")
    assert reply.text == "ab" and reply.finish_reason == "stop"
    assert [type(e) for e in errors] == [tyqw.StreamError, tyqw.StreamError]
    assert isinstance(errors[0], tyqw.StreamError) and "{not json" in errors[0].excerpt
    assert "output" in str(errors[1])
    assert reply.error is None  # reported as events; the turn itself completed


async def test_malformed_event_without_listener_raises(
    raw_server: RawServerFactory, state_dir: Path
) -> None:
    """With no error listener, a malformed event makes send() raise StreamError."""
    events = [
        bailian_event(1, {"session_id": "s", "finish_reason": "null", "text": "a"}),
        b"id:2\nevent:result\ndata:{not json\n\n",
    ]
    server = await raw_server(events)
    async with raw_session(server.base_url, state_dir) as session:
        with pytest.raises(tyqw.StreamError) as info:
            await session.send("hi")
    assert info.value.reply is not None and info.value.reply.text == "a"


async def test_frames_without_blank_lines_are_delivered_one_by_one(
    raw_server: RawServerFactory, state_dir: Path
) -> None:
    """Older gateways omit the blank separator: each data line is still one message."""
    stream = bailian_stream(["你", "好", "!"]).replace(b"\n\n", b"\n")
    server = await raw_server([stream, b"\n"])
    messages = await raw_messages(server.base_url, state_dir)
    assert [m.delta for m in messages] == ["你", "好", "!", ""]
    assert messages[-1].text == "你好!" and messages[-1].finish_reason == "stop"


async def test_keepalive_comments_never_make_messages(
    raw_server: RawServerFactory, state_dir: Path
) -> None:
    """Comment-only blocks between events are ignored."""
    stream = bailian_stream(["a", "b"])
    server = await raw_server([b":\n\n", b": ping\n\n", stream, b":keepalive\n\n"])
    messages = await raw_messages(server.base_url, state_dir)
    assert [m.delta for m in messages] == ["a", "b", ""]


async def test_invalid_utf8_becomes_replacement_character(
    raw_server: RawServerFactory, state_dir: Path
) -> None:
    """Bytes that are not UTF-8 turn into U+FFFD instead of raising."""
    event = bailian_event(1, {"session_id": "s", "finish_reason": "null", "text": "AB"})
    event = event.replace(b'"AB"', b'"A\xff\xfeB"')
    stop = bailian_event(2, {"session_id": "s", "finish_reason": "stop", "text": ""})
    server = await raw_server([event, stop])
    messages = await raw_messages(server.base_url, state_dir)
    assert messages[0].delta == "A\ufffd\ufffdB"


async def test_body_ending_before_stop_is_incomplete(
    raw_server: RawServerFactory, state_dir: Path
) -> None:
    """A stream that ends without finish_reason 'stop' raises IncompleteStreamError."""
    events = [
        bailian_event(1, {"session_id": "s9", "finish_reason": "null", "text": "part"}),
        bailian_event(2, {"session_id": "s9", "finish_reason": "null", "text": "ial"}),
    ]
    server = await raw_server(events)
    async with raw_session(server.base_url, state_dir) as session:
        with pytest.raises(tyqw.IncompleteStreamError) as info:
            await session.send("hi")
        assert session.session_id == "s9"  # what was seen is kept
    assert info.value.reply is not None and info.value.reply.text == "partial"


def _splits(data: bytes) -> list[list[bytes]]:
    """The stream split in two at every offset, plus one byte at a time."""
    cases = [[data[:i], data[i:]] for i in range(1, len(data))]
    cases.append([data[i : i + 1] for i in range(len(data))])
    return cases


STREAM = bailian_stream(["你好", "，世界", "🙂", "\r\n"]).replace(b"\n", b"\r\n")


async def test_every_split_gives_the_same_messages(
    raw_server: RawServerFactory, state_dir: Path
) -> None:
    """CRLF, multibyte text and emoji split at every byte: identical messages."""
    whole = await raw_server([STREAM])
    expected = [
        (m.delta, m.text, m.finish_reason) for m in await raw_messages(whole.base_url, state_dir)
    ]
    assert expected[-1][1] == "你好，世界🙂\r\n"
    for i, chunks in enumerate(_splits(STREAM)[::7] + _splits(STREAM)[-1:]):
        server = await raw_server(chunks)
        got = [
            (m.delta, m.text, m.finish_reason)
            for m in await raw_messages(server.base_url, state_dir)
        ]
        assert got == expected, f"split case {i}"


@pytest.mark.parametrize(
    ("before", "after"),
    [("  ", ""), ("", " "), ("\t", "\t"), ("", "\u3000")],
    ids=["leading-spaces", "trailing-space", "tabs", "ideographic-space-after"],
)
async def test_whitespace_around_the_json_object(
    raw_server: RawServerFactory, state_dir: Path, before: str, after: str
) -> None:
    """JSON with whitespace around it is still one message (json.loads accepts it)."""
    event = bailian_event(1, {"session_id": "s", "finish_reason": "null", "text": "好"})
    event = event.replace(b"data:{", f"data:{before}{{".encode()).replace(
        b"}\n\n", f"}}{after}\n\n".encode()
    )
    stop = bailian_event(2, {"session_id": "s", "finish_reason": "stop", "text": ""})
    server = await raw_server([event, stop])
    async with raw_session(server.base_url, state_dir) as session:
        errors: list[tyqw.TyqwError] = []
        session.on("error", errors.append)
        reply = await session.send("hi")
    expect_ok = after != "\u3000"  # U+3000 is not JSON whitespace: a malformed event
    assert (reply.text == "好") is expect_ok
    assert (errors == []) is expect_ok
    assert reply.finish_reason == "stop"
