"""What the ``tyqw`` commands write: streamed replies, error lines, the SDK's words as flags.

Streams: reply text (and ``--json`` lines) go to stdout; notices, the ``[stopped]``
marker, warnings and error lines go to stderr, so stdout stays clean for pipes.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import re
import sys
import unicodedata
from collections.abc import Iterator
from typing import TextIO

from .. import (
    APIConnectionError,
    APIStatusError,
    APITimeoutError,
    AuthenticationError,
    BadRequestError,
    Citation,
    IncompleteStreamError,
    InternalServerError,
    Message,
    NotFoundError,
    PermissionDeniedError,
    RateLimitError,
    StoreError,
    StreamError,
    Thought,
    TyqwError,
)
from .._models import plain_markers


class BrokenPipe(Exception):
    """stdout was closed by its reader (``tyqw ask ... | head``)."""


class Printer:
    """Writes a reply as it streams and keeps track of whether the line is open.

    Thoughts (``thought`` events) are printed as they first appear, before the text they
    led to; citation markers ``<ref>[n]</ref>`` are shown as ``[n]``, and the documents
    cited (``reference`` events) are listed under the reply.
    """

    def __init__(self, out: TextIO, *, json_lines: bool = False, thoughts: bool = False):
        self.out = out
        self.json_lines = json_lines
        self.show_thoughts = thoughts
        self.dim = out.isatty()
        self.line_open = False
        self.pending = ""  # text that may be the start of a citation marker
        self.cited: list[Citation] = []
        self.reasoning_open = False  # a model's reasoning is being written

    def start_turn(self) -> None:
        self.pending = ""
        self.cited = []
        self.reasoning_open = False

    def message(self, message: Message) -> None:
        if self.reasoning_open and message.delta:
            self.reasoning_open = False
            self.end_line()
        try:
            if self.json_lines:
                self._write(json_line(message))
                return
            text = plain_markers(self.pending + message.delta)
            # A marker may arrive split over events: its start waits for the rest.
            self.pending = "" if message.finish_reason is not None else _marker_start(text)
            if self.pending:
                text = text[: -len(self.pending)]
            if text:
                self._write(text)
                self.line_open = not text.endswith("\n")
        except BrokenPipeError:
            raise BrokenPipe from None

    def thought(self, thought: Thought) -> None:
        if not self.show_thoughts:
            return
        if "reasoning" in thought.raw:
            # A model's reasoning streams in pieces: one dim line that grows.
            piece = thought.text
            if not self.reasoning_open:
                self.end_line()
                piece = "[reasoning] " + piece
                self.reasoning_open = True
            try:
                self._write(f"\x1b[2m{piece}\x1b[0m" if self.dim else piece)
            except BrokenPipeError:
                raise BrokenPipe from None
            self.line_open = True
            return
        label = thought.action_name or thought.action_type or "thought"
        self.note(f"[{label}] {thought.text}".rstrip())

    def reference(self, citation: Citation) -> None:
        self.cited.append(citation)

    def references(self) -> None:
        """The documents the turn cited, a line each, under the reply."""
        for citation in self.cited:
            about = citation.title or citation.doc_name or citation.doc_id or ""
            self.note(f"{citation.marker} {about}".rstrip())
        self.cited = []

    def note(self, line: str) -> None:
        """A line apart from the reply: dimmed on a terminal."""
        if self.dim:
            line = f"\x1b[2m{line}\x1b[0m"
        try:
            self.end_line()
            self._write(line + "\n")
        except BrokenPipeError:
            raise BrokenPipe from None

    def end_line(self) -> None:
        if self.line_open:
            self.line_open = False
            with contextlib.suppress(BrokenPipeError):
                self._write("\n")

    def _write(self, text: str) -> None:
        self.out.write(text)
        self.out.flush()


def _marker_start(text: str) -> str:
    """The end of ``text`` that may be the start of a citation marker, or ``""``."""
    opened = text.rfind("<ref>")
    if opened >= 0 and "</ref>" not in text[opened:] and len(text) - opened < 200:
        return text[opened:]  # "<ref>[4" or "<ref>[4]</re": the marker is not whole yet
    start = text.rfind("<")
    if start >= 0 and "<ref>".startswith(text[start:]):
        return text[start:]  # "<", "<r", "<re", "<ref"
    return ""


def json_line(message: Message) -> str:
    fields = {
        "delta": message.delta,
        "text": message.text,
        "session_id": message.session_id,
        "finish_reason": message.finish_reason,
        "usage": message.usage,
        "request_id": message.request_id,
    }
    return json.dumps(fields, ensure_ascii=False) + "\n"


def error_line(error: TyqwError) -> str:
    """One line: what happened, DashScope's code and request id, and what to do."""
    what = " ".join(cli_words(str(error)).split())
    advice = hint(error)
    return f"{what} — {advice}" if advice else what


