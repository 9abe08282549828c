"""What every ``tyqw`` command shares: exit codes, the event loop, Ctrl-C, output, errors.

Streams: reply text (and ``--json`` lines) go to stdout; notices, the ``[stopped]``
marker and error lines go to stderr, so stdout stays clean for pipes.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import signal
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO

from .._exceptions import (
    APIConnectionError,
    APIStatusError,
    APITimeoutError,
    AuthenticationError,
    BadRequestError,
    IncompleteStreamError,
    InternalServerError,
    NotFoundError,
    PermissionDeniedError,
    RateLimitError,
    StreamError,
    TyqwError,
)
from .._models import Message
from .._session import DEFAULT_BASE_URL, Session
from .._store import default_state_dir

if TYPE_CHECKING:
    from .._simulator import BailianSimulator

OK = 0
ERROR = 1
USAGE = 2
INTERRUPTED = 130
BROKEN_PIPE = 141  # 128 + SIGPIPE, what a shell reports for `yes | head`

OFFLINE_DELAY = 0.03  # seconds between simulated events: slow enough to see it stream
NO_KEY_NOTICE = (
    "tyqw: no DASHSCOPE_API_KEY set, so using the built-in offline simulator (canned "
    "replies). Set DASHSCOPE_API_KEY and DASHSCOPE_APP_ID to talk to your Bailian app."
)
OFFLINE_NOTICE = (
    "tyqw: --offline: using the built-in offline simulator (canned replies); "
    "your key and app are not used."
)


class UsageError(Exception):
    """A mistake in the command line or configuration: exit status 2."""


class BrokenPipe(Exception):
    """stdout was closed by its reader (``tyqw ask ... | head``)."""


# -- the shared flags ----------------------------------------------------------------


def state_parent() -> argparse.ArgumentParser:
    """``--state-dir``: where conversation ids live."""
    state = argparse.ArgumentParser(add_help=False)
    state.add_argument(
        "--state-dir",
        type=Path,
        metavar="DIR",
        help="where conversation ids are stored (default: the user state folder, "
        f"{default_state_dir()})",
    )
    return state


def service_parent() -> argparse.ArgumentParser:
    """The connection flags of ``chat`` and ``ask``."""
    service = argparse.ArgumentParser(add_help=False, parents=[state_parent()])
    group = service.add_argument_group("connection")
    group.add_argument("--app-id", metavar="ID", help="the Bailian app id (DASHSCOPE_APP_ID)")
    group.add_argument(
        "--base-url",
        metavar="URL",
        help=f"API base URL (DASHSCOPE_BASE_URL; default: {DEFAULT_BASE_URL})",
    )
    group.add_argument("--workspace", metavar="ID", help="workspace id (DASHSCOPE_WORKSPACE)")
    group.add_argument(
        "--offline",
        action="store_true",
        help="use the built-in simulator even when DASHSCOPE_API_KEY is set",
    )
    group.add_argument(
        "--delay",
        type=seconds,
        default=OFFLINE_DELAY,
        metavar="SECONDS",
        help="offline only: seconds between the simulator's events (default: %(default)s)",
    )
    return service


def conversation_parent() -> argparse.ArgumentParser:
    """``--name`` and ``--new``."""
    conversation = argparse.ArgumentParser(add_help=False)
    conversation.add_argument(
        "--name",
        default="default",
        help="which stored conversation to continue (default: %(default)s)",
    )
    conversation.add_argument(
        "--new", action="store_true", help="forget the stored conversation and start anew"
    )
    return conversation


def seconds(value: str) -> float:
    try:
        number = float(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number of seconds: {value!r}") from None
    if not 0 <= number <= 60:
        raise argparse.ArgumentTypeError("expected 0 to 60 seconds")
    return number


# -- connecting ------------------------------------------------------------------------


def open_session(
    args: argparse.Namespace, loop: asyncio.AbstractEventLoop
) -> tuple[Session, BailianSimulator | None]:
    """The Session the flags and environment ask for; offline, with its simulator."""
    simulator = None
    if args.offline or not os.environ.get("DASHSCOPE_API_KEY"):
        from .._simulator import OFFLINE_APP_ID, BailianSimulator

        simulator = BailianSimulator(app_ids=[OFFLINE_APP_ID], delay=args.delay)
        loop.run_until_complete(simulator.start())
        print(OFFLINE_NOTICE if args.offline else NO_KEY_NOTICE, file=sys.stderr, flush=True)
        # Offline conversations are stored under an app id of their own, apart from the
        # real app's (a simulator session id is never sent to the real service) and from
        # those held with a `tyqw simulate` process, which this run would not know.
        app_id = simulator.app_id
        api_key: str | None = simulator.api_key
        base_url: str | None = simulator.base_url
    else:
        app_id = args.app_id or os.environ.get("DASHSCOPE_APP_ID", "")
        if not app_id:
            raise UsageError(
                "no app id: pass --app-id or set DASHSCOPE_APP_ID (the application id "
                "from the Bailian console)"
            )
        api_key, base_url = None, args.base_url  # None: the SDK reads the environment
    try:
        session = Session(
            app_id,
            api_key=api_key,
            base_url=base_url,
            workspace=args.workspace,
            name=args.name,
            state_dir=args.state_dir,
        )
    except (ValueError, TyqwError) as exc:
        if simulator is not None:
            loop.run_until_complete(simulator.aclose())
        raise UsageError(str(exc)) from None
    if args.new:
        session.clear()
    return session, simulator


def close_session(
    loop: asyncio.AbstractEventLoop, session: Session, simulator: BailianSimulator | None
) -> None:
    loop.run_until_complete(session.aclose())
    if simulator is not None:
        loop.run_until_complete(simulator.aclose())


@contextlib.contextmanager
def event_loop() -> Iterator[asyncio.AbstractEventLoop]:
    # One loop for the whole command: the Session and the simulator live on it across
    # turns, and the REPL reads input between run_until_complete() calls.
    loop = asyncio.new_event_loop()
    try:
        yield loop
    finally:
        try:
            loop.run_until_complete(loop.shutdown_asyncgens())
            loop.run_until_complete(loop.shutdown_default_executor())
        finally:
            loop.close()


@contextlib.contextmanager
def ctrl_c_aborts(loop: asyncio.AbstractEventLoop, session: Session) -> Iterator[list[bool]]:
    """While inside, Ctrl-C calls ``session.abort()``; the list is non-empty if it did."""
    pressed: list[bool] = []

    def on_sigint() -> None:
        pressed.append(True)
        session.abort()

    def restore() -> None:
        loop.remove_signal_handler(signal.SIGINT)  # back to KeyboardInterrupt

    try:
        loop.add_signal_handler(signal.SIGINT, on_sigint)
    except NotImplementedError:  # Windows: a plain handler that hands over to the loop
        previous = signal.signal(
            signal.SIGINT, lambda signum, frame: loop.call_soon_threadsafe(on_sigint)
        )

        def restore() -> None:
            signal.signal(signal.SIGINT, previous or signal.default_int_handler)

    except (RuntimeError, ValueError):  # not the main thread: signals are not ours

        def restore() -> None:
            pass

    try:
        yield pressed
    finally:
        restore()


# -- output ----------------------------------------------------------------------------


class Printer:
    """Writes a reply as it streams and keeps track of whether the line is open."""

    def __init__(self, out: TextIO, *, json_lines: bool = False, thoughts: bool = False):
        self.out = out
        self.json_lines = json_lines
        self.show_thoughts = thoughts
        self.dim = thoughts and out.isatty()
        self.line_open = False
        self.shown_thoughts: list[Any] = []

    def start_turn(self) -> None:
        self.shown_thoughts = []

    def message(self, message: Message) -> None:
        try:
            if self.json_lines:
                self._write(json_line(message))
                return
            if self.show_thoughts and message.thoughts:
                self._thoughts(message.thoughts)
            if message.delta:
                self._write(message.delta)
                self.line_open = not message.delta.endswith("\n")
        except BrokenPipeError:
            raise BrokenPipe from None

    def _thoughts(self, thoughts: list[dict[str, Any]]) -> None:
        # Some apps repeat every thought in each event, others send each once: show
        # each distinct one once per turn.
        for thought in thoughts:
            if thought in self.shown_thoughts:
                continue
            self.shown_thoughts.append(thought)
            label = thought.get("action_name") or thought.get("action_type") or "thought"
            body = next(
                (
                    str(thought[key])
                    for key in ("thought", "response", "observation", "action_input_stream")
                    if thought.get(key)
                ),
                "",
            )
            line = f"[{label}] {body}".rstrip()
            if self.dim:
                line = f"\x1b[2m{line}\x1b[0m"
            self.end_line()
            self._write(line + "\n")

    def end_line(self) -> None:
        if self.line_open:
            self.line_open = False
            with contextlib.suppress(BrokenPipeError):
                self._write("\n")

    def _write(self, text: str) -> None:
        self.out.write(text)
        self.out.flush()


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
    what = " ".join(str(error).split())
    advice = hint(error)
    return f"{what} — {advice}" if advice else what


def hint(error: TyqwError) -> str:
    if isinstance(error, AuthenticationError):
        return "check DASHSCOPE_API_KEY (a key works only in its own region's base URL)"
    if isinstance(error, PermissionDeniedError):
        return "check that the key may use this app and workspace (DASHSCOPE_WORKSPACE)"
    if isinstance(error, NotFoundError):
        return "check the app id and DASHSCOPE_BASE_URL"
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
        return "check your network connection and DASHSCOPE_BASE_URL"
    if isinstance(error, IncompleteStreamError):
        return "the reply was cut off; try again"
    if isinstance(error, StreamError):
        return "this does not look like the Bailian service (a proxy?); check DASHSCOPE_BASE_URL"
    return ""


def fail(message: str) -> None:
    print(f"tyqw: error: {message}", file=sys.stderr, flush=True)


def silence_stdout() -> None:
    # The reader is gone: point stdout at devnull so flushing at exit cannot fail again.
    with contextlib.suppress(OSError, ValueError):
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
