"""The SSE decoder: WHATWG event stream interpretation, chunking, and Bailian frames."""

from __future__ import annotations

import dataclasses
import doctest
import itertools
import json
import pickle
import re
import tracemalloc

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import tyqw.sse
from tyqw._exceptions import EventTooLargeError
from tyqw.sse import ServerSentEvent, SSEDecoder

E = ServerSentEvent

BAILIAN_EVENT = (
    b"id:17\nevent:result\n:HTTP_STATUS/200\n"
    b'data:{"output":{"session_id":"5b1f","finish_reason":"null","text":"Hel"},'
    b'"usage":{"models":[{"input_tokens":12,"output_tokens":1,"model_id":"qwen-plus"}]},'
    b'"request_id":"3c2e"}\n\n'
)
BAILIAN_ERROR = (
    b"id:1\nevent:error\n:HTTP_STATUS/400\n"
    b'data:{"code":"InvalidParameter","message":"Required parameter(AppId) missing or '
    b'invalid, please check the request parameters.","request_id":"d18bb1bc"}\n'
)

quick = settings(max_examples=150, deadline=None)


def decode(
    *chunks: bytes, dispatch_incomplete: bool = False, implicit: bool = False, **kwargs: int
) -> list[E]:
    """Feed the chunks to a new decoder, then close it; all the events."""
    decoder = SSEDecoder(implicit_dispatch=implicit, **kwargs)
    return feed_all(decoder, list(chunks)) + decoder.close(dispatch_incomplete=dispatch_incomplete)


def feed_all(decoder: SSEDecoder, chunks: list[bytes]) -> list[E]:
    """Feed the chunks one by one; all the events."""
    return [event for chunk in chunks for event in decoder.feed(chunk)]


@dataclasses.dataclass
class Outcome:
    """What the spec's algorithm makes of a stream: the events, and the decoder state."""

    events: list[E]
    last_event_id: str
    retry: int | None


def reference(
    stream: bytes, *, dispatch_incomplete: bool = False, implicit: bool = False
) -> list[E]:
    """The spec's algorithm, written as literally as possible, on the whole stream."""
    return interpret(stream, dispatch_incomplete=dispatch_incomplete, implicit=implicit).events


def interpret(
    stream: bytes, *, dispatch_incomplete: bool = False, implicit: bool = False
) -> Outcome:
    """The spec's algorithm on the whole stream; with ``implicit``, plus the two rules of
    ``SSEDecoder(implicit_dispatch=True)`` as its module docstring states them."""
    text = stream.decode("utf-8", "replace")
    if text.startswith("\ufeff"):
        text = text[1:]
    lines = re.split(r"\r\n|\r|\n", text)
    last = lines.pop()  # after the last line end: an unterminated line, or ""
    if dispatch_incomplete:
        lines += [last, ""] if last else [""]
    out = Outcome([], "", None)
    data = event_type = id_buffer = ""
    retry = comment = None

    def dispatch() -> None:
        nonlocal data, event_type, retry, comment
        out.last_event_id = id_buffer
        if data == "":
            event_type = ""
        else:
            data = data.removesuffix("\n")
            out.events.append(E(event_type or "message", data, id_buffer, retry, comment))
            data = event_type = ""
        retry = comment = None

    for line in lines:
        if line == "":
            dispatch()
        elif line.startswith(":"):
            comment = line[1:]
        else:
            field, _, value = line.partition(":")
            value = value.removeprefix(" ")
            if implicit and field in ("id", "event") and data != "":
                dispatch()  # rule (ii): a new frame begins
            if field == "event":
                event_type = value
            elif field == "data":
                first = data == ""
                data += value + "\n"
                if implicit and first and value.startswith("{") and is_json_object(value):
                    dispatch()  # rule (i): a whole JSON object on the block's first data line
            elif field == "id" and "\0" not in value:
                id_buffer = value
            elif field == "retry" and value and all(c in "0123456789" for c in value):
                retry = out.retry = int(value)
    return out


def is_json_object(value: str) -> bool:
    """json.loads gives a dict."""
    try:
        return isinstance(json.loads(value), dict)
    except (ValueError, RecursionError):
        return False


# -- The spec's own examples -----------------------------------------------------------


@pytest.mark.parametrize(
    ("stream", "expected"),
    [
        pytest.param(
            b"data: YHOO\ndata: +2\ndata: 10\n\n",
            [E(data="YHOO\n+2\n10")],
            id="stock",
        ),
        pytest.param(
            b": test stream\n\ndata: first event\nid: 1\n\n"
            b"data:second event\nid\n\ndata:  third event\n\n",
            [E(data="first event", id="1"), E(data="second event"), E(data=" third event")],
            id="comment-and-id",
        ),
        pytest.param(
            b"data\n\ndata\ndata\n\ndata:",
            [E(data=""), E(data="\n")],
            id="empty-data-last-block-discarded",
        ),
        pytest.param(b"data:test\n\ndata: test\n\n", [E(data="test")] * 2, id="one-space"),
    ],
)
def test_spec_examples(stream: bytes, expected: list[E]) -> None:
    """The examples of WHATWG HTML §9.2.6 decode as the spec says."""
    assert decode(stream) == expected
    assert reference(stream) == expected


