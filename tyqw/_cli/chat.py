"""``tyqw chat``: the interactive chat."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import sys
from typing import TYPE_CHECKING, Any

from .._exceptions import TyqwError
from .._session import Session
from ._common import (
    OK,
    Printer,
    close_session,
    conversation_parent,
    ctrl_c_aborts,
    error_line,
    event_loop,
    open_session,
    service_parent,
)

if TYPE_CHECKING:
    from .._simulator import BailianSimulator

HELP = """\
/new      start a new conversation (the app forgets the context)
/session  show the conversation id and where it is stored
/help     show this help
/exit     quit (or Ctrl-D; Ctrl-C at the prompt)
Ctrl-C during a reply stops that reply."""


def add_parser(commands: Any) -> None:
    chat = commands.add_parser(
        "chat",
        parents=[service_parent(), conversation_parent()],
        help="chat in the terminal (interactive)",
        description="Chat with the app. Replies stream as they arrive; the conversation "
        "continues across runs under the same --name. Type /help for commands.",
    )
    chat.add_argument("--thoughts", action="store_true", help="show the app's thoughts")
    chat.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    interactive = sys.stdin.isatty()
    if interactive:
        with contextlib.suppress(ImportError):
            import readline  # noqa: F401  (line editing and history for input())
    printer = Printer(sys.stdout, thoughts=args.thoughts)

    def on_error(error: TyqwError) -> None:
        printer.end_line()
        print(f"error: {error_line(error)}", file=sys.stderr, flush=True)

    with event_loop() as loop:
        session, simulator = open_session(args, loop)
        try:
            session.on("message", printer.message)
            session.on("error", on_error)
            if interactive:
                print("Type a message; /help lists commands, Ctrl-D quits.", file=sys.stderr)
            _repl(loop, session, simulator, printer, "> " if interactive else "", args.thoughts)
        finally:
            close_session(loop, session, simulator)
    return OK


def _repl(
    loop: asyncio.AbstractEventLoop,
    session: Session,
    simulator: BailianSimulator | None,
    printer: Printer,
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
        with ctrl_c_aborts(loop, session) as pressed:
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
        print(HELP)
    else:
        print(f"unknown command {name}; /help lists the commands", file=sys.stderr)
    sys.stdout.flush()
    return False
