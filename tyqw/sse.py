"""Server-sent events: bytes in, events out. Pure, no I/O.

An incremental decoder for ``text/event-stream`` that follows the WHATWG HTML
"event stream interpretation" rules (§9.2.5-9.2.6) exactly: CR, LF and CRLF line ends
(a CRLF may straddle two chunks), UTF-8 decoded with replacement whatever the charset
header says (a character may straddle chunks), one leading BOM dropped, comments and
unknown fields ignored, and a block dispatched only at a blank line.

Two additions for the Bailian service, neither changing what is dispatched: an event
keeps the last comment of its block in ``.comment`` (Bailian puts the real HTTP status
in a ``:HTTP_STATUS/400`` comment), and ``close(dispatch_incomplete=True)`` dispatches a
final block the server left without its closing blank line.

One opt-in mode, ``SSEDecoder(implicit_dispatch=True)``, for Bailian's older gateways,
which omit the blank line after each frame. It ends a block where a new frame plainly
begins, judging whole lines only, so the events never depend on where reads end:

- a ``data`` line whose value is one complete JSON object (it starts with ``{`` and
  parses as an object) and is the first data line of its block dispatches the block
  right after it, as a blank line would;
- an ``id`` or ``event`` line in a block that already holds data dispatches that block
  first: a new frame has begun.

Bailian's own framing (``id``, ``event``, a comment, one ``data`` line, a blank line)
gives the same events with or without the mode, and without its blank lines too. The
mode differs from the spec only for a block that puts fields after a JSON data line or
data before its ``id`` or ``event``.

One module past the usual length on purpose: the fast paths (whole blocks read by one
regular expression, block starts kept back so that reads resume on block boundaries)
sit beside the line rules they must agree with, and the tests prove that they do.

Example::

    >>> decoder = SSEDecoder()
    >>> decoder.feed(b"id:1\\nevent:result\\n:HTTP_STATUS/200\\ndata:{}\\n\\n")
    [ServerSentEvent(event='result', data='{}', id='1', retry=None, comment='HTTP_STATUS/200')]
    >>> decoder.close()
    []
"""

from __future__ import annotations

import json
import re
import warnings
from dataclasses import dataclass
from typing import TypeAlias

from ._exceptions import EventTooLargeError

__all__ = ["SSEDecoder", "ServerSentEvent"]

_BOM = b"\xef\xbb\xbf"
# One whole event as Bailian frames it (see SSEDecoder._blocks): id without a NUL,
# a non-empty event type and data, neither value starting with the space the spec would
# strip, then the blank line that dispatches it.
_BAILIAN_BLOCK = re.compile(
    r"id:([^ \n\0][^\n\0]*)\nevent:([^ \n][^\n]*)\n:([^\n]*)\ndata:([^ \n][^\n]*)\n\n"
)
_CR = 0x0D
_LF = 0x0A
# The most bytes of whole lines kept back with the pending line (see SSEDecoder.feed).
_HOLD = 1024

# A block being read: event type, data values, data size, retry, comment.
_Block: TypeAlias = tuple[str, list[str] | None, int, int | None, str | None]
_EMPTY_BLOCK: _Block = ("", None, 0, None, None)


@dataclass(frozen=True, slots=True)
class ServerSentEvent:
    """One dispatched event.

    ``id`` is the last event ID at dispatch time (it persists across events); ``retry``
    is set only if a valid ``retry`` field appeared in this event's block; ``comment``
    is the text after the ``:`` of the block's last comment line, or ``None``.

    Example::

        >>> [event] = SSEDecoder().feed(b"event:error\\n:HTTP_STATUS/400\\ndata:{}\\n\\n")
        >>> event.event, event.data, event.comment
        ('error', '{}', 'HTTP_STATUS/400')
    """

    event: str = "message"
    data: str = ""
    id: str = ""
    retry: int | None = None
    comment: str | None = None


class _EventBuilder:
    """A mutable twin of ServerSentEvent with the same slots, to build events fast.

    A frozen dataclass's __init__ stores each field through object.__setattr__: 600 ns
    an event on the machine this was measured on (CPython 3.11), as much as parsing the
    event's lines. The decoder fills a builder with plain slot stores and then switches
    its class (150 ns): Python allows __class__ assignment between classes with
    identical __slots__, and the result is an ordinary, frozen ServerSentEvent.
    """

    __slots__ = ServerSentEvent.__slots__
    event: str
    data: str
    id: str
    retry: int | None
    comment: str | None