# -- Line ends -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("stream", "expected"),
    [
        pytest.param(b"event: a\ndata: 1\ndata: 2\n\n", E("a", "1\n2"), id="LF"),
        pytest.param(b"event: a\rdata: 1\rdata: 2\r\r", E("a", "1\n2"), id="CR"),
        pytest.param(b"event: a\r\ndata: 1\r\ndata: 2\r\n\r\n", E("a", "1\n2"), id="CRLF"),
        pytest.param(b"event: a\rdata: 1\r\ndata: 2\n\r\n", E("a", "1\n2"), id="mixed"),
        # LF then CR is two line ends: the blank line between them resets the event type.
        pytest.param(b"event: a\n\rdata: 1\rdata: 2\r\n\r", E(data="1\n2"), id="LF-CR"),
    ],
)
def test_line_ends(stream: bytes, expected: E) -> None:
    """CR, LF and CRLF each end a line, in any mixture."""
    assert decode(stream) == [expected]
    assert reference(stream) == [expected]


@pytest.mark.parametrize(
    ("chunks", "expected"),
    [
        pytest.param([b"data: a\r", b"\ndata: b\r\n\r", b"\n"], ["a\nb"], id="CR|LF"),
        pytest.param([b"data: a\r", b"", b"\n", b"data: b\r\n\r\n"], ["a\nb"], id="CR||LF"),
        pytest.param([b"data: a\r", b"\n", b"data: b\r\n\r", b"\n"], ["a\nb"], id="CR|LF|"),
        pytest.param([b"data: a\r", b"\r", b"data: b\r\n\r\n"], ["a", "b"], id="CR|CR"),
    ],
)
def test_crlf_split_across_chunks(chunks: list[bytes], expected: list[str]) -> None:
    """A CRLF split over two chunks is one line end, not two; CR then CR is two."""
    assert decode(*chunks) == [E(data=data) for data in expected]
    assert decode(b"".join(chunks)) == [E(data=data) for data in expected]


@pytest.mark.parametrize(
    "char", ["\x0b", "\x0c", "\x1c", "\x1d", "\x1e", "\x85", "\u2028", "\u2029"], ids=repr
)
def test_other_line_breaks_are_data(char: str) -> None:
    """Characters str.splitlines() splits at are not SSE line ends."""
    stream = f"data: a{char}b\n\n".encode()
    assert decode(stream) == [E(data=f"a{char}b")]


# -- BOM -------------------------------------------------------------------------------

BOM = b"\xef\xbb\xbf"


@pytest.mark.parametrize(
    ("chunks", "expected"),
    [
        pytest.param([BOM + b"data: x\n\n"], [E(data="x")], id="dropped"),
        pytest.param([b"\xef", b"\xbb", b"\xbfdata: x\n\n"], [E(data="x")], id="split-1-1"),
        pytest.param([b"\xef\xbb", b"\xbfdata: x\n\n"], [E(data="x")], id="split-2"),
        pytest.param([b"", BOM, b"", b"data: x\n\n"], [E(data="x")], id="alone"),
        pytest.param([BOM + BOM + b"data: x\n\n"], [], id="second-kept-unknown-field"),
        pytest.param([BOM, BOM + b"\ndata: x\n\n"], [E(data="x")], id="second-kept-line"),
        pytest.param([b"data: \xef\xbb\xbfx\n\n"], [E(data="\ufeffx")], id="inside-kept"),
        pytest.param([b"\xef\xbb", b"data: x\n\n"], [], id="partial-is-text"),
        pytest.param([b"\xef", b"\n", b"data: x\n\n"], [E(data="x")], id="partial-line"),
    ],
)
def test_bom(chunks: list[bytes], expected: list[E]) -> None:
    """One leading BOM is dropped, even split; a second one, or one later, is text."""
    assert decode(*chunks) == expected
    assert reference(b"".join(chunks)) == expected


# -- Fields ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("stream", "expected"),
    [
        pytest.param(b"data:x\n\n", E(data="x"), id="no-space"),
        pytest.param(b"data: x\n\n", E(data="x"), id="one-space"),
        pytest.param(b"data:  x\n\n", E(data=" x"), id="two-spaces-one-kept"),
        pytest.param(b"data:\tx\n\n", E(data="\tx"), id="tab-kept"),
        pytest.param(b"data: x \n\n", E(data="x "), id="trailing-space-kept"),
        pytest.param(b"data: a:b: c\n\n", E(data="a:b: c"), id="split-at-first-colon"),
        pytest.param(b"data\n\n", E(data=""), id="no-colon-empty-value"),
        pytest.param(b"data:\n\n", E(data=""), id="empty-value"),
        pytest.param(b"data:\ndata:\n\n", E(data="\n"), id="two-empty-values"),
        pytest.param(b"event\ndata: x\n\n", E(data="x"), id="event-no-colon"),
        pytest.param(b"event:\ndata: x\n\n", E(data="x"), id="event-empty"),
        pytest.param(b"event: a b\ndata: x\n\n", E(event="a b", data="x"), id="event"),
        pytest.param(b"Data: x\ndata: y\n\n", E(data="y"), id="names-case-sensitive"),
        pytest.param(b" data: x\ndata: y\n\n", E(data="y"), id="leading-space-in-name"),
        pytest.param(b"foo: bar\ndata: y\n\n", E(data="y"), id="unknown-field-ignored"),
        pytest.param(b"id: 1\x002\ndata: y\n\n", E(data="y"), id="id-with-nul-ignored"),
        pytest.param(b"id: 3\nid: 1\x002\ndata: y\n\n", E(data="y", id="3"), id="nul-keeps-old"),
        pytest.param(b"id\ndata: y\n\n", E(data="y"), id="id-no-colon-empty"),
        pytest.param(b"id:  7\ndata: y\n\n", E(data="y", id=" 7"), id="id-one-space"),
    ],
)
def test_fields(stream: bytes, expected: E) -> None:
    """Field parsing: split at the first colon, one space removed, unknown names ignored."""
    assert decode(stream) == [expected]
    assert reference(stream) == [expected]


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        pytest.param(b"1000", 1000, id="digits"),
        pytest.param(b"0", 0, id="zero"),
        pytest.param(b"007", 7, id="leading-zeros"),
        pytest.param(b"", None, id="empty"),
        pytest.param(b"10a", None, id="letter"),
        pytest.param(b"-1", None, id="sign"),
        pytest.param(b"1.5", None, id="dot"),
        pytest.param(b" 1", None, id="second-space"),
        pytest.param(b"1 ", None, id="trailing-space"),
        pytest.param("١٢".encode(), None, id="arabic-indic-digits"),
        pytest.param("²".encode(), None, id="superscript"),
        pytest.param(b"9" * 5000, None, id="too-many-digits"),
        pytest.param(b"0" * 5000 + b"5", 5, id="many-leading-zeros"),
    ],
)
def test_retry_digits_only(value: bytes, expected: int | None) -> None:
    """Retry is set only by ASCII digits; anything else is ignored."""
    decoder = SSEDecoder()
    [event] = decoder.feed(b"retry: 5\n\nretry: " + value + b"\ndata: x\n\n")
    assert event.retry == expected
    assert decoder.retry == (5 if expected is None else expected)