def hint(error: TyqwError) -> str:
    if isinstance(error, StoreError):
        return "check the conversation store (--store or TYQW_STORE) and that it is reachable"
    if isinstance(error, AuthenticationError):
        return "check DASHSCOPE_API_KEY (a key works only in its own region's base URL)"
    if isinstance(error, PermissionDeniedError):
        return (
            "check that the key may use this app and workspace "
            "(--workspace or DASHSCOPE_WORKSPACE)"
        )
    if isinstance(error, NotFoundError):
        return (
            "check the app id (--app-id or DASHSCOPE_APP_ID) and the base URL "
            "(--base-url or DASHSCOPE_BASE_URL)"
        )
    if isinstance(error, RateLimitError):
        return "wait a moment and try again, or check your quota"
    if isinstance(error, BadRequestError):
        if error.code == "DataInspectionFailed":
            return "content moderation blocked the text; rephrase it"
        if "AppId" in error.message:
            return "check the app id (--app-id or DASHSCOPE_APP_ID)"
        return "check the prompt and the app's settings in the Bailian console"
    if isinstance(error, InternalServerError):
        return "the service failed; try again later"
    if isinstance(error, APIStatusError):
        return ""
    if isinstance(error, APITimeoutError):
        return "the service did not answer in time; try again"
    if isinstance(error, APIConnectionError):
        return "check your network connection and the base URL (--base-url or DASHSCOPE_BASE_URL)"
    if isinstance(error, IncompleteStreamError):
        return "the reply was cut off; try again"
    if isinstance(error, StreamError):
        return (
            "this does not look like the Bailian service (a proxy?); check the base URL "
            "(--base-url or DASHSCOPE_BASE_URL)"
        )
    return ""


# The SDK's messages name its keyword arguments; on the command line they are flags.
_FLAGS = {"allow_insecure_http=True": "--allow-insecure-http", "state_dir=": "--state-dir"}
_KEYWORD = re.compile("|".join(re.escape(keyword) for keyword in _FLAGS))


def cli_words(message: str) -> str:
    """``message`` with each SDK keyword argument it mentions replaced by the CLI's flag."""
    return _KEYWORD.sub(lambda match: _FLAGS[match.group()], message)


class _WarningLines(logging.Handler):
    def emit(self, record: logging.LogRecord) -> None:
        try:
            message = " ".join(cli_words(record.getMessage()).split())
            print(message if message.startswith("tyqw:") else f"tyqw: {message}", file=sys.stderr)
        except Exception:
            self.handleError(record)


@contextlib.contextmanager
def warnings_as_lines() -> Iterator[None]:
    """While inside, each warning of the ``tyqw`` logger is one line on stderr, with flags."""
    logger = logging.getLogger("tyqw")
    handler = _WarningLines(logging.WARNING)
    logger.addHandler(handler)
    try:
        yield
    finally:
        logger.removeHandler(handler)


def shown(text: str) -> str:
    """``text`` safe to print: control characters and undecodable bytes escaped."""
    if text.isprintable():
        return text
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)


def width(text: str) -> int:
    """Columns ``text`` takes on a terminal: CJK characters take two."""
    return sum(2 if unicodedata.east_asian_width(c) in "WF" else 1 for c in text)


def fail(message: str) -> None:
    print(f"tyqw: error: {message}", file=sys.stderr, flush=True)


def silence_stdout() -> None:
    # The reader is gone: point stdout at devnull so flushing at exit cannot fail again.
    with contextlib.suppress(OSError, ValueError):
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
