"""The ``tyqw`` command: ``chat``, ``ask``, ``sessions`` and ``simulate``.

A thin layer over the public API: ``Session`` does the talking, ``stored_conversations``
the listing, ``BailianSimulator`` the offline mode. With no ``DASHSCOPE_API_KEY`` (or
with ``--offline``) ``chat`` and ``ask`` start the simulator in-process, so the whole
flow can be tried without an account.

Streams: reply text (and ``--json`` lines) go to stdout; notices, the ``[stopped]``
marker and error lines go to stderr, so stdout stays clean for pipes.

Exit codes: 0 success, 1 an API or stream error, 2 a usage error, 130 Ctrl-C during
``ask``, 141 when the reader of stdout went away.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import shlex
import signal
import sys
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO

from . import __version__
from ._exceptions import (
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
from ._models import Message
from ._session import DEFAULT_BASE_URL, Session
from ._store import default_state_dir, stored_conversations

if TYPE_CHECKING:
    from .testing import BailianSimulator

__all__ = ["main"]

OK = 0
ERROR = 1
USAGE = 2
INTERRUPTED = 130
BROKEN_PIPE = 141  # 128 + SIGPIPE, what a shell reports for `yes | head`

_OFFLINE_DELAY = 0.03  # seconds between simulated events: slow enough to see it stream
_NO_KEY_NOTICE = (
    "tyqw: no DASHSCOPE_API_KEY set, so using the built-in offline simulator (canned "
    "replies). Set DASHSCOPE_API_KEY and DASHSCOPE_APP_ID to talk to your Bailian app."
)
_OFFLINE_NOTICE = (
    "tyqw: --offline: using the built-in offline simulator (canned replies); "
    "your key and app are not used."
)
_CHAT_HELP = """\
/new      start a new conversation (the app forgets the context)
/session  show the conversation id and where it is stored
/help     show this help
/exit     quit (or Ctrl-D; Ctrl-C at the prompt)
Ctrl-C during a reply stops that reply."""


class _UsageError(Exception):
    """A mistake in the command line or configuration: exit status 2."""


class _BrokenPipe(Exception):
    """stdout was closed by its reader (``tyqw ask ... | head``)."""


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``tyqw`` command line and return its exit status.

    Example::

        raise SystemExit(main(["ask", "--offline", "你好"]))
    """
    parser = _parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # --help, --version, or a usage error already printed
        return exc.code if isinstance(exc.code, int) else USAGE
    command: Callable[[argparse.Namespace], int] = args.run
    try:
        return command(args)
    except _UsageError as exc:
        _fail(str(exc))
        return USAGE
    except _BrokenPipe:
        _silence_stdout()
        return BROKEN_PIPE
    except KeyboardInterrupt:
        print(file=sys.stderr)
        return INTERRUPTED


