"""``tyqw ask``: one turn, streamed to stdout (for pipes and scripts)."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from .. import StoreError, TyqwError
from ._common import (
    ERROR,
    INTERRUPTED,
    OK,
    CommandError,
    UsageError,
    conversation_parent,
    ctrl_c_aborts,
    event_loop,
    lenient,
    open_session,
    service_parent,
    text,
    undecodable,
)
from ._output import BrokenPipe, Printer, error_line, fail


def add_parser(commands: Any) -> None:
    ask = commands.add_parser(
        "ask",
        parents=[service_parent(), conversation_parent()],
        help="one turn, streamed to stdout (for pipes and scripts)",
        description="Send one prompt and stream the reply to stdout. Exit status: 0 "
        "success, 1 API or stream error, 2 usage error, 130 interrupted.",
    )
    ask.add_argument(
        "prompt", nargs="+", type=text, metavar="PROMPT", help="the prompt; - reads stdin"
    )
    ask.add_argument(
        "--json",
        action="store_true",
        help="write one JSON object per message (NDJSON): delta, text, session_id, "
        "finish_reason, usage, request_id",
    )
    ask.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    words: list[str] = args.prompt
    prompt = _stdin() if words == ["-"] else " ".join(words)
    if not prompt.strip():
        raise UsageError("the prompt is empty")
    printer = Printer(sys.stdout, json_lines=args.json)
    errors: list[TyqwError] = []

    def on_error(error: TyqwError) -> None:
        if isinstance(error.__cause__, BrokenPipe):
            raise error.__cause__
        errors.append(error)
        printer.end_line()
        fail(error_line(error))

    try:
        with event_loop() as loop, open_session(args, loop) as (session, _, _):
            session.on("message", printer.message)
            session.on("error", on_error)
            with ctrl_c_aborts(loop, session) as pressed:
                loop.run_until_complete(session.send(prompt))
            printer.end_line()
    except CommandError:
        # The store failed again at the end: the turn's error line has said so already.
        if not any(isinstance(error, StoreError) for error in errors):
            raise
        return ERROR
    if pressed:
        return INTERRUPTED
    return ERROR if errors else OK


def _stdin() -> str:
    """The prompt piped to ``tyqw ask -``; undecodable bytes are a usage error."""
    stdin = lenient(sys.stdin)
    prompt = stdin.read().rstrip("\r\n")
    problem = undecodable(prompt, stdin.encoding or "utf-8")
    if problem:
        raise UsageError(f"the prompt on stdin is {problem}")
    return prompt