_new = object.__new__


class SSEDecoder:
    """Incremental ``text/event-stream`` decoder: feed it bytes, get events.

    Whatever the reads, every event comes out of the ``feed()`` whose bytes complete
    it, and the events of a stream never depend on where it was split into reads.

    Raises ``EventTooLargeError`` as soon as one line, or the data of one event, grows
    past ``max_size`` bytes (characters for the data); nothing past the cap is
    buffered, and the decoder is closed afterwards. Events completed earlier in the
    same chunk are not lost: that ``feed()`` returns them, and the next ``feed()`` or
    ``close()`` raises the error. After ``close()``, ``feed()`` raises ``ValueError``;
    make a new decoder for a new stream.

    ``implicit_dispatch=True`` also ends a block where a Bailian frame plainly ends
    without its blank line (see the module).

    Example::

        >>> decoder = SSEDecoder()
        >>> decoder.feed(b"data: hel"), decoder.feed(b"lo\\r\\n\\r\\n")
        ([], [ServerSentEvent(event='message', data='hello', id='', retry=None, comment=None)])
        >>> older = SSEDecoder(implicit_dispatch=True)
        >>> [e.data for e in older.feed(b'event:result\\ndata:{"a":1}\\nevent:result\\n')]
        ['{"a":1}']
    """

    last_event_id: str
    """The last event ID string, updated at every blank line (it persists across events).

    Example::

        >>> decoder = SSEDecoder()
        >>> _ = decoder.feed(b"id: 7\\ndata: x\\n\\ndata: y\\n\\n")
        >>> decoder.last_event_id
        '7'
    """

    retry: int | None
    """The reconnection time in milliseconds from the latest valid ``retry`` field.

    Example::

        >>> decoder = SSEDecoder()
        >>> decoder.feed(b"retry: 3000\\n"), decoder.retry
        ([], 3000)
    """

    def __init__(
        self, *, max_size: int = 16 * 1024 * 1024, implicit_dispatch: bool = False
    ) -> None:
        if max_size < 1:
            raise ValueError(f"max_size must be at least 1, not {max_size}")
        self.last_event_id = ""
        self.retry = None
        self._max_size = max_size
        self._implicit = implicit_dispatch
        self._closed = False
        # An EventTooLargeError held back so that feed() could return earlier events.
        self._error: EventTooLargeError | None = None
        # Stream start: up to two bytes held back while they may still be a split BOM.
        self._at_start = True
        self._start = b""
        # The previous chunk ended with CR: a LF opening the next chunk ends no line.
        self._after_cr = False
        # One flag for the three states above, so the common chunk tests only it.
        self._careful = True
        # What is not read yet, as raw bytes (a UTF-8 character may be cut): the
        # unterminated last line, after the first ``_held`` bytes, which are whole lines
        # kept back (see feed). A bytearray grows in place, so a long line fed in tiny
        # reads stays linear in time and costs about its own size in memory, not an
        # object per read.
        self._tail = bytearray()
        self._held = 0
        # The spec's last event ID buffer, and the block being read: its event type
        # buffer, data buffer (a list of values) and size, retry and comment. One tuple
        # because it is loaded and stored once per chunk.
        self._id_buffer = ""
        self._block: _Block = _EMPTY_BLOCK

    def feed(self, chunk: bytes) -> list[ServerSentEvent]:
        """Decode the next piece of the stream; return the events it completed.

        Raises ``EventTooLargeError`` past the size cap, ``ValueError`` after ``close()``.

        Example::

            >>> decoder = SSEDecoder()
            >>> decoder.feed(b"data: 1\\n"), decoder.feed(b"\\n")
            ([], [ServerSentEvent(event='message', data='1', id='', retry=None, comment=None)])
        """
        if self._careful:
            chunk = self._prepare(chunk)
        if not chunk:
            return []
        if _CR in chunk:  # an int needle: a plain memchr, ten times faster than b"\r"
            # From here on every line end is a single LF. A chunk that ends with CR has
            # ended its line; remember it so that a LF opening the next chunk is skipped.
            if chunk[-1] == _CR:
                self._after_cr = self._careful = True
            chunk = chunk.replace(b"\r\n", b"\n").replace(b"\r", b"\n")
        size = len(chunk)
        tail = self._tail
        if len(tail) + size > self._max_size:
            bad = self._oversized_line(chunk)
            if bad >= 0:
                # The lines before the offending one are complete and within bounds.
                events: list[ServerSentEvent] = []
                if bad:
                    tail += chunk[:bad]
                    lines = tail.decode("utf-8", "replace").split("\n")
                    lines.pop()
                    self._held = 0
                    self._interpret(lines, events)
                if self._closed:  # their event data overflowed first
                    return events
                return self._fail(f"SSE line longer than {self._max_size} bytes", events)
        end = chunk.rfind(b"\n") + 1  # just past the last line end; 0 if none
        if not end:
            tail += chunk
            return []
        # LF never occurs inside a UTF-8 sequence, so decoding whole lines at once is the
        # same as decoding the stream as one (invalid bytes become U+FFFD either way).
        if end == size and not tail and (size == 1 or chunk[-2] == _LF):
            # The usual case: whole blocks (the chunk ends with a blank line).
            return self._blocks(chunk.decode("utf-8", "replace"))
        # Otherwise this read ends inside a block. When nothing in the block's lines so
        # far can show before its blank line (no data or retry field: they only fill
        # buffers), they wait, unread, with the pending line, and are read with the rest
        # of their block: the next read then starts on a block boundary, where the fast
        # path of _blocks works. At most _HOLD bytes wait, so that tiny reads, each
        # reading them again, stay linear.
        cut = chunk.rfind(b"\n\n", 0, end) + 2
        if (
            cut < 2
            or end - cut > _HOLD
            or chunk.find(b"data", cut, end) >= 0
            or chunk.find(b"retry", cut, end) >= 0
        ):
            cut = end
        if tail:
            tail += chunk[:cut]
            text = tail.decode("utf-8", "replace")
            tail.clear()
        else:
            text = chunk[:cut].decode("utf-8", "replace")
        self._held = end - cut
        if cut < size:
            tail += chunk[cut:]
        return self._blocks(text)

    def _blocks(self, text: str) -> list[ServerSentEvent]:
        """The events of ``text`` (whole lines): Bailian's blocks fast, others by the rules.

        Bailian frames every event as ``id:<n>``, ``event:<type>``, ``:<comment>``,
        ``data:<json>`` and a blank line, with no space after the colons. Starting where
        no other block is in progress, such a block means exactly what the line rules of
        ``_interpret`` make of it (in either mode: its one data line is followed by the
        blank line), and one regular expression reads it a good deal faster than five
        lines handled one by one. Anything else (a space after a colon, a NUL in the id,
        other fields or more data lines) stops the match there.

        Reads end anywhere, and the fast path must not depend on where (``feed()`` keeps
        most reads starting on block boundaries). A block in progress when ``text``
        starts, or one the expression does not match, goes through the line rules up to
        its blank line, and the expression resumes after it. Only when it fails again
        right after such a block (a stream of other blocks) do the line rules take the
        rest, so such a stream costs one extra match a read, not one a block.
        """
        events: list[ServerSentEvent] = []
        size = len(text)
        pos = 0
        after_rules = False
        while True:
            event_type, data, _, retry, comment = self._block
            if not event_type and data is None and retry is None and comment is None:
                match = _BAILIAN_BLOCK.match(text, pos)
                if match is not None:
                    append = events.append
                    while match is not None:
                        event = _new(_EventBuilder)
                        event.id, event.event, event.comment, event.data = match.groups()
                        event.retry = None
                        event.__class__ = ServerSentEvent  # type: ignore[assignment]
                        append(event)  # type: ignore[arg-type]
                        pos = match.end()
                        match = _BAILIAN_BLOCK.match(text, pos)
                    # The id field set the last event ID buffer, the blank line the last
                    # event ID.
                    self._id_buffer = self.last_event_id = events[-1].id
                    if pos == size:
                        return events
                    after_rules = False
                elif after_rules:
                    break
            # The block at pos, to its blank line, by the line rules.
            if text[pos] == "\n":
                stop = pos + 1
            else:
                stop = text.find("\n\n", pos) + 2
                if stop == 1:
                    break  # no blank line in the rest
            lines = text[pos:stop].split("\n")
            lines.pop()
            self._interpret(lines, events)
            if self._closed:  # the block's data went past the cap
                return events
            if stop == size:
                return events
            pos = stop
            after_rules = True
        # Not str.splitlines(): it also splits at \x0b, \x1c, \u2028 and others.
        lines = (text[pos:] if pos else text).split("\n")
        lines.pop()  # the empty string after the last line end
        return self._interpret(lines, events)

    def flush(self) -> list[ServerSentEvent]:
        """Deprecated (tyqw reads no stream with it; it warns and goes in a later
        release): dispatch the block being read now, as a blank line would, if it has
        data and no line of it is still half-received; otherwise return ``[]``.

        Not part of the spec. What it dispatches depends on where the reads so far have
        ended: called after every ``feed()``, it can hand over half of an event whose data
        spans two lines, or, when one read holds several frames without blank lines,
        merge them into one. For servers that omit blank lines, prefer
        ``implicit_dispatch=True`` (see the module), which decides on line content only;
        ``flush()`` is for a caller who knows the block is complete, e.g. at a pause.

        Example::

            >>> decoder = SSEDecoder(implicit_dispatch=True)   # use this instead
            >>> decoder.feed(b"event:result\\ndata:{}\\n")
            [ServerSentEvent(event='result', data='{}', id='', retry=None, comment=None)]
        """
        warnings.warn(
            "SSEDecoder.flush() is deprecated: what it dispatches depends on where reads "
            "end; use SSEDecoder(implicit_dispatch=True)",
            DeprecationWarning,
            stacklevel=2,
        )
        if self._closed or self._tail or self._block[1] is None:
            return []
        return self._interpret([""], [])

    def close(self, *, dispatch_incomplete: bool = False) -> list[ServerSentEvent]:
        """End the stream; return ``[]``, or the unfinished block if asked. Idempotent.

        An ``EventTooLargeError`` that ``feed()`` held back (see the class) is raised
        here if no ``feed()`` raised it first.

        The spec discards a block that the stream ends inside. ``dispatch_incomplete=True``
        instead treats the end as a line end plus a blank line: Bailian closes the
        connection right after its last error frame's ``data:`` line.

        Example::

            >>> decoder = SSEDecoder()
            >>> decoder.feed(b"event:error\\ndata:{}\\n"), decoder.close(dispatch_incomplete=True)
            ([], [ServerSentEvent(event='error', data='{}', id='', retry=None, comment=None)])
        """
        if self._closed:
            self._raise_held_error()
            return []
        self._closed = self._careful = True
        # Bytes still held as a possible split BOM ("\xef" or "\xef\xbb") would make a
        # line with an unknown field name, which changes nothing: they are dropped.
        lines = self._tail.decode("utf-8", "replace").split("\n") if self._tail else []
        if lines and not lines[-1]:
            lines.pop()  # whole lines kept back and no pending line after them
        self._tail.clear()
        self._held = 0
        if not dispatch_incomplete:
            # Spec: "Once the end of the file is reached, any pending data must be
            # discarded."
            self._block = _EMPTY_BLOCK
            return []
        lines.append("")
        return self._interpret(lines, [])

    def _prepare(self, chunk: bytes) -> bytes:
        """Refuse a closed decoder, drop a leading BOM, skip the LF of a split CRLF."""
        if self._closed:
            self._raise_held_error()
            raise ValueError("this SSEDecoder is closed; make a new one for a new stream")
        if self._at_start:
            # One leading BOM is dropped; it may arrive split over the first chunks.
            chunk = self._start + chunk
            if len(chunk) < 3 and _BOM.startswith(chunk):
                self._start = chunk  # too short to tell yet
                return b""
            self._at_start = False
            self._start = b""
            if chunk.startswith(_BOM):
                chunk = chunk[3:]
        elif self._after_cr and chunk:
            self._after_cr = False
            if chunk[0] == _LF:
                chunk = chunk[1:]
        self._careful = self._after_cr
        return chunk

    def _oversized_line(self, chunk: bytes) -> int:
        """Where the first line past ``max_size`` starts in ``chunk``, or -1.

        The pending tail counts towards the first line, so 0 may mean "the tail's line".
        """
        limit = self._max_size
        carried = len(self._tail) - self._held
        start = 0
        while True:
            end = chunk.find(b"\n", start)
            stop = len(chunk) if end < 0 else end
            if carried + stop - start > limit:
                return start
            if end < 0:
                return -1
            carried = 0
            start = end + 1

    def _fail(self, message: str, events: list[ServerSentEvent]) -> list[ServerSentEvent]:
        """Close the decoder over an oversized line or event.

        Raise the error now, or, if ``events`` were completed before the failure, return
        them and hold the error for the next call.
        """
        self._closed = self._careful = True
        self._tail.clear()
        self._held = 0
        self._block = _EMPTY_BLOCK
        error = EventTooLargeError(message, limit=self._max_size)
        if not events:
            raise error
        self._error = error
        return events

    def _raise_held_error(self) -> None:
        error, self._error = self._error, None
        if error is not None:
            raise error

    def _interpret(self, lines: list[str], events: list[ServerSentEvent]) -> list[ServerSentEvent]:
        """Apply complete lines to the block buffers; add the events dispatched to
        ``events`` (those completed before them in the same chunk) and return it."""
        if self._implicit and lines != [""]:  # a lone blank line needs nothing added
            lines = _implicit_blank_lines(lines, self._block[1] is not None)
        append = events.append
        event_type, data, data_size, block_retry, comment = self._block
        id_buffer = self._id_buffer
        last_event_id = self.last_event_id
        for line in lines:
            if not line:
                # Dispatch. The last event ID is set even when nothing is dispatched.
                last_event_id = id_buffer
                if data is not None:
                    event = _new(_EventBuilder)
                    event.event = event_type or "message"
                    # Joining "value\n" pieces and removing the one trailing LF, as the
                    # spec says, is the same as joining the values with LF.
                    event.data = "\n".join(data)
                    event.id = id_buffer
                    event.retry = block_retry
                    event.comment = comment
                    event.__class__ = ServerSentEvent  # type: ignore[assignment]
                    append(event)  # type: ignore[arg-type]
                    data = None
                event_type = ""
                block_retry = None
                comment = None
                continue
            name, _, value = line.partition(":")
            if not name:
                # A comment: kept verbatim (no space removed) for Bailian's ":HTTP_STATUS/400".
                comment = value
                continue
            if value and value[0] == " ":
                value = value[1:]  # only one space
            if name == "data":
                if data is None:
                    data = [value]
                else:
                    if len(data) == 1:
                        data_size = len(data[0]) + 1  # counted late: one line is in bounds
                    data_size += len(value) + 1
                    if data_size > self._max_size:
                        self.last_event_id = last_event_id
                        message = f"SSE event data longer than {self._max_size} characters"
                        return self._fail(message, events)
                    data.append(value)
            elif name == "event":
                event_type = value
            elif name == "id":
                if "\0" not in value:
                    id_buffer = value
            elif name == "retry":
                retry = _parse_retry(value)
                if retry is not None:
                    self.retry = block_retry = retry
            # Any other field is ignored.
        self._block = (event_type, data, data_size, block_retry, comment)
        self._id_buffer = id_buffer
        self.last_event_id = last_event_id
        return events