# -- the parser ----------------------------------------------------------------------


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="tyqw",
        description="Chat with an Alibaba Cloud Bailian (Model Studio) app from the terminal. "
        "Without DASHSCOPE_API_KEY, chat and ask use a built-in offline simulator.",
        epilog="Environment: DASHSCOPE_API_KEY, DASHSCOPE_APP_ID, DASHSCOPE_BASE_URL "
        "(or DASHSCOPE_HTTP_BASE_URL), DASHSCOPE_WORKSPACE. Flags win over the environment.",
    )
    parser.add_argument("--version", action="version", version=f"tyqw {__version__}")
    commands = parser.add_subparsers(title="commands", metavar="COMMAND", required=True)

    state = argparse.ArgumentParser(add_help=False)
    state.add_argument(
        "--state-dir",
        type=Path,
        metavar="DIR",
        help="where conversation ids are stored (default: the user state folder, "
        f"{default_state_dir()})",
    )

    service = argparse.ArgumentParser(add_help=False, parents=[state])
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
        type=_seconds,
        default=_OFFLINE_DELAY,
        metavar="SECONDS",
        help="offline only: seconds between the simulator's events (default: %(default)s)",
    )
    conversation = argparse.ArgumentParser(add_help=False)
    conversation.add_argument(
        "--name",
        default="default",
        help="which stored conversation to continue (default: %(default)s)",
    )
    conversation.add_argument(
        "--new", action="store_true", help="forget the stored conversation and start anew"
    )

    chat = commands.add_parser(
        "chat",
        parents=[service, conversation],
        help="chat in the terminal (interactive)",
        description="Chat with the app. Replies stream as they arrive; the conversation "
        "continues across runs under the same --name. Type /help for commands.",
    )
    chat.add_argument("--thoughts", action="store_true", help="show the app's thoughts")
    chat.set_defaults(run=_chat)

    ask = commands.add_parser(
        "ask",
        parents=[service, conversation],
        help="one turn, streamed to stdout (for pipes and scripts)",
        description="Send one prompt and stream the reply to stdout. Exit status: 0 "
        "success, 1 API or stream error, 2 usage error, 130 interrupted.",
    )
    ask.add_argument("prompt", nargs="+", metavar="PROMPT", help="the prompt; - reads stdin")
    ask.add_argument(
        "--json",
        action="store_true",
        help="write one JSON object per message (NDJSON): delta, text, session_id, "
        "finish_reason, usage, request_id",
    )
    ask.set_defaults(run=_ask)

    sessions = commands.add_parser(
        "sessions",
        help="list or forget stored conversations",
        description="The conversation ids tyqw keeps between runs.",
    )
    actions = sessions.add_subparsers(title="actions", metavar="ACTION", required=True)
    listing = actions.add_parser(
        "list", parents=[state], help="name, app id, session id and last use of each"
    )
    listing.set_defaults(run=_sessions_list)
    clearing = actions.add_parser(
        "clear",
        parents=[state],
        help="forget a conversation (its next turn starts anew)",
        description="Forget the conversations called NAME (of every app, or of --app-id), "
        "or all of them with --all.",
    )
    clearing.add_argument("name", nargs="?", metavar="NAME", help="the conversation's --name")
    clearing.add_argument("--all", action="store_true", help="forget every stored conversation")
    clearing.add_argument("--app-id", metavar="ID", help="only conversations with this app")
    clearing.set_defaults(run=_sessions_clear)

    simulate = commands.add_parser(
        "simulate",
        help="run the Bailian simulator in the foreground",
        description="Serve the built-in Bailian simulator until Ctrl-C, and print the "
        "environment that points the SDK or the CLI at it. It remembers conversations "
        "while it runs, so `tyqw ask` continues one across invocations.",
    )
    simulate.add_argument("--host", default="127.0.0.1", help="default: %(default)s")
    simulate.add_argument(
        "--port", type=int, default=8000, help="default: %(default)s; 0 picks a free port"
    )
    simulate.add_argument(
        "--delay",
        type=_seconds,
        default=_OFFLINE_DELAY,
        metavar="SECONDS",
        help="seconds between streamed events (default: %(default)s)",
    )
    simulate.set_defaults(run=_simulate)
    return parser