def test_retry_takes_effect_without_dispatch() -> None:
    """A retry field sets the reconnection time at once, even in a block never dispatched."""
    decoder = SSEDecoder()
    assert decoder.retry is None
    assert decoder.feed(b"retry: 300\n\nretry: 400\n") == []
    assert decoder.retry == 400
    assert decoder.feed(b"data: x\n\ndata: y\n\n") == [E(data="x", retry=400), E(data="y")]


def test_id_persists_across_events() -> None:
    """The last event ID persists until set again; an empty id field resets it to ""."""
    decoder = SSEDecoder()
    assert decoder.feed(b"id: 1\ndata: a\n\ndata: b\n\n") == [
        E(data="a", id="1"),
        E(data="b", id="1"),
    ]
    assert decoder.last_event_id == "1"
    assert decoder.feed(b"data: c\nid: 2\n\nid:\ndata: d\n\n") == [
        E(data="c", id="2"),
        E(data="d", id=""),
    ]
    assert decoder.last_event_id == ""


def test_last_event_id_set_at_blank_line() -> None:
    """last_event_id follows the spec: updated at each blank line, even with no data."""
    decoder = SSEDecoder()
    assert decoder.feed(b"id: 1\n") == []
    assert decoder.last_event_id == ""
    assert decoder.feed(b"\n") == []
    assert decoder.last_event_id == "1"
    assert decoder.feed(b"id: 2\ndata: x\n") == []
    assert decoder.close() == []
    assert decoder.last_event_id == "1"


def test_event_type_reset_after_dispatch() -> None:
    """The event type applies to one event only, and a blank line without data resets it."""
    stream = b"event: a\ndata: 1\n\ndata: 2\n\nevent: b\n\ndata: 3\n\n"
    assert decode(stream) == [E(event="a", data="1"), E(data="2"), E(data="3")]


@pytest.mark.parametrize(
    ("stream", "expected"),
    [
        pytest.param(b":HTTP_STATUS/200\ndata: x\n\n", "HTTP_STATUS/200", id="before-data"),
        pytest.param(b"data: x\n:HTTP_STATUS/200\n\n", "HTTP_STATUS/200", id="after-data"),
        pytest.param(b": a\n:b\ndata: x\n\n", "b", id="last-wins"),
        pytest.param(b":  spaced \ndata: x\n\n", "  spaced ", id="verbatim"),
        pytest.param(b":\ndata: x\n\n", "", id="empty"),
        pytest.param(b"data: x\n\n", None, id="none"),
        pytest.param(b": other block\n\ndata: x\n\n", None, id="reset-by-blank-line"),
    ],
)
def test_comment(stream: bytes, expected: str | None) -> None:
    """The block's last comment is kept verbatim in .comment; a blank line forgets it."""
    assert decode(stream) == [E(data="x", comment=expected)]


@pytest.mark.parametrize(
    "stream",
    [
        pytest.param(b": keep-alive\n\n", id="one"),
        pytest.param(b":a\n:b\n\n\n:c\n\n", id="several"),
        pytest.param(b"event: x\nid: 1\nretry: 9\n:HTTP_STATUS/200\n\n", id="with-fields"),
    ],
)
def test_blocks_without_data_are_not_dispatched(stream: bytes) -> None:
    """Comment-only and data-less blocks dispatch nothing."""
    assert decode(stream) == []


# -- UTF-8 -----------------------------------------------------------------------------