def _implicit_blank_lines(lines: list[str], has_data: bool) -> list[str]:
    """``lines`` with a blank line added wherever ``implicit_dispatch`` ends a block.

    ``has_data``: the block in progress before ``lines`` holds data. A block's first
    data line is tried as JSON only when the next line leaves the question open: a blank
    line, or an ``id`` or ``event`` line, ends the block after it anyway.
    """
    out: list[str] = []
    append = out.append
    last = len(lines) - 1
    for i, line in enumerate(lines):
        if not line:
            has_data = False
        elif line.startswith("data"):
            name, _, value = line.partition(":")
            if name == "data" and not has_data:
                has_data = True
                if i == last or (lines[i + 1] and not _starts_frame(lines[i + 1])):
                    if value and value[0] == " ":
                        value = value[1:]
                    if _is_json_object(value):
                        append(line)
                        append("")
                        has_data = False
                        continue
        elif has_data and _starts_frame(line):
            append("")
            has_data = False
        append(line)
    return out


def _starts_frame(line: str) -> bool:
    """The line is an ``id`` or ``event`` field, with which a Bailian frame begins."""
    name = line.partition(":")[0]
    return name == "id" or name == "event"


def _is_json_object(value: str) -> bool:
    """The value is one complete JSON object (what every Bailian data line holds)."""
    if value[:1] != "{" or value.rstrip()[-1:] != "}":
        return False  # cheap answers first: most values that are not objects stop here
    try:
        return json.loads(value).__class__ is dict
    except (ValueError, RecursionError):
        return False


def _parse_retry(value: str) -> int | None:
    """The value of a ``retry`` field if it is ASCII digits only, else ``None``."""
    if not (value.isascii() and value.isdigit()):
        return None
    try:
        return int(value.lstrip("0") or "0")
    except ValueError:
        # Past sys.get_int_max_str_digits(): thousands of digits, surely a broken
        # server. Treated like an invalid value rather than raising.
        return None