def _seconds(value: str) -> float:
    try:
        seconds = float(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number of seconds: {value!r}") from None
    if not 0 <= seconds <= 60:
        raise argparse.ArgumentTypeError("expected 0 to 60 seconds")
    return seconds


# -- connecting ------------------------------------------------------------------------


def _open(
    args: argparse.Namespace, loop: asyncio.AbstractEventLoop
) -> tuple[Session, BailianSimulator | None]:
    """The Session the flags and environment ask for; offline, with its simulator."""
    simulator = None
    if args.offline or not os.environ.get("DASHSCOPE_API_KEY"):
        from .testing import BailianSimulator

        simulator = loop.run_until_complete(BailianSimulator(delay=args.delay).start())
        print(_OFFLINE_NOTICE if args.offline else _NO_KEY_NOTICE, file=sys.stderr, flush=True)
        # Offline conversations are stored under the simulator's app id, apart from the
        # real app's, so a simulator session id is never sent to the real service.
        app_id = simulator.app_id
        api_key: str | None = simulator.api_key
        base_url: str | None = simulator.base_url
    else:
        app_id = args.app_id or os.environ.get("DASHSCOPE_APP_ID", "")
        if not app_id:
            raise _UsageError(
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
        raise _UsageError(str(exc)) from None
    if args.new:
        session.clear()
    return session, simulator


def _close(
    loop: asyncio.AbstractEventLoop, session: Session, simulator: BailianSimulator | None
) -> None:
    loop.run_until_complete(session.aclose())
    if simulator is not None:
        loop.run_until_complete(simulator.aclose())


@contextlib.contextmanager
def _event_loop() -> Iterator[asyncio.AbstractEventLoop]:
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
def _ctrl_c_aborts(loop: asyncio.AbstractEventLoop, session: Session) -> Iterator[list[bool]]:
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


class _Printer:
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
                self._write(_json_line(message))
                return
            if self.show_thoughts and message.thoughts:
                self._thoughts(message.thoughts)
            if message.delta:
                self._write(message.delta)
                self.line_open = not message.delta.endswith("\n")
        except BrokenPipeError:
            raise _BrokenPipe from None

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


def _json_line(message: Message) -> str:
    fields = {
        "delta": message.delta,
        "text": message.text,
        "session_id": message.session_id,
        "finish_reason": message.finish_reason,
        "usage": message.usage,
        "request_id": message.request_id,
    }
    return json.dumps(fields, ensure_ascii=False) + "\n"


def _error_line(error: TyqwError) -> str:
    """One line: what happened, DashScope's code and request id, and what to do."""
    what = " ".join(str(error).split())
    hint = _hint(error)
    return f"{what} — {hint}" if hint else what


def _hint(error: TyqwError) -> str:
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


def _fail(message: str) -> None:
    print(f"tyqw: error: {message}", file=sys.stderr, flush=True)


def _silence_stdout() -> None:
    # The reader is gone: point stdout at devnull so flushing at exit cannot fail again.
    with contextlib.suppress(OSError, ValueError):
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)


# -- tyqw ask ----------------------------------------------------------------------------


def _ask(args: argparse.Namespace) -> int:
    words: list[str] = args.prompt
    prompt = sys.stdin.read().rstrip("\r\n") if words == ["-"] else " ".join(words)
    if not prompt.strip():
        raise _UsageError("the prompt is empty")
    printer = _Printer(sys.stdout, json_lines=args.json)
    errors: list[TyqwError] = []

    def on_error(error: TyqwError) -> None:
        if isinstance(error.__cause__, _BrokenPipe):
            raise error.__cause__
        errors.append(error)
        printer.end_line()
        _fail(_error_line(error))

    with _event_loop() as loop:
        session, simulator = _open(args, loop)
        try:
            session.on("message", printer.message)
            session.on("error", on_error)
            with _ctrl_c_aborts(loop, session) as pressed:
                loop.run_until_complete(session.send(prompt))
            printer.end_line()
        finally:
            _close(loop, session, simulator)
    if pressed:
        return INTERRUPTED
    return ERROR if errors else OK


# -- tyqw chat ---------------------------------------------------------------------------


def _chat(args: argparse.Namespace) -> int:
    interactive = sys.stdin.isatty()
    if interactive:
        with contextlib.suppress(ImportError):
            import readline  # noqa: F401  (line editing and history for input())
    printer = _Printer(sys.stdout, thoughts=args.thoughts)

    def on_error(error: TyqwError) -> None:
        printer.end_line()
        print(f"error: {_error_line(error)}", file=sys.stderr, flush=True)

    with _event_loop() as loop:
        session, simulator = _open(args, loop)
        try:
            session.on("message", printer.message)
            session.on("error", on_error)
            if interactive:
                print("Type a message; /help lists commands, Ctrl-D quits.", file=sys.stderr)
            _repl(loop, session, simulator, printer, "> " if interactive else "", args.thoughts)
        finally:
            _close(loop, session, simulator)
    return OK


def _repl(
    loop: asyncio.AbstractEventLoop,
    session: Session,
    simulator: BailianSimulator | None,
    printer: _Printer,
    prompt: str,
    thoughts: bool,
) -> None:
    options: dict[str, Any] = {"has_thoughts": True} if thoughts else {}
    while True:
        try:
            line = input(prompt)
        except EOFError:  # Ctrl-D
            if prompt:
                print()
            return
        except KeyboardInterrupt:  # Ctrl-C at the prompt
            print()
            return
        text = line.strip()
        if not text:
            continue
        if text.startswith("/"):
            if _command(text, session, simulator):
                return
            continue
        printer.start_turn()
        with _ctrl_c_aborts(loop, session) as pressed:
            loop.run_until_complete(session.send(line, **options))
        printer.end_line()
        if pressed:
            print("[stopped]", file=sys.stderr, flush=True)


def _command(text: str, session: Session, simulator: BailianSimulator | None) -> bool:
    """Run a /command; True means quit."""
    name = text.split()[0].lower()
    if name in ("/exit", "/quit"):
        return True
    if name == "/new":
        session.clear()
        print("(new conversation: the app has forgotten the context)", file=sys.stderr)
    elif name == "/session":
        sid = session.session_id or "none yet (the next message starts a conversation)"
        print(f"session_id: {sid}")
        print(f"name: {session.name}  app_id: {session.app_id}")
        print(f"stored in: {session.store_path}")
        if simulator is not None:
            print("(offline: the simulator forgets its conversations when tyqw exits)")
    elif name in ("/help", "/?"):
        print(_CHAT_HELP)
    else:
        print(f"unknown command {name}; /help lists the commands", file=sys.stderr)
    sys.stdout.flush()
    return False


# -- tyqw sessions ---------------------------------------------------------------------


def _sessions_list(args: argparse.Namespace) -> int:
    conversations = stored_conversations(args.state_dir)
    if not conversations:
        where = args.state_dir or default_state_dir()
        print(f"tyqw: no stored conversations in {where}", file=sys.stderr)
        return OK
    rows = [("NAME", "APP ID", "SESSION ID", "LAST USED")]
    rows += [
        (
            c.name,
            c.app_id,
            c.session_id,
            c.last_used.astimezone().strftime("%Y-%m-%d %H:%M:%S"),
        )
        for c in conversations
    ]
    widths = [max(len(row[i]) for row in rows) for i in range(3)]
    try:
        for row in rows:
            cells = [cell.ljust(width) for cell, width in zip(row[:3], widths, strict=True)]
            print("  ".join([*cells, row[3]]), flush=True)
    except BrokenPipeError:
        raise _BrokenPipe from None
    return OK


def _sessions_clear(args: argparse.Namespace) -> int:
    if args.all == (args.name is not None):
        raise _UsageError("sessions clear needs a NAME or --all (not both)")
    doomed = [
        c
        for c in stored_conversations(args.state_dir)
        if (args.all or c.name == args.name) and args.app_id in (None, c.app_id)
    ]
    for conversation in doomed:
        conversation.delete()
    plural = "" if len(doomed) == 1 else "s"
    named = "" if args.all else f" named {args.name!r}"
    print(f"tyqw: forgot {len(doomed)} conversation{plural}{named}", file=sys.stderr)
    return OK


# -- tyqw simulate ---------------------------------------------------------------------


def _simulate(args: argparse.Namespace) -> int:
    from .testing import BailianSimulator

    simulator = BailianSimulator(host=args.host, port=args.port, delay=args.delay)
    with _event_loop() as loop:
        try:
            loop.run_until_complete(simulator.start())
        except OSError as exc:
            _fail(f"cannot listen on {args.host}:{args.port}: {exc.strerror or exc}")
            return ERROR
        stopping: list[asyncio.Task[None]] = []

        def stop() -> None:
            if not stopping:
                stopping.append(loop.create_task(simulator.aclose()))

        for signum in (signal.SIGINT, signal.SIGTERM):
            with contextlib.suppress(NotImplementedError, AttributeError):
                loop.add_signal_handler(signum, stop)
        env = {
            "DASHSCOPE_BASE_URL": simulator.base_url,
            "DASHSCOPE_API_KEY": simulator.api_key,
            "DASHSCOPE_APP_ID": simulator.app_id,
        }
        exports = " ".join(f"{k}={shlex.quote(v)}" for k, v in env.items())
        print(f"Bailian simulator listening on {simulator.base_url}")
        print("Point the SDK or the CLI at it, e.g. in another terminal:")
        print(f"  export {exports}")
        print('  tyqw ask "你好，我叫小明" && tyqw ask "我叫什么名字？"')
        print("It remembers conversations until it stops. Ctrl-C stops it.", flush=True)
        try:
            loop.run_until_complete(simulator.serve_forever())
        except KeyboardInterrupt:  # where signal handlers are not available
            pass
        finally:
            for task in stopping:
                loop.run_until_complete(task)
            loop.run_until_complete(simulator.aclose())
            for signum in (signal.SIGINT, signal.SIGTERM):
                with contextlib.suppress(NotImplementedError, AttributeError):
                    loop.remove_signal_handler(signum)
    print("tyqw: simulator stopped", file=sys.stderr)
    return OK