def test_multibyte_split_at_every_offset() -> None:
    """A character split anywhere over two or three chunks decodes correctly."""
    text = "data: 你好, wörld 🎉 ü\n\n"
    stream = text.encode()
    for i in range(len(stream) + 1):
        assert decode(stream[:i], stream[i:]) == [E(data=text[6:-2])], i
        for j in range(i, min(i + 5, len(stream)) + 1):
            assert decode(stream[:i], stream[i:j], stream[j:]) == [E(data=text[6:-2])]


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        pytest.param(b"\xff", "\ufffd", id="invalid-byte"),
        pytest.param(b"a\xe4\xbdb", "a\ufffdb", id="truncated-sequence"),
        pytest.param(b"\xe4\xbd", "\ufffd", id="truncated-at-line-end"),
        pytest.param(b"\xc0\xaf", "\ufffd\ufffd", id="overlong"),
        pytest.param(b"\xed\xa0\x80", "\ufffd\ufffd\ufffd", id="surrogate"),
        pytest.param(b"\x00", "\x00", id="nul-is-data"),
    ],
)
def test_invalid_utf8_is_replaced(raw: bytes, expected: str) -> None:
    """Invalid UTF-8 becomes U+FFFD, however it is chunked, and never raises."""
    stream = b"data: " + raw + b"\n\n"
    assert decode(stream) == [E(data=expected)]
    assert decode(*(stream[i : i + 1] for i in range(len(stream)))) == [E(data=expected)]


def test_truncated_character_at_end_of_stream() -> None:
    """A stream cut inside a character still decodes, with U+FFFD."""
    assert decode(b"data: \xe4\xbd", dispatch_incomplete=True) == [E(data="\ufffd")]


# -- Bailian ---------------------------------------------------------------------------


def test_bailian_event() -> None:
    """A real Bailian frame: id, event, the status comment, one line of JSON."""
    [event] = decode(BAILIAN_EVENT)
    assert event.event == "result"
    assert event.id == "17"
    assert event.comment == "HTTP_STATUS/200"
    assert event.data.startswith('{"output":{"session_id":"5b1f"')
    assert event.data.endswith('"request_id":"3c2e"}')
    assert event.retry is None


def test_bailian_error_frame_without_blank_line() -> None:
    """Bailian's final error frame lacks its blank line: dropped by default, kept on request."""
    assert decode(BAILIAN_ERROR) == []
    [event] = decode(BAILIAN_ERROR, dispatch_incomplete=True)
    assert event.event == "error"
    assert event.id == "1"
    assert event.comment == "HTTP_STATUS/400"
    assert event.data.startswith('{"code":"InvalidParameter"')
    assert decode(BAILIAN_ERROR[:-1], dispatch_incomplete=True) == [event]
    assert decode(BAILIAN_ERROR + b"\n", dispatch_incomplete=True) == [event]


def test_many_bailian_events_in_one_chunk() -> None:
    """A chunk of a hundred whole frames gives a hundred events, in order."""
    frames = [BAILIAN_EVENT.replace(b"id:17", b"id:%d" % i) for i in range(1, 101)]
    events = decode(b"".join(frames))
    assert [event.id for event in events] == [str(i) for i in range(1, 101)]
    assert events == decode(*frames)


# -- close() ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("stream", "expected"),
    [
        pytest.param(b"", [], id="empty-stream"),
        pytest.param(b"data: x\n\n", [], id="nothing-pending"),
        pytest.param(b"data: x\n\ndata: y", [E(data="y")], id="unterminated-line"),
        pytest.param(b"data: x\n\ndata: y\n", [E(data="y")], id="no-blank-line"),
        pytest.param(b"data: x\n\ndata: y\r", [E(data="y")], id="ends-with-CR"),
        pytest.param(b"data: x\n\nevent: e", [], id="no-data"),
        pytest.param(b"data: x\n\n: c", [], id="comment-only"),
        pytest.param(b"\xef\xbb", [], id="partial-bom"),
    ],
)
def test_close_dispatch_incomplete(stream: bytes, expected: list[E]) -> None:
    """close(dispatch_incomplete=True) ends the stream as if with a line end and blank line."""
    decoder = SSEDecoder()
    pending = decoder.feed(stream)
    assert decoder.close(dispatch_incomplete=True) == expected
    assert pending + expected == reference(stream, dispatch_incomplete=True)


def test_close_discards_pending_block() -> None:
    """By default close() discards an unfinished block, as the spec says."""
    decoder = SSEDecoder()
    assert decoder.feed(b"data: x\n\ndata: y\n") == [E(data="x")]
    assert decoder.close() == []


def test_closed_decoder() -> None:
    """close() is idempotent; feed() after close() raises ValueError."""
    decoder = SSEDecoder()
    decoder.feed(b"data: x\n")
    assert decoder.close(dispatch_incomplete=True) == [E(data="x")]
    assert decoder.close(dispatch_incomplete=True) == []
    with pytest.raises(ValueError, match="closed"):
        decoder.feed(b"data: y\n\n")
    with pytest.raises(ValueError, match="closed"):
        decoder.feed(b"")


# -- Size cap and long lines -----------------------------------------------------------


@pytest.mark.parametrize("chunk_size", [1, 1024, 650 * 1024 + 20], ids=["1B", "1KB", "whole"])
def test_long_line_in_small_chunks(chunk_size: int) -> None:
    """A 650 KB data line fed in small chunks arrives whole (and in linear time)."""
    payload = "x你" * (650 * 1024 // 4)
    stream = b"data: " + payload.encode() + b"\n\n"
    chunks = [stream[i : i + chunk_size] for i in range(0, len(stream), chunk_size)]
    assert decode(*chunks) == [E(data=payload)]


@pytest.mark.parametrize("read_size", [1, 7], ids=["1B", "7B"])
def test_pending_line_costs_its_size_in_memory(read_size: int) -> None:
    """A 2 MB line fed in tiny reads holds about its own size in memory while pending."""
    line = b"data: " + ("xxxxx你".encode()) * (2 * 1024 * 1024 // 8)
    chunks = [line[i : i + read_size] for i in range(0, len(line), read_size)]
    decoder = SSEDecoder()
    feed = decoder.feed
    tracemalloc.start()
    try:
        for chunk in chunks:
            feed(chunk)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 3 * len(line), f"{peak / len(line):.1f} bytes per pending byte"
    assert decoder.feed(b"\n\n") == [E(data=line[6:].decode())]


@pytest.mark.parametrize(
    "chunks",
    [
        pytest.param([b"data: " + b"x" * 100 + b"\n\n"], id="whole-line"),
        pytest.param([b"data: " + b"x" * 95], id="unterminated"),
        pytest.param([b"data: " + b"x" * 50, b"x" * 45 + b"\n\n"], id="across-chunks"),
        pytest.param([b"data: " + b"x" * 94, b"\r\n\r\n", b"x" * 101], id="later-line"),
        pytest.param([b"data: " + b"x" * 50] + [b"x"] * 45, id="byte-by-byte"),
        pytest.param([b"data: x\n" + b": " + b"x" * 99 + b"\n"], id="comment"),
    ],
)
def test_line_over_cap_raises(chunks: list[bytes]) -> None:
    """A line past max_size raises EventTooLargeError, however it arrives."""
    decoder = SSEDecoder(max_size=100)
    with pytest.raises(EventTooLargeError, match="SSE line longer than 100 bytes") as info:
        feed_all(decoder, chunks)
    assert info.value.limit == 100
    with pytest.raises(ValueError, match="closed"):
        decoder.feed(b"\n")


def test_unterminated_line_not_buffered_past_cap() -> None:
    """The chunk that would take a pending line past the cap is refused, not stored."""
    decoder = SSEDecoder(max_size=100)
    decoder.feed(b"data: " + b"x" * 94)
    assert len(decoder._tail) == 100
    with pytest.raises(EventTooLargeError):
        decoder.feed(b"x" * 1_000_000)
    assert len(decoder._tail) <= 100


def test_line_at_cap_is_fine() -> None:
    """A line of exactly max_size bytes, in any line-end style, is accepted."""
    for end in (b"\n", b"\r", b"\r\n"):
        line = b"data: " + b"x" * 94
        assert decode(line + end + end, max_size=100) == [E(data="x" * 94)]
        assert decode(line, end, end, max_size=100) == [E(data="x" * 94)]


@pytest.mark.parametrize("implicit", [False, True], ids=["spec", "implicit"])
def test_cap_counts_only_the_pending_line(implicit: bool) -> None:
    """When the start of a block waits with its pending line, only that line counts
    towards the cap: exactly max_size is fine, one byte more fails."""
    start = b"data:x\n\nid:1\nevent:e\n:c\n"
    for extra, fits in ((95, True), (96, False)):
        line = b"data:" + b"y" * extra  # 100 or 101 bytes
        decoder = SSEDecoder(max_size=100, implicit_dispatch=implicit)
        assert decoder.feed(start + line[:50]) == [E(data="x")]
        if fits:
            assert decoder.feed(line[50:] + b"\n\n") == [E("e", "y" * 95, "1", None, "c")]
        else:
            with pytest.raises(EventTooLargeError, match="line longer than 100"):
                decoder.feed(line[50:])


def test_event_data_over_cap_raises() -> None:
    """The data of one event may not grow past max_size, even from short lines."""
    decoder = SSEDecoder(max_size=100)
    with pytest.raises(EventTooLargeError, match="SSE event data longer than 100") as info:
        decoder.feed(b"data: 123456789\n" * 11)
    assert info.value.limit == 100
    assert decode(b"data: 123456789\n" * 10 + b"\n", max_size=100) == [
        E(data="\n".join(["123456789"] * 10))
    ]


def test_many_small_events_past_cap_are_fine() -> None:
    """The cap is per line and per event, not per stream or per chunk."""
    stream = b"data: 123456789\n\n" * 1000
    assert decode(stream, max_size=100) == [E(data="123456789")] * 1000


def test_max_size_must_be_positive() -> None:
    """max_size below one is refused at construction."""
    with pytest.raises(ValueError, match="max_size"):
        SSEDecoder(max_size=0)


# -- Chunking --------------------------------------------------------------------------

SAMPLE = (
    BOM + b": hello\r\nid: 1\r\nevent: greet\r\ndata: \xe4\xbd\xa0\xe5\xa5\xbd\r\n"
    b"data:  w\xc3\xb6rld\r\r\ndata: \xf0\x9f\x8e\x89\rretry: 10\n\r\n\n:x\ndata\n\n"
)


def test_sample_stream() -> None:
    """The sample stream for the split tests decodes as expected."""
    assert decode(SAMPLE) == [
        E("greet", "你好\n wörld", "1", None, " hello"),
        E("message", "🎉", "1", 10, None),
        E("message", "", "1", None, "x"),
    ]
    assert reference(SAMPLE) == decode(SAMPLE)


def test_every_split_in_two_gives_same_events() -> None:
    """Splitting the sample stream at any byte changes nothing."""
    expected = decode(SAMPLE)
    for i in range(len(SAMPLE) + 1):
        assert decode(SAMPLE[:i], SAMPLE[i:]) == expected, i


def test_byte_by_byte_gives_same_events() -> None:
    """Feeding the sample stream one byte at a time changes nothing."""
    assert decode(*(SAMPLE[i : i + 1] for i in range(len(SAMPLE)))) == decode(SAMPLE)


# -- Events ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("chunks", "dispatch_incomplete"),
    [
        pytest.param([b"id:1\nevent:e\n:c\ndata:d\n\n"], False, id="whole-block"),
        pytest.param([b"id:1\nevent:e\n:c\nda", b"ta:d\n\n"], False, id="split-block"),
        pytest.param([b"event: e\nid: 1\n:c\ndata: d\n\n"], False, id="line-rules"),
        pytest.param([b"id:1\nevent:e\n:c\ndata:d"], True, id="close"),
    ],
)
def test_events_are_ordinary_frozen_dataclasses(
    chunks: list[bytes], dispatch_incomplete: bool
) -> None:
    """Events from every decoding path are real ServerSentEvents: equal, hashable,
    frozen, picklable, replaceable, with every field readable."""
    [event] = decode(*chunks, dispatch_incomplete=dispatch_incomplete)
    built = ServerSentEvent(event="e", data="d", id="1", retry=None, comment="c")
    assert type(event) is ServerSentEvent
    assert event == built and hash(event) == hash(built)
    assert repr(event) == repr(built)
    assert dataclasses.asdict(event) == dataclasses.asdict(built)
    assert pickle.loads(pickle.dumps(event)) == event
    assert dataclasses.replace(event, data="x") == ServerSentEvent("e", "x", "1", None, "c")
    with pytest.raises(dataclasses.FrozenInstanceError):
        event.data = "x"  # type: ignore[misc]


def test_event_defaults() -> None:
    """A ServerSentEvent made by hand defaults to the spec's 'message' type, no id or retry."""
    assert ServerSentEvent() == E(event="message", data="", id="", retry=None, comment=None)


def test_docstring_examples() -> None:
    """The examples in the module's docstrings run as written."""
    failed, attempted = doctest.testmod(tyqw.sse)
    assert attempted > 5
    assert failed == 0


def test_public_names() -> None:
    """The module exports exactly the decoder and the event."""
    assert sorted(tyqw.sse.__all__) == ["SSEDecoder", "ServerSentEvent"]


# -- Implicit dispatch (older gateways omit the blank lines) ---------------------------

RESULT_1 = b'id:1\nevent:result\n:HTTP_STATUS/200\ndata:{"output":{"text":"a"}}\n'
RESULT_2 = b'id:2\nevent:result\n:HTTP_STATUS/200\ndata:{"output":{"text":"b"}}\n'
ERROR_3 = b'id:3\nevent:error\n:HTTP_STATUS/400\ndata:{"code":"DataInspectionFailed"}\n'


@pytest.mark.parametrize(
    ("stream", "expected"),
    [
        pytest.param(
            RESULT_1 + RESULT_2 + ERROR_3,
            [
                E("result", '{"output":{"text":"a"}}', "1", None, "HTTP_STATUS/200"),
                E("result", '{"output":{"text":"b"}}', "2", None, "HTTP_STATUS/200"),
                E("error", '{"code":"DataInspectionFailed"}', "3", None, "HTTP_STATUS/400"),
            ],
            id="results-then-error",
        ),
        pytest.param(
            b'data:{"a":1}\ndata: {"b":2}\n',
            [E(data='{"a":1}'), E(data='{"b":2}')],
            id="json-line-ends-block",
        ),
        pytest.param(
            b'data:{"output":\ndata:{"text":"x"}}\n\n',
            [E(data='{"output":\n{"text":"x"}}')],
            id="json-over-two-lines",
        ),
        pytest.param(
            b'event:result\ndata:{"output":\ndata:{"text":"x"}}\nid:2\ndata:{}\n',
            [E("result", '{"output":\n{"text":"x"}}'), E(data="{}", id="2")],
            id="id-after-data-starts-frame",
        ),
        pytest.param(
            b"data:x\nevent:error\ndata:y\n\n",
            [E(data="x"), E("error", "y")],
            id="event-after-data-starts-frame",
        ),
        pytest.param(
            b'data:{"a":1} \ndata:x\n\n', [E(data='{"a":1} '), E(data="x")], id="space-after"
        ),
        pytest.param(
            b'data:  {"a":1}\ndata:x\n\n', [E(data=' {"a":1}\nx')], id="second-space-kept"
        ),
        pytest.param(b"data:[1]\ndata:2\n\n", [E(data="[1]\n2")], id="array-is-not-an-object"),
        pytest.param(b"data:{}x\ndata:2\n\n", [E(data="{}x\n2")], id="extra-after-object"),
        pytest.param(
            b"data:" + b'{"a":' * 100_000 + b"1" + b"}" * 100_000 + b"\ndata:x\n\n",
            [E(data='{"a":' * 100_000 + "1" + "}" * 100_000 + "\nx")],
            id="nested-too-deep-to-parse",
        ),
        pytest.param(
            b"retry:5\n:c\ndata:{}\n:late\nretry:7\n\n",
            [E(data="{}", retry=5, comment="c")],
            id="fields-after-json-go-to-next-block",
        ),
        pytest.param(b"data:x\n:c\nretry:5\n\n", [E(data="x", retry=5, comment="c")], id="other"),
    ],
)
def test_implicit_dispatch(stream: bytes, expected: list[E]) -> None:
    """implicit_dispatch ends a block at a whole JSON data line and where a frame begins."""
    assert decode(stream, implicit=True, dispatch_incomplete=True) == expected
    assert reference(stream, implicit=True, dispatch_incomplete=True) == expected
    assert (
        decode(
            *(stream[i : i + 1] for i in range(len(stream))),
            implicit=True,
            dispatch_incomplete=True,
        )
        == expected
    )


def test_implicit_dispatch_hands_each_frame_over_at_its_data_line() -> None:
    """Without blank lines, each frame arrives in the read that ends its data line."""
    decoder = SSEDecoder(implicit_dispatch=True)
    assert decoder.feed(RESULT_1[:-1]) == []
    assert [e.id for e in decoder.feed(b"\n")] == ["1"]
    assert [e.id for e in decoder.feed(RESULT_2 + ERROR_3[:20])] == ["2"]
    assert [e.id for e in decoder.feed(ERROR_3[20:])] == ["3"]
    assert decoder.close(dispatch_incomplete=True) == []


def test_without_implicit_dispatch_frames_merge() -> None:
    """The spec's rules, the default, merge frames that lack their blank lines."""
    [merged] = decode(RESULT_1 + ERROR_3, dispatch_incomplete=True)
    assert merged.event == "error"
    assert merged.data == '{"output":{"text":"a"}}\n{"code":"DataInspectionFailed"}'


# -- Properties ------------------------------------------------------------------------

_text = st.text(st.characters(exclude_characters="\r\n", codec="utf-8"), max_size=12)
_line = st.one_of(
    st.tuples(st.sampled_from(["data", "event", "id", "retry", "foo", ""]), _text).map(
        lambda pair: f"{pair[0]}:{pair[1]}"
    ),
    st.tuples(st.sampled_from(["data", "id", "event"]), _text).map(
        lambda pair: f"{pair[0]}: {pair[1]}"
    ),
    st.sampled_from(["", "", "data", "retry: 1500", "id", "data:"]),
    # Data lines that implicit dispatch looks at twice: objects, near misses, halves.
    st.sampled_from(["{}", '{"a":1}', ' {"b":[1]}', '{"a":', "1}", "[]", "{} ", "{}x", "{"]).map(
        lambda value: f"data:{value}"
    ),
)
_eol = st.sampled_from(["\n", "\r", "\r\n"])


@st.composite
def valid_streams(draw: st.DrawFn) -> bytes:
    """A well-formed stream: lines with mixed line ends, an optional BOM, any UTF-8."""
    lines = draw(st.lists(st.tuples(_line, _eol), max_size=25))
    bom = draw(st.sampled_from(["", "\ufeff"]))
    return (bom + "".join(line + eol for line, eol in lines)).encode()


_pieces = st.sampled_from(
    [b"\n", b"\r", b"\r\n", b":", b" ", b"data", b"id", b"event", b"retry", b"7", b"x", BOM]
) | st.sampled_from([b"{", b"}", b'{"a":1}', b"data:{}\n"])
_odd_bytes = st.sampled_from([b"\xe4\xbd\xa0", b"\xe4", b"\xff", b"\x00", b"\xf0\x9f"])
_messy_bytes = st.one_of(
    st.binary(max_size=200), st.lists(_pieces | _odd_bytes, max_size=60).map(b"".join)
)


def split_at(stream: bytes, cuts: list[int]) -> list[bytes]:
    """The stream cut at the given offsets."""
    bounds = [0, *sorted(cuts), len(stream)]
    return [stream[a:b] for a, b in itertools.pairwise(bounds)]


@quick
@given(stream=valid_streams(), data=st.data(), incomplete=st.booleans(), implicit=st.booleans())
def test_property_any_split_same_events(
    stream: bytes, data: st.DataObject, incomplete: bool, implicit: bool
) -> None:
    """Any split of a valid stream into chunks yields exactly the events of the whole."""
    cuts = data.draw(st.lists(st.integers(0, len(stream)), max_size=8))
    options = {"dispatch_incomplete": incomplete, "implicit": implicit}
    whole = decode(stream, **options)
    assert decode(*split_at(stream, cuts), **options) == whole
    assert whole == reference(stream, **options)


@quick
@given(stream=_messy_bytes, data=st.data(), incomplete=st.booleans(), implicit=st.booleans())
def test_property_arbitrary_bytes_never_raise(
    stream: bytes, data: st.DataObject, incomplete: bool, implicit: bool
) -> None:
    """Arbitrary bytes in arbitrary chunks never raise, and match the spec's algorithm."""
    cuts = data.draw(st.lists(st.integers(0, len(stream)), max_size=8))
    options = {"dispatch_incomplete": incomplete, "implicit": implicit}
    assert decode(*split_at(stream, cuts), **options) == reference(stream, **options)


@quick
@given(stream=valid_streams() | _messy_bytes, data=st.data(), implicit=st.booleans())
def test_property_nothing_waits_for_a_later_read(
    stream: bytes, data: st.DataObject, implicit: bool
) -> None:
    """After every read, the events so far, the last event ID and the retry time are what
    the spec's algorithm makes of the bytes so far: no read's result waits for the next."""
    cuts = data.draw(st.lists(st.integers(0, len(stream)), max_size=8))
    decoder = SSEDecoder(implicit_dispatch=implicit)
    events: list[E] = []
    fed = 0
    for chunk in split_at(stream, cuts):
        events += decoder.feed(chunk)
        fed += len(chunk)
        expected = interpret(stream[:fed], implicit=implicit)
        assert events == expected.events
        assert decoder.last_event_id == expected.last_event_id
        assert decoder.retry == expected.retry


@quick
@given(stream=_messy_bytes, data=st.data(), max_size=st.integers(1, 24))
def test_property_small_cap_raises_only_too_large(
    stream: bytes, data: st.DataObject, max_size: int
) -> None:
    """With a small cap, the only error is EventTooLargeError, whatever the chunking."""
    cuts = data.draw(st.lists(st.integers(0, len(stream)), max_size=8))
    whole = decode_or_error([stream], max_size)
    chunked = decode_or_error(split_at(stream, cuts), max_size)
    if isinstance(whole, EventTooLargeError):
        assert isinstance(chunked, EventTooLargeError)
        assert whole.limit == chunked.limit == max_size
    else:
        assert whole == chunked == reference(stream)


def decode_or_error(chunks: list[bytes], max_size: int) -> list[E] | EventTooLargeError:
    """The events, or the EventTooLargeError raised."""
    try:
        return decode(*chunks, max_size=max_size)
    except EventTooLargeError as exc:
        return exc


# Bailian-shaped blocks are read whole by a regular expression (SSEDecoder._blocks).
# Each case below is that framing with one line replaced by a near miss, which the line
# rules must handle instead; all of them must decode exactly as the spec's algorithm says.
_EXACT = ["id:7", "event:result", ":HTTP_STATUS/200", 'data:{"n":1}', ""]
_NEAR_MISSES = [
    ["id:8", "id: 7", "id:", "id:1\x002", "id:a:b", "retry:5", "foo:1", "data:x"],
    ["event:error", "event: result", "event:", "event:a:b", "data:x", ""],
    [": HTTP_STATUS/400", ":", "id:9", "event:error", "data:x", "retry:1"],
    ["data: {}", "data:", "data:a:b", "data:  x", "id:3", "data:\u2028"],
    ["data:more", ":late comment", "event:late", "id:4", "retry:2"],
]
_ALL_NEAR_MISSES = [line for lines in _NEAR_MISSES for line in lines]
_CASES = [
    pytest.param(line, position, id=f"line{position}-{line!r}")
    for position, lines in enumerate(_NEAR_MISSES)
    for line in lines
]


@pytest.mark.parametrize(("line", "position"), _CASES)
@pytest.mark.parametrize("first", [True, False], ids=["first", "after-exact"])
@pytest.mark.parametrize("implicit", [False, True], ids=["spec", "implicit"])
def test_bailian_framing_near_misses(
    line: str, position: int, first: bool, implicit: bool
) -> None:
    """A Bailian block with one line off decodes as the spec says, alone or after others."""
    near = [*_EXACT]
    near[position] = line
    exact = "\n".join(_EXACT) + "\n"
    text = "\n".join(near) + "\n" + exact
    stream = (text if first else exact + text).encode()
    expected = reference(stream, implicit=implicit)
    assert decode(stream, implicit=implicit) == expected
    assert decode(*(stream[i : i + 1] for i in range(len(stream))), implicit=implicit) == expected
    for i in range(len(stream) + 1):
        assert decode(stream[:i], stream[i:], implicit=implicit) == expected, i


@quick
@given(
    blocks=st.lists(
        st.lists(
            st.sampled_from([line for lines in _NEAR_MISSES for line in lines]), max_size=3
        ).map(lambda extra: "\n".join(_EXACT[:4] + extra + [""]) + "\n"),
        max_size=8,
    ),
    data=st.data(),
)
def test_property_bailian_blocks_with_extra_lines(blocks: list[str], data: st.DataObject) -> None:
    """Exact blocks followed by extra lines, cut anywhere, decode as the spec says."""
    stream = "".join(blocks).encode()
    cuts = data.draw(st.lists(st.integers(0, len(stream)), max_size=6))
    expected = reference(stream)
    assert decode(stream) == expected
    assert decode(*split_at(stream, cuts)) == expected


_json_objects = st.dictionaries(
    st.text(max_size=4),
    st.one_of(st.integers(), st.text(max_size=6), st.none(), st.lists(st.booleans(), max_size=2)),
    max_size=3,
).map(lambda obj: json.dumps(obj, ensure_ascii=False, separators=(",", ":")))


@st.composite
def bailian_frames(draw: st.DrawFn) -> list[str]:
    """Frames as Bailian writes them (id, event, status comment, one JSON data line),
    each without its closing blank line."""
    frames = []
    for n in range(1, draw(st.integers(1, 6)) + 1):
        event, status = draw(st.sampled_from([("result", 200), ("error", 400), ("error", 500)]))
        data = draw(_json_objects)
        frames.append(f"id:{n}\nevent:{event}\n:HTTP_STATUS/{status}\ndata:{data}\n")
    return frames


@quick
@given(frames=bailian_frames(), eol=_eol, data=st.data())
def test_property_bailian_frames_with_or_without_blank_lines(
    frames: list[str], eol: str, data: st.DataObject
) -> None:
    """Bailian's frames give the spec's events under implicit dispatch, and the same
    events when the blank lines are missing, wherever the reads end."""
    with_blank_lines = "".join(frame + "\n" for frame in frames).replace("\n", eol).encode()
    without = "".join(frames).replace("\n", eol).encode()
    expected = decode(with_blank_lines)
    assert len(expected) == len(frames)
    for stream in (with_blank_lines, without):
        cuts = data.draw(st.lists(st.integers(0, len(stream)), max_size=8))
        chunks = split_at(stream, cuts)
        assert decode(*chunks, implicit=True, dispatch_incomplete=True) == expected


def test_whole_blocks_keep_the_last_event_id() -> None:
    """After blocks read whole, the last event ID and the next block's id are right."""
    decoder = SSEDecoder()
    events = decoder.feed(BAILIAN_EVENT + BAILIAN_EVENT.replace(b"id:17", b"id:18"))
    assert [e.id for e in events] == ["17", "18"]
    assert decoder.last_event_id == "18"
    assert decoder.feed(b"data: x\n\n") == [E(data="x", id="18")]
